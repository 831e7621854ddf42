//! TOTP on the server: enrolling an authenticator app during a login (a QR code, the otpauth
//! URI, the secret to type, and recovery codes shown once) and checking a code against the
//! user's apps with replay protection.

use idflow_authenticators::totp::{self, TotpError};
use serde::{Deserialize, Serialize};

use super::{Checked, Mfa, challenge_key, recovery, user_challenge};
use crate::crypto::random_token;
use crate::store::{Challenge, Factor, FactorKind, Store, StoreResult, User, Write};

/// The purpose part of an enrollment challenge's key.
pub const ENROLL: &str = "enroll-totp";

/// A seed being enrolled, kept between the page and the first code.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// The seed, sealed to the challenge.
    sealed: String,
    /// The recovery codes shown with it, sealed to the challenge.
    sealed_codes: String,
}

/// What the enrollment page shows.
#[derive(Debug, Clone, Serialize)]
pub struct EnrollView {
    /// The QR code of the URI, as an SVG document.
    pub qr_svg: String,
    /// The `otpauth://` URI.
    pub uri: String,
    /// The secret in base32, to type by hand.
    pub secret: String,
    /// Recovery codes, shown once; they become valid with the app.
    pub recovery_codes: Vec<String>,
}

fn seed() -> Result<Vec<u8>, String> {
    let mut secret = vec![0u8; totp::SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "no randomness".to_string())?;
    Ok(secret)
}

/// The enrollment in progress for `owner` (a login or session key), started if there is none:
/// reloading the page shows the same QR code. Returns the view and the write that stores a new
/// challenge, if one was made.
pub fn enrollment(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    user: &User,
    now: u64,
    lifetime: u64,
) -> Result<(EnrollView, Option<Write>), String> {
    let key = challenge_key(owner, ENROLL);
    let existing = user_challenge::<Pending>(store, &key, &user.id, now)?;
    let (pending, write) = match existing {
        Some(pending) => (pending, None),
        None => {
            let codes = recovery::generate()?;
            let pending = Pending {
                sealed: mfa.key.seal(&seed()?, &key)?,
                sealed_codes: mfa.key.seal(codes.join(" ").as_bytes(), &key)?,
            };
            let challenge = Challenge {
                key: key.clone(),
                user: user.id.clone(),
                data: serde_json::to_value(&pending).map_err(|e| e.to_string())?,
                expires: now + lifetime,
            };
            (pending, Some(Write::PutChallenge(challenge)))
        }
    };
    let secret = mfa.key.open(&pending.sealed, &key)?;
    let codes =
        String::from_utf8(mfa.key.open(&pending.sealed_codes, &key)?).map_err(|e| e.to_string())?;
    let account = if user.email.is_empty() {
        &user.username
    } else {
        &user.email
    };
    let uri = totp::otpauth_uri(&secret, &mfa.settings.totp_issuer, account)
        .map_err(|e| e.to_string())?;
    let view = EnrollView {
        qr_svg: qr_svg(&uri)?,
        secret: totp::secret_base32(&secret).map_err(|e| e.to_string())?,
        uri,
        recovery_codes: codes.split(' ').map(String::from).collect(),
    };
    Ok((view, write))
}

fn qr_svg(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// Finishes an enrollment with the first code: the new app and its recovery codes become the
/// user's, and the challenge is spent.
pub fn finish_enrollment(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    user: &User,
    code: &str,
    now: u64,
) -> Result<Checked, String> {
    let key = challenge_key(owner, ENROLL);
    let Some(pending) = user_challenge::<Pending>(store, &key, &user.id, now)? else {
        return Ok(Checked::Refused(
            "this setup has expired; reload the page to start again".into(),
        ));
    };
    let secret = mfa.key.open(&pending.sealed, &key)?;
    let step = match totp::verify(&secret, code, now, 0) {
        Ok(step) => step,
        Err(error) => return Ok(Checked::Refused(refusal(&error))),
    };
    let codes =
        String::from_utf8(mfa.key.open(&pending.sealed_codes, &key)?).map_err(|e| e.to_string())?;
    let id = random_token(9);
    let factor = Factor {
        id: id.clone(),
        user: user.id.clone(),
        kind: FactorKind::Totp,
        label: "Authenticator app".into(),
        created: now,
        last_used: now,
        sealed_secret: Some(mfa.key.seal(&secret, &sealed_context(&user.id, &id))?),
        last_step: step,
        passkey: None,
        credential_id: None,
        counter: 0,
        user_handle: None,
        code_hashes: Vec::new(),
    };
    let recovery = recovery::factor(&user.id, codes.split(' '), now);
    Ok(Checked::Passed(vec![
        Write::TakeChallenge(key),
        Write::PutFactor(factor),
        Write::PutFactor(recovery),
    ]))
}

/// What a TOTP seed is sealed to: its user and factor.
fn sealed_context(user: &str, factor: &str) -> String {
    format!("totp/{user}/{factor}")
}

/// What the person is told when a code does not pass.
fn refusal(error: &TotpError) -> String {
    match error {
        TotpError::Format => "a code from an authenticator app is six digits".into(),
        TotpError::Wrong => "that code is wrong or has expired; type the current one".into(),
        TotpError::Replayed => {
            "that code was already used; wait for the next one in your app".into()
        }
        TotpError::Secret(_) => {
            "this authenticator app cannot be used; contact your administrator".into()
        }
    }
}

/// Checks `code` against each of the user's authenticator apps.
pub fn check(
    mfa: &Mfa,
    store: &dyn Store,
    user: &str,
    code: &str,
    now: u64,
) -> StoreResult<Checked> {
    let factors = store.factors(user)?;
    let mut last_error = TotpError::Wrong;
    let mut any = false;
    for factor in factors.iter().filter(|f| f.kind == FactorKind::Totp) {
        any = true;
        let Some(secret) = factor
            .sealed_secret
            .as_ref()
            .and_then(|s| mfa.key.open(s, &sealed_context(user, &factor.id)).ok())
        else {
            tracing::error!(
                user,
                factor = factor.id,
                "TOTP seed does not open with the secret key"
            );
            last_error = TotpError::Secret("sealed".into());
            continue;
        };
        match totp::verify(&secret, code, now, factor.last_step) {
            Ok(step) => {
                return Ok(Checked::Passed(vec![Write::UseTotpStep {
                    user: user.to_string(),
                    id: factor.id.clone(),
                    step,
                    now,
                }]));
            }
            Err(TotpError::Format) => return Ok(Checked::Refused(refusal(&TotpError::Format))),
            Err(error @ TotpError::Replayed) => last_error = error,
            Err(error) if last_error == TotpError::Wrong => last_error = error,
            Err(_) => {}
        }
    }
    if !any {
        return Ok(Checked::Refused(
            "no authenticator app is set up for this account".into(),
        ));
    }
    Ok(Checked::Refused(refusal(&last_error)))
}
