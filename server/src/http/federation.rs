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
use crate::crypto::random_token;
use crate::effects::{audit, effect_writes};
use crate::federation::oauth2::OAuth2Provider;
use crate::federation::saml::SamlIdp;
use crate::federation::{Answer, Pending, challenge_key, oidc::Provider};
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
            client_secret: &client_secret.0,
            scopes,
            redirect_uri: format!("{}/federation/callback", app.config().issuer),
            fresh: false,
        }),
        _ => None,
    }
}

fn oauth2_provider<'a>(
    app: &App,
    name: &'a str,
    kind: &'a UpstreamKind,
) -> Option<OAuth2Provider<'a>> {
    match kind {
        UpstreamKind::OAuth2 {
            issuer: _,
            authorize_url,
            token_url,
            userinfo_url,
            client_id,
            client_secret,
            scopes,
            subject_claim,
            claims,
        } => Some(OAuth2Provider {
            name,
            authorize_url,
            token_url,
            userinfo_url,
            client_id,
            client_secret: &client_secret.0,
            scopes,
            subject_claim,
            claims,
            redirect_uri: format!("{}/federation/callback", app.config().issuer),
            fresh: false,
        }),
        _ => None,
    }
}

fn saml_idp<'a>(name: &'a str, kind: &'a UpstreamKind) -> Option<SamlIdp<'a>> {
    match kind {
        UpstreamKind::Saml {
            entity_id,
            sso_url,
            certificates,
        } => Some(SamlIdp {
            name,
            entity_id,
            sso_url,
            certificates,
            fresh: false,
        }),
        _ => None,
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
    let config = app.config();
    let Some(upstream) = config.identity_providers.get(idp) else {
        return not_available(app, idp, "it is not declared in idflow.toml");
    };
    let sealed = match app.mfa.key.seal(handle.as_bytes(), &login.key) {
        Ok(sealed) => sealed,
        Err(error) => return server_error(app, &error),
    };
    // An application that asked for a fresh sign-in gets one from the provider too.
    let fresh = login.authorize.as_ref().is_some_and(|a| a.fresh)
        || login.saml.as_ref().is_some_and(|s| s.force_authn);
    let begun = if let Some(mut idp) = saml_idp(&upstream.name, &upstream.kind) {
        idp.fresh = fresh;
        let state = random_token(32);
        let issuer = &app.config().issuer;
        crate::federation::saml::begin(&idp, &app.saml, issuer, &login.key, sealed, &state, now())
            .map(|(url, pending)| (url, state, pending))
            .map_err(|e| e.to_string())
    } else if let Some(mut provider) = provider(app, &upstream.name, &upstream.kind) {
        provider.fresh = fresh;
        app.federation.begin(&provider, &login.key, sealed).await
    } else if let Some(mut provider) = oauth2_provider(app, &upstream.name, &upstream.kind) {
        provider.fresh = fresh;
        crate::federation::oauth2::begin(&provider, &login.key, sealed)
    } else {
        let why = match &upstream.kind {
            UpstreamKind::NotConfigured(why) => why.as_str(),
            _ => "",
        };
        return not_available(app, &upstream.label, why);
    };
    let (url, state, pending) = match begun {
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
        expires: now() + app.config().tokens.login_seconds,
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
    let config = app.config();
    let upstream = config.identity_providers.get(&pending.idp);
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
    // provider cannot pass another's answer off as its own: mix-up). A plain OAuth 2.0
    // provider configured without an issuer cannot be checked.
    let expected_issuer = upstream.and_then(|u| match &u.kind {
        UpstreamKind::Oidc { issuer, .. } => Some(issuer.as_str()),
        UpstreamKind::OAuth2 { issuer, .. } => issuer.as_deref(),
        _ => None,
    });
    let mixed_up = matches!(
        (params.get("iss"), expected_issuer),
        (Some(iss), Some(expected)) if iss != expected
    );
    let input = match (params.get("error"), params.get("code"), upstream) {
        // A SAML answer, verified (and audited) at the ACS.
        _ if pending.answer.is_some() => match pending.answer.clone() {
            Some(Answer::Passed { subject, claims }) => Input::Federated {
                idp: pending.idp.clone(),
                subject,
                claims,
            },
            _ => Input::Failed {
                option: option.clone(),
                user: None,
                reason: Some(format!("the sign-in at {label} did not succeed")),
            },
        },
        _ if pending.saml_request.is_some() => refused(
            "the SAML provider's answer did not arrive at the assertion consumer service".into(),
            &mut writes,
        ),
        _ if mixed_up => refused(
            "the answer names another issuer than the provider it was sent to".into(),
            &mut writes,
        ),
        (Some(error), _, _) => refused(format!("the provider answered {error}"), &mut writes),
        (None, Some(code), Some(upstream)) => {
            let found = if let Some(provider) = provider(&app, &upstream.name, &upstream.kind) {
                Some(app.federation.finish(&provider, &pending, code).await)
            } else if let Some(provider) = oauth2_provider(&app, &upstream.name, &upstream.kind) {
                Some(
                    crate::federation::oauth2::finish(
                        &app.federation.http,
                        &provider,
                        &pending,
                        code,
                    )
                    .await,
                )
            } else {
                None
            };
            match found {
                Some(found) => match found {
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
    writes.extend(effect_writes(
        step.effects,
        &app.config().provisioning_targets,
        &ip,
        now,
    ));
    super::login::continue_login(&app, &handle, Some(read_seq), login, writes, addr, now).await
}

/// `GET /federation/saml/metadata`: our SP metadata, for upstream SAML IdPs to import.
pub async fn saml_metadata(State(app): AppState) -> Response {
    let issuer = &app.config().issuer;
    let body = idflow_saml::metadata::sp_metadata(
        &crate::federation::saml::entity_id(issuer),
        &crate::federation::saml::acs_url(issuer),
        &app.saml.certificate_base64(),
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}

/// `POST /federation/saml/acs`: an upstream SAML IdP's Response. Verified here, where the
/// login cookie is absent (the post comes from the IdP's site); the answer is recorded on the
/// pending redirect and the browser sent on to `/federation/callback`, which finds its login.
pub async fn saml_acs(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let now = now();
    let ip = addr.ip().to_string();
    let params =
        Params::parse_with_limit(&body, super::saml::sso::SAML_FIELD_BYTES).unwrap_or_default();
    let invalid = |why: &str| {
        app.pages.message(
            StatusCode::BAD_REQUEST,
            "This sign-in cannot continue",
            &format!("{why} Return to the application and start signing in again."),
        )
    };
    let audit_refusal = |idp: &str, reason: &str| {
        audit(
            "federation.refused",
            "",
            &ip,
            now,
            serde_json::json!({ "idp": idp, "reason": reason }),
        )
    };
    let (Some(state), Some(encoded)) = (params.get("RelayState"), params.get("SAMLResponse"))
    else {
        let entry = audit_refusal("", "a SAML response without RelayState or SAMLResponse");
        let _ = super::login::commit_step(&app, vec![entry], false).await;
        return invalid("The provider's answer is incomplete.");
    };
    let key = challenge_key(state);
    let challenge = match app.store.challenge(&key, now) {
        Ok(found) => found,
        Err(error) => return server_error(&app, &error),
    };
    let pending = challenge
        .as_ref()
        .and_then(|c| serde_json::from_value::<Pending>(c.data.clone()).ok())
        .filter(|p| p.saml_request.is_some() && p.answer.is_none());
    let (Some(challenge), Some(mut pending)) = (challenge, pending) else {
        let entry = audit_refusal(
            "",
            "a SAML response for no sign-in in progress (expired, used or forged)",
        );
        let _ = super::login::commit_step(&app, vec![entry], false).await;
        return invalid(
            "This answer does not belong to a sign-in in progress (it expired or was used).",
        );
    };
    let config = app.config();
    let idp = config
        .identity_providers
        .get(&pending.idp)
        .and_then(|u| saml_idp(&u.name, &u.kind));
    let request_id = pending.saml_request.clone().unwrap_or_default();
    let verified = match &idp {
        Some(idp) => crate::federation::saml::finish(
            idp,
            &app.config().issuer,
            encoded,
            &request_id,
            app.config().saml.skew_seconds,
            now,
        )
        .map_err(|e| e.to_string()),
        None => Err("the provider is no longer configured for SAML".into()),
    };
    let mut writes = Vec::new();
    pending.answer = Some(match verified {
        Ok(verified) => {
            // An assertion is accepted once, until it could no longer be used anyway.
            writes.push(Write::RecordOnce {
                seen: Challenge {
                    key: format!(
                        "saml-assertion:{}",
                        crate::store::token_key(&format!(
                            "{}\u{0}{}",
                            pending.idp, verified.assertion_id
                        ))
                    ),
                    user: String::new(),
                    data: serde_json::Value::Null,
                    expires: verified.valid_until.max(now + 1),
                },
                now,
            });
            writes.push(audit(
                "federation.passed",
                "",
                &ip,
                now,
                serde_json::json!({ "idp": pending.idp, "subject": verified.name_id }),
            ));
            Answer::Passed {
                subject: verified.name_id.clone(),
                claims: crate::federation::saml::claims(&verified),
            }
        }
        Err(reason) => {
            writes.push(audit_refusal(&pending.idp, &reason));
            Answer::Refused { reason }
        }
    });
    writes.push(Write::PutChallenge(Challenge {
        data: serde_json::to_value(&pending).unwrap_or_default(),
        ..challenge
    }));
    let store = Arc::clone(&app.store);
    let committed = blocking(move || store.commit(writes)).await;
    match committed {
        Ok(Ok(())) => {}
        Ok(Err(crate::store::StoreError::Conflict(_))) => {
            let entry = audit_refusal(&pending.idp, "a replayed SAML assertion");
            let _ = super::login::commit_step(&app, vec![entry], false).await;
            return invalid("This answer was already used.");
        }
        Ok(Err(error)) => return server_error(&app, &error),
        Err(error) => return server_error(&app, &error),
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", state)
        .finish();
    Redirect::to(&format!("/federation/callback?{query}")).into_response()
}
