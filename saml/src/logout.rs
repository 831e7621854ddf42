//! Single Logout messages (HTTP-Redirect binding): the LogoutRequest an SP or idflow sends, and
//! the LogoutResponse that answers it. Their signatures travel in the query (see
//! [`crate::binding`]), so the XML itself carries none.

use samael::schema::{LogoutRequest, LogoutResponse};

use crate::error::SamlError;
use crate::xml::{escape, instant, refuse_doctype};

/// A LogoutRequest for `name_id` (in `format`) and the session `session_index`, valid until
/// `not_on_or_after` (the session authority must say until when, SAML Core 3.7.1).
#[allow(clippy::too_many_arguments)]
pub fn logout_request(
    id: &str,
    issuer: &str,
    destination: &str,
    name_id: &str,
    format: &str,
    session_index: &str,
    now: u64,
    not_on_or_after: u64,
) -> String {
    format!(
        concat!(
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{now}" NotOnOrAfter="{until}" Destination="{destination}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
            r#"<samlp:SessionIndex>{session_index}</samlp:SessionIndex>"#,
            r#"</samlp:LogoutRequest>"#,
        ),
        id = escape(id),
        now = instant(now),
        until = instant(not_on_or_after),
        destination = escape(destination),
        issuer = escape(issuer),
        format = escape(format),
        name_id = escape(name_id),
        session_index = escape(session_index),
    )
}

/// A LogoutResponse with top-level `status` and, when given, a second-level `detail` (such as
/// `PartialLogout`).
pub fn logout_response(
    id: &str,
    issuer: &str,
    destination: &str,
    in_response_to: &str,
    status: (&str, Option<&str>),
    now: u64,
) -> String {
    let (status, detail) = status;
    let detail = detail
        .map(|d| format!(r#"<samlp:StatusCode Value="{}"/>"#, escape(d)))
        .unwrap_or_default();
    format!(
        concat!(
            r#"<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{now}" Destination="{destination}" InResponseTo="{in_response_to}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<samlp:Status><samlp:StatusCode Value="{status}">{detail}</samlp:StatusCode></samlp:Status>"#,
            r#"</samlp:LogoutResponse>"#,
        ),
        id = escape(id),
        now = instant(now),
        destination = escape(destination),
        in_response_to = escape(in_response_to),
        issuer = escape(issuer),
        status = escape(status),
        detail = detail,
    )
}

/// What idflow needs of a LogoutRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequestView {
    /// Its id (the response's InResponseTo).
    pub id: String,
    /// Who sent it.
    pub issuer: String,
    /// Where it says it was sent.
    pub destination: Option<String>,
    /// The subject it logs out.
    pub name_id: Option<String>,
    /// The session it ends, when it names one.
    pub session_index: Option<String>,
    /// When it was made.
    pub issue_instant: Option<u64>,
}

/// Reads a decoded LogoutRequest.
pub fn parse_logout_request(xml: &str) -> Result<LogoutRequestView, SamlError> {
    refuse_doctype(xml)?;
    let request: LogoutRequest = xml
        .parse()
        .map_err(|e| SamlError::Malformed(format!("LogoutRequest: {e}")))?;
    let id = request
        .id
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or(SamlError::Missing("an ID"))?;
    let issuer = request
        .issuer
        .as_ref()
        .and_then(|i| i.value.clone())
        .ok_or(SamlError::Missing("an Issuer"))?;
    Ok(LogoutRequestView {
        id,
        issuer: issuer.trim().to_string(),
        destination: request.destination.clone(),
        name_id: request.name_id.as_ref().map(|n| n.value.trim().to_string()),
        issue_instant: request.issue_instant.as_ref().map(crate::xml::seconds),
        // samael reads SessionIndex as an attribute; the schema makes it an element.
        session_index: element_text(xml, "SessionIndex").or_else(|| request.session_index.clone()),
    })
}

/// The text of the first element named `local` (any prefix), unescaped; `None` if absent.
fn element_text(xml: &str, local: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let name_end = rest.find(|c: char| c == '>' || c.is_whitespace())?;
        let name = &rest[..name_end];
        if !name.starts_with('/') && name.rsplit(':').next() == Some(local) {
            let open_end = rest.find('>')?;
            let body = &rest[open_end + 1..];
            let text = &body[..body.find('<')?];
            let unescaped = text
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
            return Some(unescaped.trim().to_string());
        }
    }
    None
}

/// What idflow needs of a LogoutResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponseView {
    /// Who sent it.
    pub issuer: String,
    /// The request it answers.
    pub in_response_to: Option<String>,
    /// Its top-level status.
    pub status: Option<String>,
}

/// Reads a decoded LogoutResponse.
pub fn parse_logout_response(xml: &str) -> Result<LogoutResponseView, SamlError> {
    refuse_doctype(xml)?;
    let response: LogoutResponse = xml
        .parse()
        .map_err(|e| SamlError::Malformed(format!("LogoutResponse: {e}")))?;
    Ok(LogoutResponseView {
        issuer: response
            .issuer
            .as_ref()
            .and_then(|i| i.value.clone())
            .ok_or(SamlError::Missing("an Issuer"))?,
        in_response_to: response.in_response_to.clone(),
        status: response
            .status
            .as_ref()
            .and_then(|s| s.status_code.value.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_messages_round_trip() {
        let request = logout_request(
            "_l1",
            "https://sp.test",
            "https://idp.test/slo",
            "ann",
            crate::uri::PERSISTENT,
            "sid-1",
            1_800_000_000,
            1_800_000_300,
        );
        let view = parse_logout_request(&request).expect("parses");
        assert_eq!(view.id, "_l1");
        assert_eq!(view.issue_instant, Some(1_800_000_000));
        assert!(
            request.contains(r#"NotOnOrAfter="2027-01-15T08:05:00Z""#),
            "{request}"
        );
        assert_eq!(view.issuer, "https://sp.test");
        assert_eq!(view.name_id.as_deref(), Some("ann"));
        assert_eq!(view.session_index.as_deref(), Some("sid-1"));
        let response = logout_response(
            "_r1",
            "https://idp.test",
            "https://sp.test/slo",
            "_l1",
            (crate::uri::SUCCESS, Some(crate::uri::PARTIAL_LOGOUT)),
            1_800_000_000,
        );
        assert!(response.contains(crate::uri::PARTIAL_LOGOUT));
        let view = parse_logout_response(&response).expect("parses");
        assert_eq!(view.in_response_to.as_deref(), Some("_l1"));
        assert_eq!(view.status.as_deref(), Some(crate::uri::SUCCESS));
        assert_eq!(
            parse_logout_request("<!DOCTYPE x><x/>"),
            Err(SamlError::Doctype)
        );
    }
}
