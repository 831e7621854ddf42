//! An SP's AuthnRequest as the IdP reads it: decoded from its binding, its signature verified
//! when the SP signs, and the few fields SSO needs.

use samael::schema::AuthnRequest;

use crate::error::SamlError;
use crate::signature::verified_part;
use crate::xml::{refuse_doctype, seconds};

/// What the IdP needs of an AuthnRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id (the response's InResponseTo).
    pub id: String,
    /// The SP's entity id.
    pub issuer: String,
    /// When it was made.
    pub issue_instant: u64,
    /// Where it says it was sent (the bindings require it of signed requests).
    pub destination: Option<String>,
    /// The ACS URL it asks to be answered at, if it names one.
    pub acs_url: Option<String>,
    /// The ACS index it asks for, if it names one instead.
    pub acs_index: Option<usize>,
    /// The NameID format it asks for.
    pub name_id_format: Option<String>,
    /// Whether the user must authenticate afresh.
    pub force_authn: bool,
    /// Whether the IdP must not interact with the user.
    pub is_passive: bool,
    /// The AuthnContextClassRefs it asks for.
    pub authn_contexts: Vec<String>,
}

/// Reads a decoded AuthnRequest. With `certificates` (the SP's, when it signs its requests over
/// HTTP-POST), only the signed part is read and an unsigned request is refused.
pub fn parse_authn_request(
    xml: &str,
    certificates: Option<&[Vec<u8>]>,
) -> Result<Request, SamlError> {
    refuse_doctype(xml)?;
    let xml = match certificates {
        Some(certificates) => verified_part(xml, certificates)?,
        None => xml.to_string(),
    };
    let request: AuthnRequest = xml
        .parse()
        .map_err(|e| SamlError::Malformed(format!("AuthnRequest: {e}")))?;
    if request.version != "2.0" {
        return Err(SamlError::Malformed(format!(
            "version {} is not 2.0",
            request.version
        )));
    }
    if request.id.trim().is_empty() {
        return Err(SamlError::Missing("an ID"));
    }
    let issuer = request
        .issuer
        .as_ref()
        .and_then(|i| i.value.clone())
        .filter(|i| !i.trim().is_empty())
        .ok_or(SamlError::Missing("an Issuer"))?;
    Ok(Request {
        id: request.id.clone(),
        issuer: issuer.trim().to_string(),
        issue_instant: seconds(&request.issue_instant),
        destination: request.destination.clone(),
        acs_url: request.assertion_consumer_service_url.clone(),
        acs_index: request.assertion_consumer_service_index,
        name_id_format: request
            .name_id_policy
            .as_ref()
            .and_then(|p| p.format.clone()),
        force_authn: request.force_authn.unwrap_or(false),
        is_passive: request.is_passive.unwrap_or(false),
        authn_contexts: request
            .requested_authn_context
            .as_ref()
            .map(|c| {
                c.authn_context_class_refs
                    .iter()
                    .flatten()
                    .filter_map(|r| r.value.clone())
                    .collect()
            })
            .unwrap_or_default(),
    })
}
