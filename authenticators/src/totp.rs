//! The TOTP authenticator (RFC 6238): 6-digit codes from a 160-bit secret, 30-second steps, one
//! step of drift either way, and each step accepted at most once per factor. The code arithmetic
//! is totp-rs's; this module adds the rules an identity server needs around it (secret size,
//! input normalisation, replay protection) and the enrollment URI.

use totp_rs::{Algorithm, Builder, Totp};

/// Secret length in bytes: 160 bits, what RFC 4226 recommends and what authenticator apps and
/// pyotp expect.
pub const SECRET_BYTES: usize = 20;
/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock drift accepted either side of now.
pub const DRIFT_STEPS: u16 = 1;

/// Why a code was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotpError {
    /// Not six digits (after removing spaces).
    Format,
    /// Six digits, but not the code of any step in the window.
    Wrong,
    /// The code of a step this factor already accepted (a replay, or a second login within
    /// the same 30 seconds).
    Replayed,
    /// The stored secret is unusable.
    Secret(String),
}

impl std::fmt::Display for TotpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TotpError::Format => f.write_str("a code is six digits"),
            TotpError::Wrong => f.write_str("the code is wrong or expired"),
            TotpError::Replayed => f.write_str("this code was already used"),
            TotpError::Secret(why) => write!(f, "unusable TOTP secret: {why}"),
        }
    }
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, TotpError> {
    if secret.len() < SECRET_BYTES {
        return Err(TotpError::Secret(format!(
            "{} bytes; at least {SECRET_BYTES} are required",
            secret.len()
        )));
    }
    // An otpauth label may not contain `:` (it separates issuer and account).
    let account = account.replace(':', "_");
    let issuer = issuer.replace(':', "_");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(DRIFT_STEPS)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.to_vec())
        .with_account_name(if account.is_empty() {
            "user".into()
        } else {
            account
        })
        .with_issuer((!issuer.is_empty()).then_some(issuer))
        .build()
        .map_err(|e| TotpError::Secret(e.to_string()))
}

/// The `otpauth://totp/...` URI an authenticator app scans, for `secret`.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> Result<String, TotpError> {
    totp(secret, issuer, account)?
        .to_url()
        .map_err(|e| TotpError::Secret(e.to_string()))
}

/// The secret in base32, for typing into an app by hand.
pub fn secret_base32(secret: &[u8]) -> Result<String, TotpError> {
    Ok(totp(secret, "", "")?.secret().to_base32())
}

/// Checks `code` at `now` for a factor that last accepted step `last_step` (0 for none).
/// Returns the step it matched, which the caller must store as the new `last_step` in the same
/// transaction that accepts the login, so that the same code cannot pass twice.
pub fn verify(secret: &[u8], code: &str, now: u64, last_step: u64) -> Result<u64, TotpError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Format);
    }
    let step = totp(secret, "", "")?
        .check(&code, now)
        .ok_or(TotpError::Wrong)?;
    if step <= last_step {
        return Err(TotpError::Replayed);
    }
    Ok(step)
}

/// The code for `time` (tests and the CLI's diagnostics).
pub fn code_at(secret: &[u8], time: u64) -> Result<String, TotpError> {
    Ok(totp(secret, "", "")?.generate(time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B's SHA-1 secret and vectors (truncated to six digits).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn matches_the_rfc_6238_vectors() {
        assert_eq!(code_at(RFC_SECRET, 59).as_deref(), Ok("287082"));
        assert_eq!(code_at(RFC_SECRET, 1_111_111_109).as_deref(), Ok("081804"));
        assert_eq!(code_at(RFC_SECRET, 2_000_000_000).as_deref(), Ok("279037"));
    }

    #[test]
    fn accepts_one_step_of_drift_and_no_more() {
        let now = 1_111_111_109;
        let previous = code_at(RFC_SECRET, now - 30).expect("code");
        let two_back = code_at(RFC_SECRET, now - 60).expect("code");
        assert_eq!(verify(RFC_SECRET, &previous, now, 0), Ok(now / 30 - 1));
        assert_eq!(verify(RFC_SECRET, &two_back, now, 0), Err(TotpError::Wrong));
    }

    #[test]
    fn a_step_is_accepted_once() {
        let now = 1_111_111_109;
        let code = code_at(RFC_SECRET, now).expect("code");
        let step = verify(RFC_SECRET, &code, now, 0).expect("first use");
        assert_eq!(
            verify(RFC_SECRET, &code, now, step),
            Err(TotpError::Replayed)
        );
        // An older code inside the drift window is also refused once a later step was used.
        let previous = code_at(RFC_SECRET, now - 30).expect("code");
        assert_eq!(
            verify(RFC_SECRET, &previous, now, step),
            Err(TotpError::Replayed)
        );
    }

    #[test]
    fn refuses_malformed_codes_and_short_secrets() {
        for bad in ["", "12345", "1234567", "12a456", "١٢٣٤٥٦"] {
            assert_eq!(
                verify(RFC_SECRET, bad, 59, 0),
                Err(TotpError::Format),
                "{bad}"
            );
        }
        assert_eq!(verify(RFC_SECRET, "287 082", 59, 0), Ok(1));
        assert!(matches!(
            verify(&[1; 10], "123456", 59, 0),
            Err(TotpError::Secret(_))
        ));
    }

    #[test]
    fn the_uri_carries_issuer_account_and_base32_secret() {
        let uri = otpauth_uri(RFC_SECRET, "idflow", "alice").expect("uri");
        assert!(uri.starts_with("otpauth://totp/idflow:alice?"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=idflow"), "{uri}");
    }
}
