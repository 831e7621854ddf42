//! `idflow flow explain`: a dry run of one scenario — every state entered and why, the output
//! and the effects that would be applied — with no assertions and nothing applied.

use std::path::PathBuf;

use clap::Args;
use idflow_engine::Engine;
use idflow_engine::scenario;

use crate::cli::{EXIT_OK, EXIT_PROBLEMS, out};
use crate::sources;

/// Arguments of `flow explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The flow file; its scenarios are read from `*.test.yaml` files in the same directory.
    pub file: PathBuf,
    /// The scenario's name.
    #[arg(long)]
    pub scenario: String,
    /// idflow.toml to check the flow against.
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs `flow explain`.
pub fn run(args: &ExplainArgs) -> u8 {
    let (_, compiled) = match super::compile_one(&args.file, args.config.as_deref()) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let engine = Engine::new();
    let id = compiled.ir.flow.clone();
    let flow = match engine.load(compiled.ir) {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_PROBLEMS;
        }
    };
    let dir = args
        .file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let files = sources::collect_scenarios(&[dir]).unwrap_or_default();
    for (name, text) in files {
        let Ok(file) = scenario::parse(&text) else {
            continue;
        };
        if file.flow != id {
            continue;
        }
        if let Some(s) = file.scenarios.iter().find(|s| s.name == args.scenario) {
            let outcome = scenario::run(&engine, &flow, s);
            let mut text = format!(
                "scenario \"{}\" ({name}) on {id} {}\n\npath: {}\n\ntrace:\n",
                s.name,
                flow.version,
                outcome.path.join(" -> ")
            );
            for entry in &outcome.trace {
                text.push_str(&format!("  {entry}\n"));
            }
            text.push_str(&format!(
                "\noutput: {}\n",
                serde_json::to_string(&outcome.output).unwrap_or_default()
            ));
            text.push_str("\neffects (not applied):\n");
            for effect in &outcome.effects {
                text.push_str(&format!(
                    "  {}\n",
                    serde_json::to_string(effect).unwrap_or_default()
                ));
            }
            out(&text);
            return EXIT_OK;
        }
    }
    eprintln!(
        "error: no scenario named \"{}\" for flow `{id}` in the flow's directory",
        args.scenario
    );
    crate::cli::EXIT_USAGE
}
