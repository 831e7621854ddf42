//! `/saml2/slo`: Single Logout over the HTTP-Redirect binding.
//!
//! SP-initiated: a service provider's LogoutRequest ends the browser's session if the session
//! signed the user in to that SP as the NameID it names; the other SPs of the session are then
//! sent a LogoutRequest each, one after another through the browser (front channel), and the
//! initiating SP gets its LogoutResponse last. IdP-initiated: `/logout` ends the session and
//! runs the same chain before its own answer. What the chain still has to do is a store
//! challenge keyed by the RelayState each hop carries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use idflow_saml::{binding, logout, uri};
use serde::{Deserialize, Serialize};

use super::sso::SAML_FIELD_BYTES;
use crate::app::{App, now};
use crate::crypto::random_token;
use crate::effects::audit;
use crate::http::authorize::{commit, current_session, server_error};
use crate::http::cookies;
use crate::http::params::Params;
use crate::store::{Challenge, SamlParticipant, Write, token_key};

/// How long one hop of the chain may take.
const HOP_SECONDS: u64 = 300;

/// How a logout chain has gone so far: what the SP that asked is told at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every participant told so far logged out.
    LoggedOut,
    /// Some participant could not be told, or did not log out (`PartialLogout`).
    Partial,
    /// The request named a principal this browser's session did not sign in (nothing ended).
    UnknownPrincipal,
}

/// What a logout chain ends with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Finish {
    /// A LogoutResponse to the SP that asked.
    Respond {
        /// The SP's application name.
        sp: String,
        /// Its LogoutRequest's id.
        request_id: String,
        /// Its RelayState, returned.
        relay_state: Option<String>,
    },
    /// A redirect (an OpenID Connect client's post-logout URI).
    Redirect(String),
    /// The signed-out page.
    Page,
}

/// The rest of a logout chain, stored under the RelayState of the hop in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chain {
    remaining: Vec<SamlParticipant>,
    finish: Finish,
    outcome: Outcome,
    /// The LogoutRequest id the current hop waits an answer to.
    waiting: String,
    /// The SP it was sent to.
    waiting_sp: String,
}

fn chain_key(token: &str) -> String {
    format!("saml-logout:{}", token_key(token))
}

fn refused(app: &App, why: &str) -> Response {
    tracing::info!(why, "SAML logout refused");
    app.pages.message(
        StatusCode::BAD_REQUEST,
        "The sign-out request is not valid",
        &format!("{why}."),
    )
}

/// `GET /saml2/slo`: an SP's LogoutRequest, or an SP's LogoutResponse to a hop of our chain.
pub async fn get(
    State(app): crate::http::AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let raw = query.unwrap_or_default();
    let params = match Params::parse_with_limit(raw.as_bytes(), SAML_FIELD_BYTES) {
        Ok(params) => params,
        Err(why) => return refused(&app, &why),
    };
    if let Some(encoded) = params.get("SAMLRequest") {
        return sp_initiated(
            &app,
            addr,
            &headers,
            &raw,
            encoded,
            params.take("RelayState"),
        )
        .await;
    }
    if let (Some(encoded), Some(token)) = (params.get("SAMLResponse"), params.get("RelayState")) {
        return next_hop(&app, &raw, encoded, token).await;
    }
    refused(
        &app,
        "It has no SAMLRequest or SAMLResponse with RelayState",
    )
}

