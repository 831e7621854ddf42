//! Drawing the compiled state machine (Mermaid or Graphviz dot), from the IR, never the source:
//! the picture shows what will run, including the states the compiler added.

use crate::ir::{FlowIr, StateKind};

/// Output formats of `idflow flow graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid `stateDiagram-v2`.
    Mermaid,
    /// Graphviz dot.
    Dot,
}

fn label(kind: &StateKind) -> String {
    match kind {
        StateKind::Authenticate {
            options,
            attempts,
            enroll,
        } => {
            let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            let verb = if *enroll { "enroll" } else { "authenticate" };
            format!("{verb} {}, {attempts} attempts", options.join(" | "))
        }
        StateKind::Decide { .. } => "decide".into(),
        StateKind::Action { actions } => format!("{} action(s)", actions.len()),
        StateKind::Success => "success".into(),
        StateKind::Deny { reason } => format!("deny: {reason}"),
    }
}

/// Mermaid node ids may not contain `.` or `-`, and mapping those to `_` could merge states
/// (`a-b`, `a_b`); nodes are numbered in id order instead and show the real id as their label.
fn node_ids(ir: &FlowIr) -> std::collections::BTreeMap<&str, String> {
    ir.states
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), format!("s{i}")))
        .collect()
}

/// Draws `ir` in `format`.
pub fn render(ir: &FlowIr, format: GraphFormat) -> String {
    render_covered(ir, format, None)
}

/// Draws `ir`, marking the transitions not in `covered` (a `flow test --coverage` report) as
/// not covered: labelled so in Mermaid, dashed red in dot.
pub fn render_covered(
    ir: &FlowIr,
    format: GraphFormat,
    covered: Option<&std::collections::BTreeSet<(String, String)>>,
) -> String {
    // Fail-closed `error` edges are exempt from coverage (engine tests prove them).
    let uncovered = |id: &str, outcome: &str| {
        outcome != crate::ir::LABEL_ERROR
            && covered.is_some_and(|c| !c.contains(&(id.to_string(), outcome.to_string())))
    };
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            let ids = node_ids(ir);
            let node_id = |id: &str| {
                ids.get(id)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_string())
            };
            out.push_str("stateDiagram-v2\n");
            for (id, state) in &ir.states {
                out.push_str(&format!(
                    "    {}: {id} — {}\n",
                    node_id(id),
                    label(&state.kind).replace(':', " -")
                ));
            }
            out.push_str(&format!("    [*] --> {}\n", node_id(&ir.start)));
            for (id, state) in &ir.states {
                for (outcome, to) in &state.transitions {
                    let note = if uncovered(id, outcome) {
                        " (not covered)"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "    {} --> {}: {outcome}{note}\n",
                        node_id(id),
                        node_id(to)
                    ));
                }
                if matches!(state.kind, StateKind::Success | StateKind::Deny { .. }) {
                    out.push_str(&format!("    {} --> [*]\n", node_id(id)));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n    rankdir=LR;\n", ir.flow));
            out.push_str("    \"[start]\" [shape=point];\n");
            for (id, state) in &ir.states {
                let shape = match state.kind {
                    StateKind::Decide { .. } => "diamond",
                    StateKind::Success | StateKind::Deny { .. } => "doublecircle",
                    _ => "box",
                };
                let text = format!("{id}\\n{}", label(&state.kind).replace('"', "'"));
                out.push_str(&format!(
                    "    \"{id}\" [shape={shape}, label=\"{text}\"];\n"
                ));
            }
            out.push_str(&format!("    \"[start]\" -> \"{}\";\n", ir.start));
            for (id, state) in &ir.states {
                for (outcome, to) in &state.transitions {
                    let style = if uncovered(id, outcome) {
                        ", style=dashed, color=red, fontcolor=red"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "    \"{id}\" -> \"{to}\" [label=\"{outcome}\"{style}];\n"
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}
