//! `idflow flow diff`: what changed between two versions of a flow's state machine — states,
//! transitions, scripts, options, invariants, JIT rules and triggers — from the IR, never text.

use idflow_dsl::FlowIr;
use idflow_dsl::ir::State;

/// One change, as a line for people: `+` added, `-` removed, `~` changed.
pub fn diff(old: &FlowIr, new: &FlowIr) -> Vec<String> {
    let mut lines = Vec::new();
    if old.flow != new.flow {
        lines.push(format!("~ flow id {} -> {}", old.flow, new.flow));
    }
    if old.start != new.start {
        lines.push(format!("~ start {} -> {}", old.start, new.start));
    }
    if old.applies_to != new.applies_to {
        lines.push(format!(
            "~ applies_to [{}] -> [{}]",
            old.applies_to.join(", "),
            new.applies_to.join(", ")
        ));
    }
    if old.default != new.default {
        lines.push(format!("~ default {} -> {}", old.default, new.default));
    }
    for (id, state) in &old.states {
        match new.states.get(id) {
            None => lines.push(format!("- state {id} ({})", describe(state))),
            Some(after) => state_changes(id, state, after, &mut lines),
        }
    }
    for (id, state) in &new.states {
        if !old.states.contains_key(id) {
            lines.push(format!("+ state {id} ({})", describe(state)));
            for (label, to) in &state.transitions {
                lines.push(format!("+ {id} --{label}--> {to}"));
            }
        }
    }
    list_changes("require", &old.require, &new.require, &mut lines);
    list_changes("jit rule", &old.jit, &new.jit, &mut lines);
    let same_rules = old.jit.len() == new.jit.len() && old.jit.iter().all(|r| new.jit.contains(r));
    if same_rules && old.jit != new.jit {
        // The first matching rule wins, so order is meaning.
        lines.push("~ jit rules reordered".to_string());
    }
    list_changes(
        "provisioning",
        &old.provisioning,
        &new.provisioning,
        &mut lines,
    );
    lines
}

fn describe(state: &State) -> String {
    serde_json::to_string(&state.kind).unwrap_or_default()
}

fn state_changes(id: &str, before: &State, after: &State, lines: &mut Vec<String>) {
    if before.kind != after.kind {
        lines.push(format!(
            "~ state {id}: {} -> {}",
            describe(before),
            describe(after)
        ));
    }
    if before.max_visits != after.max_visits {
        lines.push(format!(
            "~ state {id}: visits {:?} -> {:?}",
            before.max_visits, after.max_visits
        ));
    }
    for (label, to) in &before.transitions {
        match after.transitions.get(label) {
            None => lines.push(format!("- {id} --{label}--> {to}")),
            Some(new_to) if new_to != to => {
                lines.push(format!("~ {id} --{label}--> {to} -> {new_to}"))
            }
            Some(_) => {}
        }
    }
    for (label, to) in &after.transitions {
        if !before.transitions.contains_key(label) {
            lines.push(format!("+ {id} --{label}--> {to}"));
        }
    }
}

fn list_changes<T: PartialEq + serde::Serialize>(
    what: &str,
    old: &[T],
    new: &[T],
    lines: &mut Vec<String>,
) {
    for item in old.iter().filter(|i| !new.contains(i)) {
        lines.push(format!(
            "- {what} {}",
            serde_json::to_string(item).unwrap_or_default()
        ));
    }
    for item in new.iter().filter(|i| !old.contains(i)) {
        lines.push(format!(
            "+ {what} {}",
            serde_json::to_string(item).unwrap_or_default()
        ));
    }
}
