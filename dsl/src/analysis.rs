//! Graph checks over the IR: reachability, paths to success, bounded cycles, and the flow's
//! `require` invariants. They run on the IR, not the source, so both forms get the same checks.
//!
//! Conservative: every transition is taken to be possible (a `when` may be false, any label may
//! be returned, any attempt may fail), so a reported path is structurally possible.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::diagnostic::{Code, Diagnostic};
use crate::ir::{self, FlowIr, InvariantIr, StateKind};
use crate::lower::SpanTable;
use crate::span::Span;

/// States the compiler adds; they are never reported as unreachable and are dropped when unused.
const GENERATED: &[&str] = &[
    ir::SUCCESS,
    ir::DENY,
    ir::SCRIPT_ERROR,
    ir::ON_SUCCESS,
    ir::ON_FAILURE,
];

/// Runs every graph check, appending diagnostics, and drops generated states nothing reaches.
pub fn analyze(
    ir: &mut FlowIr,
    spans: &SpanTable,
    flow_span: Span,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if !ir.states.contains_key(&ir.start) {
        return;
    }
    let reachable = reachable_from(ir, &ir.start, &BTreeSet::new());
    let span_of = |id: &str| spans.get(id).copied().unwrap_or(flow_span);

    for id in ir.states.keys() {
        if !reachable.contains(id) && !GENERATED.contains(&id.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    Code::Unreachable,
                    span_of(id),
                    format!("state `{id}` can never be entered"),
                )
                .with_hint("make a transition lead to it, or remove it"),
            );
        }
    }

    let succeeding = can_reach_success(ir);
    let success_reachable = reachable.iter().any(|id| succeeding.contains(id));
    if !success_reachable {
        diagnostics.push(
            Diagnostic::error(
                Code::SuccessUnreachable,
                flow_span,
                format!("no path leads from `{}` to success", ir.start),
            )
            .with_hint("at least one transition must lead to `success`"),
        );
    } else {
        for id in &reachable {
            let Some(state) = ir.states.get(id) else {
                continue;
            };
            let asks_or_decides = matches!(
                state.kind,
                StateKind::Authenticate { .. }
                    | StateKind::Register { .. }
                    | StateKind::Decide { .. }
            );
            if asks_or_decides && !succeeding.contains(id) {
                diagnostics.push(
                    Diagnostic::error(
                        Code::CannotSucceed,
                        span_of(id),
                        format!("no path leads from state `{id}` to success"),
                    )
                    .with_hint("every transition from here ends in a denial"),
                );
            }
        }
    }

    // A cycle is bounded only if it cannot be traversed without entering a state with
    // `visits`: remove those states and any cycle that remains is unbounded.
    let unbounded: BTreeSet<String> = reachable
        .iter()
        .filter(|id| ir.states.get(*id).is_some_and(|s| s.max_visits.is_none()))
        .cloned()
        .collect();
    for cycle in cycles(ir, &unbounded) {
        let first = cycle
            .iter()
            .min_by_key(|id| span_of(id))
            .cloned()
            .unwrap_or_default();
        diagnostics.push(
            Diagnostic::error(
                Code::UnboundedCycle,
                span_of(&first),
                format!("states {} form a cycle with no bound", quote_all(&cycle)),
            )
            .with_hint(format!(
                "bound `{first}` with `visits` so a login cannot loop forever"
            )),
        );
    }

    for (id, actions) in [
        (ir::ON_SUCCESS, "on_success"),
        (ir::ON_FAILURE, "on_failure"),
    ] {
        if ir.states.contains_key(id) && !reachable.contains(id) {
            diagnostics.push(
                Diagnostic::warning(
                    Code::Unreachable,
                    span_of(id),
                    format!("the `{actions}` actions never run"),
                )
                .with_hint(if id == ir::ON_FAILURE {
                    "no failure leads to `deny`: every `fail` goes elsewhere"
                } else {
                    "no path leads to `success`"
                }),
            );
        }
    }

    if success_reachable {
        check_credential(ir, flow_span, diagnostics);
    }

    for (i, invariant) in ir.require.clone().iter().enumerate() {
        let span = spans
            .get(&crate::lower::invariant_key(i))
            .copied()
            .unwrap_or(flow_span);
        check_invariant(ir, invariant, span, diagnostics);
    }

    ir.states
        .retain(|id, _| reachable.contains(id) || !GENERATED.contains(&id.as_str()));
}

