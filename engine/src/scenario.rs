//! Scenario tests for flows (`idflow flow test`): a YAML file beside a flow, `NAME.test.yaml`,
//! describes users, a request, a sequence of inputs, and what must happen — the path of states,
//! the outcome, the claims and the effects. Running one needs no server: the engine is pure.
//!
//! ```yaml
//! flow: mfa-for-admins
//! scenarios:
//!   - name: an admin with a passkey passes it after the password
//!     user: { id: u1, username: alice, roles: [admin], factors: [passkey] }
//!     steps: [ { pass: password }, { pass: passkey } ]
//!     expect: { outcome: complete, amr: [pwd, hwk, mfa] }
//!   - name: a password session is asked only for the passkey
//!     user: { id: u1, username: alice, roles: [admin], factors: [passkey] }
//!     session: { passed: [password] }
//!     expect: { outcome: prompt, state: admin-passkey }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use idflow_dsl::ir::AuthOption;
use serde::{Deserialize, Serialize};

use crate::directory::{Directory, Fixtures};
use crate::flow::LoadedFlow;
use crate::machine::Engine;
use crate::model::{
    Carried, Effect, Input, Output, Request, StepRecord, TraceEntry, UserView, Value,
};

/// A scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The flow id the scenarios run against.
    pub flow: String,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
}

/// One scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it shows, unique in the file.
    pub name: String,
    /// The user the authenticators verify (`pass` steps) and `identify` finds.
    #[serde(default)]
    pub user: Option<UserView>,
    /// The request.
    #[serde(default)]
    pub request: Request,
    /// Other users and upstream links in the store.
    #[serde(default)]
    pub directory: Fixtures,
    /// The login starts in a browser with a single-sign-on session of `user` that passed
    /// these options (`password`, `totp`, `federated(x)`, ...).
    #[serde(default)]
    pub session: Option<SessionSpec>,
    /// The inputs, in order.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// What must hold at the end.
    pub expect: Expect,
}

/// An existing single-sign-on session a scenario starts with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// The options the session's user passed, in order.
    pub passed: Vec<String>,
    /// What the user typed at `identifier_first` (default: the username).
    #[serde(default)]
    pub identifier: Option<String>,
    /// The session's steps are too old to vouch for enrolling a new factor.
    #[serde(default)]
    pub stale: bool,
}

/// One input of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    /// A credential (`password`, `totp`, ...) passes for the scenario's user. Upstream logins
    /// are written `federated`, identification `identify`.
    Pass(String),
    /// An attempt with the option fails.
    Fail(String),
    /// The user types this identifier.
    Identify(String),
    /// The user picks an option.
    Choose(String),
    /// An upstream IdP returns.
    Federated {
        /// The identity provider.
        idp: String,
        /// The upstream subject.
        subject: String,
        /// Its claims.
        #[serde(default)]
        claims: BTreeMap<String, Value>,
    },
    /// The user answers a JIT confirmation.
    Answer {
        /// Consent.
        #[serde(default)]
        consent: bool,
        /// A chosen username.
        #[serde(default)]
        username: Option<String>,
        /// A password was set.
        #[serde(default)]
        password_set: bool,
    },
    /// A person signs up at a `register` state; the new account's id is `new-USERNAME`.
    Register {
        /// The chosen username.
        username: String,
        /// The address.
        email: String,
        /// The profile attributes typed.
        #[serde(default)]
        attributes: BTreeMap<String, Value>,
        /// The address was proven with the emailed code.
        #[serde(default)]
        email_verified: bool,
    },
    /// The user cancels.
    Cancel(bool),
}

