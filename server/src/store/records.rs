//! The records the store keeps, as serde types (each backend stores them as JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A JSON value (claims, attributes).
pub type Value = serde_json::Value;

/// A local user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable id (the `sub` of tokens).
    pub id: String,
    /// Unique, case-insensitive login name.
    pub username: String,
    /// Primary email, unique when set.
    #[serde(default)]
    pub email: String,
    /// Whether the email address was verified.
    #[serde(default)]
    pub email_verified: bool,
    /// A display name.
    #[serde(default)]
    pub name: String,
    /// argon2id PHC string, when the user has a password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Free-form attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    /// Disabled accounts cannot log in.
    #[serde(default)]
    pub disabled: bool,
    /// Consecutive failed credential attempts.
    #[serde(default)]
    pub failed_attempts: u32,
    /// Locked until this time (seconds since the epoch); 0 when not locked.
    #[serde(default)]
    pub locked_until: u64,
    /// Creation time.
    #[serde(default)]
    pub created: u64,
    /// Created by the person themself at a `register` state (self sign-up).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_registered: bool,
}

impl User {
    /// A new enabled user with no password.
    pub fn new(id: String, username: String, now: u64) -> User {
        User {
            id,
            username,
            email: String::new(),
            email_verified: false,
            name: String::new(),
            password_hash: None,
            roles: Vec::new(),
            attributes: BTreeMap::new(),
            disabled: false,
            failed_attempts: 0,
            locked_until: 0,
            created: now,
            self_registered: false,
        }
    }

    /// Whether a lock is in force at `now`.
    pub fn locked_at(&self, now: u64) -> bool {
        self.locked_until > now
    }

    /// The user as flows see it.
    pub fn view(&self, now: u64) -> idflow_engine::UserView {
        idflow_engine::UserView {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            self_registered: self.self_registered,
            roles: self.roles.clone(),
            groups: Vec::new(),
            attributes: self.attributes.clone(),
            factors: Vec::new(),
            failed_attempts: i64::from(self.failed_attempts),
            disabled: self.disabled,
            locked: self.locked_at(now),
        }
    }
}

/// A role: a name that carries privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Privileges, e.g. `users:write`; `*` is every privilege.
    #[serde(default)]
    pub privileges: Vec<String>,
    /// The id a SCIM client knows the role by (its Group's `externalId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A browser session (single sign-on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// [`super::token_key`] of the cookie's secret value (the value itself is not stored).
    pub key: String,
    /// The public session id: the `sid` claim of tokens. Unrelated to the cookie, so a token
    /// never carries a credential.
    pub sid: String,
    /// The user.
    pub user: String,
    /// When the user authenticated.
    pub auth_time: u64,
    /// Methods used (RFC 8176).
    pub amr: Vec<String>,
    /// The authentication context class reached.
    pub acr: String,
    /// Claims the flow set.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
    /// The flow that logged the user in.
    #[serde(default)]
    pub flow: String,
    /// When the session ends.
    pub expires: u64,
    /// The CSRF token of this session's forms (sign out).
    #[serde(default)]
    pub csrf: String,
    /// The steps passed in this session, with when: a later login in the same browser carries
    /// them into its flow (single sign-on and step-up).
    #[serde(default)]
    pub steps: Vec<idflow_engine::model::StepRecord>,
    /// What the user typed at `identifier_first`, when a flow asked.
    #[serde(default)]
    pub identifier: String,
    /// The SAML service providers this session signed the user in to, for Single Logout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saml: Vec<SamlParticipant>,
}

/// A SAML service provider a session signed the user in to, and as whom: what a logout
/// request to it must name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlParticipant {
    /// The service provider's application name.
    pub sp: String,
    /// The NameID it was given.
    pub name_id: String,
    /// Its format.
    pub name_id_format: String,
    /// The SessionIndex its assertion carried (the session's `sid` then; a step-up changes it).
    #[serde(default)]
    pub session_index: String,
}

/// The OAuth 2.0 / OpenID Connect authorization request a login answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// The client.
    pub client_id: String,
    /// The exact redirect URI (validated).
    pub redirect_uri: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Opaque client state, returned as given.
    #[serde(default)]
    pub state: Option<String>,
    /// Nonce for the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    #[serde(default)]
    pub code_challenge: Option<String>,
    /// Requested acr values.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// Suggested login name.
    #[serde(default)]
    pub login_hint: Option<String>,
    /// The client asked for a fresh sign-in (`prompt=login` or `max_age=0`): an upstream
    /// provider the flow sends the user to is asked for one too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    /// The client asked for the sign-up page (`prompt=create`, OpenID Connect Prompt Create):
    /// flows see it as `request.signup`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signup: bool,
}

