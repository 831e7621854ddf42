//! `idflow migrate`: applies the PostgreSQL store's schema migrations that are not applied yet
//! and says which it applied. `idflow serve` does the same at start; this lets a deployment
//! run them as a step of its own, before starting the nodes. The embedded store has none.

use clap::Args;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, out};

/// Flags of `idflow migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Configuration (its `[store]` names the database).
    #[command(flatten)]
    location: Location,
}

/// Applies the migrations.
pub fn run(args: &MigrateArgs) -> u8 {
    let Ok(config) = args.location.load(Default::default()) else {
        return EXIT_USAGE;
    };
    let Some(postgres) = &config.postgres else {
        out("the embedded store needs no migrations\n");
        return EXIT_OK;
    };
    // Opening applies what is missing; `migrate` again reports what that was.
    let store = match crate::store::PostgresStore::open_unmigrated(&postgres.url.0, 1) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    match store.migrate() {
        Ok(applied) if applied.is_empty() => {
            out("the schema is up to date\n");
            EXIT_OK
        }
        Ok(applied) => {
            let versions: Vec<String> = applied.iter().map(i32::to_string).collect();
            out(&format!("applied migrations {}\n", versions.join(", ")));
            EXIT_OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_PROBLEMS
        }
    }
}
