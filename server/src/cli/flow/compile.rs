//! `idflow flow compile`: prints the IR a flow compiles to, as canonical JSON (stable key
//! order, so two forms of one flow print byte-identical output), or just its version.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::EXIT_OK;

/// Arguments of `flow compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The flow file.
    pub file: PathBuf,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Emit::Ir)]
    pub emit: Emit,
    /// idflow.toml to check names against.
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
}

/// What `flow compile` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The IR as pretty-printed canonical JSON.
    Ir,
    /// The version (hash of the canonical IR).
    Version,
}

/// Runs `flow compile`.
pub fn run(args: &CompileArgs) -> u8 {
    let (_, compiled) = match super::compile_one(&args.file, args.config.as_deref()) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    match args.emit {
        Emit::Ir => crate::cli::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&compiled.ir).unwrap_or_default()
        )),
        Emit::Version => crate::cli::out(&format!("{}\n", compiled.version)),
    }
    EXIT_OK
}
