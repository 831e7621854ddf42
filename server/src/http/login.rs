//! The login pages: render whatever the engine's output asks for, turn a submitted form into
//! the engine's input, apply the step's effects with the run in one store transaction, and
//! finish the protocol when the run completes or is denied.
//!
//! A login is bound to the browser that started it (a cookie holding its handle) and every form
//! carries the login's CSRF token; both are checked before anything else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use idflow_dsl::ir::AuthOption;
use idflow_engine::{Effect, Input, Output};
use serde::Serialize;

use super::authorize::{issue_code, server_error, to_login_page};
use super::oauth_error::redirect_error;
use super::params::Params;
use super::{AppState, blocking, cookies};
use crate::app::{App, now};
use crate::crypto::{constant_time_eq, random_token};
use crate::store::{AuditEvent, Login, Session, StoreError, Write, token_key};

#[derive(Serialize)]
struct FieldView {
    name: &'static str,
    label: &'static str,
    r#type: &'static str,
    autocomplete: &'static str,
    value: String,
}

#[derive(Serialize)]
struct OptionView {
    value: String,
    label: String,
    fields: Vec<FieldView>,
}

fn field(name: &str, prefill: &str) -> Option<FieldView> {
    let (label, kind, autocomplete) = match name {
        "username" => ("Username or email", "text", "username"),
        "identifier" => ("Username or email", "text", "username"),
        "password" => ("Password", "password", "current-password"),
        "code" => ("Code", "text", "one-time-code"),
        _ => return None,
    };
    let value = if kind == "password" {
        String::new()
    } else {
        prefill.to_string()
    };
    let name = match name {
        "username" => "username",
        "identifier" => "identifier",
        "password" => "password",
        _ => "code",
    };
    Some(FieldView {
        name,
        label,
        r#type: kind,
        autocomplete,
        value,
    })
}

fn expired(app: &App) -> Response {
    app.pages.message(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "Return to the application and start signing in again.",
    )
}

/// Loads the login named by `handle` and checks that this browser started it.
fn load(app: &App, headers: &HeaderMap, handle: Option<&str>, now: u64) -> Result<Login, Response> {
    let Some(handle) = handle else {
        return Err(expired(app));
    };
    let login = app
        .store
        .login(&token_key(handle))
        .map_err(|e| server_error(app, &e))?;
    let Some(login) = login.filter(|l| l.expires > now) else {
        return Err(expired(app));
    };
    let bound = cookies::read(headers, cookies::BROWSER).is_some_and(|cookie| {
        constant_time_eq(token_key(&cookie).as_bytes(), login.browser.as_bytes())
    });
    if !bound {
        return Err(app.pages.message(
            StatusCode::FORBIDDEN,
            "This sign-in belongs to another browser",
            "Return to the application and start signing in again from this browser.",
        ));
    }
    Ok(login)
}

/// `GET /login?login=HANDLE`: the page for the login's current output.
pub async fn page(State(app): AppState, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let handle = params.get("login").unwrap_or_default();
    match load(&app, &headers, Some(handle), now()) {
        Ok(login) => render(&app, handle, &login, None),
        Err(response) => response,
    }
}

fn render(app: &App, handle: &str, login: &Login, override_error: Option<&str>) -> Response {
    match &login.output {
        Output::Prompt {
            options,
            attempts_left,
            error,
            ..
        } => {
            let prefill = login
                .run
                .user
                .as_ref()
                .map(|u| u.username.clone())
                .or_else(|| login.authorize.as_ref().and_then(|a| a.login_hint.clone()))
                .unwrap_or_default();
            let options: Vec<OptionView> = options
                .iter()
                .map(|o| OptionView {
                    value: o.option.to_string(),
                    label: o.hint.label.clone(),
                    fields: o
                        .hint
                        .fields
                        .iter()
                        .filter_map(|f| field(f, &prefill))
                        .collect(),
                })
                .collect();
            let application = login
                .authorize
                .as_ref()
                .and_then(|a| app.config.applications.get(&a.client_id))
                .map(|c| c.name.clone());
            let error = override_error.map(String::from).or_else(|| {
                error
                    .as_ref()
                    .map(|_| "That did not work. Check what you entered and try again.".to_string())
            });
            app.pages.render(
                if error.is_some() {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::OK
                },
                "login.html",
                serde_json::json!({
                    "handle": handle, "csrf": login.csrf, "options": options,
                    "error": error, "application": application, "attempts_left": attempts_left,
                }),
            )
        }
        Output::Redirect { idp } | Output::Confirm { idp, .. } => app.pages.message(
            StatusCode::NOT_IMPLEMENTED,
            "Sign-in with this provider is not available",
            &format!("This server cannot sign you in through `{idp}` yet."),
        ),
        Output::Complete { .. } | Output::Denied { .. } => expired(app),
    }
}