async fn sp_initiated(
    app: &Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    raw: &str,
    encoded: &str,
    relay_state: Option<String>,
) -> Response {
    let now = now();
    let request = match binding::decode_redirect(encoded)
        .and_then(|xml| logout::parse_logout_request(&xml))
    {
        Ok(request) => request,
        Err(error) => return refused(app, &error.to_string()),
    };
    let config = app.config();
    let Some(sp) = config
        .service_providers
        .values()
        .find(|sp| sp.entity_id == request.issuer)
    else {
        return refused(
            app,
            &format!("`{}` is not a registered service provider", request.issuer),
        );
    };
    // A logout is signed whenever the SP's key is known: otherwise anyone could end sessions.
    if !sp.certificates.is_empty()
        && let Err(error) = binding::verify_query_signature(raw, "SAMLRequest", &sp.certificates)
    {
        return refused(app, &format!("Its signature does not check: {error}"));
    }
    if relay_state.as_ref().is_some_and(|r| r.len() > 1024) {
        return refused(app, "Its RelayState is longer than 1024 bytes");
    }
    let here = format!("{}/saml2/slo", app.config().issuer);
    if request.destination.as_deref().is_some_and(|d| d != here) {
        return refused(app, "It is addressed to another server");
    }
    if sp.slo_url.is_none() {
        return refused(
            app,
            "The application has no Single Logout address registered",
        );
    }
    // Each request is answered once: a replayed one cannot end a later session.
    let issued = request.issue_instant;
    match super::admit_once(
        app,
        "saml-logout-request",
        &sp.name,
        &request.id,
        issued,
        now,
    )
    .await
    {
        Ok(()) => {}
        Err(super::NotAdmitted::Refused(why)) => return refused(app, why),
        Err(super::NotAdmitted::Failed(response)) => return response,
    }
    let session = match current_session(app, headers, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    // The session ends only if it is the one the SP knows: its participant, its NameID, and
    // (when the request names one) its session index.
    let ending = session.filter(|s| {
        s.saml.iter().any(|p| {
            p.sp == sp.name
                && Some(&p.name_id) == request.name_id.as_ref()
                && request
                    .session_index
                    .as_ref()
                    .is_none_or(|index| *index == p.session_index)
        })
    });
    let mut remaining = Vec::new();
    if let Some(session) = &ending {
        remaining = session
            .saml
            .iter()
            .filter(|p| p.sp != sp.name)
            .cloned()
            .collect();
        let batch = vec![
            Write::DeleteSession(session.key.clone()),
            audit(
                "logout",
                &session.user,
                &addr.ip().to_string(),
                now,
                serde_json::json!({ "saml_sp": sp.name }),
            ),
        ];
        if let Err(response) = commit(app, batch).await {
            return response;
        }
    }
    let finish = Finish::Respond {
        sp: sp.name.clone(),
        request_id: request.id.clone(),
        relay_state,
    };
    // A request for another session ends nothing here: the SP is told its principal is not
    // this browser's.
    let outcome = if ending.is_some() {
        Outcome::LoggedOut
    } else {
        Outcome::UnknownPrincipal
    };
    let mut response = run_chain(app, remaining, finish, outcome, now).await;
    if ending.is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookies::clear(cookies::SESSION, app.config().secure_cookies),
        );
    }
    response
}

/// Sends the browser to the next SP with a LogoutRequest, or, when none is left, to the
/// chain's end.
pub async fn run_chain(
    app: &Arc<App>,
    mut remaining: Vec<SamlParticipant>,
    finish: Finish,
    mut outcome: Outcome,
    now: u64,
) -> Response {
    while !remaining.is_empty() {
        let participant = remaining.remove(0);
        let Some(slo_url) = app
            .config()
            .service_providers
            .get(&participant.sp)
            .and_then(|sp| sp.slo_url.clone())
        else {
            // An SP without Single Logout cannot be told: the logout is partial.
            if outcome == Outcome::LoggedOut {
                outcome = Outcome::Partial;
            }
            continue;
        };
        let token = random_token(32);
        let request_id = idflow_saml::xml::new_id();
        let xml = logout::logout_request(
            &request_id,
            &super::entity_id(app),
            &slo_url,
            &participant.name_id,
            &participant.name_id_format,
            &participant.session_index,
            now,
            now + HOP_SECONDS,
        );
        let url = match binding::redirect_url(
            &slo_url,
            "SAMLRequest",
            &xml,
            Some(&token),
            Some(&app.saml),
        ) {
            Ok(url) => url,
            Err(error) => return server_error(app, &error),
        };
        let chain = Chain {
            remaining,
            finish,
            outcome,
            waiting: request_id,
            waiting_sp: participant.sp.clone(),
        };
        let challenge = Challenge {
            key: chain_key(&token),
            user: String::new(),
            data: serde_json::to_value(&chain).unwrap_or_default(),
            expires: now + HOP_SECONDS,
        };
        if let Err(response) = commit(app, vec![Write::PutChallenge(challenge)]).await {
            return response;
        }
        return Redirect::to(&url).into_response();
    }
    finished(app, finish, outcome, now)
}

