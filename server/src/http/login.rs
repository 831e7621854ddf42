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
    /// False when the option cannot be used now (`note` says why).
    available: bool,
    note: Option<String>,
    /// TOTP enrollment: QR code, key, recovery codes.
    totp: Option<crate::mfa::totp::EnrollView>,
    /// A passkey ceremony: `get` or `create`, and its options.
    webauthn: Option<WebauthnView>,
    /// Email code: sent or not, and whether to ask for the address.
    email: Option<EmailView>,
}

#[derive(Serialize)]
struct WebauthnView {
    mode: &'static str,
    /// JSON, safe inside a `<script>` element.
    options: String,
}

#[derive(Serialize)]
struct EmailView {
    sent_to: Option<String>,
    ask_address: bool,
    prefill: String,
}

/// JSON made safe to place inside a `<script>` element (no `</script>` can end it early).
pub fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn field(name: &str, prefill: &str) -> Option<FieldView> {
    let (label, kind, autocomplete) = match name {
        "username" => ("Username or email", "text", "username"),
        "identifier" => ("Username or email", "text", "username"),
        "password" => ("Password", "password", "current-password"),
        "code" => ("Code", "text", "one-time-code"),
        _ => return None,
    };
    // Only the name fields start filled in; a password or code never does.
    let value = match name {
        "username" | "identifier" => prefill.to_string(),
        _ => String::new(),
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
        Ok(login) => render(&app, handle, &login, None).await,
        Err(response) => response,
    }
}

