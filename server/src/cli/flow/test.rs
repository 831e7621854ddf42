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
    // A directory gives both its flows and its scenarios. A flow file gives that flow, with the
    // scenarios beside it; a scenario file gives its scenarios, with the flows beside it.
    let mut flow_paths = Vec::new();
    let mut scenario_paths = Vec::new();
    // Directories searched only because a file was named: scenario files there for other flows
    // are not this run's business.
    let mut implicit = Vec::new();
    let mut named_files = false;
    for path in &args.paths {
        let beside = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        if path.is_dir() {
            flow_paths.push(path.clone());
            scenario_paths.push(path.clone());
        } else if path.to_string_lossy().ends_with(sources::SCENARIO_SUFFIX) {
            named_files = true;
            flow_paths.push(beside);
            scenario_paths.push(path.clone());
        } else {
            named_files = true;
            flow_paths.push(path.clone());
            implicit.push(beside.clone());
            scenario_paths.push(beside);
        }
    }
    flow_paths.sort();
    flow_paths.dedup();
    scenario_paths.sort();
    scenario_paths.dedup();
    let (flows, mut errors) = load_flows(engine, &flow_paths, args.config.as_deref())?;
    let files = sources::collect_scenarios(&scenario_paths).map_err(|e| {
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
            let in_implicit_dir = implicit
                .iter()
                .any(|dir| std::path::Path::new(&name).parent() == Some(dir.as_path()));
            if !in_implicit_dir {
                errors.push(format!(
                    "{name}: no flow `{}` under the given paths",
                    file.flow
                ));
            }
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
    // With only files named, coverage is about the flows they name or test.
    let coverage = flows
        .iter()
        .filter(|(id, _)| {
            !named_files || args.paths.iter().any(|p| p.is_dir()) || by_flow.contains_key(*id)
        })
        .map(|(id, flow)| {
            scenario::coverage(flow, by_flow.get(id).map(Vec::as_slice).unwrap_or(&[]))
        })
        .collect();
    if results.is_empty() {
        errors.push("no scenarios ran: put NAME.test.yaml files beside the flows".to_string());
    }
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
