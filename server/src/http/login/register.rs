//! The page of a `register` state: self sign-up. A person fills in a username, an email
//! address, the flow's profile attributes and a password; what the server can check is
//! checked here and the form shown again saying what to fix. With `verify_email` the details
//! wait (the password already hashed) for the code emailed to the address
//! ([`crate::mfa::signup`]); the engine then decides the account with [`Input::Registered`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use idflow_dsl::ir::{self, AuthOption, StateKind};
use idflow_engine::{Input, Output, UserView};
use serde::Serialize;

use crate::app::App;
use crate::crypto::random_token;
use crate::effects::audit;
use crate::http::authorize::{server_error, to_login_page};
use crate::http::params::Params;
use crate::mfa::email_otp::NotSent;
use crate::mfa::signup::{self, CodeCheck, Details};
use crate::store::Login;

use super::new_account::{PasswordProblem, new_password_hash};
use super::{Step, advance, commit_step};

/// Sign-ups one client address may start an hour (a household or office shares one); it
/// bounds how fast one place can fill the directory when a flow does not verify addresses.
pub const SIGNUPS_PER_CLIENT_HOUR: u32 = 30;

/// Longest attribute value and email address accepted.
const MAX_VALUE: usize = 256;
const MAX_EMAIL: usize = 254;

#[derive(Serialize)]
struct AttributeView {
    name: String,
    label: String,
    autocomplete: &'static str,
    value: String,
}

/// How the page labels a profile attribute, and the browser's autofill token for it.
fn describe(name: &str) -> (String, &'static str) {
    match name {
        "name" => ("Full name".into(), "name"),
        "given_name" => ("First name".into(), "given-name"),
        "family_name" => ("Last name".into(), "family-name"),
        "phone_number" => ("Phone number".into(), "tel"),
        "locale" => ("Language".into(), "language"),
        "organization" => ("Organization".into(), "organization"),
        other => {
            let words = other.replace(['_', '-', '.'], " ");
            let mut chars = words.chars();
            let label = match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            };
            (label, "on")
        }
    }
}