fn quote_all(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// States reachable from `from` without entering any state in `avoid`.
fn reachable_from(ir: &FlowIr, from: &str, avoid: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([from.to_string()]);
    let mut queue = VecDeque::from([from.to_string()]);
    while let Some(id) = queue.pop_front() {
        let Some(state) = ir.states.get(&id) else {
            continue;
        };
        for to in state.transitions.values() {
            if !avoid.contains(to) && seen.insert(to.clone()) {
                queue.push_back(to.clone());
            }
        }
    }
    seen
}

/// States from which a `Success` state can be reached.
fn can_reach_success(ir: &FlowIr) -> BTreeSet<String> {
    let mut incoming: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, state) in &ir.states {
        for to in state.transitions.values() {
            incoming.entry(to.as_str()).or_default().push(id.as_str());
        }
    }
    let mut seen: BTreeSet<String> = ir
        .states
        .iter()
        .filter(|(_, s)| matches!(s.kind, StateKind::Success))
        .map(|(id, _)| id.clone())
        .collect();
    let mut queue: VecDeque<String> = seen.iter().cloned().collect();
    while let Some(id) = queue.pop_front() {
        for from in incoming.get(id.as_str()).into_iter().flatten() {
            if seen.insert(from.to_string()) {
                queue.push_back(from.to_string());
            }
        }
    }
    seen
}

