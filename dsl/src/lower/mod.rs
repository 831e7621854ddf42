//! Lowering: the AST of one file to the IR, resolving names and checking everything that
//! needs only this file (the graph checks are in `analysis`, cross-file checks in `project`).
//!
//! The step form becomes states here: a step is an `Authenticate` state, preceded by a
//! `Decide` guard (`<step>.when`, labels true/false) when it has a `when`; `on_success` and
//! `on_failure` become `Action` states in front of the terminals.

mod actions;
mod locate;
mod rules;
mod states;
mod steps;

use locate::{locate_in_script, locate_word};

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::{AuthRef, FlowDoc, Register};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::ir::{self, AuthOption, FlowIr, State, StateKind};
use crate::names::{BUILTIN_AUTHENTICATORS, Names};
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
            let names = self.names;
            self.check_declared(
                names.applications.as_ref(),
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

    /// The state kind of a `register`: its attributes checked (valid ids, none twice, none of
    /// the fields the page always asks) and sorted, with `attempts` for the email code.
    fn register_kind(&mut self, register: &Spanned<Register>, attempts: u32) -> StateKind {
        let mut attributes = BTreeSet::new();
        for attribute in &register.attributes {
            if !self.check_id(attribute) {
                continue;
            }
            if ir::REGISTER_FIELDS.contains(&attribute.value.as_str()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::Shape,
                        attribute.span,
                        format!("`{}` is always asked by `register`", attribute.value),
                    )
                    .with_hint("list only the profile attributes asked besides username, email and password"),
                );
            } else if ir::RESERVED_ATTRIBUTES.contains(&attribute.value.as_str()) {
                self.error(
                    Code::Shape,
                    attribute.span,
                    format!("`{}` is an attribute idflow sets itself", attribute.value),
                );
            } else if !attributes.insert(attribute.value.clone()) {
                self.error(
                    Code::DuplicateId,
                    attribute.span,
                    format!("attribute `{}` is listed twice", attribute.value),
                );
            }
        }
        let mut roles = BTreeSet::new();
        for role in &register.roles {
            if self.check_id(role) && !roles.insert(role.value.clone()) {
                self.error(
                    Code::DuplicateId,
                    role.span,
                    format!("role `{}` is listed twice", role.value),
                );
            }
        }
        StateKind::Register {
            attributes: attributes.into_iter().collect(),
            verify_email: register.verify_email,
            approval: register.approval,
            roles: roles.into_iter().collect(),
            attempts,
        }
    }

    /// The options of an `enroll`: only authenticators a user can set up during a login.
    fn enroll_options(&mut self, refs: &[Spanned<AuthRef>], at: Span) -> Vec<AuthOption> {
        let options = self.options(refs, at);
        for r in refs {
            let enrollable = matches!(&r.value, AuthRef::Builtin(name) if ir::ENROLLABLE.contains(&name.as_str()));
            if !enrollable
                && !matches!(&r.value, AuthRef::Builtin(name) if !Names::is_authenticator(name))
            {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::NotEnrollable,
                        r.span,
                        format!("`{}` cannot be enrolled during a login", r.value),
                    )
                    .with_hint(format!("enroll one of: {}", ir::ENROLLABLE.join(", "))),
                );
            }
        }
        options
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
        let Some(idps) = self.names.identity_providers.as_ref() else {
            return;
        };
        if idps.contains_key(idp) {
            return;
        }
        let known: Option<BTreeSet<String>> = Some(idps.keys().cloned().collect());
        self.check_declared(
            known.as_ref(),
            idp,
            span,
            Code::UnknownIdp,
            "identity provider",
        );
    }

    fn check_target(&mut self, target: &Spanned<String>) {
        let names = self.names;
        self.check_declared(
            names.provisioning_targets.as_ref(),
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
