//! The authorization endpoint (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2).
//!
//! Validation order matters: until the client and its exact redirect URI are known, errors are
//! pages for the person (redirecting to an unvalidated URI would make us an open redirector);
//! after, errors go back to the client. Every request runs the application's flow; a valid
//! session (unless `prompt=login`, or an `id_token_hint` names someone else) carries its user and
//! the steps it passed (within `max_age`) into the run, so the flow answers at once when those
//! satisfy it, asks only for what is missing (step-up), and still applies its conditions and
//! denials to the signed-in user.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::oauth_error::{redirect_error, redirect_with};
use super::params::Params;
use super::{AppState, blocking, client_ip, cookies};
use crate::app::{App, now};
use crate::crypto::random_token;
use crate::store::{AuthCode, Authentication, AuthorizeRequest, Login, Session, Write, token_key};

/// `GET /authorize`.
pub async fn get(
    state: AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(state, addr, headers, query.unwrap_or_default().as_bytes()).await
}

/// `POST /authorize` (form-encoded, OpenID Connect Core §3.1.2.1).
pub async fn post(
    state: AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorize(state, addr, headers, &body).await
}

async fn authorize(
    State(app): AppState,
    addr: SocketAddr,
    headers: HeaderMap,
    raw: &[u8],
) -> Response {
    let page = |message: &str| {
        app.pages.message(
            StatusCode::BAD_REQUEST,
            "This sign-in request is not valid",
            message,
        )
    };
    let params = match Params::parse(raw) {
        Ok(params) => params,
        Err(why) => return page(&why),
    };
    let Some(client_id) = params.get("client_id") else {
        return page("The request names no application (client_id is missing).");
    };
    let config = app.config();
    let Some(client) = config.applications.get(client_id) else {
        return page("The application is not known to this server.");
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return page("The request has no redirect_uri.");
    };
    if !client.redirect_uris.iter().any(|uri| uri == redirect_uri) {
        return page("The redirect_uri is not registered for this application.");
    }
    let state = params.get("state");
    let issuer = config.issuer.as_str();
    let error = |code: &str, description: &str| {
        redirect_error(redirect_uri, code, description, state, issuer)
    };
    if params.get("request").is_some() {
        return error("request_not_supported", "request objects are not supported");
    }
    if params.get("request_uri").is_some() {
        return error("request_uri_not_supported", "request_uri is not supported");
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return error(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        None => return error("invalid_request", "response_type is missing"),
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return error("invalid_request", "only response_mode=query is supported");
    }
    if !client.allows(crate::config::GrantType::AuthorizationCode) {
        return error(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        );
    }
    let challenge = params.get("code_challenge");
    match (challenge, params.get("code_challenge_method")) {
        (None, _) if client.public => {
            return error(
                "invalid_request",
                "public clients must use PKCE (code_challenge)",
            );
        }
        (None, Some(_)) => {
            return error(
                "invalid_request",
                "code_challenge_method without code_challenge",
            );
        }
        (Some(_), method) if method != Some("S256") => {
            return error("invalid_request", "code_challenge_method must be S256");
        }
        (Some(challenge), _) if !valid_challenge(challenge) => {
            return error(
                "invalid_request",
                "code_challenge must be 43 base64url characters",
            );
        }
        _ => {}
    }
    let prompt = params.list("prompt");
    if prompt
        .iter()
        .any(|p| !["none", "login", "consent", "select_account", "create"].contains(&p.as_str()))
    {
        return error("invalid_request", "unknown prompt value");
    }
    let prompt_none = prompt.iter().any(|p| p == "none");
    if prompt_none && prompt.len() > 1 {
        return error(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        );
    }
    let max_age = match params.get("max_age").map(str::parse::<u64>) {
        None => None,
        Some(Ok(seconds)) => Some(seconds),
        Some(Err(_)) => return error("invalid_request", "max_age must be a non-negative integer"),
    };
    let request = AuthorizeRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        scopes: params.list("scope"),
        state: params.take("state"),
        nonce: params.take("nonce"),
        code_challenge: challenge.map(String::from),
        acr_values: params.list("acr_values"),
        login_hint: params.take("login_hint"),
        fresh: prompt.iter().any(|p| p == "login") || max_age == Some(0),
        signup: prompt.iter().any(|p| p == "create"),
    };
    let now = now();
    if app
        .registry
        .snapshot()
        .flow_for(&client.client_id)
        .is_none()
    {
        return app.pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not available",
            "No login flow applies to this application.",
        );
    };

    let session = match current_session(&app, &headers, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    // An id_token_hint names who the client expects; another signed-in user is not reused
    // (OpenID Connect Core 3.1.2.1).
    let hinted = params
        .get("id_token_hint")
        .and_then(|token| app.keys.verify(token).ok())
        .and_then(|(_, claims)| claims["sub"].as_str().map(String::from));
    let session = session.filter(|session| {
        !prompt.iter().any(|p| p == "login")
            && hinted.as_ref().is_none_or(|sub| *sub == session.user)
    });
    let sso = match &session {
        Some(session) => match carry(&app, session, max_age, now) {
            Ok(carried) => carried.map(|carried| (session.clone(), carried)),
            Err(response) => return response,
        },
        None => None,
    };
    if prompt_none && sso.is_none() {
        return error("login_required", "the user is not signed in");
    }
    start_login(
        &app,
        Requested::Oidc(request),
        addr,
        &headers,
        now,
        sso,
        prompt_none,
    )
    .await
}

