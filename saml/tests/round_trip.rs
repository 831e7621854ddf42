//! A response built by idflow's IdP side, verified by idflow's SP side, and every way an
//! attacker or a misconfigured IdP could alter it refused.

use idflow_saml::idp::{AssertionSpec, Attribute, Signing, signed_response};
use idflow_saml::sp::{Expected, Verified, verify_response};
use idflow_saml::{Credential, SamlError, uri};

const NOW: u64 = 1_800_000_000;
const IDP: &str = "https://idp.test/saml2/metadata";
const SP: &str = "https://sp.test/metadata";
const ACS: &str = "https://sp.test/acs";

fn attributes() -> Vec<Attribute> {
    vec![Attribute {
        name: "email".into(),
        name_format: uri::ATTRNAME_BASIC.into(),
        friendly_name: Some("mail".into()),
        values: vec!["ann@acme.example".into()],
    }]
}

fn response(
    credential: &Credential,
    signing: Signing,
    tweak: impl FnOnce(&mut AssertionSpec<'_>),
) -> String {
    let attributes = attributes();
    let mut spec = AssertionSpec {
        issuer: IDP,
        audience: SP,
        destination: ACS,
        in_response_to: Some("_req1"),
        name_id: "ann",
        name_id_format: uri::PERSISTENT,
        session_index: "_s1",
        authn_instant: NOW - 5,
        authn_context: uri::AC_PASSWORD,
        attributes: &attributes,
        now: NOW,
        lifetime: 300,
        session_ends: Some(NOW + 3600),
    };
    tweak(&mut spec);
    signed_response(credential, &spec, signing).expect("signed")
}

fn expected(certificates: &[Vec<u8>]) -> Expected<'_> {
    Expected {
        entity_id: SP,
        acs_url: ACS,
        idp_entity_id: IDP,
        idp_certificates: certificates,
        request_id: "_req1",
        skew: 60,
        now: NOW + 1,
    }
}

fn both() -> Signing {
    Signing {
        assertion: true,
        response: true,
    }
}

fn verify(xml: &str, credential: &Credential) -> Result<Verified, SamlError> {
    let certificates = vec![credential.certificate_der().to_vec()];
    verify_response(xml, &expected(&certificates))
}

#[test]
fn a_signed_response_verifies_with_its_subject_attributes_and_context() {
    let idp = Credential::generate("idp.test").expect("key");
    for signing in [
        both(),
        Signing {
            assertion: true,
            response: false,
        },
        Signing {
            assertion: false,
            response: true,
        },
    ] {
        let xml = response(&idp, signing, |_| {});
        assert!(
            xml.contains(uri::SHA256) && !xml.contains("xmldsig#sha1"),
            "SHA-256 digests only"
        );
        let verified = verify(&xml, &idp).unwrap_or_else(|e| panic!("{signing:?}: {e}\n{xml}"));
        assert_eq!(verified.name_id, "ann");
        assert_eq!(
            verified.attributes["email"],
            vec!["ann@acme.example".to_string()]
        );
        assert_eq!(
            verified.attributes["mail"],
            vec!["ann@acme.example".to_string()]
        );
        assert_eq!(verified.authn_context.as_deref(), Some(uri::AC_PASSWORD));
        assert_eq!(verified.session_index.as_deref(), Some("_s1"));
        assert_eq!(verified.valid_until, NOW + 300 + 60);
    }
}

#[test]
fn unsigned_and_wrongly_signed_responses_are_refused() {
    let idp = Credential::generate("idp.test").expect("key");
    let other = Credential::generate("evil.test").expect("key");
    let forged = response(&other, both(), |_| {});
    assert!(matches!(
        verify(&forged, &idp),
        Err(SamlError::Signature(_))
    ));
    // Strip the signatures: nothing signed is left to read.
    let signed = response(
        &idp,
        Signing {
            assertion: true,
            response: false,
        },
        |_| {},
    );
    let start = signed.find("<ds:Signature").expect("sig");
    let end = signed.find("</ds:Signature>").expect("end") + "</ds:Signature>".len();
    let unsigned = format!("{}{}", &signed[..start], &signed[end..]);
    assert!(matches!(
        verify(&unsigned, &idp),
        Err(SamlError::Signature(_))
    ));
    // A signed value altered afterwards.
    let altered = signed.replace(">ann<", ">admin<");
    assert_ne!(altered, signed);
    assert!(matches!(
        verify(&altered, &idp),
        Err(SamlError::Signature(_))
    ));
    // No certificate configured: refused, never read unverified.
    assert!(matches!(
        verify_response(&signed, &expected(&[])),
        Err(SamlError::Signature(_))
    ));
}

