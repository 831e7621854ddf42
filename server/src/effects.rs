//! The store writes for the engine's effects: what a login step changes besides the login
//! itself (failure counts, locks, JIT accounts and links, roles, provisioning events), applied
//! in the step's own transaction.

use std::collections::BTreeMap;

use idflow_engine::Effect;

use crate::store::{AuditEvent, ProvisioningEvent, User, Value, Write};

/// The writes for `effects`, with audit entries and the provisioning `targets` hear of, for
/// a request from `ip` at `now`.
pub fn effect_writes(
    effects: Vec<Effect>,
    targets: &[crate::config::provisioning::Target],
    ip: &str,
    now: u64,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for effect in effects {
        match effect {
            Effect::FailedAttempt {
                user,
                lock_after,
                lock_seconds,
            } => {
                writes.push(audit(
                    "login.failed_attempt",
                    &user,
                    ip,
                    now,
                    serde_json::Value::Null,
                ));
                writes.push(Write::RecordFailure {
                    user,
                    lock_after,
                    lock_seconds: lock_seconds.unwrap_or(0),
                    now,
                });
            }
            Effect::ResetFailures { user } => writes.push(Write::ResetFailures(user)),
            Effect::LockUser { user, seconds } => writes.push(Write::LockUser {
                user,
                until: now.saturating_add(seconds),
            }),
            Effect::AssignRole { user, role } => {
                writes.push(audit(
                    "user.grant",
                    &user,
                    ip,
                    now,
                    serde_json::json!({ "role": role, "by": "flow" }),
                ));
                writes.extend(crate::provisioning::queue(
                    targets,
                    "role.assigned",
                    &user,
                    now,
                ));
                writes.push(Write::GrantRole { user, role });
            }
            Effect::CreateUser {
                id,
                username,
                attributes,
                roles: _,
                email_verified,
                disabled,
                signup,
            } => {
                // Roles arrive as their own `AssignRole` effects.
                writes.push(audit(
                    "user.create",
                    &id,
                    ip,
                    now,
                    serde_json::json!({
                        "username": username,
                        "by": if signup { "signup" } else { "jit" },
                        "awaiting_approval": disabled,
                    }),
                ));
                let mut user = flow_user(id.clone(), username, attributes, now);
                user.email_verified = email_verified;
                user.disabled = disabled;
                user.self_registered = signup;
                writes.push(Write::CreateUser(user));
                writes.extend(crate::provisioning::queue(
                    targets,
                    "user.created",
                    &id,
                    now,
                ));
            }
            Effect::LinkIdentity { user, idp, subject } => {
                writes.push(audit(
                    "identity.link",
                    &user,
                    ip,
                    now,
                    serde_json::json!({ "idp": idp, "subject": subject }),
                ));
                writes.push(Write::LinkIdentity { idp, subject, user });
            }
            Effect::Provision {
                target,
                event,
                user,
            } => writes.push(Write::QueueProvisioning(ProvisioningEvent::new(
                now, &target, &event, &user,
            ))),
            // Claims reach the tokens through the run's completion.
            Effect::SetClaim { .. } => {}
        }
    }
    writes
}

/// The local account a flow creates (a JIT rule, or a sign-up). Only the attributes the flow
/// names explicitly become the email and display name (an upstream value a rule did not ask for
/// is not trusted); the address is verified only when the effect says it was proven (a JIT
/// rule decides who links by it, not who receives mail).
fn flow_user(id: String, username: String, attributes: BTreeMap<String, Value>, now: u64) -> User {
    let text = |name: &str| {
        attributes
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut user = User::new(id, username, now);
    user.email = text("email");
    user.name = match text("display_name") {
        name if name.is_empty() => text("name"),
        name => name,
    };
    user.attributes = attributes;
    user
}

/// An audit entry about `subject` (who is also the actor: the person signing in).
pub fn audit(event: &str, subject: &str, ip: &str, now: u64, detail: serde_json::Value) -> Write {
    Write::Audit(AuditEvent {
        time: now,
        event: event.into(),
        actor: subject.into(),
        subject: subject.into(),
        ip: ip.into(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EmbeddedStore, Store};

    #[test]
    fn a_jit_account_is_created_linked_given_its_roles_and_provisioned_in_one_batch() {
        let dir =
            std::env::temp_dir().join(format!("idflow-effects-{}", crate::crypto::random_token(6)));
        let store = EmbeddedStore::open(&dir).expect("store");
        let attributes = BTreeMap::from([
            ("email".to_string(), Value::from("ann@acme.example")),
            ("display_name".to_string(), Value::from("Ann")),
            ("organization".to_string(), Value::from("acme")),
        ]);
        let effects = vec![
            Effect::CreateUser {
                id: "jit-1".into(),
                username: "ann@acme.example".into(),
                attributes,
                roles: vec!["partner".into()],
                email_verified: false,
                disabled: false,
                signup: false,
            },
            Effect::LinkIdentity {
                user: "jit-1".into(),
                idp: "acme-saml".into(),
                subject: "upstream-42".into(),
            },
            Effect::AssignRole {
                user: "jit-1".into(),
                role: "partner".into(),
            },
            Effect::Provision {
                target: "hr-scim".into(),
                event: "user.created".into(),
                user: "jit-1".into(),
            },
        ];
        store
            .commit(effect_writes(effects, &[], "127.0.0.1", 7))
            .expect("commit");
        let user = store.user("jit-1").expect("read").expect("created");
        assert_eq!(user.username, "ann@acme.example");
        assert_eq!(user.email, "ann@acme.example");
        assert!(!user.email_verified);
        assert_eq!(user.name, "Ann");
        assert_eq!(user.roles, vec!["partner".to_string()]);
        assert_eq!(user.attributes["organization"], "acme");
        assert_eq!(
            store.linked_user("acme-saml", "upstream-42").expect("read"),
            Some("jit-1".to_string())
        );
        assert_eq!(
            store.linked_user("google", "upstream-42").expect("read"),
            None
        );
        let events = store.provisioning_events(10).expect("read");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1.event, "user.created");
        let audited: Vec<String> = store
            .audit_log(10)
            .expect("audit")
            .into_iter()
            .map(|e| e.event)
            .collect();
        for event in ["user.create", "identity.link", "user.grant"] {
            assert!(audited.iter().any(|e| e == event), "{event}: {audited:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
