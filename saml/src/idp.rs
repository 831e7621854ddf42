//! The identity provider's answer: a `samlp:Response` with one signed `saml:Assertion`, or a
//! signed failure status. Written as text from escaped values (the shapes are fixed and small;
//! a serializer would not make them clearer) and signed with [`crate::signature::template`].

use crate::credential::Credential;
use crate::error::SamlError;
use crate::signature::{template, without_declaration};
use crate::uri;
use crate::xml::{escape, instant, new_id};

/// One attribute of the assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Its name, as the SP expects it (often a URI or an OID URN).
    pub name: String,
    /// How the name is to be read ([`uri::ATTRNAME_URI`] or [`uri::ATTRNAME_BASIC`]).
    pub name_format: String,
    /// A human-readable name, when the SP's mapping gives one.
    pub friendly_name: Option<String>,
    /// Its values, as strings.
    pub values: Vec<String>,
}

/// Everything one assertion says.
#[derive(Debug, Clone)]
pub struct AssertionSpec<'a> {
    /// Our entity id.
    pub issuer: &'a str,
    /// The SP's entity id (the audience).
    pub audience: &'a str,
    /// The ACS URL the response is posted to (Destination and Recipient).
    pub destination: &'a str,
    /// The AuthnRequest's id; `None` for IdP-initiated SSO.
    pub in_response_to: Option<&'a str>,
    /// The subject's NameID and its format.
    pub name_id: &'a str,
    /// The NameID format URI.
    pub name_id_format: &'a str,
    /// The session index the SP quotes when it asks to log out.
    pub session_index: &'a str,
    /// When the user authenticated.
    pub authn_instant: u64,
    /// How: an AuthnContextClassRef URI.
    pub authn_context: &'a str,
    /// The attribute statement.
    pub attributes: &'a [Attribute],
    /// Now.
    pub now: u64,
    /// How long the assertion may be used from now (its NotOnOrAfter).
    pub lifetime: u64,
    /// When the IdP session ends (SessionNotOnOrAfter).
    pub session_ends: Option<u64>,
}

/// What gets signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signing {
    /// Sign the assertion (what most SPs require).
    pub assertion: bool,
    /// Sign the response around it too.
    pub response: bool,
}

