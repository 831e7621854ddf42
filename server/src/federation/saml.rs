//! An upstream SAML 2.0 IdP: the signed AuthnRequest a login sends, and the verified Response
//! turned into the subject and claims JIT rules read.

use std::collections::BTreeMap;

use idflow_saml::sp::{Expected, Verified, authn_request, verify_response};
use idflow_saml::{Credential, SamlError, binding};

use super::Pending;

/// Our SP entity id towards every upstream SAML IdP (also our SP metadata's URL).
pub fn entity_id(issuer: &str) -> String {
    format!("{issuer}/federation/saml/metadata")
}

/// Our assertion consumer service.
pub fn acs_url(issuer: &str) -> String {
    format!("{issuer}/federation/saml/acs")
}

/// An upstream SAML IdP as a login reaches it.
pub struct SamlIdp<'a> {
    /// Its name in `idflow.toml`.
    pub name: &'a str,
    /// Its entity id.
    pub entity_id: &'a str,
    /// Its HTTP-Redirect SSO URL.
    pub sso_url: &'a str,
    /// Its signing certificates (DER).
    pub certificates: &'a [Vec<u8>],
    /// Ask for a fresh sign-in (`ForceAuthn`): the application asked us for one.
    pub fresh: bool,
}

/// The redirect URL (a signed AuthnRequest with `state` as RelayState) and what the ACS must
/// find when the answer comes back.
pub fn begin(
    idp: &SamlIdp<'_>,
    credential: &Credential,
    issuer: &str,
    login: &str,
    sealed_handle: String,
    state: &str,
    now: u64,
) -> Result<(String, Pending), SamlError> {
    let request_id = idflow_saml::xml::new_id();
    let xml = authn_request(
        &request_id,
        &entity_id(issuer),
        &acs_url(issuer),
        idp.sso_url,
        idp.fresh,
        now,
    );
    let url = binding::redirect_url(
        idp.sso_url,
        "SAMLRequest",
        &xml,
        Some(state),
        Some(credential),
    )?;
    let pending = Pending {
        idp: idp.name.to_string(),
        login: login.to_string(),
        sealed_handle,
        nonce: String::new(),
        verifier: String::new(),
        saml_request: Some(request_id),
        answer: None,
    };
    Ok((url, pending))
}

/// Verifies a posted `SAMLResponse` (base64) as the answer to `request_id`.
pub fn finish(
    idp: &SamlIdp<'_>,
    issuer: &str,
    encoded: &str,
    request_id: &str,
    skew: u64,
    now: u64,
) -> Result<Verified, SamlError> {
    let xml = binding::decode_post(encoded)?;
    let (sp_entity_id, acs) = (entity_id(issuer), acs_url(issuer));
    verify_response(
        &xml,
        &Expected {
            entity_id: &sp_entity_id,
            acs_url: &acs,
            idp_entity_id: idp.entity_id,
            idp_certificates: idp.certificates,
            request_id,
            skew,
            now,
        },
    )
}

/// The claims a verified assertion gives the flow: each attribute by name (one value as a
/// string, several as a list), and the NameID as `name_id`.
pub fn claims(verified: &Verified) -> BTreeMap<String, serde_json::Value> {
    let mut claims: BTreeMap<String, serde_json::Value> = verified
        .attributes
        .iter()
        .map(|(name, values)| {
            let value = match values.as_slice() {
                [one] => serde_json::Value::from(one.clone()),
                many => serde_json::Value::from(many.to_vec()),
            };
            (name.clone(), value)
        })
        .collect();
    claims.insert("name_id".into(), verified.name_id.clone().into());
    claims
}
