//! `idflow flow ...`: the policy-as-code verbs for flow files.

use std::path::Path;

use clap::Subcommand;
use idflow_dsl::render::{self, FileDiagnostics};
use idflow_dsl::{CompiledFlow, Names};

use super::{EXIT_PROBLEMS, EXIT_USAGE};

pub mod api;
pub mod check;
pub mod compile;
pub mod diff;
pub mod explain;
pub mod fmt;
pub mod graph;
pub mod schema;
pub mod test;

/// Subcommands of `idflow flow`.
#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Check flow files and directories; exit 1 if any has errors.
    Check(check::CheckArgs),
    /// Compile one flow and print its IR (canonical JSON) or version.
    Compile(compile::CompileArgs),
    /// Print a flow in YAML or .flow syntax (converting between them), or check formatting.
    Fmt(fmt::FmtArgs),
    /// Draw a flow's compiled state machine as Mermaid or Graphviz dot.
    Graph(graph::GraphArgs),
    /// Print the JSON Schema of the YAML form.
    Schema(schema::SchemaArgs),
    /// Print the script API available to Rhai conditions and decisions.
    Api,
    /// Run the scenario files (`*.test.yaml`) beside flows.
    Test(test::TestArgs),
    /// Dry-run one scenario and print its trace.
    Explain(explain::ExplainArgs),
    /// Show what changed in the state machine between two flow files.
    Diff(diff::DiffArgs),
}

/// Runs a flow subcommand.
pub fn run(command: FlowCommand) -> u8 {
    match command {
        FlowCommand::Check(args) => check::run(&args),
        FlowCommand::Compile(args) => compile::run(&args),
        FlowCommand::Fmt(args) => fmt::run(&args),
        FlowCommand::Graph(args) => graph::run(&args),
        FlowCommand::Schema(args) => schema::run(&args),
        FlowCommand::Api => api::run(),
        FlowCommand::Test(args) => test::run(&args),
        FlowCommand::Explain(args) => explain::run(&args),
        FlowCommand::Diff(args) => diff::run(&args),
    }
}

/// Loads names from `--config`, or none (names of applications, IdPs and targets then go
/// unchecked). Prints the error and returns `Err(exit code)` on failure.
pub fn names(config: Option<&Path>) -> Result<Names, u8> {
    // `--config` or IDFLOW_CONFIG (clap reads both), else `idflow.toml` in the current directory.
    let discovered = Path::new(crate::config::DEFAULT_CONFIG);
    let config = config.or_else(|| discovered.is_file().then_some(discovered));
    match config {
        None => Ok(Names::default()),
        Some(path) => crate::config::load_names(path).map_err(|e| {
            eprintln!("error: {e}");
            EXIT_USAGE
        }),
    }
}

/// Reads and compiles one flow file for the commands that need a clean flow. On problems it
/// prints them (human format) and returns `Err(exit code)`.
pub fn compile_one(
    path: &Path,
    config: Option<&Path>,
) -> Result<(idflow_dsl::SourceFile, CompiledFlow), u8> {
    let names = names(config)?;
    let file = match crate::sources::read(path) {
        Ok(file) => file,
        Err(diagnostic) => {
            if !path.exists() {
                eprintln!("error: cannot read {}: no such file", path.display());
                return Err(EXIT_USAGE);
            }
            let diagnostics = [diagnostic];
            eprint!(
                "{}",
                render::human(&FileDiagnostics {
                    name: &path.display().to_string(),
                    text: "",
                    diagnostics: &diagnostics
                })
            );
            return Err(EXIT_PROBLEMS);
        }
    };
    let (compiled, diagnostics) = idflow_dsl::compile(&file.text, file.syntax, &names);
    if !diagnostics.is_empty() {
        eprint!(
            "{}",
            render::human(&FileDiagnostics {
                name: &file.name,
                text: &file.text,
                diagnostics: &diagnostics
            })
        );
    }
    match compiled {
        Some(compiled) => Ok((file, compiled)),
        None => Err(EXIT_PROBLEMS),
    }
}
