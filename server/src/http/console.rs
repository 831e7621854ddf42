//! `/console/`: the admin console, a page and a script over the admin API, compiled into the
//! binary (no build step, nothing fetched from elsewhere at run time). It signs in as the
//! built-in public client `idflow-console`; what it may do is what the admin API lets the
//! signed-in administrator do.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Only this origin's scripts and styles, and the admin API and token endpoint to talk to.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /console/`.
pub async fn page() -> Response {
    file(
        include_str!("../../console/index.html"),
        "text/html; charset=utf-8",
    )
}

/// `GET /console/app.js`.
pub async fn script() -> Response {
    file(
        include_str!("../../console/app.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /console/console.css`.
pub async fn stylesheet() -> Response {
    file(include_str!("../../console/console.css"), "text/css")
}

/// `GET /console`: to the page.
pub async fn redirect() -> Response {
    axum::response::Redirect::permanent("/console/").into_response()
}