/// A login in progress: the engine's run plus what the browser and protocol need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    /// [`super::token_key`] of the login's handle (the handle travels in the login page's
    /// forms and URL; the store keeps only its hash).
    pub key: String,
    /// Increases by one with every step; a step applies only if no other got there first.
    #[serde(default)]
    pub seq: u64,
    /// [`super::token_key`] of the browser cookie of the browser that started the login.
    #[serde(default)]
    pub browser: String,
    /// The CSRF token every form of this login carries.
    pub csrf: String,
    /// The engine's run.
    pub run: idflow_engine::Run,
    /// What the login page shows now.
    pub output: idflow_engine::Output,
    /// The protocol request to answer when the run completes, if any.
    pub authorize: Option<AuthorizeRequest>,
    /// The SAML request to answer when the run completes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlAuthn>,
    /// The key of the browser's session that this login does not build on (the application
    /// asked for a fresh sign-in): ended when the login completes, its SAML service providers
    /// handed to the new session so that signing out still tells them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The key of the session this login builds on (single sign-on, step-up): replaced by the
    /// new session when the login completes.
    #[serde(default)]
    pub replaces: Option<String>,

    /// Expiry.
    pub expires: u64,
}

/// A SAML service provider's request (or an IdP-initiated sign-in) that a login answers with
/// a signed response posted to the ACS URL, which was checked against the SP's registered ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlAuthn {
    /// The service provider's application name.
    pub sp: String,
    /// The AuthnRequest's id (`None` when IdP-initiated).
    pub request_id: Option<String>,
    /// Where the response is posted.
    pub acs_url: String,
    /// Returned to the SP untouched.
    pub relay_state: Option<String>,
    /// The NameID format to answer with.
    pub name_id_format: String,
    /// What the SP's RequestedAuthnContext asks for, as the flow's `request.acr_values`
    /// (REFEDS MFA becomes `urn:idflow:acr:mfa`).
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// The SP asked for a fresh sign-in (`ForceAuthn`, WS-Federation's `wfresh=0`): an upstream
    /// provider the flow sends the user to is asked for one too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_authn: bool,
    /// The application signs in with WS-Federation: the assertion goes in an RSTR
    /// (`wresult`) and the relay state is its `wctx`.
    #[serde(default)]
    pub wsfed: bool,
    /// The SP asked that the user not be interacted with.
    #[serde(default)]
    pub is_passive: bool,
}

/// Who logged in and how: what a code hands to its tokens and a refresh token carries from
/// one rotation to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    /// The user.
    pub user: String,
    /// The session's public id (the `sid` claim).
    #[serde(default)]
    pub sid: String,
    /// When the user authenticated.
    pub auth_time: u64,
    /// Methods used.
    pub amr: Vec<String>,
    /// The context class reached.
    pub acr: String,
    /// Claims the flow set.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
}

/// An authorization code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthCode {
    /// [`super::token_key`] of the code.
    pub key: String,
    /// The request it answers.
    pub request: AuthorizeRequest,
    /// The login it comes from (stored as top-level fields).
    #[serde(flatten)]
    pub authentication: Authentication,
    /// Expiry.
    pub expires: u64,
    /// Set when redeemed: the refresh family and access token issued.
    #[serde(default)]
    pub redeemed: Option<Redeemed>,
}

/// What a redeemed code issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeemed {
    /// The refresh token family.
    pub family: Option<String>,
    /// The access token `jti`.
    pub jti: String,
    /// Its expiry.
    pub access_expires: u64,
}

/// A refresh token. Each grant starts a family; rotation spends a token and issues the next of
/// the same family; presenting a spent token revokes the family (OAuth 2.0 Security BCP §4.14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// [`super::token_key`] of the token.
    pub key: String,
    /// The family.
    pub family: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The login it comes from (stored as top-level fields).
    #[serde(flatten)]
    pub authentication: Authentication,
    /// Absolute expiry (rotation keeps it).
    pub expires: u64,
    /// Spent by rotation.
    #[serde(default)]
    pub spent: bool,
}

/// A signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key id (`kid`).
    pub kid: String,
    /// `RS256` or `ES256`.
    pub alg: String,
    /// PKCS#8 DER, base64.
    pub pkcs8: String,
    /// Creation time.
    pub created: u64,
    /// When it stopped signing; it stays published until tokens it signed have expired.
    #[serde(default)]
    pub retired: Option<u64>,
}

