//! The settings of the second factors and of abuse protection: `[mfa]` (the secret key that
//! seals TOTP seeds, what authenticator apps show, email codes), `[email]` (how mail is sent)
//! and `[throttle]` (failed attempts per IP address and per user and address).

use std::path::PathBuf;

use serde::Deserialize;

/// `[mfa]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSettings {
    /// The file holding the key that seals TOTP seeds. Default `secret.key` in the data
    /// directory, created on first start. `IDFLOW_SECRET_KEY` (base64url of 32 bytes) wins
    /// over both.
    pub secret_key_file: Option<PathBuf>,
    /// The issuer name authenticator apps show beside the account. Default `idflow`.
    pub totp_issuer: String,
    /// How long an emailed code is valid. Default 600 (10 minutes).
    pub email_code_seconds: u64,
    /// The shortest interval between two codes sent to one user. Default 30.
    pub email_resend_seconds: u64,
    /// Codes sent to one user per hour at most. Default 10.
    pub email_codes_per_hour: u32,
    /// How recently a user must have signed in to add or remove a factor on the account page.
    /// Default 300: a stolen or forgotten session alone cannot plant a passkey or remove the
    /// second factor (Keycloak asks for a recent sign-in before credential changes too).
    pub reauth_seconds: u64,
}

impl Default for MfaSettings {
    fn default() -> Self {
        MfaSettings {
            secret_key_file: None,
            totp_issuer: "idflow".into(),
            email_code_seconds: 600,
            email_resend_seconds: 30,
            email_codes_per_hour: 10,
            reauth_seconds: 300,
        }
    }
}

/// `[email]`: how the server sends mail (email one-time codes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `outbox` (write each message as a file: development and tests) or `smtp`.
    pub sender: String,
    /// For `outbox`: the directory. Default `outbox` in the data directory.
    pub outbox: Option<PathBuf>,
    /// For `smtp`: `smtps://user:password@host:465` or `smtp://host:587` (STARTTLS).
    pub smtp_url: Option<String>,
    /// For `smtp`: an environment variable holding the URL instead (keeps the password out
    /// of the file).
    pub smtp_url_env: Option<String>,
    /// The From address.
    pub from: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            sender: "outbox".into(),
            outbox: None,
            smtp_url: None,
            smtp_url_env: None,
            from: "idflow <no-reply@localhost>".into(),
        }
    }
}

/// `[throttle]`: failed credential attempts allowed per window before further attempts are
/// refused for the rest of the window. Per IP address it slows guessing across many accounts;
/// per user and address it slows guessing at one account without letting an attacker lock
/// its owner out from everywhere (the flow's `lock_user` is the durable per-user lock).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Failed attempts from one address per window. Default 50; 0 turns it off.
    pub ip_failures: u32,
    /// Failed attempts at one user from one address per window. Default 10; 0 turns it off.
    pub user_ip_failures: u32,
    /// The window, in seconds. Default 900.
    pub window_seconds: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            ip_failures: 50,
            user_ip_failures: 10,
            window_seconds: 900,
        }
    }
}
