//! The login pages: render whatever the engine's output asks for, turn a submitted form into
//! the engine's input, apply the step's effects with the run in one store transaction, and
//! finish the protocol when the run completes or is denied.
//!
//! A login is bound to the browser that started it (a cookie holding its handle) and every form
//! carries the login's CSRF token; both are checked before anything else.
//!
//! One module per part: `render` (the page for a prompt, with each option's ceremony), `input`
//! (a submitted form checked into the engine's input), `email` (sending a code), `confirm`
//! (a JIT prompt), `register` (self sign-up).

mod confirm;
mod email;
mod input;
mod new_account;
mod register;
mod render;

pub use render::{script_json, sentence};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use idflow_dsl::ir::AuthOption;
use idflow_engine::{Input, Output};

use super::authorize::{issue_code, server_error, to_login_page};
use super::oauth_error::redirect_error;
use super::params::Params;
use super::{AppState, blocking, cookies};
use crate::app::{App, now};
use crate::crypto::{constant_time_eq, random_token};
use crate::effects::{audit, effect_writes};
use crate::store::{Login, Session, StoreError, Write, token_key};

use email::send_email_code;
use input::input_for;
use render::render;

pub(super) fn expired(app: &App) -> Response {
    app.pages.message(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "Return to the application and start signing in again.",
    )
}

/// Loads the login named by `handle` and checks that this browser started it (the login page
/// and the federation callback).
pub fn load(
    app: &App,
    headers: &HeaderMap,
    handle: Option<&str>,
    now: u64,
) -> Result<Login, Response> {
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
        Ok(login) => render(&app, handle, &login, None).await,
        Err(response) => response,
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
    let ip = addr.ip().to_string();
    if matches!(login.output, Output::Confirm { .. }) {
        let (input, password_hash) = if params.get("option") == Some("cancel") {
            (Input::Cancel, None)
        } else {
            match confirm::answer(&app, &handle, &login, &params).await {
                Ok(answered) => answered,
                Err(page) => return page,
            }
        };
        let step = Step {
            input,
            writes: Vec::new(),
            throttle_key: None,
            password_hash,
        };
        return advance(&app, &handle, login, step, addr, now).await;
    }
    if matches!(login.output, Output::Register { .. }) {
        return register::submit(&app, &handle, login, &params, addr, now).await;
    }
    let Output::Prompt {
        options, enroll, ..
    } = &login.output
    else {
        return render(&app, &handle, &login, None).await;
    };
    let enroll = *enroll;
    let chosen = params.get("option").unwrap_or_default();
    if chosen == "signup" {
        if !register::offered(&app, &login) {
            return render(
                &app,
                &handle,
                &login,
                Some("Creating an account is not offered here."),
            )
            .await;
        }
        return restart(&app, &handle, login, true, addr, now).await;
    }
    let mut writes = Vec::new();
    let mut throttle_key: Option<String> = None;
    let input = if chosen == "cancel" {
        Input::Cancel
    } else {
        let Some(option) = options
            .iter()
            .map(|o| &o.option)
            .find(|o| o.to_string() == chosen)
            .cloned()
        else {
            return render(
                &app,
                &handle,
                &login,
                Some("Choose one of the ways to sign in shown here."),
            )
            .await;
        };
        // A provider chosen among several (or again, after its answer failed): off to it.
        if matches!(option, AuthOption::Federated(_)) {
            let step = Step {
                input: Input::Choose(option),
                writes: Vec::new(),
                throttle_key: None,
                password_hash: None,
            };
            return advance(&app, &handle, login, step, addr, now).await;
        }
        let email = AuthOption::Authenticator("email_otp".into());
        if option == email && params.get("send").is_some() {
            return send_email_code(&app, &handle, &login, &params, &ip, now).await;
        }
        // Who the attempt is at, for the per-user-and-address limit: the login's user, or
        // what was typed.
        let target = login.run.user.as_ref().map(|u| u.id.clone()).or_else(|| {
            params
                .get("username")
                .or(params.get("identifier"))
                .map(|name| name.trim().to_lowercase())
        });
        if let Err(throttled) = app.throttle.check(&ip, target.as_deref(), now) {
            return throttled_page(&app, &throttled, &login, &ip, now).await;
        }
        match input_for(&app, &login, option.clone(), enroll, &params, now).await {
            Ok(Some((input, checked))) => {
                writes = checked;
                if let Input::Failed { user, reason, .. } = &input {
                    let who = user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
                    writes.push(audit(
                        "login.factor_refused",
                        &who,
                        &ip,
                        now,
                        serde_json::json!({ "option": chosen, "reason": reason }),
                    ));
                    // Counted under the same key the check above used.
                    if let Some(limit) = app.throttle.failed(&ip, target.as_deref(), now) {
                        writes.push(audit(
                            "login.throttled",
                            &who,
                            &ip,
                            now,
                            serde_json::json!({ "limit": limit }),
                        ));
                    }
                }
                throttle_key = target;
                input
            }
            Ok(None) => {
                return render(
                    &app,
                    &handle,
                    &login,
                    Some("This way of signing in is not available on this server yet."),
                )
                .await;
            }
            Err(response) => return response,
        }
    };
    let step = Step {
        input,
        writes,
        throttle_key,
        password_hash: None,
    };
    advance(&app, &handle, login, step, addr, now).await
}