/// An SP's LogoutResponse to one hop: on to the next. It must come from the SP the hop went
/// to (signed, when its key is known) and answer the request sent.
async fn next_hop(app: &Arc<App>, raw: &str, encoded: &str, token: &str) -> Response {
    let now = now();
    let key = chain_key(token);
    let chain = match app.store.challenge(&key, now) {
        Ok(found) => found.and_then(|c| serde_json::from_value::<Chain>(c.data).ok()),
        Err(error) => return server_error(app, &error),
    };
    let Some(mut chain) = chain else {
        return refused(app, "It does not belong to a sign-out in progress");
    };
    let config = app.config();
    let Some(sp) = config.service_providers.get(&chain.waiting_sp) else {
        return refused(app, "The application it comes from is no longer configured");
    };
    if !sp.certificates.is_empty()
        && let Err(error) = binding::verify_query_signature(raw, "SAMLResponse", &sp.certificates)
    {
        return refused(app, &format!("Its signature does not check: {error}"));
    }
    match binding::decode_redirect(encoded).and_then(|xml| logout::parse_logout_response(&xml)) {
        Ok(answer) if answer.issuer != sp.entity_id => {
            return refused(app, "It comes from another application than the one asked");
        }
        Ok(answer) if answer.in_response_to.as_deref() == Some(chain.waiting.as_str()) => {
            if answer.status.as_deref() != Some(uri::SUCCESS) {
                tracing::warn!(sp = sp.name, status = ?answer.status, "an SP did not log out");
                if chain.outcome == Outcome::LoggedOut {
                    chain.outcome = Outcome::Partial;
                }
            }
        }
        Ok(_) => return refused(app, "It answers another sign-out"),
        Err(error) => return refused(app, &error.to_string()),
    }
    if let Err(response) = commit(app, vec![Write::TakeChallenge(key)]).await {
        return response;
    }
    run_chain(app, chain.remaining, chain.finish, chain.outcome, now).await
}

/// The end of a chain.
fn finished(app: &App, finish: Finish, outcome: Outcome, now: u64) -> Response {
    match finish {
        Finish::Respond {
            sp,
            request_id,
            relay_state,
        } => {
            let config = app.config();
            let Some(sp) = config.service_providers.get(&sp) else {
                return signed_out(app);
            };
            let Some(destination) = sp.slo_response_url.clone().or_else(|| sp.slo_url.clone())
            else {
                return signed_out(app);
            };
            let status = match outcome {
                Outcome::LoggedOut => (uri::SUCCESS, None),
                Outcome::Partial => (uri::SUCCESS, Some(uri::PARTIAL_LOGOUT)),
                Outcome::UnknownPrincipal => (uri::REQUESTER, Some(uri::UNKNOWN_PRINCIPAL)),
            };
            let xml = logout::logout_response(
                &idflow_saml::xml::new_id(),
                &super::entity_id(app),
                &destination,
                &request_id,
                status,
                now,
            );
            match binding::redirect_url(
                &destination,
                "SAMLResponse",
                &xml,
                relay_state.as_deref(),
                Some(&app.saml),
            ) {
                Ok(url) => Redirect::to(&url).into_response(),
                Err(error) => server_error(app, &error),
            }
        }
        Finish::Redirect(url) => Redirect::to(&url).into_response(),
        Finish::Page => signed_out(app),
    }
}

fn signed_out(app: &App) -> Response {
    app.pages.message(
        StatusCode::OK,
        "You are signed out",
        "You can close this window.",
    )
}