/// What a session brings to a new login: its user as stored now, and the steps it passed
/// within `max_age` (all of them without one). `None` when its user is gone.
pub(crate) fn carry(
    app: &App,
    session: &Session,
    max_age: Option<u64>,
    now: u64,
) -> Result<Option<idflow_engine::Carried>, Response> {
    let Some(user) = app
        .store
        .user(&session.user)
        .map_err(|e| server_error(app, &e))?
    else {
        return Ok(None);
    };
    let user =
        crate::mfa::user_view(app.store.as_ref(), &user, now).map_err(|e| server_error(app, &e))?;
    let steps = session
        .steps
        .iter()
        .filter(|step| max_age.is_none_or(|max| step.at.saturating_add(max) >= now))
        .cloned()
        .collect();
    // What was typed then still names the user only if it is still their name or address.
    let identifier = if session.identifier.eq_ignore_ascii_case(&user.username)
        || session.identifier.eq_ignore_ascii_case(&user.email)
    {
        session.identifier.clone()
    } else {
        user.username.clone()
    };
    Ok(Some(idflow_engine::Carried {
        user,
        identifier,
        steps,
        fresh_since: now.saturating_sub(app.config().mfa.reauth_seconds),
    }))
}

fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The valid session named by the request's cookie, if any.
pub fn current_session(
    app: &App,
    headers: &HeaderMap,
    now: u64,
) -> Result<Option<Session>, Response> {
    let Some(secret) = cookies::read(headers, cookies::SESSION) else {
        return Ok(None);
    };
    let session = app
        .store
        .session(&token_key(&secret))
        .map_err(|e| server_error(app, &e))?;
    let Some(session) = session.filter(|s| s.expires > now) else {
        return Ok(None);
    };
    let user = app
        .store
        .user(&session.user)
        .map_err(|e| server_error(app, &e))?;
    Ok(user
        .filter(|u| !u.disabled && !u.locked_at(now))
        .map(|_| session))
}

/// A 500 page, with the detail in the log only.
pub fn server_error(app: &App, detail: &dyn std::fmt::Display) -> Response {
    tracing::error!(%detail, "request failed");
    app.pages.message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not complete the request. Try again in a moment.",
    )
}

/// Applies `batch` durably off the async workers; a failure becomes a 500 page.
pub async fn commit(app: &Arc<App>, batch: crate::store::Batch) -> Result<(), Response> {
    let store = Arc::clone(&app.store);
    match blocking(move || store.commit(batch)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(server_error(app, &error)),
        Err(error) => Err(server_error(app, &error)),
    }
}

/// A new authorization code for `request` on `session`: the write to store it and the redirect
/// that delivers it.
pub fn issue_code(
    app: &App,
    request: &AuthorizeRequest,
    session: &Session,
    now: u64,
) -> (Write, Response) {
    let code = random_token(32);
    let record = AuthCode {
        key: token_key(&code),
        request: request.clone(),
        authentication: Authentication {
            user: session.user.clone(),
            sid: session.sid.clone(),
            auth_time: session.auth_time,
            amr: session.amr.clone(),
            acr: session.acr.clone(),
            claims: session.claims.clone(),
        },
        expires: now + app.config().tokens.code_seconds,
        redeemed: None,
    };
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        params.push(("state", state.as_str()));
    }
    let config = app.config();
    params.push(("iss", config.issuer.as_str()));
    (
        Write::PutCode(record),
        redirect_with(&request.redirect_uri, &params),
    )
}

/// What a login answers when it completes.
pub enum Requested {
    /// Nothing: the person signs in to their account page.
    Account,
    /// An OpenID Connect authorization request: a code to its redirect URI.
    Oidc(AuthorizeRequest),
    /// A SAML AuthnRequest (or IdP-initiated sign-in): a response posted to the ACS.
    Saml(crate::store::SamlAuthn),
}

