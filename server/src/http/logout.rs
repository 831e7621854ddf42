//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) and the account page's sign
//! out. A request with a valid `id_token_hint` for the session's user signs out at once; any
//! other request asks the person first, with a CSRF-protected form, so a third-party page
//! cannot sign people out. `post_logout_redirect_uri` must be registered for the client, exactly.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::authorize::{commit, current_session};
use super::oauth_error::redirect_with;
use super::params::Params;
use super::{AppState, cookies};
use crate::app::{App, now};
use crate::crypto::constant_time_eq;
use crate::store::{AuditEvent, Session, Write};

/// `GET /logout`.
pub async fn get(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    logout(
        &app,
        addr,
        &headers,
        query.unwrap_or_default().as_bytes(),
        false,
    )
    .await
}

/// `POST /logout` (the confirmation form, or an RP posting its parameters).
pub async fn post(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    logout(&app, addr, &headers, &body, true).await
}

async fn logout(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    raw: &[u8],
    posted: bool,
) -> Response {
    let page = |message: &str| {
        app.pages.message(
            StatusCode::BAD_REQUEST,
            "This sign-out request is not valid",
            message,
        )
    };
    let params = match Params::parse(raw) {
        Ok(params) => params,
        Err(why) => return page(&why),
    };
    let now = now();
    // The hint may have expired (it usually has); its signature and issuer must still hold.
    // A hint that does not verify (signed by a key since dropped, say) counts as absent: the
    // person is asked to confirm instead.
    let hint = params
        .get("id_token_hint")
        .and_then(|token| app.keys.verify(token).ok())
        .filter(|(typ, claims)| {
            typ == "JWT" && claims["iss"].as_str() == Some(app.config().issuer.as_str())
        })
        .map(|(_, claims)| claims);
    let hinted_client = hint
        .as_ref()
        .and_then(|c| c["aud"].as_str().map(String::from));
    let client_id = match (hinted_client, params.take("client_id")) {
        (Some(a), Some(b)) if a != b => return page("client_id does not match the id_token_hint."),
        (a, b) => a.or(b),
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        Some(uri) => {
            let config = app.config();
            let registered = client_id
                .as_ref()
                .and_then(|id| config.applications.get(id))
                .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri));
            if !registered {
                return page(
                    "The post_logout_redirect_uri is not registered for this application.",
                );
            }
            Some(uri.to_string())
        }
        None => None,
    };
    let session = match current_session(app, headers, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let confirmed = match (&session, &hint) {
        (None, _) => true,
        (Some(session), Some(claims)) => claims["sub"].as_str() == Some(session.user.as_str()),
        (Some(session), None) => {
            posted
                && params
                    .get("csrf")
                    .is_some_and(|csrf| constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()))
        }
    };
    if !confirmed {
        return confirm_page(
            app,
            session.as_ref(),
            &params,
            client_id.as_deref(),
            redirect.as_deref(),
        );
    }
    if let Some(session) = &session {
        let batch = vec![
            Write::DeleteSession(session.key.clone()),
            Write::Audit(AuditEvent {
                time: now,
                event: "logout".into(),
                actor: session.user.clone(),
                subject: session.user.clone(),
                ip: addr.ip().to_string(),
                detail: serde_json::json!({ "client_id": client_id }),
            }),
        ];
        if let Err(response) = commit(app, batch).await {
            return response;
        }
    }
    let mut response = match redirect {
        Some(uri) => {
            let state = params.get("state");
            let extra: Vec<(&str, &str)> = state.map(|s| vec![("state", s)]).unwrap_or_default();
            redirect_with(&uri, &extra)
        }
        None if posted && hint.is_none() => Redirect::to("/").into_response(),
        None => app.pages.message(
            StatusCode::OK,
            "You are signed out",
            "You can close this window.",
        ),
    };
    // The SAML service providers this session signed in to are told first (IdP-initiated
    // Single Logout), then the browser gets the answer above.
    let participants = session.map(|s| s.saml).unwrap_or_default();
    if !participants.is_empty() {
        let finish = match response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
        {
            Some(location) => super::saml::slo::Finish::Redirect(location.to_string()),
            None => super::saml::slo::Finish::Page,
        };
        response = super::saml::slo::run_chain(
            app,
            participants,
            finish,
            super::saml::slo::Outcome::LoggedOut,
            now,
        )
        .await;
    }
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear(cookies::SESSION, app.config().secure_cookies),
    );
    response
}

fn confirm_page(
    app: &App,
    session: Option<&Session>,
    params: &Params,
    client_id: Option<&str>,
    redirect: Option<&str>,
) -> Response {
    let user = session
        .and_then(|s| app.store.user(&s.user).ok().flatten())
        .map(|u| u.username);
    app.pages.render(
        StatusCode::OK,
        "logout.html",
        serde_json::json!({
            "csrf": session.map(|s| s.csrf.clone()),
            "user": user,
            "client_id": client_id,
            "post_logout_redirect_uri": redirect,
            "state": params.get("state"),
        }),
    )
}
