//! The HTTP-Redirect and HTTP-POST bindings: a message to and from its form on the wire, within
//! size limits, and the Redirect binding's query signature (SAML Bindings §3.4.4.1).
//!
//! The query signature is written here rather than taken from samael's `UrlVerifier`, which
//! re-encodes the query it verifies: the binding requires the bytes exactly as received, and
//! SPs differ in how they percent-encode.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;

use crate::credential::Credential;
use crate::error::SamlError;
use crate::uri;
use crate::xml::refuse_doctype;

/// The largest message accepted, decoded (and inflated): requests and responses are a few KB;
/// anything near this is an attack or a mistake.
pub const MAX_MESSAGE: usize = 128 * 1024;

fn decode_base64(encoded: &str) -> Result<Vec<u8>, SamlError> {
    // Base64 inflates by 4/3: refuse before decoding something that cannot fit.
    if encoded.len() > MAX_MESSAGE * 4 / 3 + 4096 {
        return Err(SamlError::TooLarge(MAX_MESSAGE));
    }
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| SamlError::Malformed(format!("not base64: {e}")))
}

fn text(bytes: Vec<u8>) -> Result<String, SamlError> {
    let xml = String::from_utf8(bytes).map_err(|_| SamlError::Malformed("not UTF-8".into()))?;
    refuse_doctype(&xml)?;
    Ok(xml)
}

/// A message from an HTTP-POST form field (base64 of the XML).
pub fn decode_post(encoded: &str) -> Result<String, SamlError> {
    let bytes = decode_base64(encoded)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(SamlError::TooLarge(MAX_MESSAGE));
    }
    text(bytes)
}

/// A message from an HTTP-Redirect query parameter (base64 of raw DEFLATE), inflated no
/// further than [`MAX_MESSAGE`] so a compression bomb costs nothing.
pub fn decode_redirect(encoded: &str) -> Result<String, SamlError> {
    let compressed = decode_base64(encoded)?;
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(compressed.as_slice())
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| SamlError::Malformed(format!("not DEFLATE: {e}")))?;
    if inflated.len() > MAX_MESSAGE {
        return Err(SamlError::TooLarge(MAX_MESSAGE));
    }
    text(inflated)
}

/// The HTTP-POST form value for `xml`.
pub fn encode_post(xml: &str) -> String {
    STANDARD.encode(xml.as_bytes())
}

fn deflate(xml: &str) -> String {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(xml.as_bytes());
    STANDARD.encode(encoder.finish().unwrap_or_default())
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The HTTP-Redirect URL sending `xml` as `parameter` (`SAMLRequest` or `SAMLResponse`) to
/// `endpoint`, signed with `signer` when given. The endpoint is written as a URL serializes
/// (percent-encoded, so the result is a valid `Location` header) and without a fragment, which
/// would swallow the message; an endpoint that is not an absolute URL is an error.
pub fn redirect_url(
    endpoint: &str,
    parameter: &str,
    xml: &str,
    relay_state: Option<&str>,
    signer: Option<&Credential>,
) -> Result<String, SamlError> {
    let mut query = format!("{parameter}={}", form_encode(&deflate(xml)));
    if let Some(relay_state) = relay_state {
        query.push_str(&format!("&RelayState={}", form_encode(relay_state)));
    }
    if let Some(signer) = signer {
        query.push_str(&format!("&SigAlg={}", form_encode(uri::RSA_SHA256)));
        let signature = signer.sign_rsa_sha256(query.as_bytes())?;
        query.push_str(&format!(
            "&Signature={}",
            form_encode(&STANDARD.encode(signature))
        ));
    }
    let mut endpoint = url::Url::parse(endpoint).map_err(|e| {
        SamlError::Malformed(format!("the endpoint `{endpoint}` is not a URL: {e}"))
    })?;
    endpoint.set_fragment(None);
    let separator = if endpoint.query().is_some() { '&' } else { '?' };
    Ok(format!("{endpoint}{separator}{query}"))
}

/// The raw (still percent-encoded) part `name=value` of `query` whose name is `name` once
/// decoded, as a form decoder reads names; more than one is an error, since whoever reads the
/// query afterwards could take another one than the signature covers.
fn raw_part<'q>(query: &'q str, name: &str) -> Result<Option<&'q str>, SamlError> {
    let mut parts = query
        .split('&')
        .filter(|part| decode(part.split('=').next().unwrap_or_default()) == name);
    let first = parts.next();
    if parts.next().is_some() {
        return Err(SamlError::Signature(format!(
            "the query has more than one {name}"
        )));
    }
    Ok(first)
}

