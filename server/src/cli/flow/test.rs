//! `idflow flow test`: runs the scenario files (`*.test.yaml`) found beside flows against the
//! flows they name, with no server, and reports failures and (with `--coverage`) which states
//! and transitions the scenarios exercised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use idflow_dsl::check_project;
use idflow_dsl::render::{self, FileDiagnostics};
use idflow_engine::scenario::{self, Coverage, Outcome};
use idflow_engine::{Engine, LoadedFlow};

use crate::cli::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, out};
use crate::sources;

/// Arguments of `flow test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Directories or files holding flows and their `*.test.yaml` scenario files.
    #[arg(default_value = "flows")]
    pub paths: Vec<PathBuf>,
    /// idflow.toml to check flows against.
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Report state and transition coverage per flow (and fail unless it is complete).
    #[arg(long)]
    pub coverage: bool,
}

/// Output formats of `flow test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per scenario, details for failures.
    Human,
    /// One JSON document (the input of `flow graph --coverage`).
    Json,
    /// JUnit XML, for CI test reports.
    Junit,
}

/// The flows and scenario results of one `flow test` run.
pub struct TestRun {
    /// (scenario file, flow id, outcome) per scenario.
    pub results: Vec<(String, String, Outcome)>,
    /// Problems that are not scenario failures (bad files, unknown flows).
    pub errors: Vec<String>,
    /// Coverage per flow that has scenarios.
    pub coverage: Vec<Coverage>,
}

/// Loaded flows by flow id.
pub type FlowsById = BTreeMap<String, Arc<LoadedFlow>>;

/// Loads the clean flows under `paths` by id, with the problems of the others.
pub fn load_flows(
    engine: &Engine,
    paths: &[PathBuf],
    config: Option<&std::path::Path>,
) -> Result<(FlowsById, Vec<String>), u8> {
    let names = super::names(config)?;
    let collected = sources::collect(paths).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let mut errors = Vec::new();
    for unreadable in collected.unreadable {
        errors.push(format!(
            "{}: {}",
            unreadable.name, unreadable.diagnostic.message
        ));
    }
    let mut flows = BTreeMap::new();
    for (report, file) in check_project(&collected.files, &names)
        .into_iter()
        .zip(&collected.files)
    {
        if report.has_errors() {
            eprint!(
                "{}",
                render::human(&FileDiagnostics {
                    name: &file.name,
                    text: &file.text,
                    diagnostics: &report.diagnostics
                })
            );
            errors.push(format!("{}: the flow has errors", file.name));
            continue;
        }
        let Some(compiled) = report.compiled else {
            continue;
        };
        let id = compiled.ir.flow.clone();
        match engine.load(compiled.ir) {
            Ok(loaded) => {
                flows.entry(id).or_insert_with(|| Arc::new(loaded));
            }
            Err(e) => errors.push(format!("{}: {e}", file.name)),
        }
    }
    Ok((flows, errors))
}

