//! "Email me a code": sending an email one-time code for a login.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use idflow_engine::Output;

use crate::app::App;
use crate::effects::audit;
use crate::http::authorize::{server_error, to_login_page};
use crate::http::params::Params;
use crate::store::{Login, Write};

use super::commit_step;
use super::render::render;

/// "Email me a code": sends one (when the limits allow) and shows the page again.
pub(super) async fn send_email_code(
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
