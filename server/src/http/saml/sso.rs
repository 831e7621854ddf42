//! `/saml2/sso`: a service provider's AuthnRequest over HTTP-Redirect (`GET`) or HTTP-POST
//! (`POST`), or an IdP-initiated sign-in (`GET ?sp=NAME`), checked and turned into a login.
//!
//! Until the request is known to come from a registered SP and to name one of its ACS URLs,
//! every error is a page for the person: nothing is ever posted to an address we have not
//! verified. After that, errors are SAML failure responses to the SP.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use idflow_saml::binding;
use idflow_saml::request::{Request, parse_authn_request};
use idflow_saml::uri;

use crate::app::{App, now};
use crate::config::saml::{ServiceProvider, offers_name_id_format};
use crate::http::AppState;
use crate::http::authorize::{Requested, carry, current_session, start_login};
use crate::http::params::Params;
use crate::store::SamlAuthn;

/// The longest form or query value read: a message at its decoded limit, in base64.
pub const SAML_FIELD_BYTES: usize = binding::MAX_MESSAGE * 4 / 3 + 4096;

/// How the request's signature is to be checked once its SP is known.
enum Binding<'q> {
    /// HTTP-Redirect: the query's signature, over the raw query.
    Redirect(&'q str),
    /// HTTP-POST: an enveloped XML signature.
    Post,
}

fn refused(app: &App, why: &str) -> Response {
    super::refused(app, "SAML", why)
}

/// `GET /saml2/sso`: HTTP-Redirect binding, or IdP-initiated with `sp`.
pub async fn get(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let raw = query.unwrap_or_default();
    let params = match Params::parse_with_limit(raw.as_bytes(), SAML_FIELD_BYTES) {
        Ok(params) => params,
        Err(why) => return refused(&app, &why),
    };
    let relay_state = params.get("RelayState").map(String::from);
    if let Some(encoded) = params.get("SAMLRequest") {
        let xml = match binding::decode_redirect(encoded) {
            Ok(xml) => xml,
            Err(error) => return refused(&app, &error.to_string()),
        };
        return sso(
            &app,
            addr,
            &headers,
            &xml,
            relay_state,
            Binding::Redirect(&raw),
        )
        .await;
    }
    match params.get("sp") {
        Some(name) => idp_initiated(&app, addr, &headers, name, relay_state).await,
        None => refused(&app, "The request has no SAMLRequest"),
    }
}

/// `POST /saml2/sso`: HTTP-POST binding.
pub async fn post(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match Params::parse_with_limit(&body, SAML_FIELD_BYTES) {
        Ok(params) => params,
        Err(why) => return refused(&app, &why),
    };
    let Some(encoded) = params.get("SAMLRequest") else {
        return refused(&app, "The request has no SAMLRequest");
    };
    let xml = match binding::decode_post(encoded) {
        Ok(xml) => xml,
        Err(error) => return refused(&app, &error.to_string()),
    };
    let relay_state = params.get("RelayState").map(String::from);
    sso(&app, addr, &headers, &xml, relay_state, Binding::Post).await
}

/// The SP whose entity id issued the request.
fn provider(app: &App, entity_id: &str) -> Option<ServiceProvider> {
    app.config()
        .service_providers
        .values()
        .find(|sp| sp.entity_id == entity_id)
        .cloned()
}

/// The request as its SP signed it, when it signs; `Err` says why not. A signature is checked
/// whenever the SP has a registered certificate (a bad one is never ignored); without one, a
/// signed request is read like an unsigned one, as SPs sign by default and most IdPs are not
/// told their keys. `require_signed_requests` refuses unsigned ones.
fn verified(
    xml: &str,
    unverified: Request,
    sp: &ServiceProvider,
    binding: &Binding<'_>,
) -> Result<Request, String> {
    match binding {
        Binding::Redirect(raw) => {
            let signed = binding::has_query_signature(raw);
            if (signed && !sp.certificates.is_empty()) || sp.requests_signed {
                binding::verify_query_signature(raw, "SAMLRequest", &sp.certificates)
                    .map_err(|e| e.to_string())?;
            }
            Ok(unverified)
        }
        Binding::Post => {
            let signed = xml.contains("Signature");
            if (signed && !sp.certificates.is_empty()) || sp.requests_signed {
                parse_authn_request(xml, Some(&sp.certificates)).map_err(|e| e.to_string())
            } else {
                Ok(unverified)
            }
        }
    }
}

/// The ACS URL to answer at: the one the request names, which must be registered exactly, or
/// the default.
fn acs_url(request: &Request, sp: &ServiceProvider) -> Result<String, String> {
    match (&request.acs_url, request.acs_index) {
        (Some(url), _) if sp.acs_urls.iter().any(|registered| registered == url) => Ok(url.clone()),
        (Some(url), _) => Err(format!(
            "The address `{url}` is not registered for this application"
        )),
        (None, Some(index)) => {
            let found = if sp.acs_indexes.is_empty() {
                sp.acs_urls.get(index)
            } else {
                sp.acs_indexes.get(&index)
            };
            found.cloned().ok_or_else(|| {
                format!("No address with index {index} is registered for this application")
            })
        }
        (None, None) => sp
            .acs_urls
            .first()
            .cloned()
            .ok_or_else(|| "No address is registered".into()),
    }
}

