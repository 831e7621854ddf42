//! The page for the login's current prompt: each option with what it needs on the page (a
//! passkey ceremony's challenge, a TOTP enrollment, whether an email code was sent).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use idflow_engine::Output;
use serde::Serialize;

use crate::app::{App, now};
use crate::http::authorize::server_error;
use crate::http::blocking;
use crate::store::{Login, User, Write};

use super::expired;

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
/// Prepares what an option needs on the page: a ceremony's challenge (passkeys), an
/// enrollment (TOTP), whether a code was sent (email). Challenges to store go to `writes`.
fn prepare(
    app: &App,
    login: &Login,
    user: Option<&User>,
    view: &mut OptionView,
    enroll: bool,
    writes: &mut Vec<Write>,
    now: u64,
) {
    let mfa = &app.mfa;
    let store = app.store.as_ref();
    let lifetime = app.config().tokens.login_seconds;
    let unavailable = |view: &mut OptionView, why: &str| {
        view.available = false;
        view.note = Some(why.to_string());
    };
    let prepared: Result<(), String> = match (view.value.as_str(), enroll, user) {
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

pub(super) async fn render(
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
            // The identified user, read once for every option's preparation.
            let user = login
                .run
                .user
                .as_ref()
                .and_then(|u| app.store.user(&u.id).ok().flatten());
            let options: Vec<OptionView> = options
                .iter()
                .map(|o| {
                    let mut view = OptionView {
                        value: o.option.to_string(),
                        label: match &o.option {
                            // The provider's display name from idflow.toml.
                            idflow_dsl::ir::AuthOption::Federated(idp) => {
                                app.config().identity_providers.get(idp).map_or_else(
                                    || o.hint.label.clone(),
                                    |u| format!("Sign in with {}", u.label),
                                )
                            }
                            _ => o.hint.label.clone(),
                        },
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
                    prepare(
                        app,
                        login,
                        user.as_ref(),
                        &mut view,
                        *enroll,
                        &mut writes,
                        now,
                    );
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
            let application = application_name(app, login);
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
                    "signup": !enroll && super::register::offered(app, login),
                }),
            )
        }
        Output::Redirect { idp } => {
            crate::http::federation::redirect(app, handle, login, idp).await
        }
        Output::Confirm { .. } => super::confirm::page(app, handle, login, override_error),
        Output::Register { .. } => super::register::page(app, handle, login, override_error, None),
        Output::Complete { .. } | Output::Denied { .. } | Output::AwaitingApproval { .. } => {
            expired(app)
        }
    }
}

/// The name of the application a login is for (an OAuth client's or a SAML or WS-Federation
/// service provider's), for the page's heading.
pub(super) fn application_name(app: &App, login: &Login) -> Option<String> {
    if let Some(request) = &login.authorize {
        return app
            .config()
            .applications
            .get(&request.client_id)
            .map(|c| c.name.clone());
    }
    let config = app.config();
    login
        .saml
        .as_ref()
        .and_then(|saml| config.service_providers.get(&saml.sp))
        .map(|sp| sp.display_name.clone())
}

/// The engine's short error as a sentence for the page.
pub fn sentence(text: &str) -> String {
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
