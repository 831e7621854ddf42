//! The live flows: list with versions, one flow's IR, its state machine drawn.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use idflow_dsl::graph::{GraphFormat, render_covered};
use idflow_engine::scenario::{self, Coverage, Outcome};
use serde_json::{Value, json};

use super::{AdminError, Answer};
use crate::config::server::FlowsSource;
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
    let (format, content_type) = match params.get("format").unwrap_or("mermaid") {
        "mermaid" => (GraphFormat::Mermaid, "text/plain; charset=utf-8"),
        "dot" => (GraphFormat::Dot, "text/plain; charset=utf-8"),
        "svg" => (GraphFormat::Svg, "image/svg+xml"),
        other => {
            return Err(AdminError::bad(format!(
                "`{other}` is not mermaid, dot or svg"
            )));
        }
    };
    let flow = flow(&app, &id)?;
    let covered = match params.get("coverage") {
        Some("true") => {
            let (_, coverage) = scenarios(&app, &flow).await?;
            Some(coverage.covered_transitions.into_iter().collect())
        }
        _ => None,
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        render_covered(&flow.ir, format, covered.as_ref()),
    )
        .into_response())
}

/// The flow's scenarios (the `*.test.yaml` files in the flows directory that name it) run
/// against the live flow, and the coverage they give.
async fn scenarios(
    app: &std::sync::Arc<crate::app::App>,
    flow: &std::sync::Arc<idflow_engine::LoadedFlow>,
) -> Result<(Vec<Outcome>, Coverage), AdminError> {
    let app = std::sync::Arc::clone(app);
    let flow = std::sync::Arc::clone(flow);
    crate::http::blocking(move || {
        let config = app.config();
        let files = match &config.flows {
            FlowsSource::Dir(dir) => crate::sources::collect_scenarios(std::slice::from_ref(dir))
                .map_err(AdminError::internal)?,
            FlowsSource::Embedded => Vec::new(),
        };
        let mut outcomes = Vec::new();
        for (_, text) in files {
            let Ok(file) = scenario::parse(&text) else {
                continue;
            };
            if file.flow != flow.ir.flow {
                continue;
            }
            for case in &file.scenarios {
                outcomes.push(scenario::run(&app.engine, &flow, case));
            }
        }
        let coverage = scenario::coverage(&flow, &outcomes);
        Ok((outcomes, coverage))
    })
    .await
    .map_err(AdminError::internal)?
}

/// `GET /admin/v1/flows/{id}/test`: the flow's scenarios run against the live flow, with
/// their results and the state and transition coverage (what `idflow flow test` reports).
pub async fn test(State(app): AppState, Path(id): Path<String>) -> Answer {
    let flow = flow(&app, &id)?;
    let (outcomes, coverage) = scenarios(&app, &flow).await?;
    let results: Vec<Value> = outcomes
        .iter()
        .map(|o| json!({ "name": o.name, "passed": o.failures.is_empty(), "failures": o.failures }))
        .collect();
    let passed = outcomes.iter().filter(|o| o.failures.is_empty()).count();
    Ok((
        StatusCode::OK,
        Json(json!({
            "flow": id,
            "version": flow.version,
            "passed": passed,
            "failed": outcomes.len() - passed,
            "results": results,
            "coverage": {
                "states": [coverage.states.0, coverage.states.1],
                "transitions": [coverage.transitions.0, coverage.transitions.1],
                "missing_states": coverage.missing_states,
                "missing_transitions": coverage.missing_transitions,
            },
        })),
    ))
}
