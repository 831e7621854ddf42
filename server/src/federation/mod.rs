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
//!
//! SAML (`saml`) sends an AuthnRequest over HTTP-Redirect and receives the Response posted to
//! `/federation/saml/acs`. That POST comes from the IdP's site, so the browser sends no login
//! cookie with it: the ACS verifies the response, records the answer on the pending redirect and
//! sends the browser on to `/federation/callback` (a top-level GET, which carries the cookie),
//! where the login is found and checked exactly as for OpenID Connect.

pub mod oauth2;
pub mod oidc;
pub mod saml;

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
    #[serde(default)]
    pub nonce: String,
    /// The PKCE verifier.
    #[serde(default)]
    pub verifier: String,
    /// The id of the SAML AuthnRequest sent (the response's InResponseTo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml_request: Option<String>,
    /// The answer, once the SAML ACS has verified the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

/// What an upstream provider answered, verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Signed in: who, and what the provider says of them.
    Passed {
        /// The upstream subject.
        subject: String,
        /// The upstream claims.
        claims: std::collections::BTreeMap<String, serde_json::Value>,
    },
    /// Refused (already audited); the reason is for the log, not the person.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The challenge key for a redirect's `state`.
pub fn challenge_key(state: &str) -> String {
    format!("{PURPOSE}:{}", crate::store::token_key(state))
}
