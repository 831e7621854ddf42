//! Property tests: no input makes a front end, the checker, the renderers, the printers or the
//! graph panic, with or without a configuration. Inputs are random
//! text, random token soup in each syntax, and the shipped flows with random edits applied.
//!
//! `IDFLOW_FUZZ_CASES=N` runs N cases per property (a longer run); failures are not persisted
//! to `proptest-regressions/`: a failure found becomes a named `regression_` test here.

use std::path::Path;

use idflow_dsl::{Names, Syntax, compile};
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "flow",
    "step",
    "state",
    "when",
    "authenticate",
    "decide",
    "next",
    "fail",
    "do",
    "deny",
    "visits",
    "attempts",
    "on",
    "success",
    "failure",
    "jit",
    "match",
    "create",
    "prompt",
    "provision",
    "provisioning",
    "require",
    "passes",
    "one",
    "of",
    "federated",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "|",
    "->",
    "-",
    "`",
    "\"",
    "'",
    "#",
    "\n",
    "  ",
    "password",
    "totp",
    "x",
    "1",
    "15m",
    "&a",
    "*a",
    "<<",
    "!!str",
    "---",
    "...",
    "`user.has_role(\"a\")`",
    "\u{feff}",
    "é",
];

/// Cases per property: `IDFLOW_FUZZ_CASES` when set, else `default` (which keeps this file to
/// a few seconds in a debug build). No failure file: a failure becomes a named test.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("IDFLOW_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn seeds() -> Vec<(String, Syntax)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows");
    let mut seeds: Vec<(String, Syntax)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.path().to_string_lossy().to_string();
                    let syntax = Syntax::from_path(&name)?;
                    Some((std::fs::read_to_string(e.path()).ok()?, syntax))
                })
                .collect()
        })
        .unwrap_or_default();
    seeds.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!seeds.is_empty(), "no seed flows found");
    seeds
}

/// Names as a configuration would declare them, so the name checks run too.
fn configured() -> Names {
    let set = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect());
    Names {
        applications: set(&["payroll", "wiki", "crm", "console", "partner-portal"]),
        identity_providers: Some(
            [
                ("google", vec![]),
                ("acme-saml", vec!["email"]),
                ("github", vec![]),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.into_iter().map(String::from).collect()))
            .collect(),
        ),
        provisioning_targets: set(&["hr-scim"]),
    }
}

/// Everything a user can do with a file: compile it with and without a configuration, render
/// its diagnostics in every format, and for a clean flow print both syntaxes and draw it.
fn exercise(text: &str, syntax: Syntax) {
    use idflow_dsl::render::{self, FileDiagnostics};
    for names in [Names::default(), configured()] {
        let (compiled, diagnostics) = compile(text, syntax, &names);
        let view = FileDiagnostics {
            name: "fuzz",
            text,
            diagnostics: &diagnostics,
        };
        let _ = render::human(&view);
        let _ = render::github(&view);
        let _ = serde_json::to_string(&render::locate(&view));
        if let Some(compiled) = compiled {
            let _ = idflow_dsl::yaml::print(&compiled.doc);
            let _ = idflow_dsl::print::to_dsl(&compiled.doc);
            let _ =
                idflow_dsl::graph::render(&compiled.ir, idflow_dsl::graph::GraphFormat::Mermaid);
            let _ = idflow_dsl::graph::render(&compiled.ir, idflow_dsl::graph::GraphFormat::Dot);
            let _ = idflow_dsl::graph::render(&compiled.ir, idflow_dsl::graph::GraphFormat::Svg);
        }
    }
}

fn check_both(text: &str) {
    for syntax in [Syntax::Yaml, Syntax::Flow] {
        exercise(text, syntax);
    }
}

/// One random edit of `text`: delete, insert a token, or duplicate a slice.
fn mutate(text: &str, op: u8, at: usize, len: usize, token: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    let end = (at + len).min(chars.len());
    let mut out: Vec<char> = chars[..at].to_vec();
    match op % 3 {
        0 => out.extend(&chars[end..]),
        1 => {
            out.extend(token.chars());
            out.extend(&chars[at..]);
        }
        _ => {
            out.extend(&chars[at..end]);
            out.extend(&chars[at..]);
        }
    }
    out.into_iter().collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,2000}") {
        check_both(&text);
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        check_both(&tokens.join(" "));
        check_both(&tokens.concat());
    }

    #[test]
    fn mutated_shipped_flows_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), 0usize..40, prop::sample::select(TOKENS)), 1..6),
    ) {
        let seeds = seeds();
        let (mut text, syntax) = seeds[seed.index(seeds.len())].clone();
        for (op, at, len, token) in edits {
            text = mutate(&text, op, at, len, token);
        }
        exercise(&text, syntax);
    }
}
