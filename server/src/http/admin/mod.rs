//! The admin API under `/admin/v1`: what the `idflow` CLI and the console call on a running
//! server, described by an OpenAPI document at `/admin/v1/openapi.json`.
//!
//! **Who may call.** An administrator with HTTP Basic (as the CLI does, from
//! `IDFLOW_ADMIN_USER` and `IDFLOW_ADMIN_PASSWORD`), or with an access token from one of their
//! sign-ins that carries the `admin` scope (a token an ordinary application got for them does
//! not open the admin API); a user's privileges are those of their roles, and `*` holds them
//! all. A client with a `client_credentials` token holds the privileges among its token's
//! scopes that its configuration allows (never `*`).
//!
//! **What each route needs.** [`routes::ROUTES`] names the privilege of every route; the
//! [`guard`] middleware enforces it before any handler runs, so a route without an entry is
//! refused. Handlers add the rules no single privilege expresses: nobody changes a user whose
//! privileges they do not all hold, and nobody grants a privilege they lack.
//!
//! Answers are JSON; errors are `{"error": CODE, "detail": TEXT}`. Every change is audited.
//!
//! One module per resource: `users`, `roles`, `sessions`, `config`, `flows`, `audit`,
//! `provisioning`, `reload`; `routes` is the table and the OpenAPI document.

pub mod audit;
pub mod config;
pub mod flows;
pub mod provisioning;
pub mod reload;
pub mod roles;
pub mod routes;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::{App, now};
use crate::http::AppState;
use crate::http::basic::{self, BasicRefusal};
use crate::store::{User, Write};

