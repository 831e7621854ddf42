//! `idflow flow graph`: draws the compiled state machine.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use idflow_dsl::graph::{GraphFormat, render};

use crate::cli::EXIT_OK;

/// Arguments of `flow graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The flow file.
    pub file: PathBuf,
    /// idflow.toml to check names against (IdPs' verified attributes matter to JIT rules).
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
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
    };
    crate::cli::out(&render(&compiled.ir, format));
    EXIT_OK
}
