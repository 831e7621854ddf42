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
    /// A self-contained SVG picture (layered, left to right), for pages that cannot run a
    /// layout engine: the admin console draws flows with it.
    Svg,
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
        StateKind::Register {
            verify_email,
            approval,
            ..
        } => {
            let mut label = "register".to_string();
            if *verify_email {
                label.push_str(", email verified");
            }
            if *approval {
                label.push_str(", approval");
            }
            label
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
        GraphFormat::Svg => out = svg(ir, &uncovered),
    }
    out
}

/// Text safe inside SVG (XML) content and attributes.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The states in columns: the start first, then by their shortest distance from it (states
/// nothing reaches last), each column in the order the walk found them.
fn columns(ir: &FlowIr) -> Vec<Vec<&str>> {
    let mut level: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    if ir.states.contains_key(&ir.start) {
        level.insert(ir.start.as_str(), 0);
        order.push(ir.start.as_str());
        queue.push_back(ir.start.as_str());
    }
    while let Some(id) = queue.pop_front() {
        let depth = level[id];
        if let Some(state) = ir.states.get(id) {
            for to in state.transitions.values() {
                if ir.states.contains_key(to) && !level.contains_key(to.as_str()) {
                    level.insert(to.as_str(), depth + 1);
                    order.push(to.as_str());
                    queue.push_back(to.as_str());
                }
            }
        }
    }
    let unreached = level.values().max().map_or(0, |m| m + 1);
    for id in ir.states.keys() {
        if !level.contains_key(id.as_str()) {
            level.insert(id.as_str(), unreached);
            order.push(id.as_str());
        }
    }
    let mut out: Vec<Vec<&str>> = Vec::new();
    for id in order {
        let column = level[id];
        if out.len() <= column {
            out.resize(column + 1, Vec::new());
        }
        out[column].push(id);
    }
    out
}

