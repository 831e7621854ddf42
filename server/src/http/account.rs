//! The account page at `/`: who is signed in, their second factors (listed, removable; a
//! passkey or an authenticator app can be added), their password (changed with the current one), their sessions (the
//! others can be ended), and a way to sign in or out without an application.
//!
//! Every change is a POST carrying the session's CSRF token and is audited.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::authorize::{Requested, current_session, server_error, start_login};
use super::params::Params;
use super::{AppState, blocking};
use crate::app::{App, now};
use crate::crypto::constant_time_eq;
use crate::store::{FactorKind, Session, StoreError, Write};

/// Whether the session's sign-in is recent enough to change factors (`[mfa] reauth_seconds`).
fn recent(app: &App, session: &Session, now: u64) -> bool {
    now.saturating_sub(session.auth_time) <= app.config().mfa.reauth_seconds
}

#[derive(Serialize)]
struct FactorView {
    id: String,
    kind: &'static str,
    label: String,
    detail: String,
}

/// `GET /`; `GET /?setup=totp` also shows the set-up of an authenticator app.
pub async fn page(State(app): AppState, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let session = match current_session(&app, &headers, now()) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let params = Params::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let setup_totp = params.get("setup") == Some("totp");
    render_page(&app, session.as_ref(), None, setup_totp).await
}

async fn render(app: &Arc<App>, session: Option<&Session>, message: Option<&str>) -> Response {
    render_page(app, session, message, false).await
}

/// The account page; `setup_totp` adds an authenticator app's set-up (QR code, key and
/// recovery codes, kept in a challenge of the session so a reload shows the same ones) when
/// the sign-in is recent and the user has no app yet.
async fn render_page(
    app: &Arc<App>,
    session: Option<&Session>,
    message: Option<&str>,
    setup_totp: bool,
) -> Response {
    let now = now();
    let Some(session) = session else {
        return app.pages.render(
            StatusCode::OK,
            "account.html",
            serde_json::json!({ "user": null }),
        );
    };
    let store = app.store.as_ref();
    let user = match store.user(&session.user) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return app.pages.render(
                StatusCode::OK,
                "account.html",
                serde_json::json!({ "user": null }),
            );
        }
        Err(error) => return server_error(app, &error),
    };
    let factors = match store.factors(&user.id) {
        Ok(factors) => factors,
        Err(error) => return server_error(app, &error),
    };
    let has_totp = factors.iter().any(|f| f.kind == FactorKind::Totp);
    let factors: Vec<FactorView> = factors
        .into_iter()
        .map(|f| FactorView {
            detail: match f.kind {
                FactorKind::RecoveryCodes => format!("{} unused", f.code_hashes.len()),
                _ if f.last_used > 0 => "used before".into(),
                _ => "not used yet".into(),
            },
            id: f.id,
            kind: f.kind.authenticator(),
            label: f.label,
        })
        .collect();
    let registration = recent(app, session, now).then(|| {
        crate::mfa::passkey::start_registration(
            &app.mfa,
            store,
            &session.key,
            &user,
            now,
            app.config().tokens.login_seconds,
        )
    });
    let options = match registration {
        None => None,
        Some(registration) => match registration {
            Ok((options, write)) => {
                let store = Arc::clone(&app.store);
                match blocking(move || store.commit_unflushed(vec![write])).await {
                    Ok(Ok(())) => Some(super::login::script_json(&options)),
                    _ => None,
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot start a passkey registration");
                None
            }
        },
    };
    let totp = if setup_totp && !has_totp && recent(app, session, now) {
        match crate::mfa::totp::enrollment(
            &app.mfa,
            store,
            &session.key,
            &user,
            now,
            app.config().tokens.login_seconds,
        ) {
            Ok((view, write)) => {
                let store = Arc::clone(&app.store);
                let stored = blocking(move || store.commit_unflushed(write.into_iter().collect()));
                match stored.await {
                    Ok(Ok(())) => Some(view),
                    Ok(Err(error)) => return server_error(app, &error),
                    Err(error) => return server_error(app, &error),
                }
            }
            Err(error) => return server_error(app, &error),
        }
    } else {
        None
    };
    let sessions = match blocking({
        let store = Arc::clone(&app.store);
        move || store.sessions()
    })
    .await
    {
        Ok(Ok(all)) => all,
        Ok(Err(error)) => return server_error(app, &error),
        Err(error) => return server_error(app, &error),
    };
    let mut sessions: Vec<SessionView> = sessions
        .into_iter()
        .filter(|s| s.user == user.id && s.expires > now)
        .map(|s| SessionView {
            current: s.key == session.key,
            signed_in: idflow_saml::xml::instant(s.auth_time),
            methods: s.amr.join(", "),
        })
        .collect();
    sessions.sort_by(|a, b| {
        b.current
            .cmp(&a.current)
            .then(b.signed_in.cmp(&a.signed_in))
    });
    app.pages.render(
        StatusCode::OK,
        "account.html",
        serde_json::json!({
            "user": user.username, "csrf": session.csrf, "factors": factors,
            "passkey_options": options, "message": message, "recent": recent(app, session, now),
            "has_password": user.password_hash.is_some(), "sessions": sessions,
            "can_add_totp": !has_totp, "totp": totp,
        }),
    )
}