/// `POST /login`: one answer to the current prompt.
pub async fn submit(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = now();
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(why) => {
            return app
                .pages
                .message(StatusCode::BAD_REQUEST, "The form was not valid", &why);
        }
    };
    let handle = params.get("login").unwrap_or_default().to_string();
    let login = match load(&app, &headers, Some(&handle), now) {
        Ok(login) => login,
        Err(response) => return response,
    };
    let csrf_ok = params
        .get("csrf")
        .is_some_and(|csrf| constant_time_eq(csrf.as_bytes(), login.csrf.as_bytes()));
    if !csrf_ok {
        return app.pages.message(
            StatusCode::FORBIDDEN,
            "The form was not valid",
            "The form's security token is missing or wrong. Go back, reload the page and try again.",
        );
    }
    let Output::Prompt { options, .. } = &login.output else {
        return render(&app, &handle, &login, None);
    };
    let chosen = params.get("option").unwrap_or_default();
    let input = if chosen == "cancel" {
        Input::Cancel
    } else {
        let Some(option) = options
            .iter()
            .map(|o| &o.option)
            .find(|o| o.to_string() == chosen)
        else {
            return render(
                &app,
                &handle,
                &login,
                Some("Choose one of the ways to sign in shown here."),
            );
        };
        match input_for(&app, &login, option.clone(), &params, now).await {
            Ok(Some(input)) => input,
            Ok(None) => {
                return render(
                    &app,
                    &handle,
                    &login,
                    Some("This way of signing in is not available on this server yet."),
                );
            }
            Err(response) => return response,
        }
    };
    let Some(flow) = crate::app::flow_version(&app, &login.run.version) else {
        return app.pages.message(
            StatusCode::CONFLICT,
            "This sign-in cannot continue",
            "The login flow changed and the version this sign-in started on is gone. Start again.",
        );
    };
    let state = login.run.state.clone();
    let directory = crate::directory::StoreDirectory::new(app.store.as_ref(), now);
    let read_seq = login.seq;
    let mut login = login;
    let step = app.engine.advance(&flow, login.run, input, now, &directory);
    let outcome = match &step.output {
        Output::Prompt { error: Some(_), .. } => "failed",
        Output::Prompt { .. } => "passed",
        Output::Complete { .. } => "complete",
        Output::Denied { .. } => "denied",
        Output::Redirect { .. } | Output::Confirm { .. } => "federated",
    };
    app.metrics.count(
        "idflow_logins_total",
        &[
            ("flow", &flow.ir.flow),
            ("state", &state),
            ("outcome", outcome),
        ],
    );
    login.run = step.run;
    login.output = step.output;
    login.seq = read_seq + 1;
    continue_login(
        &app,
        &handle,
        Some(read_seq),
        login,
        step.effects,
        addr,
        now,
    )
    .await
}

