//! The state form: named states, their kinds, their transitions, and the labels of `decide`.

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::{Next, StateDef};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::ir::{self, ActionIr, State, StateKind};
use crate::script::ScriptFacts;
use crate::script_api::ScriptContext;
use crate::span::{Span, Spanned};

use super::actions::action_transitions;
use super::locate::locate_literal;
use super::{DEFAULT_ATTEMPTS, Ends, Lowerer, MAX_ATTEMPTS, MAX_VISITS};

impl Lowerer<'_> {
    pub(super) fn states(
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

    pub(super) fn state(
        &mut self,
        id: &Spanned<String>,
        def: &StateDef,
        ends: &Ends,
        resolve: &dyn Fn(&mut Self, &str, Span) -> String,
    ) -> Option<State> {
        let kinds = [
            def.authenticate.is_some(),
            def.enroll.is_some(),
            def.register.is_some(),
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
                        "state `{}` must have exactly one of authenticate, enroll, register, decide, do, deny",
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
        let asks = def
            .authenticate
            .as_ref()
            .map(|refs| (refs, false))
            .or(def.enroll.as_ref().map(|refs| (refs, true)));
        let kind = if let Some((refs, enroll)) = asks {
            let options = if enroll {
                self.enroll_options(refs, id.span)
            } else {
                self.options(refs, id.span)
            };
            let attempts = self.ranged(
                def.attempts.as_ref(),
                Some(DEFAULT_ATTEMPTS),
                MAX_ATTEMPTS,
                "attempts",
            );
            if let Some(next) = next_one(self, if enroll { "enroll" } else { "authenticate" }) {
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
                enroll,
            }
        } else if let Some(register) = &def.register {
            let attempts = self
                .ranged(
                    def.attempts.as_ref(),
                    Some(DEFAULT_ATTEMPTS),
                    MAX_ATTEMPTS,
                    "attempts",
                )
                .unwrap_or(DEFAULT_ATTEMPTS);
            if let Some(next) = next_one(self, "register") {
                transitions.insert(ir::LABEL_SUCCESS.to_string(), next);
            }
            let fail = match &def.fail {
                Some(fail) => resolve(self, &fail.value, fail.span),
                None => ends.deny.to_string(),
            };
            transitions.insert(ir::LABEL_FAILURE.to_string(), fail);
            self.register_kind(register, attempts)
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

    pub(super) fn check_labels(
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
}