/// One form-encoded component, decoded.
fn decode(component: &str) -> String {
    url::form_urlencoded::parse(format!("v={component}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn decoded(raw: &str) -> String {
    decode(raw.split_once('=').map_or("", |(_, v)| v))
}

/// Whether the raw query of a Redirect-binding message carries a signature at all (or more
/// than one, which [`verify_query_signature`] refuses).
pub fn has_query_signature(raw_query: &str) -> bool {
    !matches!(raw_part(raw_query, "Signature"), Ok(None))
}

/// Verifies the Redirect binding's signature of `raw_query` (exactly as received) over
/// `parameter`, `RelayState` and `SigAlg`, with one of `certificates` (DER). Parameters are
/// found by their decoded names, as the query's reader finds them, and each at most once: a
/// `RelayState` the signature does not cover cannot ride along as `Relay%53tate`.
pub fn verify_query_signature(
    raw_query: &str,
    parameter: &str,
    certificates: &[Vec<u8>],
) -> Result<(), SamlError> {
    let missing = |what: &str| SamlError::Signature(format!("the query has no {what}"));
    let message = raw_part(raw_query, parameter)?.ok_or_else(|| missing(parameter))?;
    let sig_alg = raw_part(raw_query, "SigAlg")?.ok_or_else(|| missing("SigAlg"))?;
    let signature = raw_part(raw_query, "Signature")?.ok_or_else(|| missing("Signature"))?;
    if decoded(sig_alg) != uri::RSA_SHA256 {
        return Err(SamlError::Signature(format!(
            "SigAlg `{}` is not RSA-SHA256",
            decoded(sig_alg)
        )));
    }
    let mut signed = message.to_string();
    if let Some(relay_state) = raw_part(raw_query, "RelayState")? {
        signed.push('&');
        signed.push_str(relay_state);
    }
    signed.push('&');
    signed.push_str(sig_alg);
    let signature = STANDARD
        .decode(decoded(signature).as_bytes())
        .map_err(|_| SamlError::Signature("the Signature is not base64".into()))?;
    for der in certificates {
        let Ok(certificate) = X509::from_der(der) else {
            continue;
        };
        let Ok(key) = certificate.public_key() else {
            continue;
        };
        let verified = Verifier::new(MessageDigest::sha256(), &key)
            .and_then(|mut verifier| verifier.verify_oneshot(&signature, signed.as_bytes()));
        if matches!(verified, Ok(true)) {
            return Ok(());
        }
    }
    Err(SamlError::Signature(
        "the query signature does not verify with the registered certificate".into(),
    ))
}

/// Signs bytes with RSA-SHA256 (PKCS#1 v1.5), as the Redirect binding and XML signatures use.
pub(crate) fn rsa_sha256(
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    data: &[u8],
) -> Result<Vec<u8>, SamlError> {
    let fail = |e: openssl::error::ErrorStack| SamlError::Credential(e.to_string());
    let mut signer = Signer::new(MessageDigest::sha256(), key).map_err(fail)?;
    signer.sign_oneshot_to_vec(data).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_messages_round_trip_and_signatures_verify_only_unaltered() {
        let credential = Credential::generate("idp.test").expect("credential");
        let xml = "<samlp:AuthnRequest ID=\"_1\"/>";
        let url = redirect_url(
            "https://idp.test/sso",
            "SAMLRequest",
            xml,
            Some("state 1"),
            Some(&credential),
        )
        .expect("url");
        let query = url.split_once('?').expect("query").1;
        let message = decoded(
            raw_part(query, "SAMLRequest")
                .expect("once")
                .expect("message"),
        );
        assert_eq!(decode_redirect(&message).expect("inflate"), xml);
        let certs = vec![credential.certificate_der().to_vec()];
        verify_query_signature(query, "SAMLRequest", &certs).expect("verifies");
        let altered = query.replace("RelayState=state", "RelayState=other");
        assert!(verify_query_signature(&altered, "SAMLRequest", &certs).is_err());
        let other = Credential::generate("other.test").expect("credential");
        let wrong = vec![other.certificate_der().to_vec()];
        assert!(verify_query_signature(query, "SAMLRequest", &wrong).is_err());
        let sha1 = query.replace("rsa-sha256", "rsa-sha1");
        assert!(matches!(
            verify_query_signature(&sha1, "SAMLRequest", &certs),
            Err(SamlError::Signature(why)) if why.contains("not RSA-SHA256")
        ));
    }

    #[test]
    fn regression_a_relay_state_the_signature_does_not_cover_is_refused() {
        // Found by tests/never_panics.rs: a second RelayState, or one whose name is
        // percent-encoded, was not part of what was verified, yet the server reads it.
        let credential = Credential::generate("sp.test").expect("credential");
        let certs = vec![credential.certificate_der().to_vec()];
        let xml = "<samlp:AuthnRequest ID=\"_1\"/>";
        let signed = |relay_state| {
            let url = redirect_url(
                "https://idp.test/sso",
                "SAMLRequest",
                xml,
                relay_state,
                Some(&credential),
            )
            .expect("url");
            url.split_once('?').expect("query").1.to_string()
        };
        let (with, without) = (signed(Some("state 1")), signed(None));
        for query in [&with, &without] {
            verify_query_signature(query, "SAMLRequest", &certs).expect("verifies");
        }
        for smuggled in ["&Relay%53tate=evil", "&RelayState=evil"] {
            let query = format!("{without}{smuggled}");
            assert!(
                verify_query_signature(&query, "SAMLRequest", &certs).is_err(),
                "{smuggled}"
            );
        }
        let twice = with.replace("&SigAlg", "&RelayState=evil&SigAlg");
        assert!(verify_query_signature(&twice, "SAMLRequest", &certs).is_err());
        assert!(has_query_signature("SAMLRequest=x&Sign%61ture=y"));
        assert!(has_query_signature("Signature=x&Signature=y"));
        assert!(!has_query_signature("SAMLRequest=x"));
    }

    #[test]
    fn regression_redirect_urls_are_valid_locations() {
        // Found by tests/never_panics.rs: an endpoint with a fragment lost the message, and one
        // with a character outside ASCII made a URL that axum's `Redirect` panics on.
        let url = redirect_url("https://sp.test/slo#top", "SAMLRequest", "<x/>", None, None)
            .expect("url");
        assert!(url.starts_with("https://sp.test/slo?SAMLRequest="), "{url}");
        let url = redirect_url(
            "https://sp.test/sl\u{f6}?a=b",
            "SAMLRequest",
            "<x/>",
            None,
            None,
        )
        .expect("url");
        assert!(
            url.starts_with("https://sp.test/sl%C3%B6?a=b&SAMLRequest="),
            "{url}"
        );
        assert!(url.bytes().all(|b| b.is_ascii_graphic()));
        assert!(redirect_url("/relative", "SAMLRequest", "<x/>", None, None).is_err());
    }

    #[test]
    fn oversized_inflation_and_bad_encodings_are_refused() {
        let bomb = deflate(&"a".repeat(MAX_MESSAGE + 10));
        assert_eq!(
            decode_redirect(&bomb),
            Err(SamlError::TooLarge(MAX_MESSAGE))
        );
        assert!(matches!(decode_post("%%%"), Err(SamlError::Malformed(_))));
        assert!(matches!(
            decode_redirect("aGVsbG8="),
            Err(SamlError::Malformed(_))
        ));
        assert_eq!(
            decode_post(&encode_post("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")),
            Err(SamlError::Doctype)
        );
        let huge = "A".repeat(MAX_MESSAGE * 2);
        assert_eq!(decode_post(&huge), Err(SamlError::TooLarge(MAX_MESSAGE)));
    }
}
