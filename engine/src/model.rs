//! The engine's public data: what goes into a step (a request, a user, an input) and what comes
//! out (an output and effects). All plain, serializable data: this is the API boundary between
//! the engine and the server, and what scenario files are written in.

use std::collections::BTreeMap;

use idflow_dsl::ir::AuthOption;
use serde::{Deserialize, Serialize};

/// A value of a claim or attribute (JSON, as in ID tokens and SCIM).
pub type Value = serde_json::Value;

/// The request that started a login, as the server saw it. Scripts read it as `request`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Request {
    /// Client IP address.
    pub ip: String,
    /// The User-Agent header.
    pub user_agent: String,
    /// The application id.
    pub application: String,
    /// `oidc`, `saml` or `wsfed`.
    pub protocol: String,
    /// Requested authentication context classes.
    pub acr_values: Vec<String>,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Risk score 0-100, computed by the server.
    pub risk: i64,
    /// Hour of day 0-23 in the server's time zone.
    pub hour: i64,
    /// Day of week, 1 = Monday.
    pub weekday: i64,
    /// The person asked to create an account: OpenID Connect `prompt=create`, or the login
    /// page's "Create an account" link. Flows route to their `register` state on it.
    pub signup: bool,
}

/// A user as the engine sees one: a snapshot the server loads from the store. Scripts read it
/// as `user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserView {
    /// The user's id.
    pub id: String,
    /// The username.
    pub username: String,
    /// The primary email address.
    pub email: String,
    /// The address was proven (an emailed code at sign-up).
    pub email_verified: bool,
    /// The person created the account themself at a `register` state. With an address never
    /// proven, it must not be linked to an upstream identity by that address: anyone can type
    /// someone else's address at a sign-up.
    pub self_registered: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
    /// User attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Enrolled factors, e.g. `totp`, `passkey`.
    pub factors: Vec<String>,
    /// Consecutive failed credential attempts stored for the user. The engine takes the value
    /// from the first copy of the user it sees in a login and adds that login's own failures.
    pub failed_attempts: i64,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// Whether the account is locked now (the server compares its lock expiry with the clock).
    pub locked: bool,
}

/// What happened since the last step: the user's or an authenticator's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The user picked one option of the current authenticate state (needed only to start a
    /// federated login when the state offers several options).
    Choose(AuthOption),
    /// The identifier the user typed at `identifier_first`, with the user it names, if any.
    Identify {
        /// What the user typed.
        identifier: String,
        /// The user it names, when one exists.
        #[serde(default)]
        user: Option<UserView>,
    },
    /// An authenticator verified the user with `option` (password checked, code valid, ...).
    Passed {
        /// Which option passed.
        option: AuthOption,
        /// The user it verified.
        user: UserView,
    },
    /// An attempt at the current state failed (wrong password, bad code, upstream error).
    Failed {
        /// Which option failed.
        option: AuthOption,
        /// The user the attempt was for, when the server knows (for lockout counting; it does
        /// not identify anyone).
        #[serde(default)]
        user: Option<UserView>,
        /// What the person should be told, when the server has something more useful than
        /// "that did not work" (a code already used, a code that has expired).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An upstream identity provider logged the user in.
    Federated {
        /// The identity provider.
        idp: String,
        /// The upstream subject identifier.
        subject: String,
        /// The upstream claims.
        #[serde(default)]
        claims: BTreeMap<String, Value>,
    },
    /// The user answered the questions of a JIT prompt.
    Answer {
        /// Consent to create the account.
        #[serde(default)]
        consent: bool,
        /// A chosen username.
        #[serde(default)]
        username: Option<String>,
        /// Whether a local password was set.
        #[serde(default)]
        password_set: bool,
    },
    /// A person filled in a `register` state's form (and, when it asks, proved their address
    /// with the emailed code). The server has checked what it can (a free username, the
    /// password policy) and chosen the new account's id.
    Registered {
        /// The account to create: id, username, email and the attributes typed.
        user: UserView,
        /// The address was proven with an emailed code.
        #[serde(default)]
        email_verified: bool,
    },
    /// The user gave up.
    Cancel,
}

