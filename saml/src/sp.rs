//! idflow as a service provider of an upstream SAML IdP: the AuthnRequest it sends, and the
//! checks a Response must pass before a flow sees who signed in.
//!
//! The checks are written here rather than left to samael's `ServiceProvider`, which reads the
//! clock itself, passes an assertion without conditions or audience, and accepts unsigned XML
//! when the IdP's metadata has no certificate. Here every one of those is an error.

use std::collections::BTreeMap;

use samael::schema::{Assertion, Response};

use crate::error::SamlError;
use crate::signature::verified_part;
use crate::uri;
use crate::xml::{escape, instant, refuse_doctype, seconds};

/// An AuthnRequest from `entity_id` asking to be answered at `acs_url` over HTTP-POST.
pub fn authn_request(
    id: &str,
    entity_id: &str,
    acs_url: &str,
    destination: &str,
    force_authn: bool,
    now: u64,
) -> String {
    format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{now}" Destination="{destination}" AssertionConsumerServiceURL="{acs}" "#,
            r#"ProtocolBinding="{post}"{force}>"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<samlp:NameIDPolicy AllowCreate="true"/>"#,
            r#"</samlp:AuthnRequest>"#,
        ),
        id = escape(id),
        now = instant(now),
        destination = escape(destination),
        acs = escape(acs_url),
        post = uri::POST,
        force = if force_authn {
            r#" ForceAuthn="true""#
        } else {
            ""
        },
        issuer = escape(entity_id),
    )
}

/// What a response must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// Our entity id: the assertion's audience.
    pub entity_id: &'a str,
    /// Where the response arrived: its Destination and the bearer Recipient.
    pub acs_url: &'a str,
    /// The IdP's entity id: the issuer.
    pub idp_entity_id: &'a str,
    /// The IdP's signing certificates (DER), from its metadata or configuration.
    pub idp_certificates: &'a [Vec<u8>],
    /// The id of the AuthnRequest this login sent.
    pub request_id: &'a str,
    /// Allowed clock difference, seconds.
    pub skew: u64,
    /// Now.
    pub now: u64,
}

/// What a verified response says about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The assertion's id, to refuse it if it comes again.
    pub assertion_id: String,
    /// Until when the assertion could be replayed (after which its window refuses it anyway).
    pub valid_until: u64,
    /// The subject's NameID.
    pub name_id: String,
    /// The NameID's format, when given.
    pub name_id_format: Option<String>,
    /// The IdP's session index, for logout.
    pub session_index: Option<String>,
    /// When the user authenticated at the IdP.
    pub authn_instant: Option<u64>,
    /// The AuthnContextClassRef, when given.
    pub authn_context: Option<String>,
    /// Attributes by name (and by friendly name too, when it differs).
    pub attributes: BTreeMap<String, Vec<String>>,
}

fn malformed(what: &str, error: impl std::fmt::Display) -> SamlError {
    SamlError::Malformed(format!("{what}: {error}"))
}

/// Verifies a Response (its XML, decoded from the POST binding) against `expected`.
pub fn verify_response(xml: &str, expected: &Expected<'_>) -> Result<Verified, SamlError> {
    refuse_doctype(xml)?;
    // One assertion, as the Web SSO profile's IdPs send: a second one is the mark of a
    // signature-wrapping attempt (whatever the signature covers, refuse rather than choose).
    let assertions = element_count(xml, "Assertion") + element_count(xml, "EncryptedAssertion");
    if assertions != 1 {
        return Err(SamlError::Malformed(format!(
            "a response must carry exactly one assertion, not {assertions}"
        )));
    }
    let signed = verified_part(xml, expected.idp_certificates)?;
    let root = root_name(&signed)?;
    let assertion = match root.as_str() {
        "Response" => {
            let response: Response = signed.parse().map_err(|e| malformed("Response", e))?;
            check_response(&response, expected)?;
            response.assertion.ok_or(SamlError::Missing(
                "a signed assertion (encrypted assertions are not accepted)",
            ))?
        }
        // Only the assertion was signed: the response around it says nothing we may trust, and
        // the assertion's own conditions carry everything that is checked.
        "Assertion" => signed.parse().map_err(|e| malformed("Assertion", e))?,
        other => {
            return Err(SamlError::Malformed(format!(
                "unexpected root element {other}"
            )));
        }
    };
    check_assertion(&assertion, expected)
}

/// How many elements named `local` (any prefix) `xml` opens.
fn element_count(xml: &str, local: &str) -> usize {
    xml.split('<')
        .skip(1)
        .filter(|tag| {
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
                .collect();
            !tag.starts_with('/') && name.rsplit(':').next() == Some(local)
        })
        .count()
}

fn root_name(xml: &str) -> Result<String, SamlError> {
    let start = xml
        .find('<')
        .ok_or_else(|| SamlError::Malformed("no element".into()))?;
    let mut rest = &xml[start..];
    // Skip the declaration and comments.
    while rest.starts_with("<?") || rest.starts_with("<!--") {
        let end = if rest.starts_with("<?") { "?>" } else { "-->" };
        let after = rest
            .find(end)
            .ok_or_else(|| SamlError::Malformed("unterminated prolog".into()))?;
        rest = rest[after + end.len()..].trim_start();
    }
    let name: String = rest
        .trim_start_matches('<')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    Ok(name.rsplit(':').next().unwrap_or_default().to_string())
}

