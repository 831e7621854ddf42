//! WS-Federation passive requestor profile at `/wsfed`: `wa=wsignin1.0` signs the user in to a
//! relying party through its flow and posts a signed SAML 2.0 assertion in an RSTR to its
//! registered reply URL; `wa=wsignout1.0` (and `wsignoutcleanup1.0`) signs out. Federation
//! metadata is at `/FederationMetadata/2007-06/FederationMetadata.xml`.
//!
//! A relying party is declared as a `[service_providers.NAME]` entry: its `entity_id` is the
//! realm (`wtrealm`) and its `acs_urls` the reply URLs (`wreply`) it may name.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use idflow_saml::wsfed;

use super::AppState;
use super::authorize::{commit, current_session};
use super::cookies;
use super::params::Params;
use crate::app::{App, now};
use crate::effects::audit;
use crate::store::{SamlAuthn, Write};

fn refused(app: &App, why: &str) -> Response {
    super::saml::refused(app, "WS-Federation", why)
}

/// `GET /wsfed`.
pub async fn get(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(why) => return refused(&app, &why),
    };
    match params.get("wa") {
        Some(wsfed::SIGNIN) => sign_in(&app, addr, &headers, &params).await,
        Some(wsfed::SIGNOUT | wsfed::SIGNOUT_CLEANUP) => {
            sign_out(&app, addr, &headers, &params).await
        }
        Some(other) => refused(&app, &format!("`wa={other}` is not supported")),
        None => refused(&app, "It has no `wa`"),
    }
}

async fn sign_in(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    params: &Params,
) -> Response {
    let Some(realm) = params.get("wtrealm") else {
        return refused(app, "It has no `wtrealm`");
    };
    let config = app.config();
    let Some(rp) = config
        .service_providers
        .values()
        .find(|sp| sp.entity_id == realm)
    else {
        return refused(app, &format!("`{realm}` is not a registered relying party"));
    };
    let reply = match params.get("wreply") {
        Some(reply) if rp.acs_urls.iter().any(|url| url == reply) => reply.to_string(),
        Some(reply) => {
            return refused(
                app,
                &format!("The reply address `{reply}` is not registered for this application"),
            );
        }
        None => match rp.acs_urls.first() {
            Some(url) => url.clone(),
            None => return refused(app, "No reply address is registered"),
        },
    };
    let wctx = params.take("wctx");
    if wctx.as_ref().is_some_and(|w| w.len() > 1024) {
        return refused(app, "Its `wctx` is longer than 1024 bytes");
    }
    let saml = SamlAuthn {
        sp: rp.name.clone(),
        request_id: None,
        acs_url: reply,
        relay_state: wctx,
        name_id_format: rp.name_id_format.clone(),
        acr_values: Vec::new(),
        is_passive: false,
        // `wfresh=0`: the user must authenticate now.
        force_authn: params.get("wfresh") == Some("0"),
        wsfed: true,
    };
    super::saml::sso::begin(app, addr, headers, saml, now()).await
}

async fn sign_out(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    params: &Params,
) -> Response {
    let now = now();
    let session = match current_session(app, headers, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Some(session) = &session {
        let batch = vec![
            Write::DeleteSession(session.key.clone()),
            audit(
                "logout",
                &session.user,
                &addr.ip().to_string(),
                now,
                serde_json::json!({ "wsfed": true }),
            ),
        ];
        if let Err(response) = commit(app, batch).await {
            return response;
        }
    }
    // Only to a registered reply address: an open redirect otherwise.
    let registered = params.get("wreply").filter(|reply| {
        let config = app.config();
        config
            .service_providers
            .values()
            .any(|rp| rp.acs_urls.iter().any(|url| url == reply))
    });
    // The SAML service providers of the session are told first, as for `/logout`.
    let finish = match registered {
        Some(reply) => super::saml::slo::Finish::Redirect(reply.to_string()),
        None => super::saml::slo::Finish::Page,
    };
    let participants = session.map(|s| s.saml).unwrap_or_default();
    let mut response = super::saml::slo::run_chain(
        app,
        participants,
        finish,
        super::saml::slo::Outcome::LoggedOut,
        now,
    )
    .await;
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear(cookies::SESSION, app.config().secure_cookies),
    );
    response
}

/// `GET /FederationMetadata/2007-06/FederationMetadata.xml`.
pub async fn metadata(State(app): AppState) -> Response {
    let body = wsfed::metadata(
        &super::saml::entity_id(&app),
        &format!("{}/wsfed", app.config().issuer),
        &app.saml.certificate_base64(),
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}
