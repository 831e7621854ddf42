//! Sending a login to an upstream identity provider and taking its answer back
//! (`/federation/callback`): the HTTP side of [`crate::federation`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use idflow_dsl::ir::AuthOption;
use idflow_engine::{Input, Output};

use super::authorize::server_error;
use super::params::Params;
use super::{AppState, blocking};
use crate::app::{App, now};
use crate::config::federation::UpstreamKind;
use crate::effects::{audit, effect_writes};
use crate::federation::{Pending, challenge_key, oidc::Provider};
use crate::store::{Challenge, Login, Write};

fn provider<'a>(app: &App, name: &'a str, kind: &'a UpstreamKind) -> Option<Provider<'a>> {
    match kind {
        UpstreamKind::Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
        } => Some(Provider {
            name,
            issuer,
            client_id,
            client_secret,
            scopes,
            redirect_uri: format!("{}/federation/callback", app.config.issuer),
        }),
        UpstreamKind::NotConfigured(_) => None,
    }
}

fn not_available(app: &App, label: &str, why: &str) -> Response {
    tracing::warn!(idp = label, why, "identity provider not usable");
    app.pages.message(
        StatusCode::NOT_IMPLEMENTED,
        "Sign-in with this provider is not available",
        &format!("This server cannot sign you in through {label}: {why}."),
    )
}

/// The login page for a `Redirect`: sends the browser to the provider.
pub async fn redirect(app: &Arc<App>, handle: &str, login: &Login, idp: &str) -> Response {
    let Some(upstream) = app.config.identity_providers.get(idp) else {
        return not_available(app, idp, "it is not declared in idflow.toml");
    };
    let Some(provider) = provider(app, &upstream.name, &upstream.kind) else {
        let why = match &upstream.kind {
            UpstreamKind::NotConfigured(why) => why.as_str(),
            UpstreamKind::Oidc { .. } => "",
        };
        return not_available(app, &upstream.label, why);
    };
    let sealed = match app.mfa.key.seal(handle.as_bytes(), &login.key) {
        Ok(sealed) => sealed,
        Err(error) => return server_error(app, &error),
    };
    let (url, state, pending) = match app.federation.begin(&provider, &login.key, sealed).await {
        Ok(begun) => begun,
        Err(error) => {
            tracing::error!(%error, idp, "cannot start an upstream login");
            return app.pages.message(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider could not be reached",
                &format!("{} did not answer. Try again in a moment.", upstream.label),
            );
        }
    };
    let challenge = Challenge {
        key: challenge_key(&state),
        user: String::new(),
        data: serde_json::to_value(&pending).unwrap_or_default(),
        expires: now() + app.config.tokens.login_seconds,
    };
    let store = Arc::clone(&app.store);
    // A redirect lost in a crash costs the person a retry.
    match blocking(move || store.commit_unflushed(vec![Write::PutChallenge(challenge)])).await {
        Ok(Ok(())) => Redirect::to(&url).into_response(),
        Ok(Err(error)) => server_error(app, &error),
        Err(error) => server_error(app, &error),
    }
}

/// `GET /federation/callback?state=...&code=...`: the provider's answer.
pub async fn callback(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = now();
    let ip = addr.ip().to_string();
    let params = Params::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let invalid = |why: &str| {
        app.pages.message(
            StatusCode::BAD_REQUEST,
            "This sign-in cannot continue",
            &format!("{why} Return to the application and start signing in again."),
        )
    };
    let Some(state) = params.get("state") else {
        return invalid("The provider's answer has no state.");
    };
    let key = challenge_key(state);
    let pending = match app.store.challenge(&key, now) {
        Ok(found) => found.and_then(|c| serde_json::from_value::<Pending>(c.data).ok()),
        Err(error) => return server_error(&app, &error),
    };
    let Some(pending) = pending else {
        return invalid(
            "This answer does not belong to a sign-in in progress (it expired or was used).",
        );
    };
    let handle = match app
        .mfa
        .key
        .open(&pending.sealed_handle, &pending.login)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    {
        Some(handle) => handle,
        None => return invalid("The sign-in could not be found."),
    };
    // The same browser that left must come back.
    let login = match super::login::load(&app, &headers, Some(&handle), now) {
        Ok(login) => login,
        Err(response) => return response,
    };
    // Checked before the code is redeemed: a login that cannot take the answer spends nothing.
    let Some(flow) = crate::app::flow_version(&app, &login.run.version) else {
        return invalid("The login flow changed while you were away.");
    };
    if !matches!(
        login.output,
        Output::Redirect { .. } | Output::Prompt { .. }
    ) {
        return invalid("This sign-in is not waiting for a provider.");
    }
    let option = AuthOption::Federated(pending.idp.clone());
    let mut writes = vec![Write::TakeChallenge(key)];
    let upstream = app.config.identity_providers.get(&pending.idp);
    let label = upstream.map_or(pending.idp.clone(), |u| u.label.clone());
    let refused = |why: String, writes: &mut Vec<Write>| {
        writes.push(audit(
            "federation.refused",
            "",
            &ip,
            now,
            serde_json::json!({ "idp": pending.idp, "reason": why }),
        ));
        Input::Failed {
            option: option.clone(),
            user: None,
            reason: Some(format!("the sign-in at {label} did not succeed")),
        }
    };
    // RFC 9207: an answer that names its issuer must name the one this login went to (a
    // provider cannot pass another's answer off as its own: mix-up).
    let expected_issuer = upstream.and_then(|u| match &u.kind {
        UpstreamKind::Oidc { issuer, .. } => Some(issuer.as_str()),
        UpstreamKind::NotConfigured(_) => None,
    });
    let mixed_up = params
        .get("iss")
        .is_some_and(|iss| Some(iss) != expected_issuer);
    let input = match (params.get("error"), params.get("code"), upstream) {
        _ if mixed_up => refused(
            "the answer names another issuer than the provider it was sent to".into(),
            &mut writes,
        ),
        (Some(error), _, _) => refused(format!("the provider answered {error}"), &mut writes),
        (None, Some(code), Some(upstream)) => {
            match provider(&app, &upstream.name, &upstream.kind) {
                Some(provider) => match app.federation.finish(&provider, &pending, code).await {
                    Ok(found) => {
                        writes.push(audit(
                            "federation.passed",
                            "",
                            &ip,
                            now,
                            serde_json::json!({ "idp": pending.idp, "subject": found.subject }),
                        ));
                        Input::Federated {
                            idp: pending.idp.clone(),
                            subject: found.subject,
                            claims: found.claims,
                        }
                    }
                    Err(why) => refused(why, &mut writes),
                },
                None => refused("the provider is not configured".into(), &mut writes),
            }
        }
        _ => refused("the answer has no code".into(), &mut writes),
    };
    let directory = crate::directory::StoreDirectory::new(app.store.as_ref(), now);
    let read_seq = login.seq;
    let mut login = login;
    let step = app.engine.advance(&flow, login.run, input, now, &directory);
    login.run = step.run;
    login.output = step.output;
    login.seq = read_seq + 1;
    writes.extend(effect_writes(step.effects, &ip, now));
    super::login::continue_login(&app, &handle, Some(read_seq), login, writes, addr, now).await
}