/// The page for `login`, whose output is `Output::Register`: the form, or, when details wait
/// for an emailed code, the field for the code. `typed` refills the form after a refusal.
pub(super) fn page(
    app: &App,
    handle: &str,
    login: &Login,
    error: Option<&str>,
    typed: Option<&Params>,
) -> Response {
    let Output::Register {
        attributes,
        attempts_left,
        error: engine_error,
        ..
    } = &login.output
    else {
        return super::expired(app);
    };
    let now = crate::app::now();
    let waiting = signup::waiting(app.store.as_ref(), &login.key, now);
    let value = |name: &str| {
        typed
            .and_then(|p| p.get(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // What the person typed at identifier_first is a good start for the matching field.
    let identifier = login.run.identifier.clone();
    let (username, email) = match typed {
        Some(_) => (value("username"), value("email")),
        None if identifier.contains('@') => (String::new(), identifier),
        None => (identifier, String::new()),
    };
    let attributes: Vec<AttributeView> = attributes
        .iter()
        .map(|name| {
            let (label, autocomplete) = describe(name);
            AttributeView {
                name: name.clone(),
                label,
                autocomplete,
                value: value(&format!("attr.{name}")),
            }
        })
        .collect();
    let error = error
        .map(String::from)
        .or_else(|| engine_error.as_deref().map(super::render::sentence));
    app.pages.render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        "register.html",
        serde_json::json!({
            "handle": handle, "csrf": login.csrf, "error": error,
            "application": super::render::application_name(app, login),
            "attributes": attributes, "username": username, "email": email,
            "sent_to": waiting.map(|(_, to)| to), "attempts_left": attempts_left,
            "offer_sign_in": login.run.request.signup,
        }),
    )
}

/// `POST /login` at a `register` state.
pub(super) async fn submit(
    app: &Arc<App>,
    handle: &str,
    login: Login,
    params: &Params,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    match params.get("option").unwrap_or_default() {
        "cancel" => advance(app, handle, login, plain(Input::Cancel), addr, now).await,
        "signin" if login.run.request.signup => {
            super::restart(app, handle, login, false, addr, now).await
        }
        "change" => {
            let waiting = signup::waiting(app.store.as_ref(), &login.key, now).is_some();
            if !waiting {
                return to_login_page(handle);
            }
            match commit_step(app, vec![signup::spend(&login.key)], false).await {
                Ok(()) => to_login_page(handle),
                Err(response) => response,
            }
        }
        "resend" => resend(app, handle, &login, &ip, now).await,
        "code" => code(app, handle, login, params, addr, now).await,
        _ => details(app, handle, login, params, addr, now).await,
    }
}

/// Whether the login page offers "Create an account": the login's flow has a `register`
/// state, nobody is identified yet, and the person has not asked already.
pub(super) fn offered(app: &App, login: &Login) -> bool {
    !login.run.request.signup
        && login.run.user.is_none()
        && login.run.steps.is_empty()
        && crate::app::flow_version(app, &login.run.version).is_some_and(|flow| {
            flow.ir
                .states
                .values()
                .any(|state| matches!(state.kind, StateKind::Register { .. }))
        })
}

fn plain(input: Input) -> Step {
    Step {
        input,
        writes: Vec::new(),
        throttle_key: None,
        password_hash: None,
    }
}

/// The settings of the login's current `register` state.
fn settings(app: &App, login: &Login) -> Option<(bool, Vec<String>)> {
    let flow = crate::app::flow_version(app, &login.run.version)?;
    match &flow.ir.states.get(&login.run.state)?.kind {
        StateKind::Register {
            verify_email,
            roles,
            ..
        } => Some((*verify_email, roles.clone())),
        _ => None,
    }
}

/// The submitted form: checked, then sent on to the engine, or held for the emailed code.
async fn details(
    app: &Arc<App>,
    handle: &str,
    login: Login,
    params: &Params,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    let again = |why: &str| page(app, handle, &login, Some(why), Some(params));
    let Output::Register { attributes, .. } = &login.output else {
        return super::expired(app);
    };
    let Some((verify_email, roles)) = settings(app, &login) else {
        return super::expired(app);
    };
    let username = params.get("username").unwrap_or_default().trim();
    if username.is_empty() {
        return again("Choose a username.");
    }
    if let Err(rule) = super::new_account::check_username(username) {
        return again(rule);
    }
    let Some(email) = address(params.get("email").unwrap_or_default()) else {
        return again("Type your email address, like name@example.com.");
    };
    let email = email.as_str();
    let mut typed = BTreeMap::new();
    for name in attributes {
        let value = params
            .get(&format!("attr.{name}"))
            .unwrap_or_default()
            .trim();
        if value.is_empty()
            || value.chars().count() > MAX_VALUE
            || value.chars().any(char::is_control)
        {
            let (label, _) = describe(name);
            return again(&format!(
                "Fill in {} (at most {MAX_VALUE} characters).",
                label.to_lowercase()
            ));
        }
        typed.insert(name.clone(), value.to_string());
    }
    let password = params.get("password").unwrap_or_default();
    let repeated = params.get("password2").unwrap_or_default();
    if password != repeated {
        return again("The two passwords are not the same.");
    }
    // Counted before anything costly (a password hash, a mail): a flood of forms from one
    // place stops here.
    let block = format!("signup ip {}", crate::throttle::client_block(&ip));
    if let Err(seconds) = app
        .mfa
        .email_sends
        .admit(&[(&block, 3600, SIGNUPS_PER_CLIENT_HOUR)], now)
    {
        return throttled(app, handle, &login, params, seconds);
    }
    if let Err(response) = roles_allowed(app, &roles) {
        return response;
    }
    match app.store.user_by_login(username) {
        Ok(None) => {}
        Ok(Some(_)) => return again("That username is taken. Choose another."),
        Err(error) => return server_error(app, &error),
    }
    let address_taken = match app.store.user_by_login(email) {
        Ok(found) => found.is_some(),
        Err(error) => return server_error(app, &error),
    };
    // Without a code to prove it, the address can only be refused openly; with one, the
    // owner of the address is told instead, by mail.
    if address_taken && !verify_email {
        return again("An account with this email address exists. Sign in instead.");
    }
    let password_hash = match new_password_hash(app, password, repeated).await {
        Ok(hash) => hash,
        Err(PasswordProblem::Again(why)) => return again(&why),
        Err(PasswordProblem::Broken(why)) => return server_error(app, &why),
    };
    let details = Details {
        id: random_token(12),
        username: username.to_string(),
        email: email.to_string(),
        attributes: typed,
        password_hash,
    };
    if verify_email {
        let issuer = app.config().issuer.clone();
        return match signup::send(
            &app.mfa,
            &login.key,
            details,
            address_taken,
            &issuer,
            &ip,
            now,
        )
        .await
        {
            Ok(write) => {
                let entry = audit("signup.code_sent", "", &ip, now, serde_json::Value::Null);
                match commit_step(app, vec![write, entry], false).await {
                    Ok(()) => to_login_page(handle),
                    Err(response) => response,
                }
            }
            Err(NotSent::Throttled(seconds)) => throttled(app, handle, &login, params, seconds),
            Err(NotSent::Failed) => again("The code could not be sent. Try again in a moment."),
        };
    }
    let step = Step {
        password_hash: Some(details.password_hash.clone()),
        ..plain(registered(details, false))
    };
    advance(app, handle, login, step, addr, now).await
}

/// A new code for the details waiting in this login.
async fn resend(app: &Arc<App>, handle: &str, login: &Login, ip: &str, now: u64) -> Response {
    let Some((details, _)) = signup::waiting(app.store.as_ref(), &login.key, now) else {
        return to_login_page(handle);
    };
    let address_taken = match app.store.user_by_login(&details.email) {
        Ok(found) => found.is_some(),
        Err(error) => return server_error(app, &error),
    };
    let issuer = app.config().issuer.clone();
    match signup::send(
        &app.mfa,
        &login.key,
        details,
        address_taken,
        &issuer,
        ip,
        now,
    )
    .await
    {
        Ok(write) => match commit_step(app, vec![write], false).await {
            Ok(()) => to_login_page(handle),
            Err(response) => response,
        },
        Err(NotSent::Throttled(seconds)) => {
            throttled(app, handle, login, &Params::default(), seconds)
        }
        Err(NotSent::Failed) => page(
            app,
            handle,
            login,
            Some("The code could not be sent. Try again in a moment."),
            None,
        ),
    }
}

/// A typed code: the account is created when it is right; a wrong one counts against the
/// state's attempts.
async fn code(
    app: &Arc<App>,
    handle: &str,
    login: Login,
    params: &Params,
    addr: SocketAddr,
    now: u64,
) -> Response {
    let ip = addr.ip().to_string();
    if let Err(throttled) = app.throttle.check(&ip, None, now) {
        return super::throttled_page(app, &throttled, &login, &ip, now).await;
    }
    let typed = params.get("code").unwrap_or_default().trim().to_string();
    let store = Arc::clone(&app.store);
    let owner = login.key.clone();
    let checked =
        match crate::http::blocking(move || signup::check(store.as_ref(), &owner, &typed, now))
            .await
        {
            Ok(Ok(checked)) => checked,
            Ok(Err(error)) => return server_error(app, &error),
            Err(error) => return server_error(app, &error),
        };
    match checked {
        CodeCheck::Passed(details) => {
            let Some((_, roles)) = settings(app, &login) else {
                return super::expired(app);
            };
            if let Err(response) = roles_allowed(app, &roles) {
                return response;
            }
            let step = Step {
                writes: vec![signup::spend(&login.key)],
                password_hash: Some(details.password_hash.clone()),
                ..plain(registered(details, true))
            };
            advance(app, handle, login, step, addr, now).await
        }
        CodeCheck::Refused(why, mut writes) => {
            writes.push(audit(
                "signup.code_refused",
                "",
                &ip,
                now,
                serde_json::json!({ "reason": why }),
            ));
            if let Some(limit) = app.throttle.failed(&ip, None, now) {
                writes.push(audit(
                    "login.throttled",
                    "",
                    &ip,
                    now,
                    serde_json::json!({ "limit": limit }),
                ));
            }
            let step = Step {
                writes,
                ..plain(Input::Failed {
                    option: AuthOption::Authenticator(ir::REGISTER.into()),
                    user: None,
                    reason: Some(why),
                })
            };
            advance(app, handle, login, step, addr, now).await
        }
    }
}

fn registered(details: Details, email_verified: bool) -> Input {
    Input::Registered {
        user: UserView {
            id: details.id,
            username: details.username,
            email: details.email,
            attributes: details
                .attributes
                .into_iter()
                .map(|(name, value)| (name, value.into()))
                .collect(),
            ..UserView::default()
        },
        email_verified,
    }
}

fn unavailable(app: &App) -> Response {
    app.pages.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-up is not available",
        "Accounts cannot be created here right now. Contact the administrator.",
    )
}

/// Sign-up may give only roles that exist and grant nothing: a flow naming a privileged role
/// (or a role given privileges since the flow was written) would let strangers make themselves
/// administrators, and a role that does not exist yet could be made privileged later with
/// strangers already in it. Such a sign-up is refused, and the log says why.
fn roles_allowed(app: &App, roles: &[String]) -> Result<(), Response> {
    for name in roles {
        match app.store.role(name) {
            Ok(Some(role)) if !role.privileges.is_empty() => {
                tracing::error!(
                    role = %name,
                    "a register state gives a role that grants privileges: sign-up refused"
                );
                return Err(unavailable(app));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::error!(
                    role = %name,
                    "a register state gives a role that does not exist: sign-up refused (create it with `idflow role add`)"
                );
                return Err(unavailable(app));
            }
            Err(error) => return Err(server_error(app, &error)),
        }
    }
    Ok(())
}

/// The address typed, if it is a plain address mail can be sent to: what lettre parses as an
/// address (no display name, no `<...>`, no quoted local part), a domain with a dot, at most
/// 254 bytes.
/// The code proves the rest.
fn address(typed: &str) -> Option<String> {
    let typed = typed.trim();
    let parsed: lettre::Address = typed.parse().ok()?;
    let text = parsed.to_string();
    let domain = parsed.domain();
    // A quoted local part (`"a,b"@example.com`) is valid mail but not what applications
    // expect in an `email` claim; nobody needs one to sign up.
    (text == typed
        && !text.contains('"')
        && text.len() <= MAX_EMAIL
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.'))
    .then_some(text)
}

fn throttled(app: &App, handle: &str, login: &Login, params: &Params, seconds: u64) -> Response {
    let minutes = seconds.div_ceil(60);
    let message = format!(
        "Too many sign-ups or codes were asked for from here. Try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut response = page(app, handle, login, Some(&message), Some(params));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_are_what_a_code_can_be_sent_to() {
        for good in ["a@example.com", "first.last+tag@mail.example.org"] {
            assert_eq!(address(good).as_deref(), Some(good));
        }
        for bad in [
            "",
            "nobody",
            "@example.com",
            "a@localhost",
            "a@b@example.com",
            "a @example.com",
            "a@.example.com",
            "a@example.com.",
            "x<me@evil.com>",
            "Me <me@evil.com>",
            "\"a,b\"@example.com",
        ] {
            assert_eq!(address(bad), None, "{bad}");
        }
    }

    #[test]
    fn attributes_are_labelled_for_people() {
        assert_eq!(describe("given_name").0, "First name");
        assert_eq!(describe("employee_number").0, "Employee number");
    }
}