/// Starts a login on the flow for the request's application (or the default flow), stores it
/// and sends the browser to the login page with a cookie binding it to this login.
/// `passive`: the application asked that the user not be interacted with (`prompt=none`,
/// `IsPassive`), so a flow that would ask something answers with an error instead.
pub async fn start_login(
    app: &Arc<App>,
    requested: Requested,
    addr: SocketAddr,
    headers: &HeaderMap,
    now: u64,
    sso: Option<(Session, idflow_engine::Carried)>,
    passive: bool,
) -> Response {
    let (request, saml) = match requested {
        Requested::Account => (None, None),
        Requested::Oidc(request) => (Some(request), None),
        Requested::Saml(saml) => (None, Some(saml)),
    };
    let application = match (&request, &saml) {
        (Some(request), _) => request.client_id.clone(),
        (None, Some(saml)) => saml.sp.clone(),
        (None, None) => String::new(),
    };
    let Some(flow) = app.registry.snapshot().flow_for(&application) else {
        return app.pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not available",
            "No login flow applies here.",
        );
    };
    let engine_request = idflow_engine::Request {
        ip: client_ip(Some(&addr)),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect(),
        application,
        protocol: if saml.is_some() { "saml" } else { "oidc" }.into(),
        acr_values: match (&request, &saml) {
            (Some(request), _) => request.acr_values.clone(),
            (None, Some(saml)) => saml.acr_values.clone(),
            (None, None) => Vec::new(),
        },
        scopes: request
            .as_ref()
            .map(|r| r.scopes.clone())
            .unwrap_or_default(),
        risk: 0,
        hour: ((now / 3600) % 24) as i64,
        // 1970-01-01 was a Thursday (4).
        weekday: (((now / 86_400) + 3) % 7 + 1) as i64,
        signup: request.as_ref().is_some_and(|r| r.signup),
    };
    let directory = crate::directory::StoreDirectory::new(app.store.as_ref(), now);
    let (replaces, carried) = match sso {
        Some((session, carried)) => (Some(session.key), Some(carried)),
        None => (None, None),
    };
    // A browser signed in already, asking for a fresh sign-in: that session ends when this one
    // completes.
    let supersedes = match (&replaces, current_session(app, headers, now)) {
        (None, Ok(Some(session))) => Some(session.key),
        _ => None,
    };
    let step = app
        .engine
        .start_carried(&flow, engine_request, carried, now, &directory);
    if passive && !matches!(step.output, idflow_engine::Output::Complete { .. }) {
        // The session does not satisfy this application's flow without asking the user.
        if let Some(saml) = &saml {
            return crate::http::saml::respond::failure(
                app,
                saml,
                idflow_saml::uri::RESPONDER,
                Some(idflow_saml::uri::NO_PASSIVE),
                now,
            );
        }
        if let Some(request) = &request {
            return redirect_error(
                &request.redirect_uri,
                "interaction_required",
                "signing in to this application needs the user",
                request.state.as_deref(),
                &app.config().issuer,
            );
        }
    }
    let handle = random_token(32);
    // One binding value per browser: every tab's login records it, so tabs do not collide.
    let (browser, new_browser) = match cookies::read(headers, cookies::BROWSER) {
        Some(value) if value.len() >= 32 && value.len() <= 64 => (value, false),
        _ => (random_token(32), true),
    };
    let login = Login {
        key: token_key(&handle),
        seq: 0,
        browser: token_key(&browser),
        csrf: random_token(32),
        run: step.run,
        output: step.output,
        authorize: request,
        saml,
        supersedes,
        expires: now + app.config().tokens.login_seconds,
        replaces,
    };
    let mut response = super::login::continue_login(
        app,
        &handle,
        None,
        login,
        crate::effects::effect_writes(
            step.effects,
            &app.config().provisioning_targets,
            &client_ip(Some(&addr)),
            now,
        ),
        addr,
        now,
    )
    .await;
    if new_browser {
        let cookie = cookies::set(
            cookies::BROWSER,
            &browser,
            app.config().tokens.login_seconds,
            app.config().secure_cookies,
        );
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A redirect to the login page for `handle`.
pub fn to_login_page(handle: &str) -> Response {
    Redirect::to(&format!("/login?login={handle}")).into_response()
}

/// Property tests of the challenge check on any text (see `server/tests/never_panics.rs`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::http::params::fuzz_config(512))]

        #[test]
        fn any_text_is_a_challenge_or_not_without_panicking(text in "\\PC{0,60}") {
            let _ = valid_challenge(&text);
        }

        #[test]
        fn the_s256_challenge_of_any_verifier_passes_and_one_character_off_fails(
            verifier in "[A-Za-z0-9._~-]{43,128}",
            at in any::<prop::sample::Index>(),
            bad in "[^A-Za-z0-9_-]",
        ) {
            let challenge = crate::crypto::pkce_s256(&verifier);
            prop_assert!(valid_challenge(&challenge), "{}", challenge);
            let mut altered = challenge.clone();
            altered.replace_range(at.index(43)..at.index(43) + 1, &bad);
            prop_assert!(!valid_challenge(&altered), "{}", altered);
            prop_assert!(!valid_challenge(&challenge[..42]));
            let longer = format!("{challenge}A");
            prop_assert!(!valid_challenge(&longer));
        }
    }
}
