//! The IR: a flow compiled into a state machine, the only thing the engine runs.
//!
//! It holds no source positions (a side table in [`crate::CompiledFlow`] maps states to spans),
//! and every collection has a canonical order, so the YAML and `.flow` forms of one flow yield
//! byte-identical JSON and therefore the same version (the SHA-256 of that JSON).
//!
//! Fail-closed by construction: every state that runs a script (`Decide`, and `Action` states
//! with `set_claim` or `jit`) has an `error` transition to the `Deny` state `deny.script_error`,
//! so a script that errors or exceeds a limit at run time can only deny.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Id of the terminal state every successful path ends in.
pub const SUCCESS: &str = "success";
/// Id of the terminal state a failed login ends in.
pub const DENY: &str = "deny";
/// Id of the terminal state a script error leads to.
pub const SCRIPT_ERROR: &str = "deny.script_error";
/// Id of the action state holding the flow's `on_success` actions.
pub const ON_SUCCESS: &str = "on_success";
/// Id of the action state holding the flow's `on_failure` actions.
pub const ON_FAILURE: &str = "on_failure";

/// Transition label: an authenticate state passed.
pub const LABEL_SUCCESS: &str = "success";
/// Transition label: an authenticate state used up its attempts.
pub const LABEL_FAILURE: &str = "failure";
/// Transition label: a script errored or exceeded a limit.
pub const LABEL_ERROR: &str = "error";
/// Transition label: an action state finished.
pub const LABEL_NEXT: &str = "next";

/// A compiled flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowIr {
    /// The flow id.
    pub flow: String,
    /// Applications this flow runs for, sorted.
    pub applies_to: Vec<String>,
    /// Whether this is the default flow.
    pub default: bool,
    /// The state a run begins in.
    pub start: String,
    /// Every state, by id.
    pub states: BTreeMap<String, State>,
    /// JIT rules, in the order they are tried.
    pub jit: Vec<JitRuleIr>,
    /// Outbound provisioning triggers, in written order.
    pub provisioning: Vec<ProvisioningIr>,
    /// Invariants proven by `flow check`; kept so `flow diff` can show them.
    pub require: Vec<InvariantIr>,
}

impl FlowIr {
    /// Canonical JSON: the bytes the version is the hash of.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The version: `sha256:` and the first 16 hex digits (64 bits) of the canonical JSON's
    /// SHA-256 — enough to tell versions of one flow apart, short enough to read in logs.
    pub fn version(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// One state of the machine with its outgoing transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// What the state does.
    #[serde(flatten)]
    pub kind: StateKind,
    /// How many times one run may enter this state before it denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
    /// Outcome label to next state id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transitions: BTreeMap<String, String>,
}

/// What a state does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateKind {
    /// Ask the user to pass one of `options`; `success` or, after `attempts` tries, `failure`.
    Authenticate {
        /// Options in written order (the order a login page offers them).
        options: Vec<AuthOption>,
        /// Tries before the `failure` transition.
        attempts: u32,
        /// The state enrolls a new factor for the identified user instead of checking one it
        /// has (a required action); passing it proves possession of the new factor.
        #[serde(default, skip_serializing_if = "is_false")]
        enroll: bool,
    },
    /// Let a person with no account create one (self sign-up): `success` once the account
    /// exists, with the new user identified; `failure` after `attempts` wrong email codes.
    Register {
        /// Profile attributes asked besides username, email and password, sorted.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<String>,
        /// The address must be proven with an emailed code before the account is created.
        #[serde(default, skip_serializing_if = "is_false")]
        verify_email: bool,
        /// The account is created disabled, for an administrator to enable.
        #[serde(default, skip_serializing_if = "is_false")]
        approval: bool,
        /// Roles the new account gets, sorted.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<String>,
        /// Wrong email codes before the `failure` transition.
        attempts: u32,
    },
    /// Run a Rhai script; its result (a string, or a bool as "true"/"false") is the label taken.
    /// Any other result, an error or a limit breach takes the `error` label.
    Decide {
        /// The script source, compiled by the engine when it loads the flow.
        script: String,
    },
    /// Run actions, then take `next`.
    Action {
        /// Actions in order.
        actions: Vec<ActionIr>,
    },
    /// The login succeeded.
    Success,
    /// The login is denied.
    Deny {
        /// Why, for the audit log and the trace (never shown verbatim to the user).
        reason: String,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Fields a `register` page always asks for, so `attributes` may not name them.
pub const REGISTER_FIELDS: &[&str] = &["username", "email", "password"];

/// User attributes the server keeps for itself (a SCIM client's document and its time), which
/// a person signing up must not set.
pub const RESERVED_ATTRIBUTES: &[&str] = &["scim", "scim_modified"];

/// The name a passed `register` state records as its authenticator (in `context.steps`, the
/// trace and the session).
pub const REGISTER: &str = "register";

/// Authenticators a user can enroll during a login (`enroll` steps).
pub const ENROLLABLE: &[&str] = &["totp", "passkey"];

/// One way to pass an authenticate state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthOption {
    /// A built-in authenticator by name.
    Authenticator(String),
    /// An upstream identity provider by name.
    Federated(String),
}

impl std::fmt::Display for AuthOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthOption::Authenticator(name) => f.write_str(name),
            AuthOption::Federated(idp) => write!(f, "federated({idp})"),
        }
    }
}

/// An action, normalized (durations in seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionIr {
    /// Emit a provisioning event for the user to `target`.
    Provision {
        /// A provisioning target from the configuration.
        target: String,
    },
    /// Lock the user after `after` consecutive failures for `seconds`.
    LockUser {
        /// Consecutive failures.
        after: u32,
        /// Lock duration in seconds.
        seconds: u64,
    },
    /// Set a claim of the login from a script.
    SetClaim {
        /// The claim's name.
        claim: String,
        /// The Rhai expression.
        script: String,
    },
    /// Apply the flow's JIT rules for `idp`.
    Jit {
        /// The identity provider.
        idp: String,
    },
}

/// A JIT rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitRuleIr {
    /// The identity provider.
    pub idp: String,
    /// Condition over `claims`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Attribute to link an existing user by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_on: Option<String>,
    /// How to create a user when none is linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<JitCreateIr>,
    /// Prompts before creation, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt: Vec<String>,
}

/// How a JIT rule creates a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitCreateIr {
    /// Expression for the username.
    pub username: String,
    /// Attribute name to expression.
    pub attributes: BTreeMap<String, String>,
    /// Roles, sorted.
    pub roles: Vec<String>,
}

/// A provisioning trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningIr {
    /// Events, sorted.
    pub on: Vec<String>,
    /// Target.
    pub to: String,
}

/// An invariant over all paths to success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "invariant", rename_all = "snake_case")]
pub enum InvariantIr {
    /// Every path to success passes an authenticate state whose options are all in `options`.
    PassesOneOf {
        /// Sorted options.
        options: Vec<AuthOption>,
    },
}
