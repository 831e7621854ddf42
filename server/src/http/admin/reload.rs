//! `POST /admin/v1/reload`: the configuration file and the flows read again and, if all of
//! them check, made live together (`idflow reload` calls this; SIGHUP and `serve --watch` run
//! the same reload in the process).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Admin, AdminError};
use crate::http::AppState;

/// `POST /admin/v1/reload`: `200` with what changed, or `422` with why nothing did.
pub async fn reload(State(app): AppState, Extension(admin): Extension<Arc<Admin>>) -> Response {
    let worker = Arc::clone(&app);
    let outcome = match crate::http::blocking(move || crate::reload::reload(&worker)).await {
        Ok(outcome) => outcome,
        Err(error) => return AdminError::internal(error).into_response(),
    };
    let detail = match &outcome {
        Ok(done) => json!({ "generation": done.generation, "flows_changed": done.changed.len() }),
        Err(why) => json!({ "refused": why.lines().next().unwrap_or_default() }),
    };
    if let Err(error) = app
        .store
        .commit(vec![admin.audited("config.reload", "", detail)])
    {
        tracing::error!(%error, "cannot audit a reload");
    }
    match outcome {
        Ok(done) => {
            tracing::info!(generation = done.generation, "configuration reloaded");
            let text = done.render();
            (
                StatusCode::OK,
                Json(json!({ "reloaded": done, "text": text })),
            )
                .into_response()
        }
        Err(why) => {
            tracing::warn!(error = why, "reload refused; the live configuration stays");
            AdminError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_configuration",
                why,
            )
            .into_response()
        }
    }
}