/// The scope a user's access token needs to call the admin API.
pub const ADMIN_SCOPE: &str = "admin";

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

    /// 400: the request says something that cannot be done.
    pub fn bad(detail: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 403: authenticated, but not allowed this.
    pub fn forbidden(detail: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 409: taken, or changed meanwhile.
    pub fn conflict(detail: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// The status it answers with.
    pub fn status_code(&self) -> StatusCode {
        self.status
    }

    fn unauthorized(detail: &str) -> AdminError {
        AdminError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    fn invalid_token(detail: &str) -> AdminError {
        AdminError::new(StatusCode::UNAUTHORIZED, "invalid_token", detail)
    }

    /// 500, with the detail in the log only.
    pub fn internal(detail: impl std::fmt::Display) -> AdminError {
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
            // A refused token is answered for tokens only: offering Basic would make a
            // browser running the console ask for a password and then send it on its own.
            let challenge = if self.code == "invalid_token" {
                "Bearer realm=\"idflow admin\", error=\"invalid_token\""
            } else {
                "Basic realm=\"idflow admin\", Bearer realm=\"idflow admin\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A store error as an admin error: a lost race is a conflict, the rest a 500.
pub fn store_error(error: crate::store::StoreError) -> AdminError {
    match error {
        crate::store::StoreError::Conflict(why) => AdminError::conflict(why),
        crate::store::StoreError::Failed(why)
            if why.contains("taken") || why.contains("another user's") =>
        {
            AdminError::conflict(why)
        }
        other => AdminError::internal(other),
    }
}

/// An answer: a status and a JSON body.
pub type Answer = Result<(StatusCode, Json<Value>), AdminError>;

/// An authenticated caller and what they may do.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The user, when a user calls (not a client).
    pub user: Option<User>,
    /// Who, for the audit log: a user id or `client:ID`.
    pub actor: String,
    /// The privileges held.
    pub privileges: Vec<String>,
    /// The caller's address.
    pub ip: String,
}

impl Admin {
    /// Whether the caller holds `privilege`.
    pub fn holds(&self, privilege: &str) -> bool {
        basic::grants(&self.privileges, privilege)
    }

    /// Whether the caller holds every one of `privileges` (`*` among them only with `*`).
    pub fn holds_all(&self, privileges: &[String]) -> bool {
        self.privileges.iter().any(|p| p == "*")
            || privileges
                .iter()
                .all(|p| p != "*" && self.privileges.contains(p))
    }

    /// Refuses a change to `user` unless the caller holds every privilege the user's roles
    /// give: a user manager cannot reset an administrator's password.
    pub fn may_manage(&self, app: &App, user: &User) -> Result<(), AdminError> {
        let theirs = basic::privileges(app, user).map_err(AdminError::internal)?;
        let reserved = user.username.eq_ignore_ascii_case(crate::app::ADMIN);
        if self.holds_all(&theirs) && (!reserved || self.holds("*")) {
            Ok(())
        } else {
            Err(AdminError::forbidden(format!(
                "`{}` holds privileges you do not",
                user.username
            )))
        }
    }

    /// Refuses a change to the caller's own credentials: those go through the account page,
    /// which asks for the current password and a recent sign-in (an admin token or password
    /// must not be enough to take over the account behind it).
    pub fn not_self(&self, user: &User, what: &str) -> Result<(), AdminError> {
        if self.user.as_ref().is_some_and(|me| me.id == user.id) {
            Err(AdminError::forbidden(format!(
                "change your own {what} on your account page"
            )))
        } else {
            Ok(())
        }
    }

    /// An audit entry for a change this caller made to `subject`.
    pub fn audited(&self, event: &str, subject: &str, detail: Value) -> Write {
        Write::Audit(crate::store::AuditEvent {
            time: now(),
            event: event.into(),
            actor: self.actor.clone(),
            subject: subject.into(),
            ip: self.ip.clone(),
            detail,
        })
    }
}

/// The caller, from Basic credentials or an access token.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    caller: &std::net::SocketAddr,
    now: u64,
) -> Result<Admin, AdminError> {
    let ip = caller.ip().to_string();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("Bearer") {
        return bearer(app, credentials.trim(), ip, now);
    }
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(AdminError::unauthorized(
            "basic credentials or a bearer token are required",
        ));
    }
    let admit = |user: &User| basic::privileges(app, user).map(|held| !held.is_empty());
    let user = match basic::verify(app, credentials, &ip, now, admit).await {
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
    };
    let privileges = basic::privileges(app, &user).map_err(AdminError::internal)?;
    Ok(Admin {
        actor: user.id.clone(),
        user: Some(user),
        privileges,
        ip,
    })
}

/// A bearer token: a user's with the `admin` scope, or a client's with privilege scopes; the
/// client still configured with the scopes the token carries (one narrowed since loses them).
fn bearer(app: &App, token: &str, ip: String, now: u64) -> Result<Admin, AdminError> {
    let claims = crate::http::userinfo::validate_access_token(app, token, now)
        .map_err(AdminError::invalid_token)?;
    let client_id = claims["client_id"].as_str().unwrap_or_default();
    let config = app.config();
    let allowed = config
        .applications
        .get(client_id)
        .map(|c| c.scopes.clone())
        .unwrap_or_default();
    let scopes: Vec<String> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| allowed.iter().any(|a| a == s))
        .map(String::from)
        .collect();
    let subject = claims["sub"].as_str().unwrap_or_default();
    if subject == client_id {
        let privileges: Vec<String> = scopes
            .into_iter()
            .filter(|s| routes::PRIVILEGES.contains(&s.as_str()))
            .collect();
        if privileges.is_empty() {
            return Err(AdminError::invalid_token(
                "the client's token carries no admin privilege",
            ));
        }
        return Ok(Admin {
            user: None,
            actor: format!("client:{client_id}"),
            privileges,
            ip,
        });
    }
    if !scopes.iter().any(|s| s == ADMIN_SCOPE) {
        return Err(AdminError::invalid_token(
            "the token was not issued for the admin API (it lacks the `admin` scope)",
        ));
    }
    let user = app
        .store
        .user(subject)
        .map_err(AdminError::internal)?
        .filter(|u| !u.disabled && !u.locked_at(now))
        .ok_or_else(|| AdminError::invalid_token("the token's user is not active"))?;
    // The token lives only as long as the sign-in it came from: signing out, a password
    // change or an administrator ending the session takes the console's access with it. (A
    // scan of the sessions: admin calls are few; an index by `sid` is for when they are not.)
    if let Some(sid) = claims["sid"].as_str().filter(|s| !s.is_empty()) {
        let live = app
            .store
            .sessions()
            .map_err(AdminError::internal)?
            .iter()
            .any(|s| s.sid == sid && s.user == user.id && s.expires > now);
        if !live {
            return Err(AdminError::invalid_token(
                "the sign-in this token came from has ended",
            ));
        }
    }
    let privileges = basic::privileges(app, &user).map_err(AdminError::internal)?;
    Ok(Admin {
        actor: user.id.clone(),
        user: Some(user),
        privileges,
        ip,
    })
}

/// The middleware on every admin route: authenticates the caller, finds the route's privilege
/// in [`routes::ROUTES`] (a route not listed is refused), requires it, and hands the
/// [`Admin`] to the handler.
pub async fn guard(
    State(app): AppState,
    ConnectInfo(caller): ConnectInfo<std::net::SocketAddr>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or_default();
    let method = request.method().as_str().to_string();
    let Some(route) = routes::find(&method, path) else {
        return AdminError::forbidden("this route is not open to anyone").into_response();
    };
    let Some(privilege) = route.privilege else {
        return next.run(request).await;
    };
    let admin = match authenticate(&app, request.headers(), &caller, now()).await {
        Ok(admin) => admin,
        Err(error) => return error.into_response(),
    };
    if !admin.holds(privilege) {
        return AdminError::forbidden(format!("this needs the `{privilege}` privilege"))
            .into_response();
    }
    // A POST must say it is JSON. A browser sends a cross-site form (which may carry
    // remembered Basic credentials) only as a form or text/plain, never as JSON without a
    // preflight, which the admin API does not answer; PUT, PATCH and DELETE always need one.
    let form_like = method == "POST";
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if form_like && !json {
        return AdminError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a change is sent as application/json (with `{}` when it has nothing to say)",
        )
        .into_response();
    }
    request.extensions_mut().insert(Arc::new(admin));
    let mut response = next.run(request).await;
    // Users, sessions and the audit log are not for any cache.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Commits a batch off the async workers.
pub async fn commit(app: &Arc<App>, batch: Vec<Write>) -> Result<(), AdminError> {
    let store = Arc::clone(&app.store);
    crate::http::blocking(move || store.commit(batch))
        .await
        .map_err(AdminError::internal)?
        .map_err(store_error)
}

/// The user with id `id`.
pub fn load_user(app: &App, id: &str) -> Result<User, AdminError> {
    app.store
        .user(id)
        .map_err(AdminError::internal)?
        .ok_or_else(|| AdminError::not_found(format!("no user `{id}`")))
}

/// A JSON body, or 400.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| AdminError::bad(format!("the body: {e}")))
}
