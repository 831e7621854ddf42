//! Signing in at upstream identity providers. A flow state offering `federated(NAME)` makes the
//! engine answer `Redirect`; the login page then sends the browser to the provider
//! ([`begin`]), and the provider sends it back to `/federation/callback`
//! (`http::federation`), where [`finish`] turns the answer into the engine's
//! `Input::Federated` (subject and claims) for the flow's JIT rules and links.
//!
//! OpenID Connect uses the openidconnect crate: discovery (cached per provider), the code flow
//! with PKCE, `state` and `nonce`, ID token validation (signature against the provider's JWKS,
//! `iss`, `aud`, `exp`, `nonce`) and the UserInfo claims. What a redirect needs to come back to
//! (the login, the nonce, the PKCE verifier) is a store challenge keyed by the hash of `state`,
//! taken once by the callback.

pub mod oidc;

use serde::{Deserialize, Serialize};

/// Purpose prefix of a redirect's challenge key.
pub const PURPOSE: &str = "federation";

/// What a redirect to an upstream provider must find when the browser comes back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The identity provider.
    pub idp: String,
    /// The login's store key.
    pub login: String,
    /// The login's handle, sealed (the store keeps no handle readable).
    pub sealed_handle: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
}

/// The challenge key for a redirect's `state`.
pub fn challenge_key(state: &str) -> String {
    format!("{PURPOSE}:{}", crate::store::token_key(state))
}
