//! Outbound provisioning: users created and changed here reach downstream applications.
//!
//! A change queues an event in the store's outbox in the change's own transaction ([`queue`]
//! for directory changes from SCIM, JIT and the CLI; flows add `provision` and their
//! `provisioning on` triggers). The [`worker`] delivers them: for each user it makes the
//! target's copy match the user as stored *now* ([`ProvisioningTarget::sync_user`]), so a
//! delivery repeated after a crash, or several events for one user, give one result. Failed
//! deliveries are retried with exponential backoff and, after the target's `max_attempts` or a
//! refusal no retry can fix, kept as dead letters for an administrator (`idflow provisioning`).
//!
//! One module per part: [`scim`] (the SCIM 2.0 target), [`worker`] (the delivery loop).

pub mod scim;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use crate::config::provisioning::Target;
use crate::store::{ProvisioningEvent, User, Write};

/// The outbox writes for a directory `event` about `user`: one per configured target that
/// hears it. Goes in the batch of the change itself, so the change and its delivery are
/// stored together or not at all.
pub fn queue(targets: &[Target], event: &str, user: &str, now: u64) -> Vec<Write> {
    targets
        .iter()
        .filter(|target| target.hears(event))
        .map(|target| {
            Write::QueueProvisioning(ProvisioningEvent::new(now, &target.name, event, user))
        })
        .collect()
}

/// The events a change from `before` to `after` is, for [`queue`]: always `user.updated`,
/// plus `user.disabled` or `user.enabled` when that changed.
pub fn update_events(before: &User, after: &User) -> Vec<&'static str> {
    let mut events = vec!["user.updated"];
    match (before.disabled, after.disabled) {
        (false, true) => events.push("user.disabled"),
        (true, false) => events.push("user.enabled"),
        _ => {}
    }
    events
}

/// What one delivery must make true at a target.
#[derive(Debug, Clone)]
pub struct UserSync {
    /// The local user id (sent as `externalId`, by which a copy made before a crash is found).
    pub local_id: String,
    /// The user as stored now; `None` when deleted.
    pub user: Option<User>,
    /// The user's id at the target, when known.
    pub remote_id: Option<String>,
    /// The roles to send as groups the user is a member of, with their ids at the target
    /// when known.
    pub groups: Vec<(String, Option<String>)>,
    /// Every group this target got from here: remote id → role. Memberships in these that
    /// the user no longer has are removed; groups made at the target by others are left alone.
    pub managed: BTreeMap<String, String>,
    /// Roles named in the target's `roles`: an existing group of that name at the target may
    /// be used. Other roles only ever use groups created from here.
    pub adopt: BTreeSet<String>,
}

/// What a delivery did: the ids to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The user's id at the target; `None` once deleted there.
    pub user: Option<String>,
    /// Groups found or created at the target: role → remote id.
    pub groups: Vec<(String, String)>,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Worth trying again later (the target is down, busy, or refused our credentials).
    Retry(String),
    /// The target refused the change itself: a retry would get the same answer.
    Refused(String),
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::Retry(why) | DeliveryError::Refused(why) => f.write_str(why),
        }
    }
}

/// A delivery in progress.
pub type Delivering<'a> =
    Pin<Box<dyn Future<Output = Result<Delivered, DeliveryError>> + Send + 'a>>;

/// A downstream system users are provisioned to. SCIM 2.0 is the one kind now; a connector for
/// an API that is not SCIM (Google Workspace, Salesforce) implements this too.
pub trait ProvisioningTarget: Send + Sync {
    /// Makes the target's copy of the user match `sync`: created, replaced, deleted, and its
    /// group memberships set. Must be idempotent: it runs again after a crash or a failure.
    fn sync_user<'a>(&'a self, sync: &'a UserSync) -> Delivering<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::provisioning::parse;

    #[test]
    fn only_configured_targets_that_hear_an_event_queue_it() {
        let table: toml::Table = toml::from_str(
            "[a]\ntype = \"scim2\"\nurl = \"https://a.test/scim/v2\"\nauth = \"bearer\"\ntoken = \"t\"\n\
             [b]\ntype = \"scim2\"\nurl = \"https://b.test/scim/v2\"\nauth = \"bearer\"\ntoken = \"t\"\non = [\"user.deleted\"]\n\
             [c]\ntype = \"scim2\"\n",
        )
        .expect("toml");
        let targets = parse(&table).expect("targets");
        let targets_of = |event: &str| -> Vec<String> {
            queue(&targets, event, "u1", 5)
                .into_iter()
                .map(|write| match write {
                    Write::QueueProvisioning(event) => event.target,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(targets_of("user.created"), ["a"]);
        assert_eq!(targets_of("user.deleted"), ["a", "b"]);
        assert!(targets_of("login.succeeded").is_empty());
    }

    #[test]
    fn an_update_names_a_change_of_state() {
        let before = User::new("u1".into(), "ann".into(), 0);
        let mut after = before.clone();
        assert_eq!(update_events(&before, &after), ["user.updated"]);
        after.disabled = true;
        assert_eq!(
            update_events(&before, &after),
            ["user.updated", "user.disabled"]
        );
        assert_eq!(
            update_events(&after, &before),
            ["user.updated", "user.enabled"]
        );
    }
}