#[test]
fn a_signature_wrapping_attack_never_yields_the_wrapped_subject() {
    let idp = Credential::generate("idp.test").expect("key");
    let signed = response(
        &idp,
        Signing {
            assertion: true,
            response: false,
        },
        |_| {},
    );
    let start = signed.find("<saml:Assertion").expect("assertion");
    let end = signed.find("</saml:Assertion>").expect("end") + "</saml:Assertion>".len();
    let genuine = &signed[start..end];
    // XSW: an unsigned evil assertion first, the genuine signed one after it.
    let evil = genuine
        .replace(">ann<", ">admin<")
        .replacen("ID=\"_", "ID=\"_evil", 1);
    let evil_unsigned = {
        let s = evil.find("<ds:Signature").expect("sig");
        let e = evil.find("</ds:Signature>").expect("end") + "</ds:Signature>".len();
        format!("{}{}", &evil[..s], &evil[e..])
    };
    let wrapped = format!("{}{evil_unsigned}{}", &signed[..start], &signed[start..]);
    assert!(
        matches!(verify(&wrapped, &idp), Err(SamlError::Malformed(why)) if why.contains("exactly one assertion")),
        "a wrapped response is refused"
    );
    // XSW: the genuine assertion hidden inside the evil one.
    let nested = format!(
        "{}{}{}",
        &signed[..start],
        evil_unsigned.replace("</saml:Assertion>", &format!("{genuine}</saml:Assertion>")),
        &signed[end..]
    );
    assert!(
        matches!(verify(&nested, &idp), Err(SamlError::Malformed(_))),
        "a nested wrapping is refused"
    );
    // Past the count, only the signed part is read: an unsigned assertion in place of the
    // signed one (the signed one moved into an element the schema ignores) yields nothing.
    let moved = format!("{}{}{}", &signed[..start], evil_unsigned, &signed[end..]).replace(
        "</samlp:Response>",
        &format!(
            "<samlp:Extensions>{}</samlp:Extensions></samlp:Response>",
            genuine
                .replace("<saml:Assertion", "<saml:Other")
                .replace("</saml:Assertion>", "</saml:Other>")
        ),
    );
    match verify(&moved, &idp) {
        Ok(verified) => assert_eq!(verified.name_id, "ann", "the unsigned assertion was read"),
        Err(error) => assert!(
            matches!(error, SamlError::Signature(_) | SamlError::Malformed(_)),
            "{error}"
        ),
    }
}

/// A change to an otherwise valid assertion.
type Tweak = Box<dyn FnOnce(&mut AssertionSpec<'_>)>;
/// What the verification must say of it.
type Expect = fn(&SamlError) -> bool;

#[test]
fn audience_recipient_request_issuer_and_time_are_each_checked() {
    let idp = Credential::generate("idp.test").expect("key");
    let cases: Vec<(Tweak, Expect)> = vec![
        (Box::new(|s| s.audience = "https://other-sp.test"), |e| {
            matches!(e, SamlError::Audience(_))
        }),
        (
            Box::new(|s| s.destination = "https://sp.test/other-acs"),
            |e| matches!(e, SamlError::Recipient { .. }),
        ),
        (
            Box::new(|s| s.in_response_to = Some("_someone-elses")),
            |e| matches!(e, SamlError::InResponseTo(_)),
        ),
        (Box::new(|s| s.in_response_to = None), |e| {
            matches!(e, SamlError::InResponseTo(_))
        }),
        (Box::new(|s| s.issuer = "https://evil.test"), |e| {
            matches!(e, SamlError::Issuer { .. })
        }),
        (Box::new(|s| s.now = NOW - 1000), |e| {
            matches!(e, SamlError::Expired(_))
        }),
        (Box::new(|s| s.now = NOW + 1000), |e| {
            matches!(e, SamlError::Expired(_))
        }),
    ];
    for (index, (tweak, expected_error)) in cases.into_iter().enumerate() {
        let xml = response(&idp, both(), tweak);
        match verify(&xml, &idp) {
            Ok(_) => panic!("case {index} was accepted"),
            Err(error) => assert!(expected_error(&error), "case {index}: {error}"),
        }
    }
    // Within the skew is fine.
    let xml = response(&idp, both(), |s| s.now = NOW + 30);
    verify(&xml, &idp).expect("within skew");
}

#[test]
fn doctype_and_sha1_are_refused() {
    let idp = Credential::generate("idp.test").expect("key");
    let xml = response(&idp, both(), |_| {});
    let with_doctype = format!("<!DOCTYPE r [<!ENTITY x \"y\">]>{xml}");
    assert_eq!(verify(&with_doctype, &idp).err(), Some(SamlError::Doctype));
    let sha1 = xml.replace(uri::SHA256, "http://www.w3.org/2000/09/xmldsig#sha1");
    assert!(matches!(verify(&sha1, &idp), Err(SamlError::Signature(_))));
}
