//! The enveloped XML signature template idflow signs with: RSA-SHA256, SHA-256 digest,
//! exclusive canonicalization. samael's built-in template digests with SHA-1, which strict SPs
//! (and our own verification) refuse.

use crate::uri;

/// An empty `ds:Signature` over the element whose `ID` is `reference_id`, carrying the signing
/// certificate so an SP can match it against metadata. xmlsec fills in the digest and value.
pub fn template(reference_id: &str, certificate_base64: &str) -> String {
    format!(
        concat!(
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">"#,
            r#"<ds:SignedInfo>"#,
            r#"<ds:CanonicalizationMethod Algorithm="{c14n}"/>"#,
            r#"<ds:SignatureMethod Algorithm="{rsa}"/>"#,
            r##"<ds:Reference URI="#{id}">"##,
            r#"<ds:Transforms>"#,
            r#"<ds:Transform Algorithm="{enveloped}"/>"#,
            r#"<ds:Transform Algorithm="{c14n}"/>"#,
            r#"</ds:Transforms>"#,
            r#"<ds:DigestMethod Algorithm="{sha256}"/>"#,
            r#"<ds:DigestValue></ds:DigestValue>"#,
            r#"</ds:Reference>"#,
            r#"</ds:SignedInfo>"#,
            r#"<ds:SignatureValue></ds:SignatureValue>"#,
            r#"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"#,
            r#"</ds:Signature>"#,
        ),
        c14n = uri::EXC_C14N,
        rsa = uri::RSA_SHA256,
        enveloped = uri::ENVELOPED,
        sha256 = uri::SHA256,
        id = crate::xml::escape(reference_id),
        cert = certificate_base64,
    )
}

/// `xml` without its leading `<?xml ...?>` declaration, to embed one signed document in
/// another (exclusive canonicalization makes the signature independent of where it sits).
pub fn without_declaration(xml: &str) -> &str {
    let trimmed = xml.trim_start();
    match trimmed.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or(trimmed, |(_, body)| body.trim_start()),
        None => trimmed,
    }
}

/// Verifies the signatures in `xml` with one of `certificates` (DER), accepting RSA-SHA256
/// over SHA-256 only, and returns the document reduced to what the signatures cover (samael's
/// `ValidateAndMarkNoAncestors`): whatever is not signed is gone, so nothing read afterwards can
/// come from a wrapped, unsigned copy.
pub fn verified_part(xml: &str, certificates: &[Vec<u8>]) -> Result<String, crate::SamlError> {
    use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, CryptoProvider, ReduceMode};
    if certificates.is_empty() {
        return Err(crate::SamlError::Signature(
            "no certificate is configured to verify with".into(),
        ));
    }
    let certificates: Vec<CertificateDer> = certificates
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    samael::crypto::XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &certificates,
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(&[AllowedSignatureAlgorithm::RsaSha256]),
    )
    .map_err(|e| crate::SamlError::Signature(e.to_string()))
}
