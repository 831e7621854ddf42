//! `idflow audit`: the newest entries of the audit log in a data directory (the server must be
//! stopped), one JSON object per line, newest first.

use clap::Args;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, out};
use crate::config::Overrides;

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
    let config = match args.location.load(Overrides::default()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let store = match crate::app::open_store(&config) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
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
