//! The parts of a flow beside its states: JIT rules (with the verified-attribute lint),
//! provisioning triggers and `require` invariants.

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::{FlowDoc, Invariant, JitRule};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::ir::{AuthOption, InvariantIr, JitCreateIr, JitRuleIr, ProvisioningIr};
use crate::names::PROVISIONING_EVENTS;
use crate::script_api::ScriptContext;
use crate::span::Spanned;

use super::Lowerer;

impl Lowerer<'_> {
    pub(super) fn jit_rule(&mut self, rule: &JitRule) -> JitRuleIr {
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

    pub(super) fn provisioning(&mut self, doc: &FlowDoc) -> Vec<ProvisioningIr> {
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

    pub(super) fn invariant(&mut self, invariant: &Spanned<Invariant>) -> InvariantIr {
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
