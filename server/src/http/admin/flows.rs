//! The live flows: list with versions, one flow's IR, its state machine drawn.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use idflow_dsl::graph::{GraphFormat, render};
use serde_json::{Value, json};

use super::{AdminError, Answer};
use crate::http::AppState;
use crate::http::params::Params;

/// `GET /admin/v1/flows`.
pub async fn list(State(app): AppState) -> Answer {
    let snapshot = app.registry.snapshot();
    let shown: Vec<Value> = snapshot
        .flows
        .values()
        .map(|flow| {
            json!({
                "id": flow.ir.flow,
                "version": flow.version,
                "applies_to": flow.ir.applies_to,
                "default": flow.ir.default,
                "states": flow.ir.states.len(),
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({ "generation": snapshot.generation, "flows": shown })),
    ))
}

fn flow(
    app: &crate::app::App,
    id: &str,
) -> Result<std::sync::Arc<idflow_engine::LoadedFlow>, AdminError> {
    app.registry
        .snapshot()
        .flows
        .get(id)
        .cloned()
        .ok_or_else(|| AdminError::not_found(format!("no live flow `{id}`")))
}

/// `GET /admin/v1/flows/{id}`: the IR, as `idflow flow compile` emits it.
pub async fn read(State(app): AppState, Path(id): Path<String>) -> Answer {
    let flow = flow(&app, &id)?;
    let ir = serde_json::to_value(&flow.ir).map_err(AdminError::internal)?;
    Ok((
        StatusCode::OK,
        Json(json!({ "id": id, "version": flow.version, "ir": ir })),
    ))
}

/// `GET /admin/v1/flows/{id}/graph?format=mermaid|dot`: text, for the console to draw.
pub async fn graph(
    State(app): AppState,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AdminError> {
    let params = Params::parse_with_limit(raw.unwrap_or_default().as_bytes(), 1024)
        .map_err(AdminError::bad)?;
    let format = match params.get("format").unwrap_or("mermaid") {
        "mermaid" => GraphFormat::Mermaid,
        "dot" => GraphFormat::Dot,
        other => return Err(AdminError::bad(format!("`{other}` is not mermaid or dot"))),
    };
    let flow = flow(&app, &id)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render(&flow.ir, format),
    )
        .into_response())
}
