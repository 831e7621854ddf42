//! CORS for browser applications: public clients (single-page apps) call the token,
//! userinfo and revocation endpoints from their own origin; discovery and the JWKS are public
//! documents any origin may read. Origins come from the public clients' redirect URIs, so a
//! page on any other origin gets no CORS headers and the browser withholds the response.
//!
//! Hand-written (a middleware of forty lines) rather than tower-http's CorsLayer: the allowed
//! origins depend on the path, which CorsLayer does not express without one layer per route.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::config::Application;

/// Paths any origin may read.
const PUBLIC_PATHS: [&str; 2] = ["/.well-known/openid-configuration", "/jwks"];
/// Paths the public clients' origins may call.
const CLIENT_PATHS: [&str; 3] = ["/token", "/userinfo", "/revoke"];

/// The origins of the public clients' redirect URIs.
pub fn allowed_origins<'a>(
    applications: impl Iterator<Item = &'a Application>,
) -> BTreeSet<String> {
    applications
        .filter(|app| app.public)
        .flat_map(|app| app.redirect_uris.iter())
        .filter_map(|uri| url::Url::parse(uri).ok())
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null")
        .collect()
}

/// The middleware: answers preflights and adds the response headers.
pub async fn cors(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = request.uri().path().to_string();
    let allow = match &origin {
        Some(_) if PUBLIC_PATHS.contains(&path.as_str()) => Some("*".to_string()),
        Some(origin)
            if CLIENT_PATHS.contains(&path.as_str())
                && app.config().cors_origins.contains(origin) =>
        {
            Some(origin.clone())
        }
        _ => None,
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    response
}
