//! Printing a [`FlowDoc`] as `.flow` text, for `idflow flow fmt --to dsl`. (YAML is printed by
//! serde in [`crate::yaml::print`].) Round trip holds: parsing the output gives the same IR.

use std::fmt::Write;

use crate::ast::{Action, AuthRef, FlowDoc, Invariant, JitRule, Next, Register, StateDef, Step};
use crate::span::Spanned;

/// Prints `doc` in the `.flow` syntax. Fails only for text the DSL cannot hold: a script
/// containing a backtick.
pub fn to_dsl(doc: &FlowDoc) -> Result<String, String> {
    let mut p = Printer { out: String::new() };
    p.flow(doc)?;
    Ok(p.out)
}

struct Printer {
    out: String,
}

fn script(text: &Spanned<String>) -> Result<String, String> {
    if text.value.contains('`') {
        return Err(format!(
            "the script `{}` contains a backtick, which the .flow syntax cannot quote",
            text.value
        ));
    }
    Ok(format!("`{}`", text.value))
}

fn string(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t");
    format!("\"{escaped}\"")
}

fn auth_refs(refs: &[Spanned<AuthRef>]) -> String {
    refs.iter()
        .map(|r| r.value.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn names(names: &[Spanned<String>]) -> String {
    names
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Printer {
    fn line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{}{}", "  ".repeat(indent), text);
    }

    fn flow(&mut self, doc: &FlowDoc) -> Result<(), String> {
        let header = match &doc.description {
            Some(d) => format!("flow {} {} {{", doc.flow.value, string(d)),
            None => format!("flow {} {{", doc.flow.value),
        };
        self.line(0, &header);
        if !doc.applies_to.is_empty() {
            self.line(1, &format!("applies_to {}", names(&doc.applies_to)));
        }
        if doc.default {
            self.line(1, "default");
        }
        if let Some(start) = &doc.start {
            self.line(1, &format!("start {}", start.value));
        }
        for step in doc.steps.iter().flatten() {
            self.step(step)?;
        }
        if let Some(states) = &doc.states {
            for (id, state) in states.iter() {
                self.state(&id.value, state)?;
            }
        }
        for (keyword, actions) in [("success", &doc.on_success), ("failure", &doc.on_failure)] {
            if !actions.is_empty() {
                self.line(1, &format!("on {keyword} {{"));
                for action in actions {
                    self.action(2, action)?;
                }
                self.line(1, "}");
            }
        }
        for invariant in &doc.require {
            let Invariant::PassesOneOf(refs) = &invariant.value;
            self.line(1, &format!("require passes one of {}", auth_refs(refs)));
        }
        for rule in &doc.jit {
            self.jit(rule)?;
        }
        for trigger in &doc.provisioning {
            self.line(
                1,
                &format!(
                    "provisioning on {} to {}",
                    names(&trigger.on),
                    trigger.to.value
                ),
            );
        }
        self.line(0, "}");
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        let header = match &step.when {
            Some(when) => format!("step {} when {} {{", step.id.value, script(when)?),
            None => format!("step {} {{", step.id.value),
        };
        self.line(1, &header);
        if !step.authenticate.is_empty() || (step.enroll.is_empty() && step.register.is_none()) {
            self.line(
                2,
                &format!("authenticate {}", auth_refs(&step.authenticate)),
            );
        }
        if !step.enroll.is_empty() {
            self.line(2, &format!("enroll {}", auth_refs(&step.enroll)));
        }
        if let Some(register) = &step.register {
            self.register(register);
        }
        if let Some(attempts) = &step.attempts {
            self.line(2, &format!("attempts {}", attempts.value));
        }
        self.line(1, "}");
        Ok(())
    }

    fn register(&mut self, register: &Register) {
        self.line(2, "register {");
        if !register.attributes.is_empty() {
            let names: Vec<&str> = register
                .attributes
                .iter()
                .map(|a| a.value.as_str())
                .collect();
            self.line(3, &format!("attributes {}", names.join(", ")));
        }
        if register.verify_email {
            self.line(3, "verify_email");
        }
        if register.approval {
            self.line(3, "approval");
        }
        if !register.roles.is_empty() {
            let names: Vec<&str> = register.roles.iter().map(|r| r.value.as_str()).collect();
            self.line(3, &format!("roles {}", names.join(", ")));
        }
        self.line(2, "}");
    }

    fn state(&mut self, id: &str, state: &StateDef) -> Result<(), String> {
        self.line(1, &format!("state {id} {{"));
        if let Some(refs) = &state.authenticate {
            self.line(2, &format!("authenticate {}", auth_refs(refs)));
        }
        if let Some(refs) = &state.enroll {
            self.line(2, &format!("enroll {}", auth_refs(refs)));
        }
        if let Some(register) = &state.register {
            self.register(register);
        }
        if let Some(attempts) = &state.attempts {
            self.line(2, &format!("attempts {}", attempts.value));
        }
        if let Some(decide) = &state.decide {
            self.line(2, &format!("decide {}", script(decide)?));
        }
        if let Some(actions) = &state.actions {
            self.line(2, "do {");
            for action in actions {
                self.action(3, action)?;
            }
            self.line(2, "}");
        }
        if let Some(reason) = &state.deny {
            self.line(2, &format!("deny {}", string(&reason.value)));
        }
        if let Some(visits) = &state.visits {
            self.line(2, &format!("visits {}", visits.value));
        }
        match state.next.as_ref().map(|n| &n.value) {
            Some(Next::To(target)) => self.line(2, &format!("next {target}")),
            Some(Next::ByLabel(labels)) => {
                let arrows: Vec<String> = labels
                    .iter()
                    .map(|(l, t)| format!("{} -> {t}", l.value))
                    .collect();
                self.line(2, &format!("next {}", arrows.join(", ")));
            }
            None => {}
        }
        if let Some(fail) = &state.fail {
            self.line(2, &format!("fail {}", fail.value));
        }
        self.line(1, "}");
        Ok(())
    }

    fn action(&mut self, indent: usize, action: &Spanned<Action>) -> Result<(), String> {
        match &action.value {
            Action::Provision(target) => self.line(indent, &format!("provision {}", target.value)),
            Action::LockUser(lock) => self.line(
                indent,
                &format!(
                    "lock_user after {} for {}",
                    lock.after.value, lock.duration.value
                ),
            ),
            Action::SetClaim(claims) => {
                for (claim, expr) in claims.iter() {
                    self.line(
                        indent,
                        &format!("set_claim {} {}", claim.value, script(expr)?),
                    );
                }
            }
            Action::Jit(idp) => self.line(indent, &format!("jit {}", idp.value)),
        }
        Ok(())
    }

    fn jit(&mut self, rule: &JitRule) -> Result<(), String> {
        self.line(1, &format!("jit {} {{", rule.idp.value));
        if let Some(when) = &rule.when {
            self.line(2, &format!("when {}", script(when)?));
        }
        if let Some(attribute) = &rule.match_on {
            self.line(2, &format!("match {}", attribute.value));
        }
        if let Some(create) = &rule.create {
            self.line(2, "create {");
            self.line(3, &format!("username {}", script(&create.username)?));
            for (name, expr) in create.attributes.iter() {
                self.line(3, &format!("attribute {} {}", name.value, script(expr)?));
            }
            if !create.roles.is_empty() {
                self.line(3, &format!("roles {}", names(&create.roles)));
            }
            self.line(2, "}");
        }
        if !rule.prompt.is_empty() {
            let prompts: Vec<&str> = rule.prompt.iter().map(|p| p.value.as_str()).collect();
            self.line(2, &format!("prompt {}", prompts.join(", ")));
        }
        self.line(1, "}");
        Ok(())
    }
}
