//! The answer to a service provider: a signed response posted to its ACS URL by the browser.

use axum::response::Response;
use base64::Engine as _;
use idflow_saml::idp::{AssertionSpec, Attribute, signed_response};
use idflow_saml::uri;

use crate::app::App;
use crate::config::saml::ServiceProvider;
use crate::http::authorize::server_error;
use crate::store::{SamlAuthn, SamlParticipant, Session, User, Value};

/// The page posting `xml` (a response) to the login's ACS URL.
fn post(app: &App, saml: &SamlAuthn, sp: Option<&ServiceProvider>, xml: &str) -> Response {
    let encoded = idflow_saml::binding::encode_post(xml);
    let mut fields = vec![("SAMLResponse", encoded.as_str())];
    if let Some(relay_state) = &saml.relay_state {
        fields.push(("RelayState", relay_state.as_str()));
    }
    crate::http::pages::autopost(
        &app.pages,
        &saml.acs_url,
        &fields,
        sp.map(|sp| sp.display_name.as_str()),
    )
}

/// A signed failure (`status` with an optional second-level `detail`) posted to the ACS; for
/// WS-Federation, which has no failure message, a page.
pub fn failure(
    app: &App,
    saml: &SamlAuthn,
    status: &str,
    detail: Option<&str>,
    now: u64,
) -> Response {
    if saml.wsfed {
        tracing::info!(status, detail, rp = saml.sp, "WS-Federation sign-in failed");
        return app.pages.message(
            axum::http::StatusCode::FORBIDDEN,
            "Sign-in failed",
            "You could not be signed in to the application. If this keeps happening, contact your administrator.",
        );
    }
    let config = app.config();
    let sp = config.service_providers.get(&saml.sp);
    match idflow_saml::idp::failure_response(
        &app.saml,
        &super::entity_id(app),
        &saml.acs_url,
        saml.request_id.as_deref(),
        status,
        detail,
        now,
    ) {
        Ok(xml) => post(app, saml, sp, &xml),
        Err(error) => server_error(app, &error),
    }
}

/// The NameID for `user` at `sp` in `format`; `None` when the user has none of that kind.
fn name_id(user: &User, sp: &ServiceProvider, format: &str) -> Option<String> {
    match format {
        // Pairwise: the same for this user at this SP, unlinkable across SPs.
        uri::PERSISTENT => {
            let digest =
                crate::crypto::sha256(format!("{}\u{0}{}", user.id, sp.entity_id).as_bytes());
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..20]))
        }
        uri::TRANSIENT => Some(idflow_saml::xml::new_id()),
        uri::EMAIL => Some(user.email.clone()).filter(|e| !e.is_empty()),
        _ => Some(user.username.clone()),
    }
}

fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(texts).collect(),
        other => vec![other.to_string()],
    }
}

/// The attribute statement the SP's mapping asks for; empty values are left out.
fn attributes(user: &User, session: &Session, sp: &ServiceProvider) -> Vec<Attribute> {
    sp.attributes
        .iter()
        .filter_map(|(name, source)| {
            let values = match source.as_str() {
                "email" => vec![user.email.clone()],
                "name" => vec![user.name.clone()],
                "username" => vec![user.username.clone()],
                "roles" => user.roles.clone(),
                other => match (
                    other.strip_prefix("claims."),
                    other.strip_prefix("attributes."),
                ) {
                    (Some(claim), _) => session.claims.get(claim).map(texts).unwrap_or_default(),
                    (_, Some(attribute)) => user
                        .attributes
                        .get(attribute)
                        .map(texts)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                },
            };
            let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
            (!values.is_empty()).then(|| Attribute {
                name: name.clone(),
                name_format: if name.contains(':') {
                    uri::ATTRNAME_URI
                } else {
                    uri::ATTRNAME_BASIC
                }
                .into(),
                friendly_name: None,
                values,
            })
        })
        .collect()
}

/// How the user authenticated, as an AuthnContextClassRef.
fn authn_context(session: &Session) -> &'static str {
    if session.acr == "urn:idflow:acr:mfa" {
        uri::AC_MFA
    } else if session.amr.iter().any(|m| m == "pwd") {
        uri::AC_PASSWORD
    } else {
        uri::AC_UNSPECIFIED
    }
}

/// The signed response for a completed login, posted to the ACS, and the note the session
/// keeps of it for Single Logout (none when no assertion was sent).
pub fn success(
    app: &App,
    saml: &SamlAuthn,
    session: &Session,
    now: u64,
) -> (Option<SamlParticipant>, Response) {
    let config = app.config();
    let Some(sp) = config.service_providers.get(&saml.sp) else {
        let page = app.pages.message(
            axum::http::StatusCode::CONFLICT,
            "This application is no longer configured",
            "The application you were signing in to was removed from this server.",
        );
        return (None, page);
    };
    let failed = |status, detail| (None, failure(app, saml, status, Some(detail), now));
    let user = match app.store.user(&session.user) {
        Ok(Some(user)) => user,
        Ok(None) => return failed(uri::RESPONDER, uri::AUTHN_FAILED),
        Err(error) => return (None, server_error(app, &error)),
    };
    let Some(name_id) = name_id(&user, sp, &saml.name_id_format) else {
        return failed(uri::REQUESTER, uri::INVALID_NAME_ID_POLICY);
    };
    let attributes = attributes(&user, session, sp);
    let issuer = super::entity_id(app);
    let spec = AssertionSpec {
        issuer: &issuer,
        audience: &sp.entity_id,
        destination: &saml.acs_url,
        in_response_to: saml.request_id.as_deref(),
        name_id: &name_id,
        name_id_format: &saml.name_id_format,
        session_index: &session.sid,
        authn_instant: session.auth_time,
        authn_context: authn_context(session),
        attributes: &attributes,
        now,
        lifetime: app.config().saml.assertion_seconds,
        session_ends: Some(session.expires),
    };
    let answered = if saml.wsfed {
        idflow_saml::wsfed::rstr(&app.saml, &spec).map(|rstr| {
            let mut fields = vec![
                ("wa", idflow_saml::wsfed::SIGNIN),
                ("wresult", rstr.as_str()),
            ];
            if let Some(wctx) = &saml.relay_state {
                fields.push(("wctx", wctx.as_str()));
            }
            crate::http::pages::autopost(&app.pages, &saml.acs_url, &fields, Some(&sp.display_name))
        })
    } else {
        signed_response(&app.saml, &spec, sp.signing).map(|xml| post(app, saml, Some(sp), &xml))
    };
    match answered {
        Ok(response) => {
            let participant = SamlParticipant {
                sp: sp.name.clone(),
                name_id: name_id.clone(),
                name_id_format: saml.name_id_format.clone(),
                session_index: session.sid.clone(),
            };
            (Some(participant), response)
        }
        Err(error) => (None, server_error(app, &error)),
    }
}
