//! A run: one login in progress, as plain data the server stores under an opaque handle. It
//! carries the flow id and version it started on, so it finishes on that version even after a
//! reload, on any node, after a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Request, StepRecord, TraceEntry, UserView, Value};

/// The encoding version written into every run; `Run::decode` refuses others.
pub const RUN_FORMAT: u32 = 1;

/// Most trace entries kept; older ones are dropped first (the path stays complete).
pub const MAX_TRACE: usize = 256;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for input.
    Active,
    /// Finished with success.
    Completed,
    /// Finished with a denial.
    Denied,
}

/// Upstream login waiting for a JIT confirmation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingJit {
    /// Index of the JIT rule that applies.
    pub rule: usize,
    /// The identity provider.
    pub idp: String,
    /// The upstream subject.
    pub subject: String,
    /// What was asked.
    pub ask: Vec<String>,
}

/// One login in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Encoding version ([`RUN_FORMAT`]).
    pub format: u32,
    /// The flow id.
    pub flow: String,
    /// The flow version the run started on.
    pub version: String,
    /// The current state.
    pub state: String,
    /// Active, completed or denied.
    pub status: Status,
    /// The request that started the login.
    pub request: Request,
    /// The user identified so far.
    pub user: Option<UserView>,
    /// The user failed attempts were for, when no user is identified yet (lockout only).
    #[serde(default)]
    pub attempted_user: Option<UserView>,
    /// What the user typed at `identifier_first`.
    pub identifier: String,
    /// Failed attempts in the current state.
    pub attempts: u32,
    /// Failed attempts in the whole login.
    pub failed_attempts: u32,
    /// How often each state was entered.
    pub visits: BTreeMap<String, u32>,
    /// Completed authentication steps.
    pub steps: Vec<StepRecord>,
    /// Claims set by the flow (`set_claim`).
    pub claims: BTreeMap<String, Value>,
    /// Claims from the upstream identity provider.
    pub upstream_claims: BTreeMap<String, Value>,
    /// A JIT confirmation being asked.
    pub pending_jit: Option<PendingJit>,
    /// Every state entered, in order (the path scenario tests assert).
    pub path: Vec<String>,
    /// Every transition taken, as (state, label).
    pub taken: Vec<(String, String)>,
    /// The JIT rules (by index) that decided an upstream login in this run.
    #[serde(default)]
    pub jit_rules: Vec<usize>,
    /// What happened and why.
    pub trace: Vec<TraceEntry>,
    /// The denial reason, once denied.
    pub reason: Option<String>,
    /// Whether this run locked the user it was for; a locked login goes no further.
    #[serde(default)]
    pub locked: bool,
    /// Failed credential attempts in this run, per user id (upstream failures excluded).
    #[serde(default)]
    pub failures_by_user: BTreeMap<String, u32>,
    /// Each user's stored failure count as first seen in this run, so a fresher copy of the
    /// user sent with a later attempt is not counted twice.
    #[serde(default)]
    pub baseline_failures: BTreeMap<String, i64>,
    /// Steps a single-sign-on session carried into this login; they satisfy authenticate
    /// states without asking again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<StepRecord>,
    /// The user the carried steps belong to; they count only while the login is for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_user: Option<String>,
    /// Carried steps before this time cannot vouch for an enrollment ([`crate::Carried`]).
    #[serde(default)]
    pub carried_fresh_since: u64,
}

/// Why a stored run cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Not a run, or damaged.
    Malformed(String),
    /// Written by an incompatible version of idflow.
    Format(u32),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Malformed(why) => write!(f, "malformed run: {why}"),
            RunError::Format(format) => write!(
                f,
                "run format {format} is not supported (expected {RUN_FORMAT})"
            ),
        }
    }
}

impl Run {
    /// A fresh run at `start`.
    pub fn new(flow: &str, version: &str, start: &str, request: Request) -> Run {
        Run {
            format: RUN_FORMAT,
            flow: flow.to_string(),
            version: version.to_string(),
            state: start.to_string(),
            status: Status::Active,
            request,
            user: None,
            attempted_user: None,
            identifier: String::new(),
            attempts: 0,
            failed_attempts: 0,
            visits: BTreeMap::new(),
            steps: Vec::new(),
            claims: BTreeMap::new(),
            upstream_claims: BTreeMap::new(),
            pending_jit: None,
            path: Vec::new(),
            taken: Vec::new(),
            jit_rules: Vec::new(),
            trace: Vec::new(),
            reason: None,
            locked: false,
            failures_by_user: BTreeMap::new(),
            baseline_failures: BTreeMap::new(),
            carried: Vec::new(),
            carried_user: None,
            carried_fresh_since: 0,
        }
    }

    /// Compact JSON for the store.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored run, refusing other encoding versions.
    pub fn decode(text: &str) -> Result<Run, RunError> {
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header =
            serde_json::from_str(text).map_err(|e| RunError::Malformed(e.to_string()))?;
        if header.format != RUN_FORMAT {
            return Err(RunError::Format(header.format));
        }
        serde_json::from_str(text).map_err(|e| RunError::Malformed(e.to_string()))
    }

    /// Appends a trace line, dropping the oldest past [`MAX_TRACE`].
    pub fn note(&mut self, state: &str, event: impl Into<String>) {
        if self.trace.len() >= MAX_TRACE {
            self.trace.remove(0);
        }
        self.trace.push(TraceEntry {
            state: state.to_string(),
            event: event.into(),
        });
    }
}