/// Turns the submitted form for `option` into the engine's input; `None` when this server
/// has no authenticator for the option yet.
async fn input_for(
    app: &Arc<App>,
    login: &Login,
    option: AuthOption,
    params: &Params,
    now: u64,
) -> Result<Option<Input>, Response> {
    let AuthOption::Authenticator(name) = &option else {
        return Ok(None);
    };
    match name.as_str() {
        "identifier_first" => {
            let identifier = params
                .get("identifier")
                .unwrap_or_default()
                .trim()
                .to_string();
            let user = app
                .store
                .user_by_login(&identifier)
                .map_err(|e| server_error(app, &e))?;
            Ok(Some(Input::Identify {
                identifier,
                user: user.map(|u| u.view(now)),
            }))
        }
        "password" => {
            // Once the login knows who is signing in (identifier-first, an earlier step), the
            // password is checked against that user only; a username in the form is ignored.
            let user = match &login.run.user {
                Some(known) => app.store.user(&known.id),
                None => {
                    let username = params.get("username").unwrap_or_default().trim();
                    app.store.user_by_login(username)
                }
            }
            .map_err(|e| server_error(app, &e))?;
            let password = params.take("password").unwrap_or_default();
            // A locked or disabled account is checked against the decoy: its answer must not
            // tell whether the password was right.
            let hash = user
                .as_ref()
                .filter(|u| !u.disabled && !u.locked_at(now))
                .and_then(|u| u.password_hash.clone());
            let verified = app
                .password_pool
                .verify(password.clone(), hash.clone())
                .await;
            if let (true, Some(hash), Some(user)) = (verified, hash, &user)
                && app.passwords.needs_rehash(&hash)
            {
                rehash_later(app, user.id.clone(), hash, password);
            }
            let view = user.map(|u| u.view(now));
            Ok(Some(match (verified, view) {
                (true, Some(user)) => Input::Passed { option, user },
                (_, user) => Input::Failed { option, user },
            }))
        }
        _ => Ok(None),
    }
}

/// Re-hashes a verified password made under older argon2id parameters with the current ones,
/// in the background: housekeeping, not part of the login, so it neither delays nor fails it.
fn rehash_later(app: &Arc<App>, user: String, old: String, password: String) {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let hasher = app.passwords.clone();
        let store = Arc::clone(&app.store);
        let done = blocking(move || {
            let new = hasher
                .hash(&password)
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            store.commit(vec![Write::RehashPassword { user, old, new }])
        })
        .await;
        if let Ok(Err(error)) | Err(error) = done {
            tracing::warn!(%error, "password rehash failed");
        }
    });
}

/// The store writes for the engine's effects.
fn effect_writes(effects: Vec<Effect>, ip: &str, now: u64) -> Vec<Write> {
    let mut writes = Vec::new();
    for effect in effects {
        match effect {
            Effect::FailedAttempt {
                user,
                lock_after,
                lock_seconds,
            } => {
                writes.push(audit(
                    "login.failed_attempt",
                    &user,
                    ip,
                    now,
                    serde_json::Value::Null,
                ));
                writes.push(Write::RecordFailure {
                    user,
                    lock_after,
                    lock_seconds: lock_seconds.unwrap_or(0),
                    now,
                });
            }
            Effect::ResetFailures { user } => writes.push(Write::ResetFailures(user)),
            Effect::LockUser { user, seconds } => writes.push(Write::LockUser {
                user,
                until: now.saturating_add(seconds),
            }),
            Effect::AssignRole { user, role } => writes.push(Write::GrantRole { user, role }),
            // Claims reach the tokens through the run's completion.
            Effect::SetClaim { .. } => {}
            // Federation and provisioning land with their own issues; until then a flow that
            // asks for them is recorded, not silently half-applied.
            other @ (Effect::CreateUser { .. }
            | Effect::LinkIdentity { .. }
            | Effect::Provision { .. }) => {
                tracing::warn!(effect = ?other, "effect not supported by this server yet");
            }
        }
    }
    writes
}

fn audit(event: &str, subject: &str, ip: &str, now: u64, detail: serde_json::Value) -> Write {
    Write::Audit(AuditEvent {
        time: now,
        event: event.into(),
        actor: subject.into(),
        subject: subject.into(),
        ip: ip.into(),
        detail,
    })
}