async fn sso(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    xml: &str,
    relay_state: Option<String>,
    binding: Binding<'_>,
) -> Response {
    let now = now();
    let unverified = match parse_authn_request(xml, None) {
        Ok(request) => request,
        Err(error) => return refused(app, &error.to_string()),
    };
    let Some(sp) = provider(app, &unverified.issuer) else {
        return refused(
            app,
            &format!(
                "`{}` is not a registered service provider",
                unverified.issuer
            ),
        );
    };
    let request = match verified(xml, unverified, &sp, &binding) {
        Ok(request) => request,
        Err(why) => return refused(app, &format!("Its signature does not check: {why}")),
    };
    // A request meant for another IdP (a signed one forwarded here) is not ours to answer
    // (SAML Bindings 3.4.5.2, 3.5.5.2).
    let here = format!("{}/saml2/sso", app.config().issuer);
    if let Some(destination) = request.destination.as_deref()
        && destination != here
    {
        return refused(
            app,
            &format!("It is addressed to `{destination}`, not to this server"),
        );
    }
    if relay_state.as_ref().is_some_and(|r| r.len() > 1024) {
        return refused(app, "Its RelayState is longer than 1024 bytes");
    }
    let acs_url = match acs_url(&request, &sp) {
        Ok(url) => url,
        Err(why) => return refused(app, &why),
    };
    // Each request is answered once: a replayed request id is refused.
    match super::admit_once(
        app,
        "saml-request",
        &sp.name,
        &request.id,
        Some(request.issue_instant),
        now,
    )
    .await
    {
        Ok(()) => {}
        Err(super::NotAdmitted::Refused(why)) => return refused(app, why),
        Err(super::NotAdmitted::Failed(response)) => return response,
    }
    let mut saml = SamlAuthn {
        sp: sp.name.clone(),
        request_id: Some(request.id.clone()),
        acs_url,
        relay_state,
        name_id_format: sp.name_id_format.clone(),
        acr_values: acr_values(&request.authn_contexts),
        is_passive: request.is_passive,
        force_authn: request.force_authn,
        wsfed: false,
    };
    match request.name_id_format.as_deref() {
        None | Some(uri::UNSPECIFIED) => {}
        Some(format) if offers_name_id_format(format) => saml.name_id_format = format.to_string(),
        Some(_) => {
            return super::respond::failure(
                app,
                &saml,
                uri::REQUESTER,
                Some(uri::INVALID_NAME_ID_POLICY),
                now,
            );
        }
    }
    begin(app, addr, headers, saml, now).await
}

/// What the SP's requested contexts mean for the flow.
fn acr_values(contexts: &[String]) -> Vec<String> {
    contexts
        .iter()
        .map(|c| match c.as_str() {
            uri::AC_MFA => "urn:idflow:acr:mfa".to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// `GET /saml2/sso?sp=NAME`: a sign-in started here, answered unsolicited at the SP's default
/// ACS URL.
async fn idp_initiated(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    name: &str,
    relay_state: Option<String>,
) -> Response {
    let config = app.config();
    let Some(sp) = config.service_providers.get(name) else {
        return refused(
            app,
            &format!("`{name}` is not a registered service provider"),
        );
    };
    let Some(acs_url) = sp.acs_urls.first().cloned() else {
        return refused(app, "No address is registered");
    };
    if relay_state.as_ref().is_some_and(|r| r.len() > 1024) {
        return refused(app, "Its RelayState is longer than 1024 bytes");
    }
    let saml = SamlAuthn {
        sp: sp.name.clone(),
        request_id: None,
        acs_url,
        relay_state,
        name_id_format: sp.name_id_format.clone(),
        acr_values: Vec::new(),
        is_passive: false,
        force_authn: false,
        wsfed: false,
    };
    begin(app, addr, headers, saml, now()).await
}

/// Starts the login for the SP's flow, carrying the session unless `ForceAuthn` was asked
/// (also WS-Federation's sign-in, with `wfresh=0`).
pub(crate) async fn begin(
    app: &std::sync::Arc<App>,
    addr: SocketAddr,
    headers: &HeaderMap,
    saml: SamlAuthn,
    now: u64,
) -> Response {
    if app.registry.snapshot().flow_for(&saml.sp).is_none() {
        return app.pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not available",
            "No login flow applies to this application.",
        );
    }
    let session = match current_session(app, headers, now) {
        Ok(session) => session.filter(|_| !saml.force_authn),
        Err(response) => return response,
    };
    let sso = match &session {
        Some(session) => match carry(app, session, None, now) {
            Ok(carried) => carried.map(|carried| (session.clone(), carried)),
            Err(response) => return response,
        },
        None => None,
    };
    let passive = saml.is_passive;
    if passive && sso.is_none() {
        return super::respond::failure(app, &saml, uri::RESPONDER, Some(uri::NO_PASSIVE), now);
    }
    start_login(app, Requested::Saml(saml), addr, headers, now, sso, passive).await
}
