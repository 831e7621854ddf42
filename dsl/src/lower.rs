//! Lowering: the AST of one file to the IR, resolving names and checking everything that
//! needs only this file (the graph checks are in `analysis`, cross-file checks in `project`).
//!
//! The step form becomes states here: a step is an `Authenticate` state, preceded by a
//! `Decide` guard (`<step>.when`, labels true/false) when it has a `when`; `on_success` and
//! `on_failure` become `Action` states in front of the terminals.

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::{Action, AuthRef, FlowDoc, Invariant, JitRule, Next, StateDef, Step};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::ir::{
    self, ActionIr, AuthOption, FlowIr, InvariantIr, JitCreateIr, JitRuleIr, ProvisioningIr, State,
    StateKind,
};
use crate::names::{BUILTIN_AUTHENTICATORS, Names, PROVISIONING_EVENTS};
use crate::script::{ScriptChecker, ScriptFacts};
use crate::script_api::ScriptContext;
use crate::span::{Span, Spanned};

/// Tries per authenticate state when a flow does not say.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Largest `attempts` accepted.
pub const MAX_ATTEMPTS: u32 = 100;
/// Largest `visits` accepted.
pub const MAX_VISITS: u32 = 1000;

/// Where each state of the IR came from (the IR itself holds no positions).
pub type SpanTable = BTreeMap<String, Span>;

/// Lowers `doc` (parsed from `text`), appending diagnostics. Returns the IR even when there are
/// errors, so that later checks can still report what they find.
pub fn lower(
    doc: &FlowDoc,
    text: &str,
    names: &Names,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Lowered> {
    let mut lowerer = Lowerer {
        text,
        names,
        diagnostics,
        states: BTreeMap::new(),
        spans: BTreeMap::new(),
        federated_used: BTreeSet::new(),
        broken: false,
        lines: std::cell::OnceCell::new(),
    };
    lowerer.check_id(&doc.flow);
    let applies_to = lowerer.applications(&doc.applies_to);
    let success = if doc.on_success.is_empty() {
        ir::SUCCESS
    } else {
        ir::ON_SUCCESS
    };
    let deny = if doc.on_failure.is_empty() {
        ir::DENY
    } else {
        ir::ON_FAILURE
    };
    let ends = Ends { success, deny };

    if let (Some(_), Some(start)) = (&doc.steps, &doc.start) {
        lowerer.error(
            Code::MisplacedField,
            start.span,
            "`start` belongs to the state form; steps begin with the first step",
        );
    }
    let start = match (&doc.steps, &doc.states) {
        (Some(steps), None) if !steps.is_empty() => lowerer.steps(steps, &ends),
        (None, Some(states)) if !states.is_empty() => {
            lowerer.states(doc.start.as_ref(), states, &ends)
        }
        (Some(_), Some(_)) => {
            lowerer.error(
                Code::NoBody,
                doc.flow.span,
                "a flow has either `steps` or `states`, not both",
            );
            return None;
        }
        _ => {
            lowerer.diagnostics.push(
                Diagnostic::error(
                    Code::NoBody,
                    doc.flow.span,
                    format!("flow `{}` has no steps or states", doc.flow.value),
                )
                .with_hint("add `steps:` (a sequence) or `states:` (a state machine)"),
            );
            return None;
        }
    }?;

    lowerer.terminals(doc);
    let jit = doc.jit.iter().map(|rule| lowerer.jit_rule(rule)).collect();
    let provisioning = lowerer.provisioning(doc);
    let require = doc
        .require
        .iter()
        .enumerate()
        .map(|(i, inv)| {
            lowerer.spans.insert(invariant_key(i), inv.span);
            lowerer.invariant(inv)
        })
        .collect();

    let Lowerer {
        states,
        spans,
        broken,
        ..
    } = lowerer;
    let ir = FlowIr {
        flow: doc.flow.value.clone(),
        applies_to,
        default: doc.default,
        start,
        states,
        jit,
        provisioning,
        require,
    };
    Some(Lowered {
        ir,
        spans,
        broken_structure: broken,
    })
}

/// The result of lowering one file.
pub struct Lowered {
    /// The IR, possibly incomplete when there were errors.
    pub ir: FlowIr,
    /// Where each state came from.
    pub spans: SpanTable,
    /// True when the state graph itself is broken (a missing target or `next`, a state of no
    /// kind, a duplicate or reserved id), so graph checks would only report consequences.
    pub broken_structure: bool,
}

struct Ends {
    success: &'static str,
    deny: &'static str,
}

struct Lowerer<'a> {
    text: &'a str,
    names: &'a Names,
    diagnostics: &'a mut Vec<Diagnostic>,
    states: BTreeMap<String, State>,
    spans: SpanTable,
    federated_used: BTreeSet<String>,
    broken: bool,
    /// Built on first use: only duplicate-id diagnostics need line numbers here.
    lines: std::cell::OnceCell<crate::span::LineIndex>,
}

