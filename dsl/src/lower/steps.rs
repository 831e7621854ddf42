//! The step form: each step becomes an `authenticate` state (an enrolling one for `enroll`), or
//! a `register` state, preceded by a `decide` guard
//! (`STEP.when`, labels true/false) when it has a `when`.

use std::collections::BTreeMap;

use crate::ast::Step;
use crate::diagnostic::Code;
use crate::ir::{self, State, StateKind};
use crate::script_api::ScriptContext;
use crate::span::Spanned;

use super::{DEFAULT_ATTEMPTS, Ends, Lowerer, MAX_ATTEMPTS};

impl Lowerer<'_> {
    pub(super) fn steps(&mut self, steps: &[Step], ends: &Ends) -> Option<String> {
        let entry = |step: &Step| match step.when {
            Some(_) => format!("{}.when", step.id.value),
            None => step.id.value.clone(),
        };
        for (i, step) in steps.iter().enumerate() {
            let next = steps
                .get(i + 1)
                .map(entry)
                .unwrap_or_else(|| ends.success.to_string());
            let enroll = !step.enroll.is_empty();
            let kinds = [
                !step.authenticate.is_empty(),
                enroll,
                step.register.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => self.diagnostics.push(
                    crate::diagnostic::Diagnostic::error(
                        Code::Shape,
                        step.id.span,
                        format!(
                            "step `{}` needs `authenticate`, `enroll` or `register`",
                            step.id.value
                        ),
                    )
                    .with_hint("e.g. `authenticate: [password]`"),
                ),
                1 => {}
                _ => self.error(
                    Code::Shape,
                    step.id.span,
                    format!(
                        "step `{}` has more than one of `authenticate`, `enroll` and `register`; a step does one",
                        step.id.value
                    ),
                ),
            }
            let attempts = self
                .ranged(
                    step.attempts.as_ref(),
                    Some(DEFAULT_ATTEMPTS),
                    MAX_ATTEMPTS,
                    "attempts",
                )
                .unwrap_or(DEFAULT_ATTEMPTS);
            let kind = match &step.register {
                Some(register) if step.authenticate.is_empty() && !enroll => {
                    self.register_kind(register, attempts)
                }
                _ => StateKind::Authenticate {
                    options: if enroll {
                        self.enroll_options(&step.enroll, step.id.span)
                    } else if step.authenticate.is_empty() {
                        Vec::new()
                    } else {
                        self.options(&step.authenticate, step.id.span)
                    },
                    attempts,
                    enroll,
                },
            };
            let transitions = BTreeMap::from([
                (ir::LABEL_SUCCESS.to_string(), next.clone()),
                (ir::LABEL_FAILURE.to_string(), ends.deny.to_string()),
            ]);
            let state = State {
                kind,
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
}
