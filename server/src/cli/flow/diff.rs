//! `idflow flow diff`: what changed in the state machine between two flow files (two versions,
//! or the YAML and `.flow` forms): states, transitions, scripts, invariants — not a text diff.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{EXIT_OK, out};

/// Arguments of `flow diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old flow file.
    pub old: PathBuf,
    /// The new flow file.
    pub new: PathBuf,
    /// idflow.toml to check both against.
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs `flow diff`. Exit 0 whether or not they differ; 1 if either does not compile.
pub fn run(args: &DiffArgs) -> u8 {
    let old = match super::compile_one(&args.old, args.config.as_deref()) {
        Ok((_, compiled)) => compiled,
        Err(code) => return code,
    };
    let new = match super::compile_one(&args.new, args.config.as_deref()) {
        Ok((_, compiled)) => compiled,
        Err(code) => return code,
    };
    let lines = idflow_engine::diff::diff(&old.ir, &new.ir);
    let mut text = format!("{} {} -> {}\n", new.ir.flow, old.version, new.version);
    if lines.is_empty() {
        text.push_str("no change to the state machine\n");
    }
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    out(&text);
    EXIT_OK
}
