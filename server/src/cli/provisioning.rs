//! `idflow provisioning`: what waits in the outbox of a data directory (the server must be
//! stopped), the dead letters, and putting dead letters back once their cause is fixed.

use clap::{Args, Subcommand};

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, out};
use crate::store::{ProvisioningEvent, Write};

/// `idflow provisioning` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProvisioningCommand {
    /// Events waiting for delivery, oldest first, one JSON object per line.
    Queue(ListArgs),
    /// Events that failed for good, with why, one JSON object per line.
    Dead(ListArgs),
    /// Put dead letters back in the outbox, due at once: by number, or `all`.
    Retry(RetryArgs),
}

/// Flags of `queue` and `dead`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// How many entries to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    location: Location,
}

/// Flags of `retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// A dead letter's number (`seq` in `dead`), or `all`.
    which: String,
    #[command(flatten)]
    location: Location,
}

fn line(seq: u64, event: &ProvisioningEvent) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    value["seq"] = seq.into();
    format!("{value}\n")
}

fn fail(error: impl std::fmt::Display) -> u8 {
    eprintln!("error: {error}");
    EXIT_PROBLEMS
}

/// Runs a provisioning subcommand.
pub fn run(command: ProvisioningCommand) -> u8 {
    let result = match command {
        ProvisioningCommand::Queue(args) => list(&args, false),
        ProvisioningCommand::Dead(args) => list(&args, true),
        ProvisioningCommand::Retry(args) => retry(&args),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}

fn list(args: &ListArgs, dead: bool) -> Result<(), u8> {
    let (_, store) = args.location.open_store()?;
    let events = if dead {
        store.dead_letters(args.limit)
    } else {
        store.provisioning_events(args.limit)
    }
    .map_err(fail)?;
    out(&events
        .iter()
        .map(|(seq, e)| line(*seq, e))
        .collect::<String>());
    Ok(())
}

fn retry(args: &RetryArgs) -> Result<(), u8> {
    let (_, store) = args.location.open_store()?;
    let seqs: Vec<u64> = if args.which == "all" {
        store
            .dead_letters(usize::MAX)
            .map_err(fail)?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    } else {
        vec![args.which.parse().map_err(|_| {
            fail(format!(
                "`{}` is not a dead letter's number or `all`",
                args.which
            ))
        })?]
    };
    let count = seqs.len();
    let mut batch: Vec<Write> = seqs.into_iter().map(Write::Requeue).collect();
    batch.push(Write::Audit(crate::store::AuditEvent {
        time: crate::app::now(),
        event: "provisioning.requeued".into(),
        actor: "cli".into(),
        subject: String::new(),
        ip: String::new(),
        detail: serde_json::json!({ "which": args.which, "count": count }),
    }));
    store.commit(batch).map_err(fail)?;
    out(&format!("{count} dead letter(s) back in the outbox\n"));
    Ok(())
}
