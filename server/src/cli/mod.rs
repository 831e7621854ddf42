//! The command line. `main` parses flags with clap and dispatches; each command is one module.
//!
//! Exit codes, for every command: 0 success, 1 the input has problems (diagnostics, a failed
//! `--check`), 2 usage or I/O error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod audit;
pub mod flow;
pub mod keys;
pub mod migrate;
pub mod provisioning;
pub mod reload;
pub mod serve;
pub mod user;

/// idflow: an identity server in which every login journey is code.
#[derive(Debug, Parser)]
#[command(name = "idflow", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, compile, convert and draw flow files.
    #[command(subcommand)]
    Flow(flow::FlowCommand),
    /// Run the identity server.
    Serve(serve::ServeArgs),
    /// Manage users in a data directory.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage roles in a data directory.
    #[command(subcommand)]
    Role(user::RoleCommand),
    /// Rotate and list signing keys in a data directory.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print the newest audit log entries of a data directory.
    Audit(audit::AuditArgs),
    /// Apply the PostgreSQL store's schema migrations (`serve` does it too, at start).
    Migrate(migrate::MigrateArgs),
    /// Ask a running server to reload its configuration and flows (all checked first).
    Reload(reload::ReloadArgs),
    /// Show the provisioning outbox and dead letters of a data directory; retry dead letters.
    #[command(subcommand)]
    Provisioning(provisioning::ProvisioningCommand),
}

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the input has problems.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code: usage or I/O error.
pub const EXIT_USAGE: u8 = 2;

/// Writes to standard output. A closed pipe (`idflow flow check | head -1`) is not an error:
/// the reader has what it wanted, so the rest is dropped instead of panicking as `print!` does.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {error}");
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    let code = match cli.command {
        Command::Flow(command) => flow::run(command),
        Command::Serve(args) => serve::run(args),
        Command::User(command) => user::run_user(command),
        Command::Role(command) => user::run_role(command),
        Command::Keys(command) => keys::run(command),
        Command::Audit(args) => audit::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Provisioning(command) => provisioning::run(command),
        Command::Reload(args) => reload::run(&args),
    };
    ExitCode::from(code)
}