fn check_response(response: &Response, expected: &Expected<'_>) -> Result<(), SamlError> {
    if let Some(destination) = &response.destination
        && destination != expected.acs_url
    {
        return Err(SamlError::Recipient {
            found: destination.clone(),
            expected: expected.acs_url.into(),
        });
    }
    if let Some(in_response_to) = &response.in_response_to
        && in_response_to != expected.request_id
    {
        return Err(SamlError::InResponseTo(in_response_to.clone()));
    }
    if let Some(issuer) = response.issuer.as_ref().and_then(|i| i.value.as_ref())
        && issuer != expected.idp_entity_id
    {
        return Err(SamlError::Issuer {
            found: issuer.clone(),
            expected: expected.idp_entity_id.into(),
        });
    }
    let status = response
        .status
        .as_ref()
        .and_then(|s| s.status_code.value.clone())
        .ok_or(SamlError::Missing("a status"))?;
    if status != uri::SUCCESS {
        return Err(SamlError::Status(status));
    }
    Ok(())
}

fn check_assertion(assertion: &Assertion, expected: &Expected<'_>) -> Result<Verified, SamlError> {
    let (now, skew) = (expected.now, expected.skew);
    let issuer = assertion.issuer.value.clone().unwrap_or_default();
    if issuer != expected.idp_entity_id {
        return Err(SamlError::Issuer {
            found: issuer,
            expected: expected.idp_entity_id.into(),
        });
    }
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or(SamlError::Missing("conditions"))?;
    if let Some(not_before) = &conditions.not_before
        && seconds(not_before) > now + skew
    {
        return Err(SamlError::Expired(format!(
            "not valid before {}",
            instant(seconds(not_before))
        )));
    }
    let until = conditions
        .not_on_or_after
        .as_ref()
        .map(seconds)
        .ok_or(SamlError::Missing("a NotOnOrAfter condition"))?;
    if until + skew <= now {
        return Err(SamlError::Expired(format!("expired at {}", instant(until))));
    }
    let audiences: Vec<&String> = conditions
        .audience_restrictions
        .iter()
        .flatten()
        .flat_map(|r| r.audience.iter())
        .collect();
    if audiences.is_empty() {
        return Err(SamlError::Missing("an audience restriction"));
    }
    // Every AudienceRestriction must name us (they are ANDed).
    let all_name_us = conditions
        .audience_restrictions
        .iter()
        .flatten()
        .all(|r| r.audience.iter().any(|a| a == expected.entity_id));
    if !all_name_us {
        return Err(SamlError::Audience(
            audiences
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    let subject = assertion
        .subject
        .as_ref()
        .ok_or(SamlError::Missing("a subject"))?;
    let name_id = subject
        .name_id
        .as_ref()
        .filter(|n| !n.value.trim().is_empty())
        .ok_or(SamlError::Missing("a NameID"))?;
    check_bearer(subject, expected)?;
    let statement = assertion
        .authn_statements
        .iter()
        .flatten()
        .next()
        .ok_or(SamlError::Missing("an authentication statement"))?;
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attribute in assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
    {
        let values: Vec<String> = attribute
            .values
            .iter()
            .filter_map(|v| v.value.clone())
            .collect();
        for name in [&attribute.name, &attribute.friendly_name]
            .into_iter()
            .flatten()
        {
            attributes
                .entry(name.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
    }
    Ok(Verified {
        assertion_id: assertion.id.clone(),
        valid_until: until + skew,
        name_id: name_id.value.trim().to_string(),
        name_id_format: name_id.format.clone(),
        session_index: statement.session_index.clone(),
        authn_instant: statement.authn_instant.as_ref().map(seconds),
        authn_context: statement
            .authn_context
            .as_ref()
            .and_then(|c| c.value.as_ref())
            .and_then(|r| r.value.clone()),
        attributes,
    })
}

/// A bearer confirmation for our ACS, in its window, answering our request.
fn check_bearer(
    subject: &samael::schema::Subject,
    expected: &Expected<'_>,
) -> Result<(), SamlError> {
    let (now, skew) = (expected.now, expected.skew);
    let mut first_error = None;
    for confirmation in subject.subject_confirmations.iter().flatten() {
        if confirmation.method.as_deref() != Some(uri::BEARER) {
            continue;
        }
        let Some(data) = &confirmation.subject_confirmation_data else {
            first_error.get_or_insert(SamlError::Missing("subject confirmation data"));
            continue;
        };
        let recipient = data.recipient.clone().unwrap_or_default();
        if recipient != expected.acs_url {
            first_error.get_or_insert(SamlError::Recipient {
                found: recipient,
                expected: expected.acs_url.into(),
            });
            continue;
        }
        match data.not_on_or_after.as_ref().map(seconds) {
            None => {
                first_error.get_or_insert(SamlError::Missing("a bearer NotOnOrAfter"));
                continue;
            }
            Some(until) if until + skew <= now => {
                first_error.get_or_insert(SamlError::Expired(format!(
                    "the bearer confirmation expired at {}",
                    instant(until)
                )));
                continue;
            }
            Some(_) => {}
        }
        if data.in_response_to.as_deref() != Some(expected.request_id) {
            first_error.get_or_insert(SamlError::InResponseTo(
                data.in_response_to
                    .clone()
                    .unwrap_or_else(|| "nothing".into()),
            ));
            continue;
        }
        return Ok(());
    }
    Err(first_error.unwrap_or(SamlError::Missing("a bearer subject confirmation")))
}
