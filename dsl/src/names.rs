//! The names a flow may refer to: built-in authenticators and provisioning events, and the
//! applications, identity providers and provisioning targets a configuration declares.

use std::collections::{BTreeMap, BTreeSet};

/// Authenticators idflow ships. One list, so `check`, docs and the server agree.
pub const BUILTIN_AUTHENTICATORS: &[(&str, &str)] = &[
    (
        "identifier_first",
        "asks for the username or email only, so later steps can route on it",
    ),
    ("password", "username and password (argon2id)"),
    (
        "totp",
        "a time-based one-time code from an authenticator app",
    ),
    ("passkey", "a WebAuthn passkey or security key"),
    ("email_otp", "a one-time code sent by email"),
    ("recovery_code", "a single-use recovery code"),
];

/// Events that provisioning triggers may fire on.
pub const PROVISIONING_EVENTS: &[&str] = &[
    "user.created",
    "user.updated",
    "user.deleted",
    "user.disabled",
    "user.enabled",
    "role.assigned",
    "role.unassigned",
    "login.succeeded",
];

/// What a configuration declares, as far as flows are concerned. `None` means "no
/// configuration was given": names of that kind are then not checked.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Application ids.
    pub applications: Option<BTreeSet<String>>,
    /// Identity providers, each with the attributes it asserts as verified.
    pub identity_providers: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Provisioning targets.
    pub provisioning_targets: Option<BTreeSet<String>>,
}

impl Names {
    /// True when `name` is a built-in authenticator.
    pub fn is_authenticator(name: &str) -> bool {
        BUILTIN_AUTHENTICATORS.iter().any(|(n, _)| *n == name)
    }

    /// Attributes the IdP asserts as verified; `None` when the IdP is unknown or no configuration
    /// was given (then no attribute counts as verified).
    pub fn verified_attributes(&self, idp: &str) -> Option<&BTreeSet<String>> {
        self.identity_providers
            .as_ref()
            .and_then(|idps| idps.get(idp))
    }
}
