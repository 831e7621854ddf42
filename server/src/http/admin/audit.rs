//! `GET /admin/v1/audit`: the audit log, newest first, filtered by user (actor or subject),
//! event (exact, or a prefix ending in `.`), and time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde_json::json;

use super::{AdminError, Answer};
use crate::http::AppState;
use crate::http::params::Params;

/// How far back a query reads.
const SCAN: usize = 100_000;

/// `GET /admin/v1/audit`.
pub async fn query(State(app): AppState, RawQuery(raw): RawQuery) -> Answer {
    let params = Params::parse_with_limit(raw.unwrap_or_default().as_bytes(), 4096)
        .map_err(AdminError::bad)?;
    let time = |name: &str| {
        params
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| AdminError::bad(format!("`{name}` is seconds since the epoch")))
            })
            .transpose()
    };
    let since = time("since")?.unwrap_or(0);
    let until = time("until")?.unwrap_or(u64::MAX);
    let limit = params
        .get("limit")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| AdminError::bad("`limit` is a number"))
        })
        .transpose()?
        .unwrap_or(100)
        .min(1000);
    let user = params.get("user").map(String::from);
    let event = params.get("event").map(String::from);
    let store = Arc::clone(&app.store);
    let entries = crate::http::blocking(move || store.audit_log(SCAN))
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)?;
    let shown: Vec<_> = entries
        .into_iter()
        .filter(|e| e.time >= since && e.time <= until)
        .filter(|e| {
            user.as_ref()
                .is_none_or(|u| &e.actor == u || &e.subject == u)
        })
        .filter(|e| {
            event.as_ref().is_none_or(|wanted| {
                if wanted.ends_with('.') {
                    e.event.starts_with(wanted.as_str())
                } else {
                    &e.event == wanted
                }
            })
        })
        .take(limit)
        .collect();
    Ok((StatusCode::OK, Json(json!({ "entries": shown }))))
}
