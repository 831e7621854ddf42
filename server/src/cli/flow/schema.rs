//! `idflow flow schema`: the JSON Schema of the YAML form, for editors. The committed copy at
//! `schema/flow.schema.json` is compared with this output by a test.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{EXIT_OK, EXIT_USAGE};

/// Arguments of `flow schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs `flow schema`.
pub fn run(args: &SchemaArgs) -> u8 {
    let schema = idflow_dsl::schema::json_schema();
    match &args.output {
        None => crate::cli::out(&schema),
        Some(path) => {
            if let Err(e) = std::fs::write(path, schema) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_USAGE;
            }
        }
    }
    EXIT_OK
}
