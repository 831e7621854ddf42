//! SAML metadata: ours to publish (as an IdP, and as an SP of each upstream IdP) and a peer's
//! to read (an SP's ACS URLs and certificate, an upstream IdP's SSO URL and certificate).

use samael::metadata::{EntityDescriptor, KeyDescriptor};

use crate::error::SamlError;
use crate::uri;
use crate::xml::{escape, refuse_doctype};

fn key_descriptor(certificate_base64: &str) -> String {
    format!(
        concat!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">"#,
            r#"<ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data>"#,
            r#"</ds:KeyInfo></md:KeyDescriptor>"#
        ),
        certificate_base64
    )
}

/// Our IdP metadata: the signing certificate, SSO and SLO over both bindings, the NameID formats
/// we answer with. Requests need not be signed (an SP's own metadata or configuration says
/// whether its requests are, and then an unsigned one is refused).
pub fn idp_metadata(
    entity_id: &str,
    sso_url: &str,
    slo_url: &str,
    certificate_base64: &str,
) -> String {
    let endpoints = |element: &str, url: &str, bindings: &[&str]| {
        bindings
            .iter()
            .map(|binding| {
                format!(
                    r#"<md:{element} Binding="{binding}" Location="{}"/>"#,
                    escape(url)
                )
            })
            .collect::<String>()
    };
    let formats: String = [
        uri::PERSISTENT,
        uri::TRANSIENT,
        uri::EMAIL,
        uri::UNSPECIFIED,
    ]
    .iter()
    .map(|f| format!("<md:NameIDFormat>{f}</md:NameIDFormat>"))
    .collect();
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">"#,
            r#"<md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
            r#"{key}{slo}{formats}{sso}"#,
            r#"</md:IDPSSODescriptor></md:EntityDescriptor>"#,
        ),
        entity = escape(entity_id),
        key = key_descriptor(certificate_base64),
        // Single Logout is served over HTTP-Redirect only.
        slo = endpoints("SingleLogoutService", slo_url, &[uri::REDIRECT]),
        formats = formats,
        sso = endpoints("SingleSignOnService", sso_url, &[uri::REDIRECT, uri::POST]),
    )
}

/// Our SP metadata towards upstream IdPs: signed requests, the ACS over HTTP-POST. It does not
/// ask for assertions signed on their own: a response whose signature covers its assertion is
/// accepted, as it is verified just as strictly.
pub fn sp_metadata(entity_id: &str, acs_url: &str, certificate_base64: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">"#,
            r#"<md:SPSSODescriptor AuthnRequestsSigned="true" WantAssertionsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
            r#"{key}<md:NameIDFormat>{persistent}</md:NameIDFormat>"#,
            r#"<md:AssertionConsumerService Binding="{post}" Location="{acs}" index="0" isDefault="true"/>"#,
            r#"</md:SPSSODescriptor></md:EntityDescriptor>"#,
        ),
        entity = escape(entity_id),
        key = key_descriptor(certificate_base64),
        persistent = uri::PERSISTENT,
        post = uri::POST,
        acs = escape(acs_url),
    )
}

/// What idflow needs of an upstream IdP's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpMetadata {
    /// Its entity id (the issuer of its assertions).
    pub entity_id: String,
    /// Its SSO endpoint for the HTTP-Redirect binding.
    pub sso_redirect: String,
    /// Its signing certificates, DER.
    pub certificates: Vec<Vec<u8>>,
}

/// An assertion consumer service of an SP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The binding URI.
    pub binding: String,
    /// The URL.
    pub location: String,
    /// The index, for requests that name the ACS by index.
    pub index: Option<usize>,
    /// Whether it is the default.
    pub is_default: bool,
    /// Where responses go, when not to `location` (Single Logout's `ResponseLocation`).
    pub response_location: Option<String>,
}

/// What idflow needs of an SP's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpMetadata {
    /// Its entity id (the audience).
    pub entity_id: String,
    /// Its assertion consumer services.
    pub acs: Vec<Endpoint>,
    /// Its single logout services.
    pub slo: Vec<Endpoint>,
    /// Its signing certificates, DER.
    pub certificates: Vec<Vec<u8>>,
    /// Whether it says it signs its requests.
    pub signs_requests: bool,
}

fn parse(xml: &str) -> Result<EntityDescriptor, SamlError> {
    refuse_doctype(xml)?;
    xml.parse::<EntityDescriptor>()
        .map_err(|e| SamlError::Malformed(format!("metadata: {e}")))
}

fn signing_certificates(descriptors: &[KeyDescriptor]) -> Result<Vec<Vec<u8>>, SamlError> {
    let mut out = Vec::new();
    for descriptor in descriptors {
        if descriptor
            .key_use
            .as_deref()
            .is_some_and(|u| !u.is_empty() && u != "signing")
        {
            continue;
        }
        for certificate in descriptor
            .key_info
            .x509_data
            .iter()
            .flat_map(|data| data.certificates.iter())
        {
            let der = samael::crypto::decode_x509_cert(certificate)
                .map_err(|e| SamlError::Malformed(format!("metadata certificate: {e}")))?;
            out.push(der.der_data().to_vec());
        }
    }
    Ok(out)
}

/// Reads an upstream IdP's metadata.
pub fn parse_idp(xml: &str) -> Result<IdpMetadata, SamlError> {
    let entity = parse(xml)?;
    let entity_id = entity
        .entity_id
        .clone()
        .ok_or(SamlError::Missing("an entityID"))?;
    let descriptor = entity
        .idp_sso_descriptors
        .iter()
        .flatten()
        .next()
        .ok_or(SamlError::Missing("an IDPSSODescriptor"))?;
    let sso_redirect = descriptor
        .single_sign_on_services
        .iter()
        .find(|s| s.binding == uri::REDIRECT)
        .map(|s| s.location.clone())
        .ok_or(SamlError::Missing("an HTTP-Redirect SingleSignOnService"))?;
    let certificates = signing_certificates(&descriptor.key_descriptors)?;
    if certificates.is_empty() {
        return Err(SamlError::Missing("a signing certificate"));
    }
    Ok(IdpMetadata {
        entity_id,
        sso_redirect,
        certificates,
    })
}

/// Reads an SP's metadata.
pub fn parse_sp(xml: &str) -> Result<SpMetadata, SamlError> {
    let entity = parse(xml)?;
    let entity_id = entity
        .entity_id
        .clone()
        .ok_or(SamlError::Missing("an entityID"))?;
    let descriptor = entity
        .sp_sso_descriptors
        .iter()
        .flatten()
        .next()
        .ok_or(SamlError::Missing("an SPSSODescriptor"))?;
    let acs = descriptor
        .assertion_consumer_services
        .iter()
        .map(|e| Endpoint {
            binding: e.binding.clone(),
            location: e.location.clone(),
            index: Some(e.index),
            is_default: e.is_default.unwrap_or(false),
            response_location: e.response_location.clone(),
        })
        .collect();
    let slo = descriptor
        .single_logout_services
        .iter()
        .flatten()
        .map(|e| Endpoint {
            binding: e.binding.clone(),
            location: e.location.clone(),
            index: None,
            is_default: false,
            response_location: e.response_location.clone(),
        })
        .collect();
    Ok(SpMetadata {
        entity_id,
        acs,
        slo,
        certificates: signing_certificates(
            descriptor.key_descriptors.as_deref().unwrap_or_default(),
        )?,
        signs_requests: descriptor.authn_requests_signed.unwrap_or(false),
    })
}