/// Stores the login's new state with its effects and answers the browser: the next page, the
/// client's redirect on completion or denial. `read_seq` is the sequence number the request
/// read (`None` for a new login): the write applies only if no other request moved the login
/// on meanwhile.
pub async fn continue_login(
    app: &Arc<App>,
    handle: &str,
    read_seq: Option<u64>,
    login: Login,
    effects: Vec<Effect>,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    let mut batch = effect_writes(effects, &ip, now);
    let secure = app.config.secure_cookies;
    let flow = login.run.flow.clone();
    // The login's last write: replace it if the request read the current state, else conflict.
    let last_write = |next: Option<Login>| match (read_seq, next) {
        (None, Some(login)) => Some(Write::PutLogin(login)),
        // A login over at its first step was never stored.
        (None, None) => None,
        (Some(seq), next) => Some(Write::AdvanceLogin {
            key: login.key.clone(),
            seq,
            next,
        }),
    };
    match login.output.clone() {
        Output::Prompt { .. } | Output::Redirect { .. } | Output::Confirm { .. } => {
            // A login that has had no input yet is worth nothing if lost: it need not wait for
            // a flush (see `Store::commit_unflushed`).
            let fresh = read_seq.is_none() && batch.is_empty();
            batch.extend(last_write(Some(login.clone())));
            if let Err(response) = commit_step(app, batch, fresh).await {
                return response;
            }
            to_login_page(handle)
        }
        Output::Complete {
            subject,
            claims,
            amr,
            acr,
        } => {
            let secret = random_token(32);
            let session = Session {
                key: token_key(&secret),
                sid: random_token(16),
                user: subject.clone(),
                auth_time: now,
                amr,
                acr,
                claims,
                flow: flow.clone(),
                expires: now + app.config.tokens.session_seconds,
                csrf: random_token(32),
            };
            batch.extend(last_write(None));
            batch.push(Write::PutSession(session.clone()));
            batch.push(audit(
                "login.success",
                &subject,
                &ip,
                now,
                serde_json::json!({ "flow": flow, "amr": session.amr, "acr": session.acr }),
            ));
            let mut response = match &login.authorize {
                Some(request) => {
                    let (write, response) = issue_code(app, request, &session, now);
                    batch.push(write);
                    response
                }
                None => Redirect::to("/").into_response(),
            };
            if let Err(response) = commit_step(app, batch, false).await {
                return response;
            }
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies::set(
                    cookies::SESSION,
                    &secret,
                    app.config.tokens.session_seconds,
                    secure,
                ),
            );
            response
        }
        Output::Denied { reason } => {
            let subject = login
                .run
                .user
                .as_ref()
                .map(|u| u.id.clone())
                .unwrap_or_default();
            batch.extend(last_write(None));
            batch.push(audit(
                "login.failure",
                &subject,
                &ip,
                now,
                serde_json::json!({ "flow": flow, "reason": reason }),
            ));
            if let Err(response) = commit_step(app, batch, false).await {
                return response;
            }
            match &login.authorize {
                Some(request) => redirect_error(
                    &request.redirect_uri,
                    "access_denied",
                    "the login was not completed",
                    request.state.as_deref(),
                    &app.config.issuer,
                ),
                None => app.pages.message(
                    StatusCode::FORBIDDEN,
                    "Sign-in failed",
                    "You could not be signed in. If this keeps happening, contact your administrator.",
                ),
            }
        }
    }
}

/// Commits a login step; a conflict (another tab or request moved the login on) is a page
/// asking to continue from the current state, not an error.
async fn commit_step(
    app: &Arc<App>,
    batch: crate::store::Batch,
    unflushed: bool,
) -> Result<(), Response> {
    let store = Arc::clone(&app.store);
    let committed = blocking(move || {
        if unflushed {
            store.commit_unflushed(batch)
        } else {
            store.commit(batch)
        }
    });
    match committed.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(StoreError::Conflict(_))) => Err(app.pages.message(
            StatusCode::CONFLICT,
            "This sign-in changed in another window",
            "Go back to the window where you are signing in and continue there.",
        )),
        Ok(Err(error)) => Err(server_error(app, &error)),
        Err(error) => Err(server_error(app, &error)),
    }
}