fn assertion_xml(spec: &AssertionSpec<'_>, id: &str, signature: &str) -> String {
    let until = instant(spec.now.saturating_add(spec.lifetime));
    let in_response_to = spec
        .in_response_to
        .map(|id| format!(r#" InResponseTo="{}""#, escape(id)))
        .unwrap_or_default();
    let session_ends = spec
        .session_ends
        .map(|end| format!(r#" SessionNotOnOrAfter="{}""#, instant(end)))
        .unwrap_or_default();
    let mut attributes = String::new();
    if !spec.attributes.is_empty() {
        attributes.push_str("<saml:AttributeStatement>");
        for attribute in spec.attributes {
            let friendly = attribute
                .friendly_name
                .as_deref()
                .map(|f| format!(r#" FriendlyName="{}""#, escape(f)))
                .unwrap_or_default();
            attributes.push_str(&format!(
                r#"<saml:Attribute Name="{}" NameFormat="{}"{friendly}>"#,
                escape(&attribute.name),
                escape(&attribute.name_format)
            ));
            for value in &attribute.values {
                attributes.push_str(&format!(
                    r#"<saml:AttributeValue xsi:type="xs:string">{}</saml:AttributeValue>"#,
                    escape(value)
                ));
            }
            attributes.push_str("</saml:Attribute>");
        }
        attributes.push_str("</saml:AttributeStatement>");
    }
    format!(
        concat!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"xmlns:xs="http://www.w3.org/2001/XMLSchema" "#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" "#,
            r#"ID="{id}" Version="2.0" IssueInstant="{now}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>{signature}"#,
            r#"<saml:Subject><saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
            r#"<saml:SubjectConfirmation Method="{bearer}">"#,
            r#"<saml:SubjectConfirmationData{in_response_to} NotOnOrAfter="{until}" Recipient="{destination}"/>"#,
            r#"</saml:SubjectConfirmation></saml:Subject>"#,
            r#"<saml:Conditions NotBefore="{now}" NotOnOrAfter="{until}">"#,
            r#"<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction>"#,
            r#"</saml:Conditions>"#,
            r#"<saml:AuthnStatement AuthnInstant="{authn_instant}" SessionIndex="{session_index}"{session_ends}>"#,
            r#"<saml:AuthnContext><saml:AuthnContextClassRef>{context}</saml:AuthnContextClassRef></saml:AuthnContext>"#,
            r#"</saml:AuthnStatement>{attributes}</saml:Assertion>"#,
        ),
        id = escape(id),
        now = instant(spec.now),
        issuer = escape(spec.issuer),
        signature = signature,
        format = escape(spec.name_id_format),
        name_id = escape(spec.name_id),
        bearer = uri::BEARER,
        in_response_to = in_response_to,
        until = until,
        destination = escape(spec.destination),
        audience = escape(spec.audience),
        authn_instant = instant(spec.authn_instant),
        session_index = escape(spec.session_index),
        session_ends = session_ends,
        context = escape(spec.authn_context),
        attributes = attributes,
    )
}

#[allow(clippy::too_many_arguments)]
fn response_xml(
    issuer: &str,
    destination: &str,
    in_response_to: Option<&str>,
    now: u64,
    id: &str,
    signature: &str,
    status: &str,
    body: &str,
) -> String {
    let in_response_to = in_response_to
        .map(|id| format!(r#" InResponseTo="{}""#, escape(id)))
        .unwrap_or_default();
    format!(
        concat!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{destination}"{in_response_to}>"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>{signature}"#,
            r#"<samlp:Status>{status}</samlp:Status>{body}</samlp:Response>"#,
        ),
        id = escape(id),
        now = instant(now),
        destination = escape(destination),
        in_response_to = in_response_to,
        issuer = escape(issuer),
        signature = signature,
        status = status,
        body = body,
    )
}

/// The assertion `spec` describes, signed on its own (a WS-Federation token, or the inside of
/// a response).
pub fn signed_assertion(
    credential: &Credential,
    spec: &AssertionSpec<'_>,
) -> Result<String, SamlError> {
    let id = new_id();
    let unsigned = assertion_xml(spec, &id, &template(&id, &credential.certificate_base64()));
    credential
        .sign_xml(&unsigned)
        .map(|signed| without_declaration(&signed).to_string())
}

/// A successful response carrying the assertion `spec` describes, signed as `signing` says
/// (at least one of the two is always signed: an unsigned assertion is never sent).
pub fn signed_response(
    credential: &Credential,
    spec: &AssertionSpec<'_>,
    signing: Signing,
) -> Result<String, SamlError> {
    let certificate = credential.certificate_base64();
    let assertion_id = new_id();
    let sign_assertion = signing.assertion || !signing.response;
    let assertion = if sign_assertion {
        let unsigned = assertion_xml(spec, &assertion_id, &template(&assertion_id, &certificate));
        credential.sign_xml(&unsigned)?
    } else {
        assertion_xml(spec, &assertion_id, "")
    };
    let response_id = new_id();
    let status = format!(r#"<samlp:StatusCode Value="{}"/>"#, uri::SUCCESS);
    let signature = if signing.response {
        template(&response_id, &certificate)
    } else {
        String::new()
    };
    let response = response_xml(
        spec.issuer,
        spec.destination,
        spec.in_response_to,
        spec.now,
        &response_id,
        &signature,
        &status,
        without_declaration(&assertion),
    );
    if signing.response {
        credential.sign_xml(&response)
    } else {
        Ok(response)
    }
}

/// A signed failure response (`status` a top-level status URI, `detail` a second-level one).
pub fn failure_response(
    credential: &Credential,
    issuer: &str,
    destination: &str,
    in_response_to: Option<&str>,
    status: &str,
    detail: Option<&str>,
    now: u64,
) -> Result<String, SamlError> {
    let id = new_id();
    let inner = detail
        .map(|d| format!(r#"<samlp:StatusCode Value="{}"/>"#, escape(d)))
        .unwrap_or_default();
    let status = format!(
        r#"<samlp:StatusCode Value="{}">{inner}</samlp:StatusCode>"#,
        escape(status)
    );
    let response = response_xml(
        issuer,
        destination,
        in_response_to,
        now,
        &id,
        &template(&id, &credential.certificate_base64()),
        &status,
        "",
    );
    credential.sign_xml(&response)
}
