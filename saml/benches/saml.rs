//! What one SAML sign-in costs idflow on each side: signing a response (assertion and
//! response, RSA-2048 over SHA-256, through xmlsec) and verifying one (reduce-to-signed and
//! every check).

use criterion::{Criterion, criterion_group, criterion_main};
use idflow_saml::idp::{AssertionSpec, Attribute, Signing, signed_response};
use idflow_saml::sp::{Expected, verify_response};
use idflow_saml::{Credential, uri};

const NOW: u64 = 1_800_000_000;

fn spec(attributes: &[Attribute]) -> AssertionSpec<'_> {
    AssertionSpec {
        issuer: "https://idp.test/saml2/metadata",
        audience: "https://sp.test/metadata",
        destination: "https://sp.test/acs",
        in_response_to: Some("_req1"),
        name_id: "ann",
        name_id_format: uri::PERSISTENT,
        session_index: "_s1",
        authn_instant: NOW,
        authn_context: uri::AC_PASSWORD,
        attributes,
        now: NOW,
        lifetime: 300,
        session_ends: None,
    }
}

fn bench(c: &mut Criterion) {
    let credential = Credential::generate("idp.test").expect("key");
    let attributes = vec![Attribute {
        name: "email".into(),
        name_format: uri::ATTRNAME_BASIC.into(),
        friendly_name: None,
        values: vec!["ann@acme.example".into()],
    }];
    let both = Signing {
        assertion: true,
        response: true,
    };
    c.bench_function("saml_sign_response_and_assertion", |b| {
        b.iter(|| signed_response(&credential, &spec(&attributes), both).expect("signed"))
    });
    let xml = signed_response(&credential, &spec(&attributes), both).expect("signed");
    let certificates = vec![credential.certificate_der().to_vec()];
    let expected = Expected {
        entity_id: "https://sp.test/metadata",
        acs_url: "https://sp.test/acs",
        idp_entity_id: "https://idp.test/saml2/metadata",
        idp_certificates: &certificates,
        request_id: "_req1",
        skew: 60,
        now: NOW,
    };
    c.bench_function("saml_verify_response", |b| {
        b.iter(|| verify_response(&xml, &expected).expect("verifies"))
    });
}

// criterion's macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench);
}
use group::benches;
criterion_main!(benches);
