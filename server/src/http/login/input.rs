//! A submitted login form checked into the engine's input, with the writes that make a pass
//! stick (a TOTP step used, a recovery code struck, a passkey counter, a spent challenge).

use std::sync::Arc;

use axum::response::Response;
use idflow_dsl::ir::AuthOption;
use idflow_engine::Input;

use crate::app::App;
use crate::http::authorize::server_error;
use crate::http::blocking;
use crate::http::params::Params;
use crate::store::{Login, StoreError, Write};

/// Turns the submitted form for `option` into the engine's input and the writes that make a
/// pass stick (a TOTP step used, a passkey counter); `None` when this server has no
/// authenticator for the option.
pub(super) async fn input_for(
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
