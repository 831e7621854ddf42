//! `idflow flow graph`: draws the compiled state machine.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use std::collections::BTreeSet;

use idflow_dsl::graph::{GraphFormat, render_covered};

use crate::cli::EXIT_OK;

/// Arguments of `flow graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The flow file.
    pub file: PathBuf,
    /// idflow.toml to check names against (IdPs' verified attributes matter to JIT rules).
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// A `flow test --coverage --format json` report: transitions it did not cover are marked.
    #[arg(long)]
    pub coverage: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,
}

/// Graph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Mermaid stateDiagram-v2 (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz dot.
    Dot,
    /// A self-contained SVG picture.
    Svg,
}

/// Runs `flow graph`.
pub fn run(args: &GraphArgs) -> u8 {
    let (_, compiled) = match super::compile_one(&args.file, args.config.as_deref()) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let format = match args.format {
        Format::Mermaid => GraphFormat::Mermaid,
        Format::Dot => GraphFormat::Dot,
        Format::Svg => GraphFormat::Svg,
    };
    let covered = match &args.coverage {
        None => None,
        Some(path) => match covered_transitions(path, &compiled.ir.flow) {
            Ok(covered) => Some(covered),
            Err(message) => {
                eprintln!("error: {message}");
                return crate::cli::EXIT_USAGE;
            }
        },
    };
    crate::cli::out(&render_covered(&compiled.ir, format, covered.as_ref()));
    EXIT_OK
}

/// The transitions of `flow` that a coverage report says were taken.
fn covered_transitions(
    path: &std::path::Path,
    flow: &str,
) -> Result<BTreeSet<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a `flow test --format json` report: {e}",
            path.display()
        )
    })?;
    let entry = report["coverage"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["flow"] == flow))
        .ok_or_else(|| format!("{} has no coverage for flow `{flow}`", path.display()))?;
    let covered: BTreeSet<(String, String)> =
        serde_json::from_value(entry["covered_transitions"].clone())
            .map_err(|e| format!("{}: bad coverage entry: {e}", path.display()))?;
    Ok(covered)
}
