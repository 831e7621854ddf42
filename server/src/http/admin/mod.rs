//! The admin API under `/admin/v1`: what the `idflow` CLI and the console call on a running
//! server. Callers authenticate as a user, with HTTP Basic (as the CLI does, with
//! `IDFLOW_ADMIN_USER` and `IDFLOW_ADMIN_PASSWORD`) or with an access token from one of their
//! sign-ins; each route names the privilege it needs, and a role with `*` holds them all.
//! Answers and errors are JSON (`{"error": ..., "detail": ...}` for errors).
//!
//! One module per resource: `reload`.

pub mod reload;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::http::basic::{self, BasicRefusal};
use crate::store::User;

/// The privilege reloading the configuration and flows needs.
pub const RELOAD: &str = "config:reload";

/// An admin API error: a status, a short code and a sentence.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl AdminError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> AdminError {
        AdminError {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn unauthorized(detail: &str) -> AdminError {
        AdminError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    fn internal(detail: impl std::fmt::Display) -> AdminError {
        tracing::error!(%detail, "admin API request failed");
        AdminError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.code, "detail": self.detail })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"idflow admin\", Bearer realm=\"idflow admin\"",
                ),
            );
        }
        response
    }
}

/// An authenticated administrator and what their roles let them do.
pub struct Admin {
    /// Who.
    pub user: User,
    /// The privileges their roles give.
    pub privileges: Vec<String>,
}

impl Admin {
    /// Refuses (403) unless the caller holds `privilege`.
    pub fn require(&self, privilege: &str) -> Result<(), AdminError> {
        if basic::grants(&self.privileges, privilege) {
            Ok(())
        } else {
            Err(AdminError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the `{privilege}` privilege"),
            ))
        }
    }
}

/// The caller, authenticated with Basic credentials or a user's access token. Basic is
/// throttled like the login page; only users whose roles give some privilege can pass it.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    caller: &std::net::SocketAddr,
    now: u64,
) -> Result<Admin, AdminError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    let user = if scheme.eq_ignore_ascii_case("Bearer") {
        let claims = crate::http::userinfo::validate_access_token(app, credentials.trim(), now)
            .map_err(AdminError::unauthorized)?;
        let subject = claims["sub"].as_str().unwrap_or_default();
        app.store
            .user(subject)
            .map_err(AdminError::internal)?
            .filter(|u| !u.disabled && !u.locked_at(now))
            .ok_or_else(|| AdminError::unauthorized("the token is not a user's"))?
    } else if scheme.eq_ignore_ascii_case("Basic") {
        let ip = caller.ip().to_string();
        let admit = |user: &User| basic::privileges(app, user).map(|held| !held.is_empty());
        match basic::verify(app, credentials, &ip, now, admit).await {
            Ok(user) => user,
            Err(BasicRefusal::Missing) => {
                return Err(AdminError::unauthorized("basic credentials do not decode"));
            }
            Err(BasicRefusal::Throttled) => {
                return Err(AdminError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many failed attempts; try again later",
                ));
            }
            Err(BasicRefusal::Invalid) => {
                return Err(AdminError::unauthorized("the credentials are not valid"));
            }
            Err(BasicRefusal::Internal(why)) => return Err(AdminError::internal(why)),
        }
    } else {
        return Err(AdminError::unauthorized(
            "basic credentials or a bearer token are required",
        ));
    };
    let privileges = basic::privileges(app, &user).map_err(AdminError::internal)?;
    Ok(Admin { user, privileges })
}