/// Starts the login's flow over on the version it runs, with `request.signup` set to `signup`:
/// the "Create an account" link, and "Sign in instead" on the sign-up page.
async fn restart(
    app: &Arc<App>,
    handle: &str,
    login: Login,
    signup: bool,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let Some(flow) = crate::app::flow_version(app, &login.run.version) else {
        return app.pages.message(
            StatusCode::CONFLICT,
            "This sign-in cannot continue",
            "The login flow changed and the version this sign-in started on is gone. Start again.",
        );
    };
    let mut request = login.run.request.clone();
    request.signup = signup;
    let directory = crate::directory::StoreDirectory::new(app.store.as_ref(), now);
    let step = app.engine.start(&flow, request, now, &directory);
    let read_seq = login.seq;
    let mut login = login;
    login.run = step.run;
    login.output = step.output;
    login.seq = read_seq + 1;
    let mut writes = effect_writes(
        step.effects,
        &app.config().provisioning_targets,
        &addr.ip().to_string(),
        now,
    );
    // Sign-up details waiting for a code belong to the sign-up being left.
    if crate::mfa::signup::waiting(app.store.as_ref(), &login.key, now).is_some() {
        writes.push(crate::mfa::signup::spend(&login.key));
    }
    continue_login(app, handle, Some(read_seq), login, writes, addr, now).await
}

/// One answer to the login's current question, checked into the engine's input.
struct Step {
    input: Input,
    /// What makes the answer stick (a TOTP step used, a challenge spent), with its audits.
    writes: Vec<Write>,
    /// The throttle key the attempt counted under, cleared when the sign-in completes.
    throttle_key: Option<String>,
    /// A password set at a JIT confirmation, for the account the step creates.
    password_hash: Option<String>,
}

