//! Outbound provisioning: the outbox, the dead letters, and putting one back.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Admin, AdminError, Answer, commit};
use crate::http::AppState;
use crate::store::{ProvisioningEvent, Write};

fn view(entries: Vec<(u64, ProvisioningEvent)>) -> Vec<Value> {
    entries
        .into_iter()
        .map(|(seq, event)| {
            let mut value = serde_json::to_value(event).unwrap_or_default();
            value["seq"] = seq.into();
            value
        })
        .collect()
}

/// `GET /admin/v1/provisioning/queue`.
pub async fn queue(State(app): AppState) -> Answer {
    let store = Arc::clone(&app.store);
    let events = crate::http::blocking(move || store.provisioning_events(1000))
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)?;
    Ok((StatusCode::OK, Json(json!({ "events": view(events) }))))
}

/// `GET /admin/v1/provisioning/dead`.
pub async fn dead(State(app): AppState) -> Answer {
    let store = Arc::clone(&app.store);
    let events = crate::http::blocking(move || store.dead_letters(1000))
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)?;
    Ok((
        StatusCode::OK,
        Json(json!({ "dead_letters": view(events) })),
    ))
}

/// `POST /admin/v1/provisioning/dead/{seq}/retry`.
pub async fn retry(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(seq): Path<String>,
) -> Answer {
    let seq: u64 = seq
        .parse()
        .map_err(|_| AdminError::bad("a dead letter's number"))?;
    commit(
        &app,
        vec![
            admin.audited("provisioning.requeued", "", json!({ "seq": seq })),
            Write::Requeue(seq),
        ],
    )
    .await
    .map_err(|e| match e.status_code() {
        StatusCode::CONFLICT => AdminError::not_found(format!("no dead letter {seq}")),
        _ => e,
    })?;
    Ok((StatusCode::OK, Json(json!({ "requeued": seq }))))
}
