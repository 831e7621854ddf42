//! Operations endpoints: liveness, readiness, metrics, the stylesheet and the 404 page.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::pages::STYLESHEET;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store answers and flows are loaded.
pub async fn readyz(State(app): AppState) -> Response {
    let store_ok = app.store.role(crate::app::ADMIN).is_ok();
    let flows_ok = !app.registry.snapshot().flows.is_empty();
    if store_ok && flows_ok {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: {store_ok}, flows: {flows_ok}\n"),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): AppState) -> Response {
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /static/idflow.css`.
pub async fn stylesheet() -> Response {
    static_file(STYLESHEET, "text/css")
}

/// `GET /static/webauthn.js`: the passkey ceremonies of the login and account pages.
pub async fn webauthn_script() -> Response {
    static_file(
        include_str!("../../templates/webauthn.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /static/autopost.js`: submits a SAML or WS-Federation answer to the application.
pub async fn autopost_script() -> Response {
    static_file(
        include_str!("../../templates/autopost.js"),
        "text/javascript; charset=utf-8",
    )
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// Anything else.
pub async fn not_found(State(app): AppState) -> Response {
    app.pages.message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}
