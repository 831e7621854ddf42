//! Small cryptographic helpers used across the server: random tokens, constant-time
//! comparison, base64url and SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A random URL-safe token carrying `bytes` bytes of entropy (32 for codes, tokens and
/// session ids: 256 bits).
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // The system generator fails only if the kernel cannot give entropy; continuing with a
    // predictable token would be worse than stopping.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buffer).expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(buffer)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hash first so lengths leak nothing either.
    let a = Sha256::digest(a);
    let b = Sha256::digest(b);
    a.ct_eq(&b).into()
}

/// base64url without padding (JOSE, PKCE).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The PKCE S256 transform of a verifier (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    b64url(&sha256(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn pkce_matches_the_rfc_7636_example() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
