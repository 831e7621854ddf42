//! Actions: `do` states, and the `on_success` / `on_failure` states the compiler adds in front
//! of the terminals, with their fail-closed edges.

use std::collections::BTreeMap;

use crate::ast::{Action, FlowDoc};
use crate::diagnostic::{Code, Diagnostic};
use crate::ir::{self, ActionIr, State, StateKind};
use crate::script_api::ScriptContext;
use crate::span::Spanned;

use super::{Lowerer, parse_duration};

impl Lowerer<'_> {
    pub(super) fn action(&mut self, action: &Spanned<Action>) -> Option<ActionIr> {
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

    pub(super) fn terminals(&mut self, doc: &FlowDoc) {
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
}

/// The transitions of an action state: `next`, and `error` (fail closed) when an action runs a
/// script (`set_claim`, or `jit`, whose rules hold scripts).
pub(super) fn action_transitions(actions: &[ActionIr], next: String) -> BTreeMap<String, String> {
    let mut transitions = BTreeMap::from([(ir::LABEL_NEXT.to_string(), next)]);
    if actions
        .iter()
        .any(|a| matches!(a, ActionIr::SetClaim { .. } | ActionIr::Jit { .. }))
    {
        transitions.insert(ir::LABEL_ERROR.to_string(), ir::SCRIPT_ERROR.to_string());
    }
    transitions
}