/// What a scenario asserts. Everything is optional but `outcome`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `complete`, `denied`, `prompt`, `redirect`, `confirm`, `register` or
    /// `awaiting_approval`.
    pub outcome: String,
    /// Every state entered, in order.
    #[serde(default)]
    pub path: Option<Vec<String>>,
    /// For `prompt`: the state asking.
    #[serde(default)]
    pub state: Option<String>,
    /// For `denied`: the reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `complete`: the subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// For `complete`: the amr values, in order.
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// For `complete`: the acr.
    #[serde(default)]
    pub acr: Option<String>,
    /// Claims that must be set (others may be too).
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
    /// Effects that must be among the effects (each may give only some fields).
    #[serde(default)]
    pub effects: Vec<Value>,
    /// When true, `effects` must be exactly the effects (each still matched by its fields).
    #[serde(default)]
    pub only_these_effects: bool,
}

/// The result of running one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// What did not hold; empty when the scenario passed.
    pub failures: Vec<String>,
    /// States entered.
    pub path: Vec<String>,
    /// Transitions taken.
    pub taken: Vec<(String, String)>,
    /// JIT rules that decided an upstream login.
    pub jit_rules: Vec<usize>,
    /// The final output.
    pub output: Output,
    /// Every effect, in order.
    pub effects: Vec<Effect>,
    /// The trace.
    pub trace: Vec<TraceEntry>,
}

/// Parses a scenario file.
pub fn parse(text: &str) -> Result<ScenarioFile, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Reads an option as written in scenarios and the `.flow` syntax: `password`, `federated(x)`.
pub fn option(text: &str) -> AuthOption {
    let text = text.trim();
    match text
        .strip_prefix("federated(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(idp) => AuthOption::Federated(idp.trim().to_string()),
        None => AuthOption::Authenticator(text.to_string()),
    }
}

fn output_kind(output: &Output) -> &'static str {
    match output {
        Output::Prompt { .. } => "prompt",
        Output::Redirect { .. } => "redirect",
        Output::Confirm { .. } => "confirm",
        Output::Register { .. } => "register",
        Output::AwaitingApproval { .. } => "awaiting_approval",
        Output::Complete { .. } => "complete",
        Output::Denied { .. } => "denied",
    }
}

/// Whether every field of `expected` is in `actual` (recursively for objects).
fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| subset(v, av))),
        _ => expected == actual,
    }
}

/// Runs `scenario` on `flow` at time 0 and checks its expectations.
pub fn run(engine: &Engine, flow: &LoadedFlow, scenario: &Scenario) -> Outcome {
    let directory = &scenario.directory;
    let mut failures = Vec::new();
    let carried = match (&scenario.session, &scenario.user) {
        (Some(session), Some(user)) => Some(carried(session, user)),
        (Some(_), None) => {
            failures.push("a `session` needs the scenario's `user`".to_string());
            None
        }
        _ => None,
    };
    let mut step = engine.start_carried(flow, scenario.request.clone(), carried, 0, directory);
    let mut effects = std::mem::take(&mut step.effects);
    for (i, spec) in scenario.steps.iter().enumerate() {
        let input = match to_input(spec, scenario, directory) {
            Ok(input) => input,
            Err(why) => {
                failures.push(format!("step {}: {why}", i + 1));
                break;
            }
        };
        step = engine.advance(flow, step.run, input, (i as u64 + 1) * 10, directory);
        effects.append(&mut step.effects);
    }
    let run = &step.run;
    let output = step.output.clone();
    let expect = &scenario.expect;
    if output_kind(&output) != expect.outcome {
        let detail = match &output {
            Output::Denied { reason } => format!(" ({reason})"),
            Output::Prompt { state, .. } | Output::Register { state, .. } => {
                format!(" at `{state}`")
            }
            _ => String::new(),
        };
        failures.push(format!(
            "outcome is {}{detail}, expected {}",
            output_kind(&output),
            expect.outcome
        ));
    }
    if let Some(path) = &expect.path
        && path != &run.path
    {
        failures.push(format!(
            "path is [{}], expected [{}]",
            run.path.join(", "),
            path.join(", ")
        ));
    }
    match &output {
        Output::Prompt { state, .. } | Output::Register { state, .. } => {
            if let Some(expected) = expect.state.as_ref().filter(|e| *e != state) {
                failures.push(format!("prompt is at `{state}`, expected `{expected}`"));
            }
        }
        Output::AwaitingApproval { subject } => {
            if let Some(expected) = expect.subject.as_ref().filter(|e| *e != subject) {
                failures.push(format!("subject is {subject}, expected {expected}"));
            }
        }
        Output::Denied { reason } => {
            if let Some(expected) = expect.reason.as_ref().filter(|e| *e != reason) {
                failures.push(format!(
                    "denied because \"{reason}\", expected \"{expected}\""
                ));
            }
        }
        Output::Complete {
            subject,
            claims,
            amr,
            acr,
        } => {
            if let Some(expected) = expect.subject.as_ref().filter(|e| *e != subject) {
                failures.push(format!("subject is {subject}, expected {expected}"));
            }
            if let Some(expected) = expect.amr.as_ref().filter(|e| *e != amr) {
                failures.push(format!("amr is {amr:?}, expected {expected:?}"));
            }
            if let Some(expected) = expect.acr.as_ref().filter(|e| *e != acr) {
                failures.push(format!("acr is {acr}, expected {expected}"));
            }
            for (claim, value) in &expect.claims {
                if claims.get(claim) != Some(value) {
                    failures.push(format!(
                        "claim {claim} is {:?}, expected {value}",
                        claims.get(claim)
                    ));
                }
            }
        }
        _ => {}
    }
    let actual: Vec<Value> = effects
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    for expected in &expect.effects {
        if !actual.iter().any(|a| subset(expected, a)) {
            failures.push(format!("no effect matches {expected}"));
        }
    }
    if expect.only_these_effects {
        for a in &actual {
            if !expect.effects.iter().any(|e| subset(e, a)) {
                failures.push(format!("unexpected effect {a}"));
            }
        }
    }
    Outcome {
        name: scenario.name.clone(),
        failures,
        path: run.path.clone(),
        taken: run.taken.clone(),
        jit_rules: run.jit_rules.clone(),
        output,
        effects,
        trace: run.trace.clone(),
    }
}