#[derive(Serialize)]
struct SessionView {
    current: bool,
    signed_in: String,
    methods: String,
}

/// A POST from the account page: the session and its CSRF token, or the page to answer with.
fn authorized(app: &App, headers: &HeaderMap, params: &Params) -> Result<Session, Response> {
    let session = current_session(app, headers, now())?.ok_or_else(|| {
        app.pages.message(
            StatusCode::UNAUTHORIZED,
            "You are not signed in",
            "Sign in again to change your account.",
        )
    })?;
    let csrf_ok = params
        .get("csrf")
        .is_some_and(|csrf| constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()));
    if !csrf_ok {
        return Err(app.pages.message(
            StatusCode::FORBIDDEN,
            "The form was not valid",
            "The form's security token is missing or wrong. Go back, reload the page and try again.",
        ));
    }
    if !recent(app, &session, now()) {
        return Err(app.pages.render(
            StatusCode::FORBIDDEN,
            "message.html",
            serde_json::json!({
                "title": "Sign in again first",
                "message": "Changing how you sign in needs a recent sign-in.",
                "error": true,
                "link": { "href": "/login/start", "text": "Sign in again" },
            }),
        ));
    }
    Ok(session)
}

/// The session of an account-page POST ([`authorized`]) and its user as stored now, or the
/// page to answer with.
async fn signed_in_user(
    app: &Arc<App>,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(Session, crate::store::User), Response> {
    let session = authorized(app, headers, params)?;
    match app.store.user(&session.user) {
        Ok(Some(user)) => Ok((session, user)),
        Ok(None) => Err(render(app, None, None).await),
        Err(error) => Err(server_error(app, &error)),
    }
}

/// An audit entry for a change the signed-in user made to their own account.
fn audit_change(event: &str, user: &str, addr: SocketAddr, detail: serde_json::Value) -> Write {
    crate::effects::audit(event, user, &addr.ip().to_string(), now(), detail)
}

/// `POST /account/passkeys`: finish registering a passkey started on the account page.
pub async fn add_passkey(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body).unwrap_or_default();
    let (session, user) = match signed_in_user(&app, &headers, &params).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let checked = crate::mfa::passkey::finish_registration(
        &app.mfa,
        app.store.as_ref(),
        &session.key,
        &user,
        params.get("credential").unwrap_or_default(),
        params.get("label").unwrap_or_default(),
        now(),
    );
    match checked {
        Ok(crate::mfa::Checked::Passed(mut writes)) => {
            writes.push(audit_change(
                "factor.added",
                &user.id,
                addr,
                serde_json::json!({ "kind": "passkey" }),
            ));
            apply(&app, writes).await
        }
        Ok(crate::mfa::Checked::Refused(reason)) => {
            let mut response = render(&app, Some(&session), Some(&reason)).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
        Err(error) => server_error(&app, &error),
    }
}

/// `POST /account/totp`: finish setting up an authenticator app with its first code.
pub async fn add_totp(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body).unwrap_or_default();
    let (session, user) = match signed_in_user(&app, &headers, &params).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let has_totp = match app.store.factors(&user.id) {
        Ok(factors) => factors.iter().any(|f| f.kind == FactorKind::Totp),
        Err(error) => return server_error(&app, &error),
    };
    if has_totp {
        return render(
            &app,
            Some(&session),
            Some("An authenticator app is set up already."),
        )
        .await;
    }
    let checked = crate::mfa::totp::finish_enrollment(
        &app.mfa,
        app.store.as_ref(),
        &session.key,
        &user,
        params.get("code").unwrap_or_default().trim(),
        now(),
    );
    match checked {
        Ok(crate::mfa::Checked::Passed(mut writes)) => {
            writes.push(audit_change(
                "factor.added",
                &user.id,
                addr,
                serde_json::json!({ "kind": "totp" }),
            ));
            apply(&app, writes).await
        }
        Ok(crate::mfa::Checked::Refused(reason)) => {
            let message = super::login::sentence(&reason);
            let mut response = render_page(&app, Some(&session), Some(&message), true).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
        Err(error) => server_error(&app, &error),
    }
}

/// `POST /account/factors/remove`: remove one of the signed-in user's factors.
pub async fn remove_factor(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body).unwrap_or_default();
    let session = match authorized(&app, &headers, &params) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let id = params.get("factor").unwrap_or_default().to_string();
    let owned = match app.store.factors(&session.user) {
        Ok(factors) => factors.into_iter().find(|f| f.id == id),
        Err(error) => return server_error(&app, &error),
    };
    let Some(factor) = owned else {
        return render(
            &app,
            Some(&session),
            Some("That factor is not yours or is already gone."),
        )
        .await;
    };
    let writes = vec![
        Write::DeleteFactor {
            user: session.user.clone(),
            id: factor.id.clone(),
        },
        Write::EndUserSessions {
            user: session.user.clone(),
            except: Some(session.key.clone()),
        },
        audit_change(
            "factor.removed",
            &session.user,
            addr,
            serde_json::json!({ "kind": factor.kind.authenticator(), "label": factor.label }),
        ),
    ];
    apply(&app, writes).await
}