const RESERVED: &[&str] = &[
    ir::SUCCESS,
    ir::DENY,
    ir::ON_SUCCESS,
    ir::ON_FAILURE,
    ir::LABEL_ERROR,
];

impl Lowerer<'_> {
    fn error(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(code, span, message));
    }

    /// Like `error`, for problems that leave the state graph incomplete.
    fn structural(&mut self, diagnostic: Diagnostic) {
        self.broken = true;
        self.diagnostics.push(diagnostic);
    }

    fn check_id(&mut self, id: &Spanned<String>) -> bool {
        let valid = is_id(&id.value);
        if !valid {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::BadId,
                    id.span,
                    format!("`{}` is not a valid id", id.value),
                )
                .with_hint("ids are letters, digits and `_`, joined by single `-` or `.`"),
            );
        }
        valid
    }

    /// Declares a state; reports a duplicate or reserved id instead of overwriting.
    fn declare(&mut self, id: &Spanned<String>, state: State) {
        if RESERVED.contains(&id.value.as_str()) || id.value.starts_with("deny.") {
            self.structural(
                Diagnostic::error(Code::ReservedId, id.span, format!("`{}` is reserved", id.value))
                    .with_hint("`success` and `deny` are the built-in terminals; use them as targets, not as ids"),
            );
            return;
        }
        if self.states.contains_key(&id.value) {
            let first = self.spans.get(&id.value).copied();
            let mut diagnostic = Diagnostic::error(
                Code::DuplicateId,
                id.span,
                format!("`{}` is declared twice", id.value),
            );
            if let Some(first) = first {
                let text = self.text;
                let (line, col) = self
                    .lines
                    .get_or_init(|| crate::span::LineIndex::new(text))
                    .line_col(text, first.start);
                diagnostic = diagnostic.with_note(format!("first declared at {line}:{col}"));
            }
            self.structural(diagnostic);
            return;
        }
        self.check_id(id);
        self.spans.insert(id.value.clone(), id.span);
        self.states.insert(id.value.clone(), state);
    }

    fn insert_generated(&mut self, id: &str, span: Span, state: State) {
        self.spans.entry(id.to_string()).or_insert(span);
        self.states.entry(id.to_string()).or_insert(state);
    }

    fn applications(&mut self, applies_to: &[Spanned<String>]) -> Vec<String> {
        let mut ids = BTreeSet::new();
        for app in applies_to {
            let known = self.names.applications.clone();
            self.check_declared(
                known.as_ref(),
                &app.value,
                app.span,
                Code::UnknownApplication,
                "application",
            );
            ids.insert(app.value.clone());
        }
        ids.into_iter().collect()
    }

    /// Reports `name` (code `code`) when a configuration was given and does not declare it.
    fn check_declared(
        &mut self,
        known: Option<&BTreeSet<String>>,
        name: &str,
        span: Span,
        code: Code,
        what: &str,
    ) {
        let Some(known) = known else { return };
        if known.contains(name) {
            return;
        }
        let mut d = Diagnostic::error(code, span, format!("unknown {what} `{name}`"));
        d = match did_you_mean(name, known.iter().map(String::as_str)) {
            Some(s) => d.with_hint(format!("did you mean `{s}`?")),
            None => d.with_hint(format!("declare the {what} in the configuration")),
        };
        self.diagnostics.push(d);
    }

    fn options(&mut self, refs: &[Spanned<AuthRef>], at: Span) -> Vec<AuthOption> {
        if refs.is_empty() {
            self.error(Code::Shape, at, "`authenticate` needs at least one option");
        }
        let mut seen = BTreeSet::new();
        let mut options = Vec::new();
        for r in refs {
            let option = self.option(r);
            if seen.insert(option.clone()) {
                options.push(option);
            }
        }
        options
    }

    fn option(&mut self, r: &Spanned<AuthRef>) -> AuthOption {
        match &r.value {
            AuthRef::Builtin(name) => {
                if !Names::is_authenticator(name) {
                    let mut d = Diagnostic::error(
                        Code::UnknownAuthenticator,
                        r.span,
                        format!("unknown authenticator `{name}`"),
                    );
                    d = match did_you_mean(name, BUILTIN_AUTHENTICATORS.iter().map(|(n, _)| *n)) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None => d.with_hint(format!(
                            "authenticators are {}; an upstream IdP is `{{ federated: NAME }}` in YAML, `federated(NAME)` in .flow",
                            BUILTIN_AUTHENTICATORS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        )),
                    };
                    self.diagnostics.push(d);
                }
                AuthOption::Authenticator(name.clone())
            }
            AuthRef::Federated { federated } => {
                self.check_idp(federated, locate_word(self.text, r.span, federated));
                self.federated_used.insert(federated.clone());
                AuthOption::Federated(federated.clone())
            }
        }
    }

    fn check_idp(&mut self, idp: &str, span: Span) {
        let known: Option<BTreeSet<String>> = self
            .names
            .identity_providers
            .as_ref()
            .map(|idps| idps.keys().cloned().collect());
        self.check_declared(
            known.as_ref(),
            idp,
            span,
            Code::UnknownIdp,
            "identity provider",
        );
    }

    fn check_target(&mut self, target: &Spanned<String>) {
        let known = self.names.provisioning_targets.clone();
        self.check_declared(
            known.as_ref(),
            &target.value,
            target.span,
            Code::UnknownProvisioningTarget,
            "provisioning target",
        );
    }

    fn ranged(
        &mut self,
        value: Option<&Spanned<u32>>,
        default: Option<u32>,
        max: u32,
        what: &str,
    ) -> Option<u32> {
        let Some(value) = value else { return default };
        if value.value == 0 || value.value > max {
            self.error(
                Code::OutOfRange,
                value.span,
                format!("{what} must be between 1 and {max}, not {}", value.value),
            );
        }
        Some(value.value.clamp(1, max))
    }

    /// Checks a script and maps its problems to positions in the file.
    fn script(&mut self, script: &Spanned<String>, context: ScriptContext) -> Option<ScriptFacts> {
        match ScriptChecker::shared().check(&script.value, context) {
            Ok(facts) => Some(facts),
            Err(problems) => {
                for problem in problems {
                    let span = locate_in_script(self.text, script, problem.position);
                    let mut d = Diagnostic::error(problem.code, span, problem.message);
                    d.hint = problem.hint;
                    self.diagnostics.push(d);
                }
                None
            }
        }
    }

    fn steps(&mut self, steps: &[Step], ends: &Ends) -> Option<String> {
        let entry = |step: &Step| match step.when {
            Some(_) => format!("{}.when", step.id.value),
            None => step.id.value.clone(),
        };
        for (i, step) in steps.iter().enumerate() {
            let next = steps
                .get(i + 1)
                .map(entry)
                .unwrap_or_else(|| ends.success.to_string());
            let options = self.options(&step.authenticate, step.id.span);
            let attempts = self.ranged(
                step.attempts.as_ref(),
                Some(DEFAULT_ATTEMPTS),
                MAX_ATTEMPTS,
                "attempts",
            );
            let transitions = BTreeMap::from([
                (ir::LABEL_SUCCESS.to_string(), next.clone()),
                (ir::LABEL_FAILURE.to_string(), ends.deny.to_string()),
            ]);
            let state = State {
                kind: StateKind::Authenticate {
                    options,
                    attempts: attempts.unwrap_or(DEFAULT_ATTEMPTS),
                },
                max_visits: None,
                transitions,
            };
            self.declare(&step.id, state);
            if let Some(when) = &step.when {
                self.script(when, ScriptContext::Flow);
                let guard_id = Spanned::new(format!("{}.when", step.id.value), step.id.span);
                let transitions = BTreeMap::from([
                    ("true".to_string(), step.id.value.clone()),
                    ("false".to_string(), next),
                    (ir::LABEL_ERROR.to_string(), ir::SCRIPT_ERROR.to_string()),
                ]);
                let guard = State {
                    kind: StateKind::Decide {
                        script: when.value.clone(),
                    },
                    max_visits: None,
                    transitions,
                };
                if self.states.contains_key(&guard_id.value) {
                    self.error(
                        Code::DuplicateId,
                        step.id.span,
                        format!("`{}` is declared twice", guard_id.value),
                    );
                } else {
                    self.spans.insert(guard_id.value.clone(), when.span);
                    self.states.insert(guard_id.value, guard);
                }
            }
        }
        steps.first().map(entry)
    }

    fn states(
        &mut self,
        start: Option<&Spanned<String>>,
        defs: &crate::ast::Entries<StateDef>,
        ends: &Ends,
    ) -> Option<String> {
        let declared: BTreeSet<&str> = defs.iter().map(|(id, _)| id.value.as_str()).collect();
        let resolve = |lowerer: &mut Self, target: &str, span: Span| -> String {
            match target {
                ir::SUCCESS => ends.success.to_string(),
                ir::DENY => ends.deny.to_string(),
                other => {
                    if !declared.contains(other) {
                        let mut d = Diagnostic::error(
                            Code::UnknownTarget,
                            span,
                            format!("no state named `{other}`"),
                        );
                        let candidates = declared.iter().copied().chain([ir::SUCCESS, ir::DENY]);
                        if let Some(s) = did_you_mean(other, candidates) {
                            d = d.with_hint(format!("did you mean `{s}`?"));
                        }
                        lowerer.structural(d);
                    }
                    other.to_string()
                }
            }
        };
        for (id, def) in defs.iter() {
            let Some(state) = self.state(id, def, ends, &resolve) else {
                continue;
            };
            self.declare(id, state);
        }
        match start {
            Some(start) => Some(resolve(self, &start.value, start.span)),
            None => defs.iter().next().map(|(id, _)| id.value.clone()),
        }
    }

    fn state(
        &mut self,
        id: &Spanned<String>,
        def: &StateDef,
        ends: &Ends,
        resolve: &dyn Fn(&mut Self, &str, Span) -> String,
    ) -> Option<State> {
        let kinds = [
            def.authenticate.is_some(),
            def.decide.is_some(),
            def.actions.is_some(),
            def.deny.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.structural(
                Diagnostic::error(
                    Code::StateKind,
                    id.span,
                    format!(
                        "state `{}` must have exactly one of authenticate, decide, do, deny",
                        id.value
                    ),
                )
                .with_hint("split it into several states joined by `next`"),
            );
            return None;
        }
        let max_visits = self.ranged(def.visits.as_ref(), None, MAX_VISITS, "visits");
        let misplaced = |lowerer: &mut Self, field: Option<Span>, name: &str, kind: &str| {
            if let Some(span) = field {
                lowerer.error(
                    Code::MisplacedField,
                    span,
                    format!("`{name}` does not apply to a `{kind}` state"),
                );
            }
        };
        let next_one = |lowerer: &mut Self, kind: &str| -> Option<String> {
            match &def.next {
                Some(Spanned {
                    value: Next::To(target),
                    span,
                }) => Some(resolve(lowerer, target, *span)),
                Some(Spanned { span, .. }) => {
                    lowerer.broken = true;
                    lowerer.error(
                        Code::Shape,
                        *span,
                        format!("this `{kind}` state has one `next`, not a map of labels"),
                    );
                    None
                }
                None => {
                    lowerer.structural(
                        Diagnostic::error(
                            Code::Shape,
                            id.span,
                            format!("state `{}` needs `next`", id.value),
                        )
                        .with_hint("a `next` of `success` ends the flow here"),
                    );
                    None
                }
            }
        };
        let mut transitions = BTreeMap::new();
        let kind = if let Some(refs) = &def.authenticate {
            let options = self.options(refs, id.span);
            let attempts = self.ranged(
                def.attempts.as_ref(),
                Some(DEFAULT_ATTEMPTS),
                MAX_ATTEMPTS,
                "attempts",
            );
            if let Some(next) = next_one(self, "authenticate") {
                transitions.insert(ir::LABEL_SUCCESS.to_string(), next);
            }
            let fail = match &def.fail {
                Some(fail) => resolve(self, &fail.value, fail.span),
                None => ends.deny.to_string(),
            };
            transitions.insert(ir::LABEL_FAILURE.to_string(), fail);
            StateKind::Authenticate {
                options,
                attempts: attempts.unwrap_or(DEFAULT_ATTEMPTS),
            }
        } else if let Some(script) = &def.decide {
            misplaced(
                self,
                def.attempts.as_ref().map(|a| a.span),
                "attempts",
                "decide",
            );
            misplaced(self, def.fail.as_ref().map(|f| f.span), "fail", "decide");
            let facts = self.script(script, ScriptContext::Flow);
            match &def.next {
                Some(Spanned {
                    value: Next::ByLabel(labels),
                    span,
                }) => {
                    for (label, target) in labels.iter() {
                        let label_span = if label.span.is_unknown() {
                            *span
                        } else {
                            label.span
                        };
                        if !self.check_id(label) {
                            continue;
                        }
                        if label.value == ir::LABEL_ERROR {
                            self.broken = true;
                            self.error(
                                Code::ReservedId,
                                label_span,
                                "the `error` label is reserved: script errors always deny",
                            );
                            continue;
                        }
                        let to = resolve(self, target, label_span);
                        if transitions.insert(label.value.clone(), to).is_some() {
                            self.error(
                                Code::DuplicateId,
                                label_span,
                                format!("label `{}` is mapped twice", label.value),
                            );
                        }
                    }
                    if let Some(facts) = facts {
                        self.check_labels(script, &facts, &transitions, *span);
                    }
                }
                Some(Spanned { span, .. }) => {
                    self.structural(
                        Diagnostic::error(
                            Code::Shape,
                            *span,
                            "a `decide` state maps each label to a state",
                        )
                        .with_hint("map each label to a state: `next: { label: state }` in YAML, `next label -> state` in .flow"),
                    );
                }
                None => {
                    self.structural(
                        Diagnostic::error(
                            Code::LabelWithoutNext,
                            script.span,
                            format!("`decide` state `{}` has no `next`", id.value),
                        )
                        .with_hint("map every label the script returns to a state in `next`"),
                    );
                }
            }
            transitions.insert(ir::LABEL_ERROR.to_string(), ir::SCRIPT_ERROR.to_string());
            StateKind::Decide {
                script: script.value.clone(),
            }
        } else if let Some(actions) = &def.actions {
            misplaced(
                self,
                def.attempts.as_ref().map(|a| a.span),
                "attempts",
                "do",
            );
            misplaced(self, def.fail.as_ref().map(|f| f.span), "fail", "do");
            let actions: Vec<ActionIr> = actions.iter().filter_map(|a| self.action(a)).collect();
            if let Some(next) = next_one(self, "do") {
                transitions = action_transitions(&actions, next);
            }
            StateKind::Action { actions }
        } else {
            let reason = def
                .deny
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default();
            for (field, name) in [
                (def.next.as_ref().map(|n| n.span), "next"),
                (def.attempts.as_ref().map(|a| a.span), "attempts"),
                (def.fail.as_ref().map(|f| f.span), "fail"),
            ] {
                misplaced(self, field, name, "deny");
            }
            StateKind::Deny { reason }
        };
        Some(State {
            kind,
            max_visits,
            transitions,
        })
    }

    fn check_labels(
        &mut self,
        script: &Spanned<String>,
        facts: &ScriptFacts,
        transitions: &BTreeMap<String, String>,
        next_span: Span,
    ) {
        let boolean = transitions.keys().all(|l| l == "true" || l == "false");
        if facts.labels.is_empty() && boolean {
            // A condition: both outcomes must lead somewhere.
            for outcome in ["true", "false"] {
                if !transitions.contains_key(outcome) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::LabelWithoutNext,
                            script.span,
                            format!("the condition can be {outcome} but `next` does not map \"{outcome}\""),
                        )
                        .with_hint("map both \"true\" and \"false\"; an unmapped outcome denies at run time"),
                    );
                }
            }
            return;
        }
        for label in &facts.labels {
            if !transitions.contains_key(label) {
                let span = locate_literal(self.text, script, label);
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::LabelWithoutNext,
                        span,
                        format!("the script can return \"{label}\" but `next` does not map it"),
                    )
                    .with_hint(format!(
                        "map \"{label}\" to a state in `next`; an unmapped label denies at run time"
                    )),
                );
            }
        }
        if !facts.labels.is_empty() {
            for label in transitions.keys() {
                if !facts.labels.contains(label) {
                    self.diagnostics.push(Diagnostic::warning(
                        Code::UnusedLabel,
                        next_span,
                        format!("`next` maps \"{label}\" but the script never returns it"),
                    ));
                }
            }
        }
    }

    fn action(&mut self, action: &Spanned<Action>) -> Option<ActionIr> {
        Some(match &action.value {
            Action::Provision(target) => {
                self.check_target(target);
                ActionIr::Provision {
                    target: target.value.clone(),
                }
            }
            Action::LockUser(lock) => {
                let after = self
                    .ranged(Some(&lock.after), None, 1000, "`after`")
                    .unwrap_or(1);
                let seconds = match parse_duration(&lock.duration.value) {
                    Some(s) => s,
                    None => {
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::BadDuration,
                                lock.duration.span,
                                format!("`{}` is not a duration", lock.duration.value),
                            )
                            .with_hint("write a number and a unit: 30s, 15m, 2h, 1d"),
                        );
                        return None;
                    }
                };
                ActionIr::LockUser { after, seconds }
            }
            Action::SetClaim(claims) => {
                let Some((claim, script)) = claims.0.first() else {
                    self.error(
                        Code::Shape,
                        action.span,
                        "`set_claim` needs a claim and an expression",
                    );
                    return None;
                };
                if claims.0.len() > 1 {
                    self.error(
                        Code::Shape,
                        action.span,
                        "`set_claim` sets one claim; write one action per claim",
                    );
                }
                self.script(script, ScriptContext::Flow);
                ActionIr::SetClaim {
                    claim: claim.value.clone(),
                    script: script.value.clone(),
                }
            }
            Action::Jit(idp) => {
                self.check_idp(&idp.value, idp.span);
                ActionIr::Jit {
                    idp: idp.value.clone(),
                }
            }
        })
    }

    fn terminals(&mut self, doc: &FlowDoc) {
        let span = doc.flow.span;
        let terminal = |kind| State {
            kind,
            max_visits: None,
            transitions: BTreeMap::new(),
        };
        for (id, actions, then) in [
            (ir::ON_SUCCESS, &doc.on_success, ir::SUCCESS),
            (ir::ON_FAILURE, &doc.on_failure, ir::DENY),
        ] {
            if actions.is_empty() {
                continue;
            }
            let span = actions.first().map(|a| a.span).unwrap_or(span);
            let actions: Vec<ActionIr> = actions.iter().filter_map(|a| self.action(a)).collect();
            let state = State {
                transitions: action_transitions(&actions, then.to_string()),
                kind: StateKind::Action { actions },
                max_visits: None,
            };
            self.insert_generated(id, span, state);
        }
        self.insert_generated(ir::SUCCESS, span, terminal(StateKind::Success));
        self.insert_generated(
            ir::DENY,
            span,
            terminal(StateKind::Deny {
                reason: "authentication failed".into(),
            }),
        );
        let runs_scripts = self
            .states
            .values()
            .any(|s| s.transitions.values().any(|to| to == ir::SCRIPT_ERROR));
        if runs_scripts {
            self.insert_generated(
                ir::SCRIPT_ERROR,
                span,
                terminal(StateKind::Deny {
                    reason: "script error".into(),
                }),
            );
        }
    }

    fn jit_rule(&mut self, rule: &JitRule) -> JitRuleIr {
        self.check_idp(&rule.idp.value, rule.idp.span);
        if !self.federated_used.contains(&rule.idp.value) {
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::JitIdpNotUsed,
                    rule.idp.span,
                    format!(
                        "no step authenticates with `{}`, so this rule never runs",
                        rule.idp.value
                    ),
                )
                .with_hint(format!(
                    "offer federated({}) in a step, or remove the rule",
                    rule.idp.value
                )),
            );
        }
        let facts = rule
            .when
            .as_ref()
            .map(|w| self.script(w, ScriptContext::Jit));
        let when_broken = matches!(facts, Some(None));
        let facts = facts.flatten();
        if let Some(attribute) = rule.match_on.as_ref().filter(|_| !when_broken) {
            let verified_by_idp = self
                .names
                .verified_attributes(&rule.idp.value)
                .is_some_and(|v| v.contains(&attribute.value));
            let verified_claim = format!("{}_verified", attribute.value);
            let checked_in_when = facts
                .as_ref()
                .is_some_and(|f| f.claims_required_true.contains(&verified_claim));
            if !verified_by_idp && !checked_in_when {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::JitUnverifiedMatch,
                        attribute.span,
                        format!("linking accounts by `{}`, which `{}` is not known to verify", attribute.value, rule.idp.value),
                    )
                    .with_hint(format!(
                        "make `when` require it (`claims.{verified_claim} && ...`), or list \"{}\" in verified_attributes of the IdP; otherwise whoever controls the IdP account can take over a local account",
                        attribute.value
                    )),
                );
            }
        }
        let create = rule.create.as_ref().map(|create| {
            if create.username.value.trim().is_empty() {
                self.error(
                    Code::Shape,
                    create.username.span,
                    "`create` needs a `username` expression",
                );
            } else {
                self.script(&create.username, ScriptContext::Jit);
            }
            let mut attributes = BTreeMap::new();
            for (name, expr) in create.attributes.iter() {
                self.script(expr, ScriptContext::Jit);
                if attributes
                    .insert(name.value.clone(), expr.value.clone())
                    .is_some()
                {
                    self.error(
                        Code::DuplicateId,
                        name.span,
                        format!("attribute `{}` is mapped twice", name.value),
                    );
                }
            }
            let roles: BTreeSet<String> = create.roles.iter().map(|r| r.value.clone()).collect();
            JitCreateIr {
                username: create.username.value.clone(),
                attributes,
                roles: roles.into_iter().collect(),
            }
        });
        if rule.match_on.is_none() && rule.create.is_none() {
            self.error(
                Code::Shape,
                rule.idp.span,
                "a JIT rule needs `match`, `create`, or both",
            );
        }
        let prompt: BTreeSet<String> = rule
            .prompt
            .iter()
            .map(|p| p.value.as_str().to_string())
            .collect();
        JitRuleIr {
            idp: rule.idp.value.clone(),
            when: rule.when.as_ref().map(|w| w.value.clone()),
            match_on: rule.match_on.as_ref().map(|m| m.value.clone()),
            create,
            prompt: prompt.into_iter().collect(),
        }
    }

    fn provisioning(&mut self, doc: &FlowDoc) -> Vec<ProvisioningIr> {
        let mut out = Vec::new();
        for trigger in &doc.provisioning {
            self.check_target(&trigger.to);
            let mut events = BTreeSet::new();
            for event in &trigger.on {
                if !PROVISIONING_EVENTS.contains(&event.value.as_str()) {
                    let mut d = Diagnostic::error(
                        Code::UnknownEvent,
                        event.span,
                        format!("unknown event `{}`", event.value),
                    );
                    d = match did_you_mean(&event.value, PROVISIONING_EVENTS.iter().copied()) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None => {
                            d.with_hint(format!("events are {}", PROVISIONING_EVENTS.join(", ")))
                        }
                    };
                    self.diagnostics.push(d);
                }
                events.insert(event.value.clone());
            }
            if events.is_empty() {
                self.error(
                    Code::Shape,
                    trigger.to.span,
                    "a provisioning trigger needs at least one event in `on`",
                );
            }
            out.push(ProvisioningIr {
                on: events.into_iter().collect(),
                to: trigger.to.value.clone(),
            });
        }
        out
    }

    fn invariant(&mut self, invariant: &Spanned<Invariant>) -> InvariantIr {
        match &invariant.value {
            Invariant::PassesOneOf(refs) => {
                let mut options: Vec<AuthOption> = refs.iter().map(|r| self.option(r)).collect();
                options.sort();
                options.dedup();
                if options.is_empty() {
                    self.error(
                        Code::Shape,
                        invariant.span,
                        "`passes_one_of` needs at least one authenticator",
                    );
                }
                InvariantIr::PassesOneOf { options }
            }
        }
    }
}