/// Runs every scenario under `paths`.
pub fn run_all(engine: &Engine, args: &TestArgs) -> Result<TestRun, u8> {
    let (flows, mut errors) = load_flows(engine, &args.paths, args.config.as_deref())?;
    let files = sources::collect_scenarios(&args.paths).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let mut results = Vec::new();
    let mut by_flow: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for (name, text) in files {
        let file = match scenario::parse(&text) {
            Ok(file) => file,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Some(flow) = flows.get(&file.flow) else {
            errors.push(format!(
                "{name}: no flow `{}` under the given paths",
                file.flow
            ));
            continue;
        };
        for s in &file.scenarios {
            let outcome = scenario::run(engine, flow, s);
            by_flow
                .entry(file.flow.clone())
                .or_default()
                .push(outcome.clone());
            results.push((name.clone(), file.flow.clone(), outcome));
        }
    }
    // Every loaded flow gets a coverage line: one with no scenarios is 0% covered, not skipped.
    let coverage = flows
        .iter()
        .map(|(id, flow)| {
            scenario::coverage(flow, by_flow.get(id).map(Vec::as_slice).unwrap_or(&[]))
        })
        .collect();
    Ok(TestRun {
        results,
        errors,
        coverage,
    })
}

/// Runs `flow test`.
pub fn run(args: &TestArgs) -> u8 {
    let engine = Engine::new();
    let test_run = match run_all(&engine, args) {
        Ok(test_run) => test_run,
        Err(code) => return code,
    };
    let failed = test_run
        .results
        .iter()
        .filter(|(_, _, o)| !o.failures.is_empty())
        .count();
    let incomplete = args.coverage && test_run.coverage.iter().any(|c| !c.is_full());
    match args.format {
        Format::Human => human(&test_run, args.coverage),
        Format::Json => {
            let document = serde_json::json!({
                "passed": test_run.results.len() - failed,
                "failed": failed,
                "errors": test_run.errors,
                "scenarios": test_run.results.iter().map(|(file, flow, o)| serde_json::json!({
                    "file": file, "flow": flow, "name": o.name, "failures": o.failures, "path": o.path,
                })).collect::<Vec<_>>(),
                "coverage": test_run.coverage,
            });
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            ));
        }
        Format::Junit => out(&junit(&test_run)),
    }
    if failed > 0 || !test_run.errors.is_empty() || incomplete {
        EXIT_PROBLEMS
    } else {
        EXIT_OK
    }
}

fn human(test_run: &TestRun, coverage: bool) {
    let mut text = String::new();
    for (file, flow, outcome) in &test_run.results {
        let mark = if outcome.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        text.push_str(&format!("{mark} {flow}: {} ({file})\n", outcome.name));
        for failure in &outcome.failures {
            text.push_str(&format!("       {failure}\n"));
        }
        if !outcome.failures.is_empty() {
            text.push_str("       trace:\n");
            for entry in &outcome.trace {
                text.push_str(&format!("         {entry}\n"));
            }
        }
    }
    for error in &test_run.errors {
        text.push_str(&format!("error: {error}\n"));
    }
    if coverage {
        for c in &test_run.coverage {
            text.push_str(&format!(
                "coverage {}: states {}/{}, transitions {}/{}\n",
                c.flow, c.states.0, c.states.1, c.transitions.0, c.transitions.1
            ));
            if c.jit_rules.1 > 0 {
                text.push_str(&format!(
                    "  jit rules {}/{}\n",
                    c.jit_rules.0, c.jit_rules.1
                ));
            }
            for rule in &c.missing_jit_rules {
                text.push_str(&format!("  jit rule {rule} never decided a login\n"));
            }
            for (state, label) in &c.missing_transitions {
                text.push_str(&format!("  not taken: {state} --{label}-->\n"));
            }
        }
    }
    let failed = test_run
        .results
        .iter()
        .filter(|(_, _, o)| !o.failures.is_empty())
        .count();
    text.push_str(&format!(
        "scenarios: {} passed, {failed} failed\n",
        test_run.results.len() - failed
    ));
    out(&text);
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(test_run: &TestRun) -> String {
    let failed = test_run
        .results
        .iter()
        .filter(|(_, _, o)| !o.failures.is_empty())
        .count();
    let mut text = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"idflow flow test\" tests=\"{}\" failures=\"{failed}\" errors=\"{}\">\n",
        test_run.results.len(),
        test_run.errors.len()
    );
    for (file, flow, outcome) in &test_run.results {
        text.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" file=\"{}\"",
            xml(flow),
            xml(&outcome.name),
            xml(file)
        ));
        if outcome.failures.is_empty() {
            text.push_str("/>\n");
        } else {
            text.push_str(&format!(
                ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                xml(&outcome.failures[0]),
                xml(&outcome.failures.join("\n"))
            ));
        }
    }
    for error in &test_run.errors {
        text.push_str(&format!(
            "  <testcase classname=\"idflow\" name=\"load\"><error message=\"{}\"/></testcase>\n",
            xml(error)
        ));
    }
    text.push_str("</testsuite>\n");
    text
}
