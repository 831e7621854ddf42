//! WS-Federation passive requestor profile: the RequestSecurityTokenResponse that carries a
//! signed SAML 2.0 assertion to a relying party, and the federation metadata relying parties
//! import. (WS-Federation reuses SAML assertions, so it lives beside them.)

use crate::credential::Credential;
use crate::error::SamlError;
use crate::idp::{AssertionSpec, signed_assertion};
use crate::xml::{escape, instant};

/// `wa` for signing in.
pub const SIGNIN: &str = "wsignin1.0";
/// `wa` for signing out.
pub const SIGNOUT: &str = "wsignout1.0";
/// `wa` for a relying party cleaning up after another's sign-out.
pub const SIGNOUT_CLEANUP: &str = "wsignoutcleanup1.0";

/// The `wresult` for a sign-in: an RSTR with the signed assertion `spec` describes (its
/// audience the realm, its recipient the reply URL).
pub fn rstr(credential: &Credential, spec: &AssertionSpec<'_>) -> Result<String, SamlError> {
    let assertion = signed_assertion(credential, spec)?;
    Ok(format!(
        concat!(
            r#"<t:RequestSecurityTokenResponse xmlns:t="http://schemas.xmlsoap.org/ws/2005/02/trust">"#,
            r#"<t:Lifetime><wsu:Created xmlns:wsu="{wsu}">{created}</wsu:Created>"#,
            r#"<wsu:Expires xmlns:wsu="{wsu}">{expires}</wsu:Expires></t:Lifetime>"#,
            r#"<wsp:AppliesTo xmlns:wsp="http://schemas.xmlsoap.org/ws/2004/09/policy">"#,
            r#"<wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing">"#,
            r#"<wsa:Address>{realm}</wsa:Address></wsa:EndpointReference></wsp:AppliesTo>"#,
            r#"<t:RequestedSecurityToken>{assertion}</t:RequestedSecurityToken>"#,
            r#"<t:TokenType>urn:oasis:names:tc:SAML:2.0:assertion</t:TokenType>"#,
            r#"<t:RequestType>http://schemas.xmlsoap.org/ws/2005/02/trust/Issue</t:RequestType>"#,
            r#"<t:KeyType>http://schemas.xmlsoap.org/ws/2005/05/identity/NoProofKey</t:KeyType>"#,
            r#"</t:RequestSecurityTokenResponse>"#,
        ),
        wsu = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
        created = instant(spec.now),
        expires = instant(spec.now.saturating_add(spec.lifetime)),
        realm = escape(spec.audience),
        assertion = assertion,
    ))
}

/// Federation metadata: a security token service role with our signing certificate and the
/// passive requestor endpoint, the shape WS-Federation relying parties (and ADFS tooling) read.
pub fn metadata(entity_id: &str, endpoint: &str, certificate_base64: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" "#,
            r#"xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706" "#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" "#,
            r#"xmlns:wsa="http://www.w3.org/2005/08/addressing" entityID="{entity}">"#,
            r#"<md:RoleDescriptor xsi:type="fed:SecurityTokenServiceType" "#,
            r#"protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706">"#,
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">"#,
            r#"<ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data>"#,
            r#"</ds:KeyInfo></md:KeyDescriptor>"#,
            r#"<fed:TokenTypesOffered><fed:TokenType Uri="urn:oasis:names:tc:SAML:2.0:assertion"/></fed:TokenTypesOffered>"#,
            r#"<fed:PassiveRequestorEndpoint><wsa:EndpointReference><wsa:Address>{endpoint}</wsa:Address>"#,
            r#"</wsa:EndpointReference></fed:PassiveRequestorEndpoint>"#,
            r#"</md:RoleDescriptor></md:EntityDescriptor>"#,
        ),
        entity = escape(entity_id),
        cert = certificate_base64,
        endpoint = escape(endpoint),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri;

    #[test]
    fn the_rstr_carries_one_assertion_signed_for_the_realm_that_verifies() {
        let credential = Credential::generate("sts.test").expect("key");
        let spec = AssertionSpec {
            issuer: "https://sts.test/wsfed",
            audience: "urn:app:realm",
            destination: "https://app.test/signin",
            in_response_to: None,
            name_id: "ann",
            name_id_format: uri::UNSPECIFIED,
            session_index: "s1",
            authn_instant: 1_800_000_000,
            authn_context: uri::AC_PASSWORD,
            attributes: &[],
            now: 1_800_000_000,
            lifetime: 300,
            session_ends: None,
        };
        let rstr = rstr(&credential, &spec).expect("rstr");
        assert!(rstr.contains("<wsa:Address>urn:app:realm</wsa:Address>"));
        let start = rstr.find("<saml:Assertion").expect("assertion");
        let end = rstr.find("</saml:Assertion>").expect("end") + "</saml:Assertion>".len();
        let signed = crate::signature::verified_part(
            &rstr[start..end],
            &[credential.certificate_der().to_vec()],
        )
        .expect("the assertion verifies on its own");
        assert!(signed.contains("<saml:Audience>urn:app:realm</saml:Audience>"));
    }
}