/// The transitions of an action state: `next`, and `error` (fail closed) when an action runs a
/// script (`set_claim`, or `jit`, whose rules hold scripts).
fn action_transitions(actions: &[ActionIr], next: String) -> BTreeMap<String, String> {
    let mut transitions = BTreeMap::from([(ir::LABEL_NEXT.to_string(), next)]);
    if actions
        .iter()
        .any(|a| matches!(a, ActionIr::SetClaim { .. } | ActionIr::Jit { .. }))
    {
        transitions.insert(ir::LABEL_ERROR.to_string(), ir::SCRIPT_ERROR.to_string());
    }
    transitions
}

/// The span-table key of the `i`th `require` entry (`#` cannot occur in state ids).
pub fn invariant_key(i: usize) -> String {
    format!("require#{i}")
}

/// Whether `text` is an id as both syntaxes write it: runs of letters, digits and `_`, joined
/// by single `-` or `.`.
pub fn is_id(text: &str) -> bool {
    text.split(['-', '.'])
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Parses `30s`, `15m`, `2h`, `1d` to seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|s| *s > 0)
}

/// Maps a position inside a script (1-based line and column) to a span in the file, by finding
/// the script's line in the file text after the script's start; falls back to the whole script.
fn locate_in_script(
    text: &str,
    script: &Spanned<String>,
    position: Option<(usize, usize)>,
) -> Span {
    let Some((line, column)) = position else {
        return script.span;
    };
    let Some(line_text) = script.value.lines().nth(line.saturating_sub(1)) else {
        return script.span;
    };
    let from = script.span.start.min(text.len());
    let to = script.span.end.clamp(from, text.len());
    let region = text.get(from..to).unwrap_or("");
    if line_text.trim().is_empty() {
        return script.span;
    }
    // The script's lines keep their line breaks in the file (a block scalar, a backtick
    // script), so line N is found at or below the file line N-1 lines after the first one.
    let first = script.value.lines().next().unwrap_or("").trim();
    let mut at = if first.is_empty() {
        0
    } else {
        region.find(first).unwrap_or(0)
    };
    for _ in 1..line {
        match region.get(at..).and_then(|rest| rest.find('\n')) {
            Some(i) => at += i + 1,
            None => break,
        }
    }
    let found = region
        .get(at..)
        .and_then(|rest| rest.find(line_text))
        .map(|i| at + i)
        .or_else(|| region.find(line_text));
    let Some(found) = found else {
        return script.span;
    };
    let line_start = from + found;
    let within = line_text
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line_text.len());
    let start = line_start + within;
    let word = text[start..]
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(0);
    Span::new(start, start + word.max(1).min(text.len() - start))
}

/// The span of `word` at or shortly after `span.start` (YAML gives the span of a mapping's
/// opening token only), or `span` when it is not found on that line.
fn locate_word(text: &str, span: Span, word: &str) -> Span {
    let from = span.start.min(text.len());
    let rest = text.get(from..).unwrap_or("");
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let is_id_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let whole_word = line.match_indices(word).find(|(i, _)| {
        let before = line[..*i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_id_char) && !after.is_some_and(is_id_char)
    });
    match whole_word {
        Some((i, _)) if !word.is_empty() => Span::new(from + i, from + i + word.len()),
        _ => span,
    }
}

/// The span of the string literal `"label"` inside a script, or the script's span.
fn locate_literal(text: &str, script: &Spanned<String>, label: &str) -> Span {
    let from = script.span.start.min(text.len());
    let end = script.span.end.max(from).min(text.len());
    for quoted in [format!("\"{label}\""), format!("'{label}'")] {
        if let Some(i) = text[from..end].find(&quoted) {
            return Span::new(from + i, from + i + quoted.len());
        }
    }
    script.span
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("15"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
    }
}