/// `POST /account/password`: a new password, given the current one (a session left open on a
/// shared computer must not be enough to take the account). The user's other sessions and
/// refresh tokens end.
pub async fn change_password(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body).unwrap_or_default();
    let (session, user) = match signed_in_user(&app, &headers, &params).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let ip = addr.ip().to_string();
    let key = user.username.to_lowercase();
    let refuse = |message: &'static str| {
        let app = Arc::clone(&app);
        let session = session.clone();
        async move {
            let mut response = render(&app, Some(&session), Some(message)).await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
    };
    if app.throttle.check(&ip, Some(&key), now()).is_err() {
        return refuse("Too many wrong passwords. Wait a few minutes and try again.").await;
    }
    let current = params.get("current").unwrap_or_default().to_string();
    let new = params.get("new").unwrap_or_default().to_string();
    if new != params.get("confirm").unwrap_or_default() {
        return refuse("The two new passwords are not the same.").await;
    }
    if user.password_hash.is_some() {
        let verified = app
            .password_pool
            .verify(current, user.password_hash.clone())
            .await;
        if !verified {
            app.throttle.failed(&ip, Some(&key), now());
            return refuse("The current password is not right.").await;
        }
    }
    let hasher = app.passwords.clone();
    let hash = match blocking(move || hasher.hash(&new)).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(why)) => {
            let mut response = render(
                &app,
                Some(&session),
                Some(&format!("The new password is not acceptable: {why}")),
            )
            .await;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return response;
        }
        Err(error) => return server_error(&app, &error),
    };
    let mut changed = user.clone();
    changed.password_hash = Some(hash);
    let writes = vec![
        audit_change(
            "user.password_changed",
            &user.id,
            addr,
            serde_json::Value::Null,
        ),
        Write::EndUserSessions {
            user: user.id.clone(),
            except: Some(session.key.clone()),
        },
        Write::ReplaceUser {
            user: changed,
            expected: Box::new(user),
        },
    ];
    apply(&app, writes).await
}

/// `POST /account/sessions/end-others`: sign out everywhere else (and revoke the refresh
/// tokens applications hold for this user).
pub async fn end_other_sessions(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body).unwrap_or_default();
    let session = match authorized(&app, &headers, &params) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let writes = vec![
        audit_change(
            "session.end_others",
            &session.user,
            addr,
            serde_json::Value::Null,
        ),
        Write::EndUserSessions {
            user: session.user.clone(),
            except: Some(session.key.clone()),
        },
    ];
    apply(&app, writes).await
}

/// Commits an account change and goes back to the account page; a change another request
/// made first (a passkey answer submitted twice) is a 409 page, not a server error.
async fn apply(app: &Arc<App>, writes: Vec<Write>) -> Response {
    let store = Arc::clone(&app.store);
    match blocking(move || store.commit(writes)).await {
        Ok(Ok(())) => Redirect::to("/").into_response(),
        Ok(Err(StoreError::Conflict(_))) => app.pages.message(
            StatusCode::CONFLICT,
            "This was already done",
            "The change was already made in another window. Reload the account page.",
        ),
        Ok(Err(error)) => server_error(app, &error),
        Err(error) => server_error(app, &error),
    }
}

/// `GET /login/start`: a login on the default flow, ending at the account page.
pub async fn start_login_page(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    start_login(&app, Requested::Account, addr, &headers, now(), None, false).await
}
