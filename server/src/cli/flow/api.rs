//! `idflow flow api`: prints the script API, from the one table that declares it.

use crate::cli::EXIT_OK;

/// Runs `flow api`.
pub fn run() -> u8 {
    crate::cli::out(&idflow_dsl::script_api::render_markdown());
    EXIT_OK
}
