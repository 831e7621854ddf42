//! Second factors and passwordless credentials on the server side: enrolling and checking TOTP
//! apps ([`totp`]), recovery codes ([`recovery`]), passkeys ([`passkey`]) and emailed codes
//! ([`email_otp`]). The authenticators crate decides whether a code is right; these modules
//! find the user's factors, keep ceremony state between the page and the answer (as store
//! [`Challenge`]s), and say which writes make a success stick (a TOTP step used, a recovery code
//! struck, a passkey's counter), so the login step commits them in its own transaction.

pub mod email_otp;
pub mod passkey;
pub mod recovery;
pub mod signup;
pub mod totp;

use idflow_engine::UserView;

use crate::config::{MfaSettings, ServerConfig};
use crate::mail::MailSender;
use crate::secrets::SecretKey;
use crate::store::{Challenge, Factor, Store, StoreResult, User, Write};
use crate::throttle::Counter;

/// Everything the factor modules need, built once at start.
pub struct Mfa {
    /// Seals TOTP seeds.
    pub key: SecretKey,
    /// The WebAuthn relying party (id and origin from the issuer), or why there is none:
    /// WebAuthn needs a host name, so a server whose issuer is an IP address runs without
    /// passkeys rather than not at all.
    pub webauthn: Result<webauthn_rs::Webauthn, String>,
    /// Sends emailed codes.
    pub mailer: Box<dyn MailSender>,
    /// Codes sent per user, for the resend interval and the hourly limit.
    pub email_sends: Counter,
    /// `[mfa]`.
    pub settings: MfaSettings,
}

impl Mfa {
    /// Builds the relying party, loads (or creates) the secret key and the mail sender.
    pub fn new(config: &ServerConfig) -> Result<Mfa, String> {
        let key = match std::env::var("IDFLOW_SECRET_KEY") {
            Ok(text) if !text.is_empty() => {
                SecretKey::from_text(&text).map_err(|e| format!("IDFLOW_SECRET_KEY: {e}"))?
            }
            _ => SecretKey::load_or_create(
                &config
                    .mfa
                    .secret_key_file
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("secret.key")),
            )?,
        };
        Ok(Mfa {
            key,
            webauthn: passkey::relying_party(&config.issuer).inspect_err(|error| {
                tracing::warn!(%error, "passkeys are not available on this server");
            }),
            mailer: crate::mail::from_settings(&config.email, &config.data_dir)?,
            email_sends: Counter::new(),
            settings: config.mfa.clone(),
        })
    }
}

/// The names of the factors a user has enrolled, as flows see them (`user.factors`):
/// `totp`, `passkey`, and `recovery_code` while unused codes remain.
pub fn factor_names(factors: &[Factor]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for factor in factors {
        if factor.kind == crate::store::FactorKind::RecoveryCodes && factor.code_hashes.is_empty() {
            continue;
        }
        let name = factor.kind.authenticator().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A user as flows see them, with their enrolled factors.
pub fn user_view(store: &dyn Store, user: &User, now: u64) -> StoreResult<UserView> {
    let mut view = user.view(now);
    view.factors = factor_names(&store.factors(&user.id)?);
    Ok(view)
}

/// The key of a ceremony's state: the login's (or session's) key and what it is for.
pub fn challenge_key(owner: &str, purpose: &str) -> String {
    format!("{owner}:{purpose}")
}

/// What checking a factor found: the engine's verdict and the writes that make it stick.
#[derive(Debug)]
pub enum Checked {
    /// The factor passed; apply these writes with the login step.
    Passed(Vec<Write>),
    /// It did not; tell the person this (and audit it).
    Refused(String),
}

/// The live ceremony of `owner` for `purpose` started for `user`, read back as `T` (a ceremony
/// started for someone else, expired, or unreadable is none).
pub fn user_challenge<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    user: &str,
    now: u64,
) -> Result<Option<T>, String> {
    Ok(store
        .challenge(key, now)
        .map_err(|e| e.to_string())?
        .filter(|c| c.user == user)
        .and_then(|c| challenge_data::<T>(&c)))
}

/// A stored challenge's JSON `data` read back as `T`.
pub fn challenge_data<T: serde::de::DeserializeOwned>(challenge: &Challenge) -> Option<T> {
    serde_json::from_value(challenge.data.clone()).ok()
}