/// An audit log entry: logins and admin actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Seconds since the epoch.
    pub time: u64,
    /// What happened, e.g. `login.success`, `login.failure`, `user.create`, `token.reuse`.
    pub event: String,
    /// Who did it (a user id, `cli`, a client id).
    #[serde(default)]
    pub actor: String,
    /// What it concerned (a user id, a client id).
    #[serde(default)]
    pub subject: String,
    /// The client IP, when there is one.
    #[serde(default)]
    pub ip: String,
    /// Details.
    #[serde(default)]
    pub detail: Value,
}

/// What kind of factor a [`Factor`] is (ordered as lists show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// An authenticator app (RFC 6238).
    Totp,
    /// A WebAuthn credential.
    Passkey,
    /// A set of single-use recovery codes.
    RecoveryCodes,
}

impl FactorKind {
    /// The authenticator name flows use for it (`user.has_factor(...)`).
    pub fn authenticator(self) -> &'static str {
        match self {
            FactorKind::Totp => "totp",
            FactorKind::Passkey => "passkey",
            FactorKind::RecoveryCodes => "recovery_code",
        }
    }
}

/// A factor a user enrolled: an authenticator app, a passkey, or recovery codes. Secrets are
/// never stored readable: a TOTP seed is sealed with the server's secret key, recovery codes are
/// hashed, and a passkey is only a public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Random id, unique per user.
    pub id: String,
    /// The user.
    pub user: String,
    /// What it is.
    pub kind: FactorKind,
    /// A name the user recognises ("Authenticator app", "Passkey on laptop").
    #[serde(default)]
    pub label: String,
    /// When it was enrolled.
    pub created: u64,
    /// When it last passed a login (0: never).
    #[serde(default)]
    pub last_used: u64,
    /// TOTP: the seed, sealed (see `crate::secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    /// TOTP: the last time step accepted; only later steps pass (replay protection).
    #[serde(default)]
    pub last_step: u64,
    /// Passkey: the webauthn-rs credential (public key, counter, id) as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<Value>,
    /// Passkey: the credential id, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Passkey: the highest signature counter seen; an assertion must exceed it (when the
    /// authenticator counts at all) or it may come from a cloned authenticator.
    #[serde(default)]
    pub counter: u32,
    /// Passkey: the WebAuthn user handle it was registered under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
    /// Recovery codes: SHA-256 hashes of the codes not used yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_hashes: Vec<String>,
}

/// Short-lived server-side state of a ceremony a page started and a later request finishes:
/// a WebAuthn challenge, a TOTP seed being enrolled, an email code sent. Each is taken (deleted)
/// by the request that finishes it, in the same transaction, so it works once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// What it is keyed by: [`super::token_key`] of the login or session handle and the purpose.
    pub key: String,
    /// The user it is for, when known.
    #[serde(default)]
    pub user: String,
    /// Ceremony state (JSON, opaque to the store).
    pub data: Value,
    /// Expiry.
    pub expires: u64,
}

/// A change a provisioning target must hear of (a user created, changed or deleted, a role
/// assigned or revoked, a flow's `provision`), written in the transaction of the change and
/// kept until the target has it: delivered, or after its last attempt moved to the
/// dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningEvent {
    /// When it was emitted.
    pub time: u64,
    /// The provisioning target from the configuration.
    pub target: String,
    /// The event, e.g. `user.created`.
    pub event: String,
    /// The user concerned.
    pub user: String,
    /// Failed deliveries so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not to be tried again before this time (backoff after a failure).
    #[serde(default)]
    pub not_before: u64,
    /// Why the last delivery failed.
    #[serde(default)]
    pub last_error: String,
    /// The worker delivering it now, when one has claimed it (several nodes share one
    /// outbox: each event is delivered by one of them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lease_owner: String,
    /// Until when that claim holds; a worker that died holding it is replaced after this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_until: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl ProvisioningEvent {
    /// A new event, due at once.
    pub fn new(time: u64, target: &str, event: &str, user: &str) -> ProvisioningEvent {
        ProvisioningEvent {
            time,
            target: target.into(),
            event: event.into(),
            user: user.into(),
            attempts: 0,
            not_before: 0,
            last_error: String::new(),
            lease_owner: String::new(),
            lease_until: 0,
        }
    }

    /// Whether a worker is delivering it at `now`.
    pub fn leased(&self, now: u64) -> bool {
        self.lease_until > now
    }
}
