//! Email one-time codes: six digits, valid for minutes, used once. A code has only 20 bits, so
//! what keeps it safe is the server around it — a short lifetime, a handful of tries per code,
//! a limit on how often codes are sent — not the hash it is stored under. The hash (salted with
//! the challenge it belongs to) only keeps codes out of the store in readable form.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Digits per code.
pub const DIGITS: usize = 6;

/// A code from 4 random bytes, zero-padded to six digits (the bias of `u32 % 10^6` is below
/// one part in four thousand).
pub fn from_random(random: [u8; 4]) -> String {
    format!("{:06}", u32::from_be_bytes(random) % 1_000_000)
}

/// The stored form of `code` for the challenge `salt`.
pub fn hash(code: &str, salt: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0])
        .chain_update(code.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a typed code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    /// Not six digits.
    Format,
    /// Six digits, not the code sent.
    Wrong,
}

/// Checks a typed code (spaces ignored) against the stored hash, in constant time.
pub fn verify(typed: &str, salt: &str, stored: &str) -> Result<(), CodeError> {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::Format);
    }
    if bool::from(hash(&typed, salt).as_bytes().ct_eq(stored.as_bytes())) {
        Ok(())
    } else {
        Err(CodeError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_verifies_only_against_its_own_challenge() {
        let code = from_random([0, 0, 0, 42]);
        assert_eq!(code, "000042");
        let stored = hash(&code, "challenge-1");
        assert_eq!(verify("000 042", "challenge-1", &stored), Ok(()));
        assert_eq!(
            verify("000042", "challenge-2", &stored),
            Err(CodeError::Wrong)
        );
        assert_eq!(
            verify("000043", "challenge-1", &stored),
            Err(CodeError::Wrong)
        );
        assert_eq!(verify("42", "challenge-1", &stored), Err(CodeError::Format));
        assert_eq!(
            verify("00004x", "challenge-1", &stored),
            Err(CodeError::Format)
        );
    }
}