/// Strongly connected components that contain a cycle (Kosaraju, iterative), among `within`.
fn cycles(ir: &FlowIr, within: &BTreeSet<String>) -> Vec<Vec<String>> {
    let ids: Vec<&String> = within
        .iter()
        .filter(|id| ir.states.contains_key(*id))
        .collect();
    let index: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| {
            ir.states[*id]
                .transitions
                .values()
                .filter_map(|to| index.get(to.as_str()).copied())
                .collect()
        })
        .collect();
    let mut reverse = vec![Vec::new(); ids.len()];
    for (from, tos) in edges.iter().enumerate() {
        for &to in tos {
            reverse[to].push(from);
        }
    }
    // First pass: finishing order.
    let mut visited = vec![false; ids.len()];
    let mut order = Vec::with_capacity(ids.len());
    for root in 0..ids.len() {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if let Some(&to) = edges[node].get(next) {
                stack.push((node, next + 1));
                if !visited[to] {
                    visited[to] = true;
                    stack.push((to, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    // Second pass: components on the reverse graph.
    let mut component = vec![usize::MAX; ids.len()];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for &root in order.iter().rev() {
        if component[root] != usize::MAX {
            continue;
        }
        let c = components.len();
        components.push(Vec::new());
        component[root] = c;
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            components[c].push(node);
            for &from in &reverse[node] {
                if component[from] == usize::MAX {
                    component[from] = c;
                    stack.push(from);
                }
            }
        }
    }
    components
        .into_iter()
        .filter(|members| {
            members.len() > 1 || members.first().is_some_and(|&m| edges[m].contains(&m))
        })
        .map(|members| {
            let mut names: Vec<String> = members.into_iter().map(|m| ids[m].clone()).collect();
            names.sort();
            names
        })
        .collect()
}

/// The invariant every flow has without writing it: each path to success passes a step that
/// verifies something (any authenticator but `identifier_first`, which only asks who the user
/// is). A step offering `identifier_first` beside a credential does not count, since the user
/// may pick `identifier_first`.
fn check_credential(ir: &FlowIr, flow_span: Span, diagnostics: &mut Vec<Diagnostic>) {
    let identify = crate::ir::AuthOption::Authenticator("identifier_first".into());
    // Enrolling proves possession of a new factor, not who the user is: it verifies nothing.
    let verifying: BTreeSet<String> = ir
        .states
        .iter()
        .filter(|(_, s)| match &s.kind {
            StateKind::Authenticate {
                options, enroll, ..
            } => !enroll && !options.is_empty() && !options.contains(&identify),
            // Creating an account sets its password: the person is who the account says.
            StateKind::Register { .. } => true,
            _ => false,
        })
        .map(|(id, _)| id.clone())
        .collect();
    let enrolling = |state: &crate::ir::State| {
        matches!(state.kind, StateKind::Authenticate { enroll: true, .. })
    };
    if let Some(path) = path_without(ir, &verifying, enrolling) {
        diagnostics.push(
            Diagnostic::error(Code::EnrollWithoutCredential, flow_span, "a path reaches an `enroll` step without verifying any credential first")
                .with_note(format!("path: {}", describe_path(ir, &path)))
                .with_hint("whoever reaches it could set up their own factor on someone else's account; put a credential (password, passkey, ...) before it"),
        );
    }
    if let Some(path) = path_to_success_without(ir, &verifying) {
        diagnostics.push(
            Diagnostic::error(Code::NoCredential, flow_span, "a path reaches success without verifying any credential")
                .with_note(format!("path: {}", describe_path(ir, &path)))
                .with_hint("identifier_first only asks who the user is; add a step that verifies them, and do not offer identifier_first beside a credential"),
        );
    }
}

fn check_invariant(
    ir: &FlowIr,
    invariant: &InvariantIr,
    span: Span,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let InvariantIr::PassesOneOf { options } = invariant;
    let wanted: BTreeSet<_> = options.iter().collect();
    let satisfying: BTreeSet<String> = ir
        .states
        .iter()
        .filter(|(_, s)| match &s.kind {
            StateKind::Authenticate { options, .. } => options.iter().all(|o| wanted.contains(o)),
            _ => false,
        })
        .map(|(id, _)| id.clone())
        .collect();
    if let Some(path) = path_to_success_without(ir, &satisfying) {
        let names: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        diagnostics.push(
            Diagnostic::error(
                Code::InvariantViolated,
                span,
                format!("a path to success passes none of [{}]", names.join(", ")),
            )
            .with_note(format!("path: {}", describe_path(ir, &path)))
            .with_hint(
                "a step counts only when it is passed and every option it offers is in the list",
            ),
        );
    }
}

/// A shortest path from the start to a success state on which no state of `satisfying` is
/// *passed* (left by its `success` transition). Entering a satisfying state and leaving it by
/// `failure` does not count, so the search runs over (state, passed-yet) pairs.
fn path_to_success_without(
    ir: &FlowIr,
    satisfying: &BTreeSet<String>,
) -> Option<Vec<(String, Option<String>)>> {
    path_without(ir, satisfying, |state| {
        matches!(state.kind, StateKind::Success)
    })
}

/// A path from the start to a state for which `target` holds that passes none of the
/// `satisfying` states successfully, if there is one.
fn path_without(
    ir: &FlowIr,
    satisfying: &BTreeSet<String>,
    target: impl Fn(&crate::ir::State) -> bool,
) -> Option<Vec<(String, Option<String>)>> {
    type Node = (String, bool);
    let start: Node = (ir.start.clone(), false);
    let mut parent: BTreeMap<Node, (Node, String)> = BTreeMap::new();
    let mut seen = BTreeSet::from([start.clone()]);
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let (id, passed) = &node;
        let state = ir.states.get(id)?;
        if target(state) {
            if *passed {
                continue;
            }
            let mut path = vec![(id.clone(), None)];
            let mut at = node.clone();
            while let Some((from, label)) = parent.get(&at) {
                path.push((from.0.clone(), Some(label.clone())));
                at = from.clone();
            }
            path.reverse();
            return Some(path);
        }
        for (label, to) in &state.transitions {
            let passes_here = satisfying.contains(id) && label == ir::LABEL_SUCCESS;
            let next: Node = (to.clone(), *passed || passes_here);
            if next.1 {
                // Every path on from here satisfies the invariant.
                continue;
            }
            if seen.insert(next.clone()) {
                parent.insert(next.clone(), (node.clone(), label.clone()));
                queue.push_back(next);
            }
        }
    }
    None
}

fn describe_path(ir: &FlowIr, path: &[(String, Option<String>)]) -> String {
    path.iter()
        .map(|(id, label)| {
            let what = match ir.states.get(id).map(|s| &s.kind) {
                Some(StateKind::Authenticate { options, .. }) => {
                    format!(
                        "{id} [{}]",
                        options
                            .iter()
                            .map(|o| o.to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )
                }
                _ => id.clone(),
            };
            match label {
                Some(label) => format!("{what} --{label}-->"),
                None => what,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