/// The session a scenario describes, as the server would carry it (steps timed at 0).
fn carried(session: &SessionSpec, user: &UserView) -> Carried {
    let steps = session
        .passed
        .iter()
        .map(|passed| {
            let (authenticator, idp) = match option(passed) {
                AuthOption::Authenticator(name) => (name, None),
                AuthOption::Federated(idp) => ("federated".to_string(), Some(idp)),
            };
            StepRecord {
                state: "session".into(),
                authenticator,
                idp,
                at: 0,
                carried: false,
                enrolled: false,
            }
        })
        .collect();
    Carried {
        user: user.clone(),
        identifier: session
            .identifier
            .clone()
            .unwrap_or_else(|| user.username.clone()),
        steps,
        // Scenario steps are at time 0; a stale session's are before what may vouch.
        fresh_since: u64::from(session.stale),
    }
}

fn to_input(spec: &StepSpec, scenario: &Scenario, directory: &Fixtures) -> Result<Input, String> {
    let user = || {
        scenario
            .user
            .clone()
            .ok_or_else(|| "`pass` needs the scenario's `user`".to_string())
    };
    Ok(match spec {
        StepSpec::Pass(o) => Input::Passed {
            option: option(o),
            user: user()?,
        },
        StepSpec::Fail(o) => {
            let option = option(o);
            // The server knows the local user a credential attempt was for, never an upstream one.
            let user = match option {
                AuthOption::Federated(_) => None,
                _ => scenario.user.clone(),
            };
            Input::Failed {
                option,
                user,
                reason: None,
            }
        }
        StepSpec::Choose(o) => Input::Choose(option(o)),
        StepSpec::Identify(identifier) => {
            let own = scenario
                .user
                .clone()
                .filter(|u| u.username == *identifier || u.email.eq_ignore_ascii_case(identifier));
            let user = own
                .or_else(|| directory.find_user("email", identifier))
                .or_else(|| directory.find_user("username", identifier));
            Input::Identify {
                identifier: identifier.clone(),
                user,
            }
        }
        StepSpec::Federated {
            idp,
            subject,
            claims,
        } => Input::Federated {
            idp: idp.clone(),
            subject: subject.clone(),
            claims: claims.clone(),
        },
        StepSpec::Answer {
            consent,
            username,
            password_set,
        } => Input::Answer {
            consent: *consent,
            username: username.clone(),
            password_set: *password_set,
        },
        StepSpec::Register {
            username,
            email,
            attributes,
            email_verified,
        } => Input::Registered {
            user: UserView {
                id: format!("new-{username}"),
                username: username.clone(),
                email: email.clone(),
                attributes: attributes.clone(),
                ..UserView::default()
            },
            email_verified: *email_verified,
        },
        StepSpec::Cancel(_) => Input::Cancel,
    })
}

