//! OAuth 2.0 error responses: JSON bodies from the token, introspection and revocation
//! endpoints (RFC 6749 §5.2), and error redirects from the authorization endpoint (§4.1.2.1).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

/// An OAuth error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code, e.g. `invalid_grant`.
    pub error: &'static str,
    /// A human-readable description.
    pub description: String,
    /// Send `WWW-Authenticate: Basic` (the client tried HTTP Basic authentication).
    pub basic_challenge: bool,
}

impl OAuthError {
    /// A 400 error.
    pub fn bad(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::bad("invalid_request", description)
    }

    /// `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::bad("invalid_grant", description)
    }

    /// `invalid_client` (401).
    pub fn invalid_client(description: impl Into<String>, basic_challenge: bool) -> OAuthError {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
            basic_challenge,
        }
    }

    /// `server_error` (500), for store failures; the detail goes to the log, not the client.
    pub fn server(detail: impl std::fmt::Display) -> OAuthError {
        tracing::error!(%detail, "request failed");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the server could not complete the request".into(),
            basic_challenge: false,
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(error: crate::store::StoreError) -> Self {
        OAuthError::server(error)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"idflow\""),
            );
        }
        response
    }
}

/// A redirect to a validated redirect URI with `params` added to its query.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        // Redirect URIs are validated when the configuration loads; this cannot happen.
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
    }
    let mut response = Redirect::to(url.as_str()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An authorization error sent back to the client (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
pub fn redirect_error(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
    issuer: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer));
    redirect_with(redirect_uri, &params)
}