/// What the server should do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "output")]
pub enum Output {
    /// Ask the user to pass one of these options.
    Prompt {
        /// The authenticate state asking.
        state: String,
        /// The options, in the flow's order, each with how to present it.
        options: Vec<PromptOption>,
        /// Tries left in this state.
        attempts_left: u32,
        /// Why the last input was not accepted, when it was not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The state enrolls a new factor (set it up, then prove it once) rather than checking
        /// an enrolled one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        enroll: bool,
    },
    /// Send the user to an upstream identity provider.
    Redirect {
        /// The identity provider.
        idp: String,
    },
    /// Ask the user before creating an account for them (JIT).
    Confirm {
        /// The identity provider the account comes from.
        idp: String,
        /// What to ask: `consent`, `username`, `password`.
        ask: Vec<String>,
    },
    /// Ask a person for what creating an account needs (a `register` state).
    Register {
        /// The register state asking.
        state: String,
        /// Profile attributes to ask besides username, email and password.
        attributes: Vec<String>,
        /// A code is emailed to the address and must be typed back before the account exists.
        verify_email: bool,
        /// Wrong codes left in this state.
        attempts_left: u32,
        /// Why the last input was not accepted, when it was not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An account was created but cannot sign in until an administrator approves it: the
    /// login ends here without signing anyone in.
    AwaitingApproval {
        /// The new account.
        subject: String,
    },
    /// The login succeeded.
    Complete {
        /// The user who logged in.
        subject: String,
        /// Claims set by the flow.
        claims: BTreeMap<String, Value>,
        /// Authentication method references (RFC 8176).
        amr: Vec<String>,
        /// The authentication context class reached.
        acr: String,
    },
    /// The login is denied.
    Denied {
        /// Why (for the audit log; the login page shows a generic message).
        reason: String,
    },
}

/// One option of a prompt with how a login page presents it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptOption {
    /// The option.
    pub option: AuthOption,
    /// Presentation hints.
    pub hint: UiHint,
}

/// How a login page presents an authenticator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UiHint {
    /// A short label, e.g. "Password".
    pub label: String,
    /// The form fields it needs, e.g. `["username", "password"]`; empty for a button.
    pub fields: Vec<String>,
}

/// A change for the server to apply, in one store transaction with the run's new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Create a user (JIT, or self sign-up at a `register` state).
    CreateUser {
        /// The id (for JIT stable for one upstream account; for sign-up the server's choice).
        id: String,
        /// The username.
        username: String,
        /// Attributes.
        attributes: BTreeMap<String, Value>,
        /// Roles.
        roles: Vec<String>,
        /// The account's email address was proven (an emailed code at sign-up).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        email_verified: bool,
        /// The account is created disabled, awaiting an administrator's approval.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disabled: bool,
        /// The person created it themself at a `register` state (self sign-up), rather than
        /// a JIT rule for an upstream login.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        signup: bool,
    },
    /// Link an upstream account to a local user, so the next login maps to it directly.
    LinkIdentity {
        /// The local user.
        user: String,
        /// The identity provider.
        idp: String,
        /// The upstream subject.
        subject: String,
    },
    /// Give a user a role.
    AssignRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Send a provisioning event to a target.
    Provision {
        /// The target.
        target: String,
        /// The event, e.g. `user.created`.
        event: String,
        /// The user concerned.
        user: String,
    },
    /// Count a failed attempt against a user, at the attempt itself: counting only at the end
    /// of a login would let an attacker try twice, abandon the login, and never be locked.
    FailedAttempt {
        /// The user.
        user: String,
        /// The flow's lock threshold, when it has one: the store must lock the user when its
        /// count reaches this, in the same transaction as the increment, so that concurrent
        /// logins cannot each stay under the threshold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock_after: Option<u32>,
        /// How long such a lock lasts, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock_seconds: Option<u64>,
    },
    /// A login succeeded: the user's consecutive-failure count starts again from zero.
    ResetFailures {
        /// The user.
        user: String,
    },
    /// Lock a user.
    LockUser {
        /// The user.
        user: String,
        /// For how long.
        seconds: u64,
    },
    /// A claim was set for this login.
    SetClaim {
        /// The claim.
        claim: String,
        /// Its value.
        value: Value,
    },
}

/// What an existing single-sign-on session brings to a new login: its user, re-read from the
/// store, and the steps that user passed in it. An authenticate state one of whose options a
/// carried step passed is satisfied without asking again; everything else (conditions, deny
/// states, missing factors) runs as for a fresh login, so an application's flow is enforced on
/// every sign-in and a step-up asks only for what is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The session's user, as the store has them now.
    pub user: UserView,
    /// What the session's user typed at `identifier_first`, when a flow asked.
    #[serde(default)]
    pub identifier: String,
    /// Steps passed in the session still fresh enough to count (the server drops those older
    /// than a requested `max_age`).
    pub steps: Vec<StepRecord>,
    /// Carried steps older than this (seconds since the epoch) cannot vouch for enrolling a new
    /// factor: an old session alone must not plant one. 0: all can.
    #[serde(default)]
    pub fresh_since: u64,
}

/// A completed step of a run, visible to scripts as `context.steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The authenticate state.
    pub state: String,
    /// The authenticator that passed (`federated` for an upstream IdP).
    pub authenticator: String,
    /// The identity provider, for federated steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// When, in seconds since the epoch (the time the server passed in).
    pub at: u64,
    /// Satisfied by a step the single-sign-on session carried, not asked in this login.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
    /// Passed at an `enroll` state: proves a new factor, not who the user is, so it never
    /// counts as a sign-in (for `auth_time`, a session, or vouching for another enrollment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enrolled: bool,
}

/// One line of a run's trace: which state, what happened, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// The state concerned.
    pub state: String,
    /// What happened.
    pub event: String,
}

impl std::fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.state, self.event)
    }
}
