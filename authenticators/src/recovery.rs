//! Recovery codes: single-use codes a user keeps on paper for when their authenticator app is
//! lost. Each carries 80 random bits, so an unsalted SHA-256 is enough to store it (no offline
//! guessing can cover 2^80), and the store keeps only those hashes.

use sha2::{Digest, Sha256};

/// Codes issued at a time.
pub const COUNT: usize = 10;
/// Random bytes per code (80 bits).
pub const CODE_BYTES: usize = 10;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Formats 10 random bytes as `xxxx-xxxx-xxxx-xxxx` (base32, lowercase).
pub fn format(bytes: &[u8; CODE_BYTES]) -> String {
    let mut bits: u128 = 0;
    for b in bytes {
        bits = (bits << 8) | u128::from(*b);
    }
    let chars: Vec<char> = (0..16)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The stored form of a code: SHA-256 hex of its normalised text (lowercase, no separators),
/// so that `ABCD EFGH...` and `abcd-efgh-...` are the same code.
pub fn hash(code: &str) -> Option<String> {
    let normal: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if normal.len() != 16 || !normal.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    let digest = Sha256::digest(normal.as_bytes());
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_hashes_the_same_code_however_typed() {
        let code = format(&[0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let typed = code.to_uppercase().replace('-', " ");
        assert_eq!(hash(&code), hash(&typed));
        assert!(hash(&code).is_some());
    }

    #[test]
    fn refuses_text_that_is_not_a_code() {
        for bad in ["", "abcd", "abcd-efgh-ijkl-mno1", "abcd-efgh-ijkl-mnopq"] {
            assert_eq!(hash(bad), None, "{bad}");
        }
    }
}