/// Prepares what an option needs on the page: a ceremony's challenge (passkeys), an
/// enrollment (TOTP), whether a code was sent (email). Challenges to store go to `writes`.
fn prepare(
    app: &App,
    login: &Login,
    view: &mut OptionView,
    enroll: bool,
    writes: &mut Vec<Write>,
    now: u64,
) {
    let mfa = &app.mfa;
    let store = app.store.as_ref();
    let lifetime = app.config.tokens.login_seconds;
    let user = login
        .run
        .user
        .as_ref()
        .and_then(|u| store.user(&u.id).ok().flatten());
    let unavailable = |view: &mut OptionView, why: &str| {
        view.available = false;
        view.note = Some(why.to_string());
    };
    let prepared: Result<(), String> = match (view.value.as_str(), enroll, &user) {
        ("totp", true, Some(user)) => crate::mfa::totp::enrollment(
            mfa, store, &login.key, user, now, lifetime,
        )
        .map(|(enrollment, write)| {
            view.totp = Some(enrollment);
            writes.extend(write);
        }),
        ("passkey", true, Some(user)) => {
            crate::mfa::passkey::start_registration(mfa, store, &login.key, user, now, lifetime)
                .map(|(options, write)| {
                    view.webauthn = Some(WebauthnView {
                        mode: "create",
                        options: script_json(&options),
                    });
                    writes.push(write);
                })
        }
        ("passkey", false, _) => crate::mfa::passkey::start_sign_in(
            mfa,
            store,
            &login.key,
            user.as_ref().map(|u| u.id.as_str()),
            now,
            lifetime,
        )
        .map(|started| match started {
            Some((options, write)) => {
                view.webauthn = Some(WebauthnView {
                    mode: "get",
                    options: script_json(&options),
                });
                writes.push(write);
            }
            None => unavailable(view, "No passkey is registered for this account."),
        }),
        ("totp", false, Some(user)) | ("recovery_code", false, Some(user)) => {
            let name = view.value.clone();
            match store.factors(&user.id) {
                Ok(factors) => {
                    if !crate::mfa::factor_names(&factors).contains(&name) {
                        let why = if name == "totp" {
                            "No authenticator app is set up for this account."
                        } else {
                            "This account has no unused recovery codes."
                        };
                        unavailable(view, why);
                    }
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        }
        ("email_otp", _, _) => {
            view.email = Some(EmailView {
                sent_to: crate::mfa::email_otp::pending(store, &login.key, now),
                ask_address: user.is_none(),
                prefill: login
                    .authorize
                    .as_ref()
                    .and_then(|a| a.login_hint.clone())
                    .unwrap_or_default(),
            });
            Ok(())
        }
        (_, true, None) => {
            unavailable(view, "Sign in first.");
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(error) = prepared {
        tracing::error!(%error, option = view.value, "could not prepare a login option");
        unavailable(
            view,
            "This is not available right now. Try again in a moment.",
        );
    }
}

async fn render(
    app: &Arc<App>,
    handle: &str,
    login: &Login,
    override_error: Option<&str>,
) -> Response {
    match &login.output {
        Output::Prompt {
            options,
            attempts_left,
            error,
            enroll,
            ..
        } => {
            let prefill = login
                .run
                .user
                .as_ref()
                .map(|u| u.username.clone())
                .or_else(|| login.authorize.as_ref().and_then(|a| a.login_hint.clone()))
                .unwrap_or_default();
            let now = now();
            let mut writes = Vec::new();
            let options: Vec<OptionView> = options
                .iter()
                .map(|o| {
                    let mut view = OptionView {
                        value: o.option.to_string(),
                        label: o.hint.label.clone(),
                        fields: o
                            .hint
                            .fields
                            .iter()
                            .filter_map(|f| field(f, &prefill))
                            .collect(),
                        available: true,
                        note: None,
                        totp: None,
                        webauthn: None,
                        email: None,
                    };
                    prepare(app, login, &mut view, *enroll, &mut writes, now);
                    view
                })
                .collect();
            if !writes.is_empty() {
                // A challenge lost in a crash costs a reload, nothing more.
                let store = Arc::clone(&app.store);
                match blocking(move || store.commit_unflushed(writes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return server_error(app, &error),
                    Err(error) => return server_error(app, &error),
                }
            }
            let application = login
                .authorize
                .as_ref()
                .and_then(|a| app.config.applications.get(&a.client_id))
                .map(|c| c.name.clone());
            let error = override_error
                .map(String::from)
                .or_else(|| error.as_deref().map(sentence));
            app.pages.render(
                if error.is_some() {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::OK
                },
                "login.html",
                serde_json::json!({
                    "handle": handle, "csrf": login.csrf, "options": options, "enroll": enroll,
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

/// The engine's short error as a sentence for the page.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => {
            let rest: String = chars.collect();
            let end = if rest.ends_with('.') { "" } else { "." };
            format!("{}{rest}{end}", first.to_uppercase())
        }
        None => String::new(),
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
    let Output::Prompt {
        options, enroll, ..
    } = &login.output
    else {
        return render(&app, &handle, &login, None).await;
    };
    let enroll = *enroll;
    let ip = addr.ip().to_string();
    let chosen = params.get("option").unwrap_or_default();
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
    writes.extend(effect_writes(step.effects, &ip, now));
    continue_login(&app, &handle, Some(read_seq), login, writes, addr, now).await
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

/// "Email me a code": sends one (when the limits allow) and shows the page again.
async fn send_email_code(
    app: &Arc<App>,
    handle: &str,
    login: &Login,
    params: &Params,
    ip: &str,
    now: u64,
) -> Response {
    // Once the flow knows the user, the code goes to them whatever the form says, and is
    // limited as theirs: a posted name must not open a fresh limit.
    let mut typed = match login.run.user {
        Some(_) => String::new(),
        None => params
            .get("identifier")
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    if typed.is_empty() && login.run.user.is_none() {
        // "Send a new code": to whoever the last code of this login was asked for.
        typed = crate::mfa::email_otp::asked_for(app.store.as_ref(), &login.key, now)
            .unwrap_or_default();
    }
    let user = match &login.run.user {
        Some(known) => app.store.user(&known.id),
        None if typed.is_empty() => {
            return render(
                app,
                handle,
                login,
                Some("Type your email address or username."),
            )
            .await;
        }
        None => app.store.user_by_login(&typed),
    };
    let user = match user {
        Ok(user) => user.filter(|u| !u.disabled),
        Err(error) => return server_error(app, &error),
    };
    match crate::mfa::email_otp::send(&app.mfa, &login.key, user.as_ref(), &typed, ip, now).await {
        Ok(write) => {
            let who = user.as_ref().map(|u| u.id.as_str()).unwrap_or_default();
            let entry = audit("email_otp.sent", who, ip, now, serde_json::Value::Null);
            let mut batch = vec![write, entry];
            // A new code starts the prompt afresh: the last attempt's error no longer applies.
            if let Output::Prompt { error: Some(_), .. } = &login.output {
                let mut next = login.clone();
                if let Output::Prompt { error, .. } = &mut next.output {
                    *error = None;
                }
                next.seq = login.seq + 1;
                batch.push(Write::AdvanceLogin {
                    key: login.key.clone(),
                    seq: login.seq,
                    next: Some(next),
                });
            }
            match commit_step(app, batch, false).await {
                Ok(()) => to_login_page(handle),
                Err(response) => response,
            }
        }
        Err(crate::mfa::email_otp::NotSent::Throttled(seconds)) => {
            let who = user.as_ref().map(|u| u.id.as_str()).unwrap_or_default();
            let entry = audit(
                "email_otp.throttled",
                who,
                ip,
                now,
                serde_json::json!({ "retry_after": seconds }),
            );
            if let Err(response) = commit_step(app, vec![entry], true).await {
                return response;
            }
            let message = format!(
                "A code was sent a moment ago. Wait {seconds} seconds before asking for another."
            );
            let mut response = render(app, handle, login, Some(&message)).await;
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
        }
        Err(crate::mfa::email_otp::NotSent::Failed) => {
            render(
                app,
                handle,
                login,
                Some("The code could not be sent. Try again in a moment."),
            )
            .await
        }
    }
}

/// Turns the submitted form for `option` into the engine's input and the writes that make a
/// pass stick (a TOTP step used, a passkey counter); `None` when this server has no
/// authenticator for the option.
async fn input_for(
    app: &Arc<App>,
    login: &Login,
    option: AuthOption,
    enroll: bool,
    params: &Params,
    now: u64,
) -> Result<Option<(Input, Vec<Write>)>, Response> {
    let AuthOption::Authenticator(name) = &option else {
        return Ok(None);
    };
    let store = app.store.as_ref();
    let view = |user: &crate::store::User| {
        crate::mfa::user_view(store, user, now).map_err(|e| server_error(app, &e))
    };
    let known = match &login.run.user {
        Some(known) => store.user(&known.id).map_err(|e| server_error(app, &e))?,
        None => None,
    };
    let failed = |user: Option<idflow_engine::UserView>, reason: &str| Input::Failed {
        option: option.clone(),
        user,
        reason: Some(reason.to_string()),
    };
    let code = params.get("code").unwrap_or_default();
    match name.as_str() {
        "identifier_first" => {
            let identifier = params
                .get("identifier")
                .unwrap_or_default()
                .trim()
                .to_string();
            let user = store
                .user_by_login(&identifier)
                .map_err(|e| server_error(app, &e))?;
            let user = match user {
                Some(user) => Some(view(&user)?),
                None => None,
            };
            Ok(Some((Input::Identify { identifier, user }, Vec::new())))
        }
        "password" => password_input(app, login, option, params, now)
            .await
            .map(|input| Some((input, Vec::new()))),
        "totp" | "recovery_code" | "passkey"
            if known.is_none() && (enroll || name != "passkey") =>
        {
            Ok(Some((
                failed(None, "sign in with your first factor before this one"),
                Vec::new(),
            )))
        }
        "totp" | "recovery_code" | "passkey" => {
            let fail = |e: String| server_error(app, &e);
            let user = known.as_ref();
            let checked = match (name.as_str(), enroll, user) {
                ("totp", true, Some(user)) => crate::mfa::totp::finish_enrollment(
                    &app.mfa, store, &login.key, user, code, now,
                )
                .map_err(fail)?,
                ("totp", false, Some(user)) => {
                    crate::mfa::totp::check(&app.mfa, store, &user.id, code, now)
                        .map_err(|e| server_error(app, &e))?
                }
                ("recovery_code", _, Some(user)) => {
                    crate::mfa::recovery::check(store, &user.id, code, now)
                        .map_err(|e| server_error(app, &e))?
                }
                ("passkey", true, Some(user)) => crate::mfa::passkey::finish_registration(
                    &app.mfa,
                    store,
                    &login.key,
                    user,
                    params.get("credential").unwrap_or_default(),
                    params.get("label").unwrap_or_default(),
                    now,
                )
                .map_err(fail)?,
                _ => {
                    // Passkey sign-in: the assertion names the user (usernameless) or must be
                    // one of the known user's credentials.
                    return passkey_input(app, login, option.clone(), params, known.as_ref(), now);
                }
            };
            let Some(user) = user else {
                return Ok(None);
            };
            let mut user_view = view(user)?;
            Ok(Some(match checked {
                crate::mfa::Checked::Passed(writes) => {
                    if enroll && !user_view.factors.contains(name) {
                        user_view.factors.push(name.clone());
                    }
                    (
                        Input::Passed {
                            option,
                            user: user_view,
                        },
                        writes,
                    )
                }
                crate::mfa::Checked::Refused(reason) => {
                    (failed(Some(user_view), &reason), Vec::new())
                }
            }))
        }
        "email_otp" => {
            let (checked, sent_to, counted) =
                crate::mfa::email_otp::check(store, &login.key, code, now)
                    .map_err(|e| server_error(app, &e))?;
            let user = match sent_to {
                Some(id) => store.user(&id).map_err(|e| server_error(app, &e))?,
                None => None,
            };
            let user_view = match &user {
                Some(user) => Some(view(user)?),
                None => None,
            };
            Ok(Some(match (checked, user_view) {
                (crate::mfa::Checked::Passed(writes), Some(user)) => {
                    (Input::Passed { option, user }, writes)
                }
                (crate::mfa::Checked::Refused(reason), user) => (failed(user, &reason), counted),
                (crate::mfa::Checked::Passed(_), None) => {
                    (failed(None, "that code is wrong"), Vec::new())
                }
            }))
        }
        _ => Ok(None),
    }
}

/// A passkey assertion: verified against the login's user when known, else usernameless.
fn passkey_input(
    app: &Arc<App>,
    login: &Login,
    option: AuthOption,
    params: &Params,
    known: Option<&crate::store::User>,
    now: u64,
) -> Result<Option<(Input, Vec<Write>)>, Response> {
    let store = app.store.as_ref();
    let answer = params.get("credential").unwrap_or_default();
    let verified = crate::mfa::passkey::finish_sign_in(&app.mfa, store, &login.key, answer, now)
        .map_err(|e| server_error(app, &e))?;
    let known_view = match known {
        Some(user) => {
            Some(crate::mfa::user_view(store, user, now).map_err(|e| server_error(app, &e))?)
        }
        None => None,
    };
    match verified {
        Ok((user_id, writes)) => {
            let user = store.user(&user_id).map_err(|e| server_error(app, &e))?;
            let Some(user) = user else {
                return Ok(Some((
                    Input::Failed {
                        option,
                        user: known_view,
                        reason: Some("this passkey's account no longer exists".into()),
                    },
                    Vec::new(),
                )));
            };
            let user =
                crate::mfa::user_view(store, &user, now).map_err(|e| server_error(app, &e))?;
            Ok(Some((Input::Passed { option, user }, writes)))
        }
        Err(reason) => Ok(Some((
            Input::Failed {
                option,
                user: known_view,
                reason: Some(reason),
            },
            Vec::new(),
        ))),
    }
}

/// A password attempt, checked against the login's user once known (a username in the form
/// is then ignored), else against the user the username names.
async fn password_input(
    app: &Arc<App>,
    login: &Login,
    option: AuthOption,
    params: &Params,
    now: u64,
) -> Result<Input, Response> {
    let user = match &login.run.user {
        Some(known) => app.store.user(&known.id),
        None => {
            let username = params.get("username").unwrap_or_default().trim();
            app.store.user_by_login(username)
        }
    }
    .map_err(|e| server_error(app, &e))?;
    let password = params.take("password").unwrap_or_default();
    // A locked or disabled account is checked against the decoy: its answer must not tell
    // whether the password was right.
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
    let view = match user {
        Some(user) => Some(
            crate::mfa::user_view(app.store.as_ref(), &user, now)
                .map_err(|e| server_error(app, &e))?,
        ),
        None => None,
    };
    Ok(match (verified, view) {
        (true, Some(user)) => Input::Passed { option, user },
        (_, user) => Input::Failed {
            option,
            user,
            reason: None,
        },
    })
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
pub fn effect_writes(effects: Vec<Effect>, ip: &str, now: u64) -> Vec<Write> {
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
    writes: Vec<Write>,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    let mut batch = writes;
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
                let response = match &login.authorize {
                    Some(request) => {
                        let (write, response) = issue_code(app, request, &session, now);
                        batch.push(write);
                        response
                    }
                    None => Redirect::to("/").into_response(),
                };
                return match commit_step(app, batch, false).await {
                    Ok(()) => response,
                    Err(response) => response,
                };
            }
            let secret = random_token(32);
            let expires = now + app.config.tokens.session_seconds;
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
            };
            // A step-up replaces the session it built on, which must still exist: a sign-out or
            // a factor removal meanwhile ends this sign-in too.
            if let Some(previous) = &login.replaces {
                batch.push(Write::TakeSession(previous.clone()));
            }
            batch.push(Write::PutSession(session.clone()));
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
