//! `idflow audit`: the newest entries of the audit log in a data directory (the server must be
//! stopped), one JSON object per line, newest first.

use clap::Args;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, out};

/// Flags of `idflow audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries to print.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Configuration and data directory.
    #[command(flatten)]
    location: Location,
}

/// Prints the audit log.
pub fn run(args: &AuditArgs) -> u8 {
    let store = match args.location.open_store() {
        Ok((_, store)) => store,
        Err(code) => return code,
    };
    match store.audit_log(args.limit) {
        Ok(events) => {
            let text: String = events
                .iter()
                .filter_map(|event| serde_json::to_string(event).ok())
                .map(|line| line + "\n")
                .collect();
            out(&text);
            EXIT_OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_PROBLEMS
        }
    }
}
