//! The delivery loop: reads the due events of the outbox, coalesces them per target and user,
//! delivers each user once, and records the outcome (acknowledged, retried later, or a dead
//! letter) with the remote ids learned, in one transaction per user.
//!
//! An event leaves the outbox only in the transaction that records its delivery, so a crash at
//! any point leaves it there and it is delivered again at start; the delivery itself is a
//! sync to the state stored now, which repeats cleanly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::scim::ScimTarget;
use super::{Delivered, DeliveryError, ProvisioningTarget, UserSync};
use crate::app::{App, now};
use crate::config::provisioning::Target;
use crate::store::{AuditEvent, ProvisioningEvent, Store, Write};

/// Events read per round.
const BATCH: usize = 500;
/// How often an idle worker looks at the outbox.
const IDLE: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF_SECONDS: u64 = 3600;
/// How long a worker's claim on the events it delivers holds: longer than any delivery takes,
/// short enough that a node that died holding one holds up its events only this long.
const LEASE_SECONDS: u64 = 300;

/// The wait before attempt `attempts + 1`: 2, 4, 8 ... seconds, at most an hour.
pub fn backoff(attempts: u32) -> u64 {
    2u64.saturating_pow(attempts.min(20))
        .min(MAX_BACKOFF_SECONDS)
}

/// A configured target and its client.
struct Live {
    config: Target,
    client: Client,
}

/// How a target is reached.
enum Client {
    /// Declared for flows without a `url`: its events are dropped.
    Unconfigured,
    /// Configured, but its client could not be built: its events wait.
    Broken(String),
    /// Ready.
    Ready(Box<dyn ProvisioningTarget>),
}

/// A fault-injection hook for the crash tests: with `IDFLOW_TEST_CRASH_AFTER_DELIVERIES=N`
/// the process aborts after its Nth delivery has reached the target and before it is
/// recorded, the one window in which a crash could duplicate a user downstream.
fn crash_after() -> Option<u64> {
    std::env::var("IDFLOW_TEST_CRASH_AFTER_DELIVERIES")
        .ok()
        .and_then(|n| n.parse().ok())
}

/// The clients for a configuration's targets.
fn clients(config: &crate::config::ServerConfig) -> BTreeMap<String, Live> {
    let mut targets = BTreeMap::new();
    for config in &config.provisioning_targets {
        let client = match ScimTarget::new(config) {
            Ok(Some(client)) => Client::Ready(Box::new(client)),
            Ok(None) => Client::Unconfigured,
            Err(error) => {
                tracing::error!(target = config.name, %error, "provisioning target unusable");
                Client::Broken(error)
            }
        };
        targets.insert(
            config.name.clone(),
            Live {
                config: config.clone(),
                client,
            },
        );
    }
    targets
}

