//! The page a JIT rule with `prompt:` shows before it creates an account (WSO2's JIT prompts,
//! Keycloak's first-broker-login): consent, a chosen username, a local password.
//!
//! What the server can check itself (a username free, two passwords alike, the password policy)
//! is checked here and the page shown again; the engine then decides with the answers.

use axum::http::StatusCode;
use axum::response::Response;
use idflow_engine::{Input, Output};

use crate::app::App;
use crate::http::authorize::server_error;
use crate::http::params::Params;
use crate::store::{Login, Write};

/// The confirmation page for `login`, whose output is `Output::Confirm`.
pub(super) fn page(app: &App, handle: &str, login: &Login, error: Option<&str>) -> Response {
    let Output::Confirm { idp, ask } = &login.output else {
        return super::expired(app);
    };
    let provider = app
        .config()
        .identity_providers
        .get(idp)
        .map_or_else(|| idp.clone(), |upstream| upstream.label.clone());
    let application = super::render::application_name(app, login);
    // The upstream's own name for the person is a good first suggestion.
    let suggested = ["preferred_username", "email"]
        .iter()
        .find_map(|claim| login.run.upstream_claims.get(*claim))
        .and_then(|value| value.as_str())
        .unwrap_or_default();
    let asks = |what: &str| ask.iter().any(|a| a == what);
    app.pages.render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        "confirm.html",
        serde_json::json!({
            "handle": handle, "csrf": login.csrf, "provider": provider,
            "application": application, "error": error, "username": suggested,
            "ask_username": asks("username"), "ask_password": asks("password"),
            "ask_consent": asks("consent"),
        }),
    )
}

/// The engine's input for a submitted confirmation, and the hash of the password it set (to
/// store on the account the step creates); `Err` is the page again with what to correct.
pub(super) async fn answer(
    app: &App,
    handle: &str,
    login: &Login,
    params: &Params,
) -> Result<(Input, Option<String>), Response> {
    let Output::Confirm { ask, .. } = &login.output else {
        return Err(super::expired(app));
    };
    let asks = |what: &str| ask.iter().any(|a| a == what);
    let again = |why: &str| Err(page(app, handle, login, Some(why)));
    let consent = params.get("consent") == Some("yes");
    if asks("consent") && !consent {
        return again("Tick the box to agree, or cancel.");
    }
    let username = params
        .get("username")
        .map(str::trim)
        .filter(|u| !u.is_empty());
    if asks("username") {
        let Some(username) = username else {
            return again("Choose a username.");
        };
        if let Err(rule) = super::new_account::check_username(username) {
            return again(rule);
        }
        match app.store.user_by_login(username) {
            Ok(None) => {}
            Ok(Some(_)) => return again("That username is taken. Choose another."),
            Err(error) => return Err(server_error(app, &error)),
        }
    }
    let mut password_hash = None;
    if asks("password") {
        let password = params.get("password").unwrap_or_default();
        let repeated = params.get("password2").unwrap_or_default();
        match super::new_account::new_password_hash(app, password, repeated).await {
            Ok(hash) => password_hash = Some(hash),
            Err(super::new_account::PasswordProblem::Again(why)) => return again(&why),
            Err(super::new_account::PasswordProblem::Broken(why)) => {
                return Err(server_error(app, &why));
            }
        }
    }
    let input = Input::Answer {
        consent,
        username: username.filter(|_| asks("username")).map(String::from),
        password_set: password_hash.is_some(),
    };
    Ok((input, password_hash))
}

/// Puts the password set at the confirmation on the account the step creates, so both land in
/// one transaction (no account ever exists without the password it was promised).
pub(super) fn with_password(writes: &mut [Write], hash: Option<String>) {
    let Some(hash) = hash else { return };
    for write in writes {
        if let Write::CreateUser(user) = write {
            user.password_hash = Some(hash.clone());
        }
    }
}