fn svg(ir: &FlowIr, uncovered: &dyn Fn(&str, &str) -> bool) -> String {
    const WIDTH: usize = 200;
    const HEIGHT: usize = 48;
    const GAP_X: usize = 90;
    const GAP_Y: usize = 36;
    const MARGIN: usize = 30;
    let columns = columns(ir);
    let mut at: std::collections::BTreeMap<&str, (usize, usize)> =
        std::collections::BTreeMap::new();
    for (c, column) in columns.iter().enumerate() {
        for (r, id) in column.iter().enumerate() {
            at.insert(
                id,
                (MARGIN + c * (WIDTH + GAP_X), MARGIN + r * (HEIGHT + GAP_Y)),
            );
        }
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(1);
    let width = MARGIN * 2 + columns.len().max(1) * (WIDTH + GAP_X);
    let height = MARGIN * 2 + rows * (HEIGHT + GAP_Y) + 20;
    let transitions: usize = ir.states.values().map(|s| s.transitions.len()).sum();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"graph-title graph-desc\" font-family=\"system-ui, sans-serif\" font-size=\"12\">\n<title id=\"graph-title\">flow {}</title>\n<desc id=\"graph-desc\">{} states and {transitions} transitions, starting at {}; dashed red transitions are not covered by the flow's scenarios</desc>\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"context-stroke\"/></marker></defs>\n",
        xml(&ir.flow),
        ir.states.len(),
        xml(&ir.start)
    );
    for (id, state) in &ir.states {
        let Some(&(x1, y1)) = at.get(id.as_str()) else {
            continue;
        };
        for (outcome, to) in &state.transitions {
            let Some(&(x2, y2)) = at.get(to.as_str()) else {
                continue;
            };
            let (stroke, dash) = if uncovered(id, outcome) {
                ("#b3261e", " stroke-dasharray=\"6 4\"")
            } else {
                ("#444", "")
            };
            let (sx, sy) = (x1 + WIDTH, y1 + HEIGHT / 2);
            let (tx, ty) = (x2, y2 + HEIGHT / 2);
            let path = if x2 > x1 {
                let mid = (sx + tx) / 2;
                format!("M {sx} {sy} C {mid} {sy}, {mid} {ty}, {tx} {ty}")
            } else if x2 == x1 {
                // Within a column: out of the right side and back in, clear of the boxes.
                let bulge = sx + GAP_X / 2;
                format!("M {sx} {sy} C {bulge} {sy}, {bulge} {ty}, {sx} {ty}")
            } else {
                // Back or same-column edges loop above both boxes.
                let (bx, by) = (x1 + WIDTH / 2, y1);
                let (ex, ey) = (x2 + WIDTH / 2, y2);
                let top = by.min(ey).saturating_sub(GAP_Y / 2 + 8);
                format!("M {bx} {by} C {bx} {top}, {ex} {top}, {ex} {ey}")
            };
            let (lx, ly) = if x2 > x1 {
                ((sx + tx) / 2, (sy + ty) / 2 - 4)
            } else if x2 == x1 {
                (sx + GAP_X / 2, (sy + ty) / 2)
            } else {
                (
                    (x1 + x2 + WIDTH) / 2,
                    y1.min(y2).saturating_sub(GAP_Y / 2 + 4),
                )
            };
            out.push_str(&format!(
                "<g class=\"edge\"><title>{} → {}: {}</title><path d=\"{path}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#arrow)\"/><text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" fill=\"{stroke}\">{}</text></g>\n",
                xml(id),
                xml(to),
                xml(outcome),
                xml(&clip(outcome, 24))
            ));
        }
    }
    for (id, state) in &ir.states {
        let Some(&(x, y)) = at.get(id.as_str()) else {
            continue;
        };
        let fill = match state.kind {
            StateKind::Authenticate { .. } | StateKind::Register { .. } => "#dbe9ff",
            StateKind::Decide { .. } => "#fff3c4",
            StateKind::Action { .. } => "#ececec",
            StateKind::Success => "#d3f5dc",
            StateKind::Deny { .. } => "#ffdcd9",
        };
        let detail = label(&state.kind);
        let start = if *id == ir.start { " (start)" } else { "" };
        out.push_str(&format!(
            "<g class=\"state\"><title>{}{start}: {}</title><rect x=\"{x}\" y=\"{y}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" rx=\"8\" fill=\"{fill}\" stroke=\"#333\" stroke-width=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"600\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">{}</text></g>\n",
            xml(id),
            xml(&detail),
            if start.is_empty() { 1 } else { 3 },
            x + WIDTH / 2,
            y + 19,
            xml(&clip(id, 28)),
            x + WIDTH / 2,
            y + 36,
            xml(&clip(&detail, 32))
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Names, Syntax, compile};

    const FLOW: &str = "flow: demo\ndefault: true\nsteps:\n- id: password\n  authenticate:\n  - password\n  attempts: 3\n";

    #[test]
    fn the_svg_draws_every_state_and_marks_uncovered_transitions() {
        let (compiled, diagnostics) = compile(FLOW, Syntax::Yaml, &Names::default());
        let ir = compiled.unwrap_or_else(|| panic!("{diagnostics:?}")).ir;
        let covered: std::collections::BTreeSet<(String, String)> = ir
            .states
            .iter()
            .flat_map(|(id, s)| s.transitions.keys().map(move |l| (id.clone(), l.clone())))
            .filter(|(id, _)| id != "password")
            .collect();
        let drawn = render_covered(&ir, GraphFormat::Svg, Some(&covered));
        assert!(drawn.starts_with("<svg ") && drawn.trim_end().ends_with("</svg>"));
        for id in ir.states.keys() {
            assert!(drawn.contains(&format!("<title>{id}")), "{id} is drawn");
        }
        let dashed = drawn.matches("stroke-dasharray").count();
        let from_password = ir.states["password"]
            .transitions
            .keys()
            .filter(|l| l.as_str() != crate::ir::LABEL_ERROR)
            .count();
        assert_eq!(
            dashed, from_password,
            "only the password state's edges are uncovered"
        );
        assert_eq!(
            drawn.matches("<g class=\"state\">").count(),
            ir.states.len()
        );
    }

    #[test]
    fn svg_text_is_escaped() {
        assert_eq!(
            xml("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