/// Runs until the process ends.
pub async fn run(app: Arc<App>) {
    let mut config = app.config();
    let mut targets = clients(&config);
    let mut worker = Worker {
        delivered: 0,
        crash_after: crash_after(),
        id: crate::crypto::random_token(12),
    };
    loop {
        // A reload's targets take over from the next round on.
        let live = app.config();
        if !Arc::ptr_eq(&live, &config) {
            targets = clients(&live);
            config = live;
        }
        match worker.round(&app, &targets).await {
            Ok(0) => tokio::time::sleep(IDLE).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "provisioning round failed");
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}

struct Worker {
    delivered: u64,
    crash_after: Option<u64>,
    /// This process's worker, as its claims name it.
    id: String,
}

impl Worker {
    /// One pass over the due events; how many were settled (delivered, retried or dead).
    async fn round(
        &mut self,
        app: &Arc<App>,
        targets: &BTreeMap<String, Live>,
    ) -> Result<usize, String> {
        let store = Arc::clone(&app.store);
        let due = crate::http::blocking(move || store.provisioning_due(now(), BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if due.is_empty() {
            return Ok(0);
        }
        // One delivery per target and user, in the order of their first event.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut grouped: BTreeMap<(String, String), Vec<(u64, ProvisioningEvent)>> =
            BTreeMap::new();
        for (seq, event) in due {
            let key = (event.target.clone(), event.user.clone());
            if !grouped.contains_key(&key) {
                order.push(key.clone());
            }
            grouped.entry(key).or_default().push((seq, event));
        }
        let mut settled = 0;
        for key in order {
            let events = grouped.remove(&key).unwrap_or_default();
            // Several nodes may read the same due events: the one whose claim commits first
            // delivers them, the others leave them. A store only this process opens needs no
            // claim (and a claim left by a crash would only hold its events up).
            if app.store.shared() && !self.claim(app, &events).await? {
                continue;
            }
            settled += events.len();
            let batch = self.deliver(app, targets, &key.0, &key.1, &events).await;
            let store = Arc::clone(&app.store);
            crate::http::blocking(move || store.commit(batch))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(settled)
    }

    /// Claims `events` for this worker; false when another worker holds them or their user.
    async fn claim(
        &self,
        app: &Arc<App>,
        events: &[(u64, ProvisioningEvent)],
    ) -> Result<bool, String> {
        let claim = Write::ClaimProvisioning {
            seqs: events.iter().map(|(seq, _)| *seq).collect(),
            owner: self.id.clone(),
            until: now() + LEASE_SECONDS,
            now: now(),
        };
        let store = Arc::clone(&app.store);
        match crate::http::blocking(move || store.commit(vec![claim])).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(crate::store::StoreError::Conflict(_))) => Ok(false),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Delivers one user's events to one target; the writes that record the outcome. Every
    /// failure settles the events (a retry later or a dead letter), so one user's trouble
    /// never holds up the rest of the outbox.
    async fn deliver(
        &mut self,
        app: &Arc<App>,
        targets: &BTreeMap<String, Live>,
        target: &str,
        user: &str,
        events: &[(u64, ProvisioningEvent)],
    ) -> Vec<Write> {
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        let names: Vec<&str> = events.iter().map(|(_, e)| e.event.as_str()).collect();
        let Some(live) = targets.get(target) else {
            let why = format!("no provisioning target `{target}` is configured");
            return dead(events, &why, target, user);
        };
        let client = match &live.client {
            Client::Ready(client) => client,
            Client::Unconfigured => {
                tracing::info!(target, user, events = ?names, "provisioning target has no url: events dropped");
                return vec![Write::AckProvisioning(seqs)];
            }
            Client::Broken(why) => {
                return failed(events, DeliveryError::Retry(why.clone()), live, user);
            }
        };
        let sync = {
            let app = Arc::clone(app);
            let config = live.config.clone();
            let user = user.to_string();
            crate::http::blocking(move || prepare(&*app.store, &config, &user)).await
        };
        let sync = match sync {
            Ok(Ok(sync)) => sync,
            Ok(Err(error)) => {
                return failed(events, DeliveryError::Retry(error.to_string()), live, user);
            }
            Err(error) => {
                return failed(events, DeliveryError::Retry(error.to_string()), live, user);
            }
        };
        match client.sync_user(&sync).await {
            Ok(delivered) => {
                tracing::debug!(target, user, events = ?names, "provisioned");
                self.delivered += 1;
                if self.crash_after.is_some_and(|n| self.delivered >= n) {
                    tracing::error!("IDFLOW_TEST_CRASH_AFTER_DELIVERIES reached: aborting");
                    std::process::abort();
                }
                delivered_writes(target, &sync, &delivered, seqs, &names, now())
            }
            Err(error) => failed(events, error, live, user),
        }
    }
}

/// The writes for a failed delivery: each event is tried again after its backoff, or, after
/// its own last attempt or a refusal no retry can change, becomes a dead letter.
fn failed(
    events: &[(u64, ProvisioningEvent)],
    error: DeliveryError,
    live: &Live,
    user: &str,
) -> Vec<Write> {
    let target = live.config.name.as_str();
    let retry = matches!(error, DeliveryError::Retry(_));
    let why = error.to_string();
    let time = now();
    let (again, done): (Vec<_>, Vec<_>) = events
        .iter()
        .cloned()
        .partition(|(_, event)| retry && event.attempts + 1 < live.config.max_attempts);
    let mut writes = Vec::new();
    for (seq, event) in &again {
        let attempts = event.attempts + 1;
        let wait = backoff(attempts);
        tracing::warn!(
            target,
            user,
            attempts,
            wait,
            error = why,
            "provisioning failed; will retry"
        );
        writes.push(Write::RetryProvisioning {
            seq: *seq,
            attempts,
            not_before: time + wait,
            error: why.clone(),
        });
    }
    if !done.is_empty() {
        tracing::warn!(
            target,
            user,
            error = why,
            "provisioning failed for good: dead letter"
        );
        writes.extend(dead(&done, &why, target, user));
    }
    writes
}

/// What the target must be told about `user`: their record now, what it is known as there,
/// and the groups.
fn prepare(store: &dyn Store, target: &Target, user: &str) -> crate::store::StoreResult<UserSync> {
    let record = store.user(user)?;
    let remote_id = store.remote_id(&target.name, &format!("user:{user}"))?;
    let mut groups = Vec::new();
    if let Some(record) = &record {
        for role in &record.roles {
            let sent = match &target.roles {
                Some(named) => named.contains(role),
                None => store.role(role)?.is_none_or(|r| r.privileges.is_empty()),
            };
            if sent {
                let known = store.remote_id(&target.name, &format!("group:{role}"))?;
                groups.push((role.clone(), known));
            }
        }
    }
    let managed = store
        .remote_ids(&target.name, "group:")?
        .into_iter()
        .map(|(local, remote)| (remote, local.trim_start_matches("group:").to_string()))
        .collect();
    Ok(UserSync {
        local_id: user.to_string(),
        user: record,
        remote_id,
        groups,
        managed,
        adopt: target.roles.iter().flatten().cloned().collect(),
    })
}

fn delivered_writes(
    target: &str,
    sync: &UserSync,
    delivered: &Delivered,
    seqs: Vec<u64>,
    events: &[&str],
    now: u64,
) -> Vec<Write> {
    let local = format!("user:{}", sync.local_id);
    let mut writes = vec![Write::AckProvisioning(seqs)];
    writes.push(match &delivered.user {
        Some(remote) => Write::PutRemoteId {
            target: target.into(),
            local,
            remote: remote.clone(),
        },
        None => Write::DeleteRemoteId {
            target: target.into(),
            local,
        },
    });
    for (role, remote) in &delivered.groups {
        writes.push(Write::PutRemoteId {
            target: target.into(),
            local: format!("group:{role}"),
            remote: remote.clone(),
        });
    }
    writes.push(audit(
        "provisioning.delivered",
        &sync.local_id,
        now,
        serde_json::json!({
            "target": target,
            "events": events,
            "remote_id": delivered.user,
            "deleted": sync.user.is_none(),
        }),
    ));
    writes
}

fn dead(events: &[(u64, ProvisioningEvent)], why: &str, target: &str, user: &str) -> Vec<Write> {
    let mut writes: Vec<Write> = events
        .iter()
        .map(|(seq, event)| Write::DeadLetter {
            seq: *seq,
            attempts: event.attempts + 1,
            error: why.to_string(),
        })
        .collect();
    let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
    writes.push(audit(
        "provisioning.failed",
        user,
        now(),
        serde_json::json!({ "target": target, "error": why, "events": seqs }),
    ));
    writes
}

fn audit(event: &str, subject: &str, now: u64, detail: serde_json::Value) -> Write {
    Write::Audit(AuditEvent {
        time: now,
        event: event.into(),
        actor: "provisioning".into(),
        subject: subject.into(),
        ip: String::new(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), 2);
        assert_eq!(backoff(2), 4);
        assert_eq!(backoff(5), 32);
        assert_eq!(backoff(12), 3600);
        assert_eq!(backoff(u32::MAX), 3600);
    }
}
