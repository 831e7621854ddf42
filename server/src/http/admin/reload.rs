//! `POST /admin/v1/reload`: the configuration file and the flows read again and, if all of
//! them check, made live together (`idflow reload` calls this; SIGHUP and `serve --watch` run
//! the same reload in the process).

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminError, RELOAD, authenticate};
use crate::app::now;
use crate::effects::audit;
use crate::http::AppState;
use crate::store::Write;

/// `POST /admin/v1/reload`: `200` with what changed, or `422` with why nothing did.
pub async fn reload(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let now = now();
    let admin = match authenticate(&app, &headers, &ip, now).await {
        Ok(admin) => admin,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = admin.require(RELOAD) {
        return error.into_response();
    }
    let worker = std::sync::Arc::clone(&app);
    let outcome = match crate::http::blocking(move || crate::reload::reload(&worker)).await {
        Ok(outcome) => outcome,
        Err(error) => return AdminError::internal(error).into_response(),
    };
    let detail = match &outcome {
        Ok(done) => json!({ "generation": done.generation, "flows_changed": done.changed.len() }),
        Err(why) => json!({ "refused": why.lines().next().unwrap_or_default() }),
    };
    let mut entry = audit(
        "config.reload",
        &admin.user.id,
        &ip.ip().to_string(),
        now,
        detail,
    );
    if let Write::Audit(event) = &mut entry {
        event.actor = admin.user.id.clone();
        event.subject = String::new();
    }
    if let Err(error) = app.store.commit(vec![entry]) {
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
