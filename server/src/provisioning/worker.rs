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

/// The wait before attempt `attempts + 1`: 2, 4, 8 ... seconds, at most an hour.
pub fn backoff(attempts: u32) -> u64 {
    2u64.saturating_pow(attempts.min(20))
        .min(MAX_BACKOFF_SECONDS)
}

/// A configured target and its client.
struct Live {
    config: Target,
    client: Option<Box<dyn ProvisioningTarget>>,
}

/// Runs until the process ends.
pub async fn run(app: Arc<App>) {
    let mut targets = BTreeMap::new();
    for config in &app.config.provisioning_targets {
        let client = match ScimTarget::new(config) {
            Ok(client) => client.map(|c| Box::new(c) as Box<dyn ProvisioningTarget>),
            Err(error) => {
                tracing::error!(target = config.name, %error, "provisioning target unusable");
                None
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
    loop {
        match round(&app, &targets).await {
            Ok(0) => tokio::time::sleep(IDLE).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "provisioning round failed");
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}

/// One pass over the due events; how many were settled (delivered, retried or dead).
async fn round(app: &Arc<App>, targets: &BTreeMap<String, Live>) -> Result<usize, String> {
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
    let mut grouped: BTreeMap<(String, String), Vec<(u64, ProvisioningEvent)>> = BTreeMap::new();
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
        settled += events.len();
        let batch = deliver(app, targets, &key.0, &key.1, &events).await?;
        let store = Arc::clone(&app.store);
        crate::http::blocking(move || store.commit(batch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(settled)
}

/// Delivers one user's events to one target; the writes that record the outcome.
async fn deliver(
    app: &Arc<App>,
    targets: &BTreeMap<String, Live>,
    target: &str,
    user: &str,
    events: &[(u64, ProvisioningEvent)],
) -> Result<Vec<Write>, String> {
    let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
    let names: Vec<&str> = events.iter().map(|(_, e)| e.event.as_str()).collect();
    let attempts = events.iter().map(|(_, e)| e.attempts).max().unwrap_or(0) + 1;
    let Some(live) = targets.get(target) else {
        return Ok(dead(
            &seqs,
            attempts,
            &format!("no provisioning target `{target}` is configured"),
            target,
            user,
        ));
    };
    let Some(client) = &live.client else {
        // Declared for flows without an address: nothing to deliver to.
        tracing::info!(target, user, events = ?names, "provisioning target has no url: events dropped");
        return Ok(vec![Write::AckProvisioning(seqs)]);
    };
    let sync = {
        let app = Arc::clone(app);
        let config = live.config.clone();
        let user = user.to_string();
        crate::http::blocking(move || prepare(&*app.store, &config, &user))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let outcome = client.sync_user(&sync).await;
    let time = now();
    Ok(match outcome {
        Ok(delivered) => {
            tracing::debug!(target, user, events = ?names, "provisioned");
            delivered_writes(target, &sync, &delivered, seqs, &names, time)
        }
        Err(DeliveryError::Retry(why)) if attempts < live.config.max_attempts => {
            let wait = backoff(attempts);
            tracing::warn!(
                target,
                user,
                attempts,
                wait,
                error = why,
                "provisioning failed; will retry"
            );
            seqs.iter()
                .map(|seq| Write::RetryProvisioning {
                    seq: *seq,
                    attempts,
                    not_before: time + wait,
                    error: why.clone(),
                })
                .collect()
        }
        Err(error) => {
            tracing::warn!(target, user, attempts, %error, "provisioning failed for good: dead letter");
            dead(&seqs, attempts, &error.to_string(), target, user)
        }
    })
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

fn dead(seqs: &[u64], attempts: u32, why: &str, target: &str, user: &str) -> Vec<Write> {
    let mut writes: Vec<Write> = seqs
        .iter()
        .map(|seq| Write::DeadLetter {
            seq: *seq,
            attempts,
            error: why.to_string(),
        })
        .collect();
    writes.push(audit(
        "provisioning.failed",
        user,
        now(),
        serde_json::json!({ "target": target, "error": why, "attempts": attempts, "events": seqs }),
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
