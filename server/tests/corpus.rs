//! The broken-flow corpus: every case under `tests/flows/broken` (a file, or a directory of
//! files checked together) states the diagnostics it must produce in `# expect: CODE LINE:COL`
//! header lines; the test checks those exactly (no missing, no unexpected errors) and compares
//! the rendered output with `NAME.yaml.expected` (or `DIR/all.expected`). A missing `.expected` is written and the test
//! fails, so new cases are reviewed; `UPDATE_EXPECT=1` rewrites them all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use idflow::{config, sources};
use idflow_dsl::render::{self, FileDiagnostics};
use idflow_dsl::{Severity, check_project};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(code, line, col)` triples from `# expect:` lines.
fn expectations(text: &str) -> BTreeSet<(String, usize, usize)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("# expect:"))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            let code = parts.next().expect("code").to_string();
            let (line, col) = parts
                .next()
                .expect("LINE:COL")
                .split_once(':')
                .expect("LINE:COL");
            (code, line.parse().expect("line"), col.parse().expect("col"))
        })
        .collect()
}

#[test]
fn every_broken_flow_reports_exactly_its_expected_diagnostics() {
    let root = repo().join("tests/flows/broken");
    let names = config::load_names(&repo().join("tests/flows/idflow.toml")).expect("corpus config");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() || idflow_dsl::Syntax::from_path(&p.to_string_lossy()).is_some())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus has only {} cases",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let collected = sources::collect(std::slice::from_ref(case)).expect("readable");
        assert!(
            collected.unreadable.is_empty(),
            "{}: unreadable files",
            case.display()
        );
        let reports = check_project(&collected.files, &names);
        let mut rendered = String::new();
        let mut case_failures = Vec::new();
        for (file, report) in collected.files.iter().zip(&reports) {
            let relative = file.name.replace(&format!("{}/", root.display()), "");
            let view = FileDiagnostics {
                name: &relative,
                text: &file.text,
                diagnostics: &report.diagnostics,
            };
            // Notes name other files by path: keep snapshots independent of the checkout's location.
            rendered.push_str(&render::human(&view).replace(&format!("{}/", root.display()), ""));
            let expected = expectations(&file.text);
            let located = render::locate(&view);
            let found: BTreeSet<(String, usize, usize)> = located
                .iter()
                .map(|l| (l.diagnostic.code.to_string(), l.line, l.column))
                .collect();
            for missing in expected.difference(&found) {
                case_failures.push(format!(
                    "{relative}: expected {} at {}:{} was not reported",
                    missing.0, missing.1, missing.2
                ));
            }
            for l in &located {
                let key = (l.diagnostic.code.to_string(), l.line, l.column);
                if l.diagnostic.severity == Severity::Error && !expected.contains(&key) {
                    case_failures.push(format!(
                        "{relative}: unexpected {} at {}:{}: {}",
                        key.0, key.1, key.2, l.diagnostic.message
                    ));
                }
            }
        }
        if reports.iter().all(|r| r.diagnostics.is_empty()) {
            case_failures.push(format!(
                "{}: produced no diagnostics at all",
                case.display()
            ));
        }
        let snapshot = if case.is_dir() {
            case.join("all.expected")
        } else {
            PathBuf::from(format!("{}.expected", case.display()))
        };
        match std::fs::read_to_string(&snapshot) {
            Ok(old) if old == rendered => {}
            Ok(_) if !update => case_failures.push(format!(
                "{}: output differs from {} (UPDATE_EXPECT=1 to accept):\n{rendered}",
                case.display(),
                snapshot.display()
            )),
            _ => {
                std::fs::write(&snapshot, &rendered).expect("write snapshot");
                if !update {
                    case_failures.push(format!(
                        "{}: wrote new snapshot {}; review and rerun",
                        case.display(),
                        snapshot.display()
                    ));
                }
            }
        }
        failures.extend(case_failures);
    }
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_code_that_a_flow_file_can_trigger() {
    let root = repo().join("tests/flows/broken");
    let names = config::load_names(&repo().join("tests/flows/idflow.toml")).expect("corpus config");
    let collected = sources::collect(&[root]).expect("readable");
    let mut seen = BTreeSet::new();
    // Check each top-level case separately, as the main test does.
    for file in &collected.files {
        for report in check_project(std::slice::from_ref(file), &names) {
            seen.extend(report.diagnostics.iter().map(|d| d.code));
        }
    }
    for report in check_project(&collected.files, &names) {
        seen.extend(report.diagnostics.iter().map(|d| d.code));
    }
    let missing: Vec<&str> = idflow_dsl::Code::ALL
        .iter()
        .filter(|c| !seen.contains(c) && **c != idflow_dsl::Code::Unreadable)
        .map(|c| c.as_str())
        .collect();
    assert!(missing.is_empty(), "no corpus case triggers {missing:?}");
}
