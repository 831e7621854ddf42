//! SCIM 2.0 in (RFC 7644) at `/scim/v2`: discovery; Users and Groups (list with filter, sort,
//! pagination and attribute selection; search; read; create; replace; PATCH; delete) with
//! ETags; and Bulk. Groups are roles (see `groups`).
//!
//! Callers authenticate with an access token from `client_credentials` carrying the `scim`
//! scope, or with HTTP Basic as a user holding the `scim` privilege. Every answer, errors
//! included, is `application/scim+json`; every change is audited.
//!
//! One module per part: `resource` (a user as a SCIM resource and back), `users`, `groups`,
//! `bulk`, `discovery`.

pub mod bulk;
pub mod discovery;
pub mod groups;
pub mod resource;
pub mod users;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idflow_scim::ScimError;
use serde_json::Value;

use crate::app::App;
use crate::http::basic::BasicRefusal;

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
    format!("{}/scim/v2", app.config().issuer)
}

/// Who is calling: a client with the `scim` scope, or a user with the `scim` privilege.
///
/// Basic credentials are a password guess like any other: the address and name are throttled
/// as at the login page, and only a user whose roles give `scim` can pass. Whether a name
/// exists, lacks the privilege or has another password, the answer is the same 401, after the
/// same argon2id work.
pub async fn authenticate(
    app: &Arc<App>,
    headers: &HeaderMap,
    caller: &std::net::SocketAddr,
    now: u64,
) -> Result<String, ScimError> {
    let ip = caller.ip().to_string();
    let ip = ip.as_str();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let missing = || ScimError::unauthorized("a bearer token or basic credentials are required");
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("Bearer") {
        return client(app, credentials.trim(), now);
    }
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(missing());
    }
    let admit = |user: &crate::store::User| {
        crate::http::basic::privileges(app, user)
            .map(|held| crate::http::basic::grants(&held, PRIVILEGE))
    };
    match crate::http::basic::verify(app, credentials, ip, now, admit).await {
        Ok(user) => Ok(user.id),
        Err(BasicRefusal::Missing) => Err(missing()),
        Err(BasicRefusal::Throttled) => Err(ScimError::too_many_requests(
            "too many failed attempts; try again later",
        )),
        Err(BasicRefusal::Invalid) => Err(ScimError::unauthorized("the credentials are not valid")),
        Err(BasicRefusal::Internal(why)) => Err(ScimError::new_internal(why)),
    }
}

/// A bearer token's client: its token valid, carrying the `scim` scope, and the client still
/// configured with that scope (a client removed or narrowed since loses access at once).
fn client(app: &App, token: &str, now: u64) -> Result<String, ScimError> {
    let claims = crate::http::userinfo::validate_access_token(app, token, now)
        .map_err(ScimError::unauthorized)?;
    let scoped = claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|scope| scope == PRIVILEGE));
    let client_id = claims["client_id"].as_str().unwrap_or_default();
    let configured = app
        .config()
        .applications
        .get(client_id)
        .is_some_and(|c| c.scopes.iter().any(|s| s == PRIVILEGE));
    if !scoped || !configured || claims["sub"].as_str() != Some(client_id) {
        return Err(ScimError::forbidden(
            "the token does not carry the `scim` scope of a client allowed it",
        ));
    }
    Ok(format!("client:{client_id}"))
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
