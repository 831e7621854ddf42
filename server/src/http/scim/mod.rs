//! SCIM 2.0 in (RFC 7644) at `/scim/v2`: discovery, and Users (list with filter, sort,
//! pagination and attribute selection; search; read; create; replace; PATCH; delete) with
//! ETags. Groups are not served yet.
//!
//! Callers authenticate with an access token from `client_credentials` carrying the `scim`
//! scope, or with HTTP Basic as a user holding the `scim` privilege. Every answer, errors
//! included, is `application/scim+json`; every change is audited.
//!
//! One module per part: `resource` (a user as a SCIM resource and back), `users`,
//! `discovery`.

pub mod discovery;
pub mod resource;
pub mod users;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use idflow_scim::ScimError;
use serde_json::Value;

use crate::app::App;

/// The privilege (and the client_credentials scope) SCIM requires.
pub const PRIVILEGE: &str = "scim";

/// A SCIM answer: the resource or the error, as `application/scim+json`.
pub struct Scim(pub Result<(StatusCode, Value), ScimError>);

impl IntoResponse for Scim {
    fn into_response(self) -> Response {
        let (status, body, challenge) = match self.0 {
            Ok((status, body)) => (status, body, false),
            Err(error) => {
                if error.status >= 500 {
                    tracing::error!(detail = error.detail, "SCIM request failed");
                }
                let challenge = error.status == 401;
                let mut body = error.body();
                if error.status >= 500 {
                    body["detail"] = "the server could not complete the request".into();
                }
                let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
                (status, body, challenge)
            }
        };
        let etag = body["meta"]["version"].as_str().map(String::from);
        let location = (status == StatusCode::CREATED)
            .then(|| body["meta"]["location"].as_str().map(String::from))
            .flatten();
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let mut response = (status, text).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in [(header::ETAG, etag), (header::LOCATION, location)] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        if challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\", Basic realm=\"scim\""),
            );
        }
        response
    }
}

/// The base URL of the SCIM endpoints (for `meta.location`).
pub fn base(app: &App) -> String {
    format!("{}/scim/v2", app.config.issuer)
}

/// Who is calling: a client with the `scim` scope, or a user with the `scim` privilege.
pub async fn authenticate(
    app: &Arc<App>,
    headers: &HeaderMap,
    now: u64,
) -> Result<String, ScimError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let missing = || ScimError::unauthorized("a bearer token or basic credentials are required");
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        let claims = crate::http::userinfo::validate_access_token(app, token.trim(), now)
            .map_err(ScimError::unauthorized)?;
        let scoped = claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|scope| scope == PRIVILEGE));
        if !scoped {
            return Err(ScimError::forbidden("the token lacks the `scim` scope"));
        }
        let caller = claims["client_id"]
            .as_str()
            .or(claims["sub"].as_str())
            .unwrap_or_default();
        return Ok(format!("client:{caller}"));
    }
    let Some(encoded) = authorization.strip_prefix("Basic ") else {
        return Err(missing());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(missing)?;
    let (name, password) = decoded.split_once(':').ok_or_else(missing)?;
    let user = app
        .store
        .user_by_login(name)
        .map_err(|e| ScimError::new_internal(e.to_string()))?
        .filter(|u| !u.disabled && !u.locked_at(now));
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    // The decoy hash runs when there is no such user: the answer takes as long either way.
    let verified = app.password_pool.verify(password.to_string(), hash).await;
    let Some(user) = user.filter(|_| verified) else {
        return Err(ScimError::unauthorized("the credentials are not valid"));
    };
    let mut privileged = false;
    for role in &user.roles {
        let found = app
            .store
            .role(role)
            .map_err(|e| ScimError::new_internal(e.to_string()))?;
        privileged |=
            found.is_some_and(|r| r.privileges.iter().any(|p| p == "*" || p == PRIVILEGE));
    }
    if !privileged {
        return Err(ScimError::forbidden("the user lacks the `scim` privilege"));
    }
    Ok(user.id)
}

/// `/scim/v2/*` that names nothing, and methods a resource does not take.
pub async fn not_found() -> Scim {
    Scim(Err(ScimError::not_found("no such SCIM endpoint")))
}

/// A method the endpoint does not take.
pub async fn method_not_allowed() -> Scim {
    Scim(Err(ScimError::method_not_allowed(
        "this endpoint does not take this method",
    )))
}
