//! `idflow keys ...`: signing keys in a data directory (the server must be stopped).

use clap::Subcommand;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, out};
use crate::keys::KeySet;

/// `idflow keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Retire the active keys and create new ones; retired keys stay in the JWKS until the
    /// tokens they signed have expired.
    Rotate {
        /// Configuration and data directory.
        #[command(flatten)]
        location: Location,
    },
    /// List keys: id, algorithm, created, retired.
    List {
        /// Configuration and data directory.
        #[command(flatten)]
        location: Location,
    },
}

/// Runs a keys subcommand.
pub fn run(command: KeysCommand) -> u8 {
    let location = match &command {
        KeysCommand::Rotate { location } | KeysCommand::List { location } => location,
    };
    let store = match location.open_store() {
        Ok((_, store)) => store,
        Err(code) => return code,
    };
    let result = match command {
        KeysCommand::Rotate { .. } => {
            KeySet::rotate(store.as_ref(), crate::app::now()).map(|kids| {
                out(&format!("new keys: {}\n", kids.join(", ")));
            })
        }
        KeysCommand::List { .. } => store.keys().map(|keys| {
            let text: String = keys
                .iter()
                .map(|k| {
                    let retired = k
                        .retired
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "active".into());
                    format!("{}\t{}\tcreated {}\t{}\n", k.kid, k.alg, k.created, retired)
                })
                .collect();
            out(&text);
        }),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_PROBLEMS
        }
    }
}