/// Runs the engine on `step` and stores the outcome with the step's writes and effects.
async fn advance(
    app: &Arc<App>,
    handle: &str,
    login: Login,
    step: Step,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let Step {
        input,
        mut writes,
        throttle_key,
        password_hash,
    } = step;
    let ip = addr.ip().to_string();
    let Some(flow) = crate::app::flow_version(app, &login.run.version) else {
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
        Output::Prompt { error: Some(_), .. } | Output::Register { error: Some(_), .. } => "failed",
        Output::Prompt { .. } | Output::Register { .. } => "passed",
        Output::AwaitingApproval { .. } => "registered",
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
    match &login.output {
        // Only a completed sign-in ends a run of failures: passing one factor again and again
        // must not reset the count while another is being guessed.
        Output::Complete { .. } => {
            if let Some(key) = &throttle_key {
                app.throttle.passed(&ip, key);
            }
        }
        // A factor enrolled in a login the flow then denies is not kept.
        Output::Denied { .. } => writes.retain(|w| !matches!(w, Write::PutFactor(_))),
        _ => {}
    }
    // What made a factor pass (a TOTP step, a passkey counter, a spent challenge) commits with
    // the step it passed, or not at all.
    writes.extend(effect_writes(
        step.effects,
        &app.config().provisioning_targets,
        &ip,
        now,
    ));
    confirm::with_password(&mut writes, password_hash);
    continue_login(app, handle, Some(read_seq), login, writes, addr, now).await
}

/// The page for an attempt refused by `[throttle]`, with an audit entry.
async fn throttled_page(
    app: &Arc<App>,
    throttled: &crate::throttle::Throttled,
    login: &Login,
    ip: &str,
    now: u64,
) -> Response {
    let who = login
        .run
        .user
        .as_ref()
        .map(|u| u.id.clone())
        .unwrap_or_default();
    let entry = audit(
        "login.throttled",
        &who,
        ip,
        now,
        serde_json::json!({ "limit": throttled.limit, "retry_after": throttled.retry_after }),
    );
    if let Err(response) = commit_step(app, vec![entry], true).await {
        return response;
    }
    let minutes = throttled.retry_after.div_ceil(60);
    let mut response = app.pages.message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed attempts",
        &format!(
            "There have been too many failed sign-in attempts {}from your network. Try again in {minutes} minute{}.",
            if throttled.limit == "ip" {
                ""
            } else {
                "at this account "
            },
            if minutes == 1 { "" } else { "s" }
        ),
    );
    if let Ok(value) = header::HeaderValue::from_str(&throttled.retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
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
    writes: Vec<Write>,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    let mut batch = writes;
    let secure = app.config().secure_cookies;
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
        Output::Prompt { .. }
        | Output::Register { .. }
        | Output::Redirect { .. }
        | Output::Confirm { .. } => {
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
            // The steps that verified the user: identifying is not authenticating, and
            // enrolling proves a new factor, not who the user is.
            let verifying = || {
                login
                    .run
                    .steps
                    .iter()
                    .filter(|s| s.authenticator != "identifier_first" && !s.enrolled)
            };
            // A login that asked nothing new keeps the time the user last authenticated
            // (OpenID Connect's auth_time).
            let auth_time = verifying().map(|s| s.at).max().unwrap_or(now);
            let asked = verifying().any(|s| !s.carried);
            batch.extend(last_write(None));
            batch.push(audit(
                "login.success",
                &subject,
                &ip,
                now,
                serde_json::json!({ "flow": flow, "amr": amr, "acr": acr }),
            ));
            // Single sign-on that asked for nothing keeps the session as it is (its end too:
            // a session cannot live forever by use), so parallel sign-ins to several
            // applications from one session all succeed.
            if let (Some(previous), false) = (&login.replaces, asked) {
                let existing = match app.store.session(previous) {
                    Ok(existing) => existing.filter(|s| s.expires > now),
                    Err(error) => return server_error(app, &error),
                };
                let Some(mut session) = existing else {
                    return session_ended(app);
                };
                // What this flow established goes into this application's tokens.
                session.auth_time = auth_time;
                session.amr = amr;
                session.acr = acr;
                session.claims = claims;
                let response = answer(app, &login, &session, &mut batch, now);
                return match commit_step(app, batch, false).await {
                    Ok(()) => response,
                    Err(response) => response,
                };
            }
            // A step-up (or a fresh sign-in in a signed-in browser) keeps the SAML service
            // providers the earlier session signed in to: they are still to be told when the
            // user signs out.
            let saml = match login.replaces.as_ref().or(login.supersedes.as_ref()) {
                Some(previous) => match app.store.session(previous) {
                    Ok(found) => found.map(|s| s.saml).unwrap_or_default(),
                    Err(error) => return server_error(app, &error),
                },
                None => Vec::new(),
            };
            let secret = random_token(32);
            let expires = now + app.config().tokens.session_seconds;
            let session = Session {
                key: token_key(&secret),
                sid: random_token(16),
                user: subject.clone(),
                auth_time,
                amr,
                acr,
                claims,
                flow: flow.clone(),
                expires,
                csrf: random_token(32),
                // Enrollments are not carried: they vouch for nothing later.
                steps: login
                    .run
                    .steps
                    .iter()
                    .filter(|s| !s.enrolled)
                    .cloned()
                    .collect(),
                identifier: login.run.identifier.clone(),
                saml,
            };
            // A step-up replaces the session it built on, which must still exist: a sign-out or
            // a factor removal meanwhile ends this sign-in too.
            if let Some(previous) = &login.replaces {
                batch.push(Write::TakeSession(previous.clone()));
            }
            if let Some(previous) = &login.supersedes {
                batch.push(Write::DeleteSession(previous.clone()));
            }
            batch.push(Write::PutSession(session.clone()));
            let mut response = answer(app, &login, &session, &mut batch, now);
            if let Err(response) = commit_step(app, batch, false).await {
                return response;
            }
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies::set(
                    cookies::SESSION,
                    &secret,
                    app.config().tokens.session_seconds,
                    secure,
                ),
            );
            response
        }
        Output::AwaitingApproval { subject } => {
            batch.extend(last_write(None));
            batch.push(audit(
                "signup.awaiting_approval",
                &subject,
                &ip,
                now,
                serde_json::json!({ "flow": flow }),
            ));
            if let Err(response) = commit_step(app, batch, false).await {
                return response;
            }
            app.pages.message(
                StatusCode::OK,
                "Your account awaits approval",
                "Your account was created. An administrator must approve it before you can sign in; once they have, sign in from the application again.",
            )
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
            if let Some(saml) = &login.saml {
                return crate::http::saml::respond::failure(
                    app,
                    saml,
                    idflow_saml::uri::RESPONDER,
                    Some(idflow_saml::uri::AUTHN_FAILED),
                    now,
                );
            }
            match &login.authorize {
                Some(request) => redirect_error(
                    &request.redirect_uri,
                    "access_denied",
                    "the login was not completed",
                    request.state.as_deref(),
                    &app.config().issuer,
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

/// The answer to the application a completed login was for: an authorization code for an
/// OpenID Connect client (its write added to `batch`), a signed response for a SAML service
/// provider, or the account page.
fn answer(
    app: &App,
    login: &Login,
    session: &Session,
    batch: &mut crate::store::Batch,
    now: u64,
) -> Response {
    if let Some(request) = &login.authorize {
        let (write, response) = issue_code(app, request, session, now);
        batch.push(write);
        return response;
    }
    if let Some(saml) = &login.saml {
        let (participant, response) = crate::http::saml::respond::success(app, saml, session, now);
        batch.extend(participant.map(|participant| Write::AddSamlParticipant {
            session: session.key.clone(),
            participant,
        }));
        return response;
    }
    Redirect::to("/").into_response()
}

/// The page for a single sign-on whose session ended while it ran (signed out, a factor
/// removed).
fn session_ended(app: &App) -> Response {
    app.pages.message(
        StatusCode::CONFLICT,
        "Your session has ended",
        "You were signed out while this sign-in was in progress. Return to the application and sign in again.",
    )
}

/// Commits a login step; a conflict (another tab or request moved the login on) is a page
/// asking to continue from the current state, not an error.
pub(super) async fn commit_step(
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
        // Two people signing up with one name at once: the second learns it here.
        Ok(Err(error)) if error.name_taken().is_some() => Err(app.pages.message(
            StatusCode::CONFLICT,
            "That name was taken a moment ago",
            "Someone else chose this username or email address while you were signing up. Return to the application and sign up again with another.",
        )),
        Ok(Err(error)) => Err(server_error(app, &error)),
        Err(error) => Err(server_error(app, &error)),
    }
}