/// Which states and transitions of a flow the scenarios exercised (the fail-closed `error`
/// edges and `deny.script_error` excepted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Coverage {
    /// The flow.
    pub flow: String,
    /// States entered / all states.
    pub states: (usize, usize),
    /// Transitions taken / all transitions.
    pub transitions: (usize, usize),
    /// States never entered.
    pub missing_states: Vec<String>,
    /// Transitions never taken, as `state --label-->`.
    pub missing_transitions: Vec<(String, String)>,
    /// Transitions taken.
    pub covered_transitions: Vec<(String, String)>,
    /// JIT rules that decided some scenario's login / all JIT rules.
    pub jit_rules: (usize, usize),
    /// JIT rules (by index, in the flow's order) no scenario exercised.
    pub missing_jit_rules: Vec<usize>,
}

impl Coverage {
    /// True when every state and transition was exercised.
    pub fn is_full(&self) -> bool {
        self.missing_states.is_empty()
            && self.missing_transitions.is_empty()
            && self.missing_jit_rules.is_empty()
    }
}

/// Coverage of `flow` by `outcomes`.
pub fn coverage(flow: &LoadedFlow, outcomes: &[Outcome]) -> Coverage {
    let entered: BTreeSet<&String> = outcomes.iter().flat_map(|o| &o.path).collect();
    let taken: BTreeSet<(String, String)> = outcomes
        .iter()
        .flat_map(|o| o.taken.iter().cloned())
        .collect();
    // The compiler's fail-closed edges (`error` -> `deny.script_error`) are not required: a
    // checked script errors only at run time (a limit, a bad value), and the engine's own tests
    // prove those edges deny.
    let all: Vec<(String, String)> = flow
        .ir
        .states
        .iter()
        .flat_map(|(id, s)| {
            s.transitions
                .keys()
                .map(move |label| (id.clone(), label.clone()))
        })
        .filter(|(_, label)| label != idflow_dsl::ir::LABEL_ERROR)
        .collect();
    let required_states = flow
        .ir
        .states
        .keys()
        .filter(|id| id.as_str() != idflow_dsl::ir::SCRIPT_ERROR);
    let missing_states: Vec<String> = required_states
        .clone()
        .filter(|id| !entered.contains(id))
        .cloned()
        .collect();
    let missing_transitions: Vec<(String, String)> = all
        .iter()
        .filter(|t| !taken.contains(*t))
        .cloned()
        .collect();
    let applied: BTreeSet<usize> = outcomes
        .iter()
        .flat_map(|o| o.jit_rules.iter().copied())
        .collect();
    let missing_jit_rules: Vec<usize> = (0..flow.ir.jit.len())
        .filter(|i| !applied.contains(i))
        .collect();
    Coverage {
        jit_rules: (
            flow.ir.jit.len() - missing_jit_rules.len(),
            flow.ir.jit.len(),
        ),
        missing_jit_rules,
        flow: flow.ir.flow.clone(),
        states: (
            required_states.clone().count() - missing_states.len(),
            required_states.count(),
        ),
        transitions: (all.len() - missing_transitions.len(), all.len()),
        missing_states,
        missing_transitions,
        covered_transitions: taken.into_iter().collect(),
    }
}
