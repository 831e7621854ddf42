//! What the store means, written once over any transactional, ordered key-value backend: the
//! tables, how each [`Write`] changes them, and how each read finds its records. A backend
//! ([`super::embedded`] over redb, [`super::postgres`]) implements [`Tables`] for its transactions and [`Backend`]
//! for running them; [`Store`] follows for every [`Backend`]. So a second backend cannot
//! disagree with the first about what a write does: there is one `apply`.
//!
//! Keys are strings; the logs (audit, provisioning outbox, dead letters) are keyed by sequence
//! numbers. Values are JSON records, text (an id) or a number (an expiry), as each table says.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AuditEvent, AuthCode, Batch, Challenge, Factor, IssuedByCode, KeyRecord, Login,
    ProvisioningEvent, Redeemed, Redemption, RefreshToken, Role, Rotation, Session, Store,
    StoreError, StoreResult, User, Write,
};

/// What a table's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON records.
    Json,
    /// Text (an id, a name, an IR).
    Text,
    /// A number (an expiry, a counter).
    Number,
}

/// A table keyed by strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Its name, the same in every backend.
    pub name: &'static str,
    /// What its values are.
    pub kind: Kind,
}

/// A table keyed by sequence numbers, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Its name.
    pub name: &'static str,
}

const fn json(name: &'static str) -> Table {
    Table {
        name,
        kind: Kind::Json,
    }
}

const fn text(name: &'static str) -> Table {
    Table {
        name,
        kind: Kind::Text,
    }
}

const fn number(name: &'static str) -> Table {
    Table {
        name,
        kind: Kind::Number,
    }
}

/// Users by id.
pub const USERS: Table = json("users");
/// Lower-cased username to user id.
pub const USERNAMES: Table = text("usernames");
/// Lower-cased email address to user id.
pub const EMAILS: Table = text("emails");
/// Roles by name.
pub const ROLES: Table = json("roles");
/// Browser sessions by key.
pub const SESSIONS: Table = json("sessions");
/// Logins in progress by key.
pub const LOGINS: Table = json("logins");
/// Authorization codes by key.
pub const CODES: Table = json("codes");
/// Refresh tokens by key.
pub const REFRESH: Table = json("refresh_tokens");
/// Refresh families: the family id to its expiry; a revoked family is removed.
pub const FAMILIES: Table = number("refresh_families");
/// Revoked access tokens: `jti` to the token's expiry.
pub const REVOKED_ACCESS: Table = number("revoked_access");
/// Signing keys by key id.
pub const KEYS: Table = json("keys");
/// Factors by `USER/FACTOR_ID`, so one user's factors are one key range.
pub const FACTORS: Table = json("factors");
/// WebAuthn user handle to user id (usernameless passkey login).
pub const HANDLES: Table = text("webauthn_handles");
/// WebAuthn credential id to user id: a credential belongs to one account only.
pub const CREDENTIALS: Table = text("webauthn_credentials");
/// Ceremony state by key.
pub const CHALLENGES: Table = json("challenges");
/// `IDP` 0x1f `SUBJECT` to the local user an upstream account is linked to.
pub const LINKS: Table = text("identity_links");
/// `TARGET` 0x1f `LOCAL` (`user:ID`, `group:ROLE`) to the id the target gave it.
pub const REMOTE_IDS: Table = text("provisioning_remote_ids");
/// Flow versions that were live: version to IR (JSON text).
pub const FLOW_VERSIONS: Table = text("flow_versions");
/// Counts in fixed windows shared by the nodes (throttles): key to its window.
pub const WINDOWS: Table = json("windows");
/// Bookkeeping counters.
pub const META: Table = number("meta");

/// Provisioning events in the order they were emitted.
pub const PROVISIONING: Log = Log {
    name: "provisioning_outbox",
};
/// Provisioning events that failed for good, by their outbox sequence number.
pub const DEAD_LETTERS: Log = Log {
    name: "provisioning_dead_letters",
};
/// The audit log.
pub const AUDIT: Log = Log { name: "audit" };

/// Every string-keyed table, for backends that create them up front.
pub const ALL_TABLES: &[Table] = &[
    USERS,
    USERNAMES,
    EMAILS,
    ROLES,
    SESSIONS,
    LOGINS,
    CODES,
    REFRESH,
    FAMILIES,
    REVOKED_ACCESS,
    KEYS,
    FACTORS,
    HANDLES,
    CREDENTIALS,
    CHALLENGES,
    LINKS,
    REMOTE_IDS,
    FLOW_VERSIONS,
    WINDOWS,
    META,
];

/// Every log.
pub const ALL_LOGS: &[Log] = &[PROVISIONING, DEAD_LETTERS, AUDIT];

/// The META key of the provisioning outbox's last sequence number.
const PROVISIONING_SEQ: &str = "provisioning_seq";

/// A value as a table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A JSON record's bytes.
    Json(Vec<u8>),
    /// Text.
    Text(String),
    /// A number.
    Number(u64),
}

impl Stored {
    fn text(self) -> StoreResult<String> {
        match self {
            Stored::Text(text) => Ok(text),
            other => Err(StoreError::Failed(format!(
                "expected text, found {other:?}"
            ))),
        }
    }

    fn number(self) -> StoreResult<u64> {
        match self {
            Stored::Number(number) => Ok(number),
            other => Err(StoreError::Failed(format!(
                "expected a number, found {other:?}"
            ))),
        }
    }

    fn record<T: DeserializeOwned>(self) -> StoreResult<T> {
        match self {
            Stored::Json(bytes) => decode(&bytes),
            other => Err(StoreError::Failed(format!(
                "expected a record, found {other:?}"
            ))),
        }
    }
}

/// One transaction of a backend, read-only or read-write. Writes through a read-only one fail.
pub trait Tables {
    /// The value under `key`.
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Stored>>;
    /// Puts `value` under `key`, replacing what was there.
    fn insert(&self, table: Table, key: &str, value: Stored) -> StoreResult<()>;
    /// Removes `key`, returning what it held.
    fn remove(&self, table: Table, key: &str) -> StoreResult<Option<Stored>>;
    /// Entries with `start <= key < end` (to the last with no `end`), in key order.
    fn range(
        &self,
        table: Table,
        start: &str,
        end: Option<&str>,
    ) -> StoreResult<Vec<(String, Stored)>>;
    /// The highest sequence number in `log`.
    fn log_last(&self, log: Log) -> StoreResult<Option<u64>>;
    /// Appends under a sequence number higher than any in `log` and returns it. Backends
    /// with a sequence of their own use it, so that concurrent appends do not contend.
    fn log_append(&self, log: Log, value: &[u8]) -> StoreResult<u64> {
        let next = self.log_last(log)?.map_or(1, |last| last + 1);
        self.log_insert(log, next, value)?;
        Ok(next)
    }
    /// The entry `seq`.
    fn log_get(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>>;
    /// Puts an entry.
    fn log_insert(&self, log: Log, seq: u64, value: &[u8]) -> StoreResult<()>;
    /// Removes an entry, returning it.
    fn log_remove(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>>;
    /// Calls `each` with the entries in order (newest first when `newest_first`) until it
    /// returns false.
    fn log_scan(
        &self,
        log: Log,
        newest_first: bool,
        each: &mut dyn FnMut(u64, &[u8]) -> StoreResult<bool>,
    ) -> StoreResult<()>;
}

/// Runs transactions over [`Tables`]. Every `Backend` is a [`Store`].
pub trait Backend: Send + Sync {
    /// See [`Store::announce_reload`].
    fn announce_reload(&self, from: &str) -> StoreResult<()> {
        let _ = from;
        Ok(())
    }
    /// See [`Store::on_reload_announced`].
    fn on_reload_announced(&self, heard: super::ReloadListener) -> StoreResult<bool> {
        let _ = heard;
        Ok(false)
    }
    /// See [`Store::shared`].
    fn shared(&self) -> bool {
        false
    }
    /// Runs `read` in a read-only transaction (a consistent snapshot).
    fn read<R>(&self, read: impl FnOnce(&dyn Tables) -> StoreResult<R>) -> StoreResult<R>;
    /// Runs `write` in a read-write transaction and commits it, durably unless `durable` is
    /// false (see [`Store::commit_unflushed`]). `write` returns its result and whether it
    /// changed anything (nothing to commit otherwise). An error aborts the transaction. A
    /// backend may run `write` more than once (a serialization failure is retried), so it must
    /// not do anything else.
    fn write<R>(
        &self,
        durable: bool,
        write: impl FnMut(&dyn Tables) -> StoreResult<(R, bool)>,
    ) -> StoreResult<R>;
}

fn fail(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

/// A record as stored.
pub fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(fail)
}

/// A stored record read back.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Failed(format!("corrupt record: {e}")))
}

fn get_record<T: DeserializeOwned>(
    t: &dyn Tables,
    table: Table,
    key: &str,
) -> StoreResult<Option<T>> {
    t.get(table, key)?.map(Stored::record).transpose()
}

fn put_record<T: Serialize>(t: &dyn Tables, table: Table, key: &str, value: &T) -> StoreResult<()> {
    t.insert(table, key, Stored::Json(encode(value)?))
}

fn get_text(t: &dyn Tables, table: Table, key: &str) -> StoreResult<Option<String>> {
    t.get(table, key)?.map(Stored::text).transpose()
}

fn all_records<T: DeserializeOwned>(t: &dyn Tables, table: Table) -> StoreResult<Vec<T>> {
    t.range(table, "", None)?
        .into_iter()
        .map(|(_, value)| value.record())
        .collect()
}

/// Claims `name` in an index for `id`; fails if another id holds it.
fn claim_name(t: &dyn Tables, index: Table, name: &str, id: &str, what: &str) -> StoreResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    let key = name.to_lowercase();
    if let Some(holder) = get_text(t, index, &key)?
        && holder != id
    {
        return Err(StoreError::Failed(format!("the {what} `{name}` is taken")));
    }
    t.insert(index, &key, Stored::Text(id.to_string()))
}

/// Fails if `name` is held in `other` (usernames and emails must not shadow each other: a
/// login by name looks in both).
fn not_held_by_another(t: &dyn Tables, other: Table, name: &str, id: &str) -> StoreResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    match get_text(t, other, &name.to_lowercase())? {
        Some(holder) if holder != id => Err(StoreError::Failed(format!(
            "`{name}` is another user's username or email"
        ))),
        _ => Ok(()),
    }
}

fn release_name(t: &dyn Tables, index: Table, name: &str) -> StoreResult<()> {
    if !name.is_empty() {
        t.remove(index, &name.to_lowercase())?;
    }
    Ok(())
}

fn write_user(t: &dyn Tables, user: &User, old: Option<&User>) -> StoreResult<()> {
    if let Some(old) = old {
        if !old.username.eq_ignore_ascii_case(&user.username) {
            release_name(t, USERNAMES, &old.username)?;
        }
        if !old.email.eq_ignore_ascii_case(&user.email) {
            release_name(t, EMAILS, &old.email)?;
        }
    }
    not_held_by_another(t, EMAILS, &user.username, &user.id)?;
    not_held_by_another(t, USERNAMES, &user.email, &user.id)?;
    claim_name(t, USERNAMES, &user.username, &user.id, "username")?;
    claim_name(t, EMAILS, &user.email, &user.id, "email")?;
    put_record(t, USERS, &user.id, user)
}

fn update_user(t: &dyn Tables, id: &str, change: impl FnOnce(&mut User)) -> StoreResult<()> {
    let mut user: User =
        get_record(t, USERS, id)?.ok_or_else(|| StoreError::Failed(format!("no user `{id}`")))?;
    change(&mut user);
    put_record(t, USERS, id, &user)
}

fn revoke_family(t: &dyn Tables, family: &str) -> StoreResult<()> {
    t.remove(FAMILIES, family).map(|_| ())
}

fn family_live_in(t: &dyn Tables, family: &str) -> StoreResult<bool> {
    Ok(t.get(FAMILIES, family)?.is_some())
}

/// Records that `name` in `table` belongs to `user`; a name another user holds fails the batch.
fn claim_owner(
    t: &dyn Tables,
    table: Table,
    name: &str,
    user: &str,
    what: &str,
) -> StoreResult<()> {
    if get_text(t, table, name)?.is_some_and(|owner| owner != user) {
        return Err(StoreError::Conflict(format!(
            "that {what} is registered to another account"
        )));
    }
    t.insert(table, name, Stored::Text(user.to_string()))
}

/// Removes `key` from `table`; a key already gone fails the batch with a conflict (what makes
/// a challenge or a replaced session usable once).
fn take(t: &dyn Tables, table: Table, key: &str, gone: &str) -> StoreResult<()> {
    match t.remove(table, key)? {
        Some(_) => Ok(()),
        None => Err(StoreError::Conflict(gone.into())),
    }
}

/// The key range holding exactly one user's factors (`USER/...`; `0` follows `/`).
fn factor_range(user: &str) -> (String, String) {
    (format!("{user}/"), format!("{user}0"))
}

fn user_factors(t: &dyn Tables, user: &str) -> StoreResult<Vec<(String, Factor)>> {
    let (start, end) = factor_range(user);
    t.range(FACTORS, &start, Some(&end))?
        .into_iter()
        .map(|(key, value)| Ok((key, value.record()?)))
        .collect()
}

/// Appends `value` under the next sequence number of a log.
fn append<T: Serialize>(t: &dyn Tables, log: Log, value: &T) -> StoreResult<()> {
    t.log_append(log, &encode(value)?).map(drop)
}

/// The key of an upstream account: identity provider names cannot contain 0x1f.
fn link_key(idp: &str, subject: &str) -> String {
    format!("{idp}\u{1f}{subject}")
}

fn factor_key(user: &str, id: &str) -> String {
    format!("{user}/{id}")
}

/// Reads a factor, changes it, and writes it back; a missing factor fails the batch.
fn update_factor(
    t: &dyn Tables,
    user: &str,
    id: &str,
    change: impl FnOnce(&mut Factor) -> StoreResult<()>,
) -> StoreResult<()> {
    let key = factor_key(user, id);
    let mut factor: Factor = get_record(t, FACTORS, &key)?
        .ok_or_else(|| StoreError::Conflict(format!("factor {id} of {user} is gone")))?;
    change(&mut factor)?;
    put_record(t, FACTORS, &key, &factor)
}

/// Applies one write inside a transaction.
pub fn apply(t: &dyn Tables, write: Write) -> StoreResult<()> {
    match write {
        Write::CreateUser(user) => {
            if t.get(USERS, &user.id)?.is_some() {
                return Err(StoreError::Failed(format!(
                    "the user id `{}` is taken",
                    user.id
                )));
            }
            write_user(t, &user, None)
        }
        Write::DeleteUser(id) => {
            let user: User = get_record(t, USERS, &id)?
                .ok_or_else(|| StoreError::Conflict(format!("no user `{id}`")))?;
            release_name(t, USERNAMES, &user.username)?;
            release_name(t, EMAILS, &user.email)?;
            t.remove(USERS, &id)?;
            for (key, factor) in user_factors(t, &id)? {
                t.remove(FACTORS, &key)?;
                if let Some(credential) = factor.credential_id {
                    t.remove(CREDENTIALS, &credential)?;
                }
            }
            for (key, holder) in t.range(LINKS, "", None)? {
                if holder.text()? == id {
                    t.remove(LINKS, &key)?;
                }
            }
            apply(
                t,
                Write::EndUserSessions {
                    user: id,
                    except: None,
                },
            )
        }
        Write::ReplaceUser { user, expected } => {
            let old: User = get_record(t, USERS, &user.id)?
                .ok_or_else(|| StoreError::Conflict(format!("no user `{}`", user.id)))?;
            if old != *expected {
                return Err(StoreError::Conflict(format!(
                    "the user `{}` changed meanwhile",
                    user.id
                )));
            }
            write_user(t, &user, Some(&old))
        }
        Write::UpdateUser(user) => {
            let old: User = get_record(t, USERS, &user.id)?
                .ok_or_else(|| StoreError::Failed(format!("no user `{}`", user.id)))?;
            write_user(t, &user, Some(&old))
        }
        Write::RecordFailure {
            user,
            lock_after,
            lock_seconds,
            now,
        } => update_user(t, &user, |user| {
            user.failed_attempts = user.failed_attempts.saturating_add(1);
            if lock_after.is_some_and(|limit| user.failed_attempts >= limit) {
                user.locked_until = now.saturating_add(lock_seconds);
                user.failed_attempts = 0;
            }
        }),
        Write::ResetFailures(user) => update_user(t, &user, |user| user.failed_attempts = 0),
        Write::RehashPassword { user, old, new } => update_user(t, &user, |user| {
            if user.password_hash.as_deref() == Some(old.as_str()) {
                user.password_hash = Some(new);
            }
        }),
        Write::LockUser { user, until } => update_user(t, &user, |user| {
            user.locked_until = user.locked_until.max(until);
        }),
        Write::GrantRole { user, role } => update_user(t, &user, |user| {
            if !user.roles.contains(&role) {
                user.roles.push(role);
            }
        }),
        Write::RevokeRole { user, role } => {
            update_user(t, &user, |user| user.roles.retain(|r| *r != role))
        }
        Write::PutRole(role) => put_record(t, ROLES, &role.name.clone(), &role),
        Write::CreateRole(role) => {
            if t.get(ROLES, &role.name)?.is_some() {
                return Err(StoreError::Failed(format!(
                    "the role name `{}` is taken",
                    role.name
                )));
            }
            put_record(t, ROLES, &role.name.clone(), &role)
        }
        Write::PutSession(session) => put_record(t, SESSIONS, &session.key.clone(), &session),
        Write::DeleteSession(key) => t.remove(SESSIONS, &key).map(|_| ()),
        Write::AddSamlParticipant {
            session,
            participant,
        } => {
            let Some(mut found) = get_record::<Session>(t, SESSIONS, &session)? else {
                return Ok(());
            };
            found.saml.retain(|p| p.sp != participant.sp);
            found.saml.push(participant);
            put_record(t, SESSIONS, &session, &found)
        }
        Write::PutLogin(login) => put_record(t, LOGINS, &login.key.clone(), &login),
        Write::AdvanceLogin { key, seq, next } => {
            let current: Option<Login> = get_record(t, LOGINS, &key)?;
            if current.map(|login| login.seq) != Some(seq) {
                return Err(StoreError::Conflict(
                    "the login moved on in another request".into(),
                ));
            }
            match next {
                Some(next) => put_record(t, LOGINS, &key, &next),
                None => t.remove(LOGINS, &key).map(|_| ()),
            }
        }
        Write::PutCode(code) => put_record(t, CODES, &code.key.clone(), &code),
        Write::PutRefresh(token) => {
            if !family_live_in(t, &token.family)? {
                return Err(StoreError::Conflict(format!(
                    "refresh family {} is not live",
                    token.family
                )));
            }
            put_record(t, REFRESH, &token.key.clone(), &token)
        }
        Write::RevokeFamily(family) => revoke_family(t, &family),
        Write::RevokeAccess { jti, expires } => {
            t.insert(REVOKED_ACCESS, &jti, Stored::Number(expires))
        }
        Write::PutKey(key) => put_record(t, KEYS, &key.kid.clone(), &key),
        Write::PutFlowVersion { version, ir } => {
            t.insert(FLOW_VERSIONS, &version, Stored::Text(ir))
        }
        Write::PutFactor(factor) => {
            if let Some(handle) = &factor.user_handle {
                claim_owner(t, HANDLES, handle, &factor.user, "WebAuthn user handle")?;
            }
            if let Some(credential) = &factor.credential_id {
                claim_owner(t, CREDENTIALS, credential, &factor.user, "passkey")?;
            }
            put_record(t, FACTORS, &factor_key(&factor.user, &factor.id), &factor)
        }
        Write::DeleteFactor { user, id } => {
            let key = factor_key(&user, &id);
            let credential =
                get_record::<Factor>(t, FACTORS, &key)?.and_then(|factor| factor.credential_id);
            t.remove(FACTORS, &key)?;
            if let Some(credential) = credential {
                // Freed only when no other factor of the user still names it.
                let still_used = user_factors(t, &user)?
                    .iter()
                    .any(|(_, other)| other.credential_id.as_deref() == Some(credential.as_str()));
                if !still_used {
                    t.remove(CREDENTIALS, &credential)?;
                }
            }
            Ok(())
        }
        Write::EndUserSessions { user, except } => {
            // Sessions and refresh tokens are keyed by their secret's hash, not by user: scans,
            // for a rare event.
            for (key, value) in t.range(SESSIONS, "", None)? {
                let theirs = value.record::<Session>().is_ok_and(|s| s.user == user);
                if theirs && except.as_deref() != Some(key.as_str()) {
                    t.remove(SESSIONS, &key)?;
                }
            }
            for (_, value) in t.range(REFRESH, "", None)? {
                if let Ok(token) = value.record::<RefreshToken>()
                    && token.authentication.user == user
                {
                    revoke_family(t, &token.family)?;
                }
            }
            Ok(())
        }
        Write::TakeSession(key) => take(
            t,
            SESSIONS,
            &key,
            "the session this sign-in builds on has ended",
        ),
        Write::UseTotpStep {
            user,
            id,
            step,
            now,
        } => update_factor(t, &user, &id, |factor| {
            if step <= factor.last_step {
                return Err(StoreError::Conflict(
                    "that TOTP code was already used".into(),
                ));
            }
            factor.last_step = step;
            factor.last_used = now;
            Ok(())
        }),
        Write::UseRecoveryCode {
            user,
            id,
            hash,
            now,
        } => update_factor(t, &user, &id, |factor| {
            let before = factor.code_hashes.len();
            factor.code_hashes.retain(|h| *h != hash);
            if factor.code_hashes.len() == before {
                return Err(StoreError::Conflict(
                    "that recovery code was already used".into(),
                ));
            }
            factor.last_used = now;
            Ok(())
        }),
        Write::UsePasskey {
            user,
            id,
            passkey,
            counter,
            now,
        } => update_factor(t, &user, &id, |factor| {
            if (counter != 0 || factor.counter != 0) && counter <= factor.counter {
                return Err(StoreError::Conflict(format!(
                    "passkey counter {counter} does not exceed {}",
                    factor.counter
                )));
            }
            factor.counter = counter;
            factor.passkey = Some(passkey);
            factor.last_used = now;
            Ok(())
        }),
        Write::PutChallenge(challenge) => {
            put_record(t, CHALLENGES, &challenge.key.clone(), &challenge)
        }
        Write::TakeChallenge(key) => take(t, CHALLENGES, &key, "the challenge was already used"),
        Write::RecordOnce { seen, now } => {
            let live = get_record::<Challenge>(t, CHALLENGES, &seen.key)?
                .is_some_and(|existing| existing.expires > now);
            if live {
                return Err(StoreError::Conflict(format!(
                    "{} was already seen",
                    seen.key
                )));
            }
            put_record(t, CHALLENGES, &seen.key.clone(), &seen)
        }
        Write::Audit(event) => append(t, AUDIT, &event),
        Write::LinkIdentity { idp, subject, user } => {
            t.insert(LINKS, &link_key(&idp, &subject), Stored::Text(user))
        }
        Write::QueueProvisioning(event) => {
            // Sequence numbers come from a counter, not the last key: an emptied outbox must
            // not hand out a number a dead letter already holds.
            let last_key = t.log_last(PROVISIONING)?.unwrap_or(0);
            let counter = t
                .get(META, PROVISIONING_SEQ)?
                .map(Stored::number)
                .transpose()?
                .unwrap_or(0);
            let next = counter.max(last_key) + 1;
            t.insert(META, PROVISIONING_SEQ, Stored::Number(next))?;
            t.log_insert(PROVISIONING, next, &encode(&event)?)
        }
        Write::ClaimProvisioning {
            seqs,
            owner,
            until,
            now,
        } => {
            // A claim covers its events' users: another worker delivering any event of the
            // same user to the same target would race this one (two creates, or an older
            // copy landing last).
            let mut claimed_users = std::collections::BTreeSet::new();
            for seq in &seqs {
                if let Some(bytes) = t.log_get(PROVISIONING, *seq)? {
                    let event: ProvisioningEvent = decode(&bytes)?;
                    claimed_users.insert((event.target, event.user));
                }
            }
            let mut held_elsewhere = false;
            t.log_scan(PROVISIONING, false, &mut |_, bytes| {
                let event: ProvisioningEvent = decode(bytes)?;
                held_elsewhere |= event.leased(now)
                    && event.lease_owner != owner
                    && claimed_users.contains(&(event.target.clone(), event.user.clone()));
                Ok(!held_elsewhere)
            })?;
            if held_elsewhere {
                return Err(StoreError::Conflict(
                    "another worker is delivering this user".into(),
                ));
            }
            for seq in seqs {
                let Some(bytes) = t.log_get(PROVISIONING, seq)? else {
                    return Err(StoreError::Conflict(format!("event {seq} is gone")));
                };
                let mut event: ProvisioningEvent = decode(&bytes)?;
                if event.leased(now) && event.lease_owner != owner {
                    return Err(StoreError::Conflict(format!(
                        "event {seq} is being delivered by another worker"
                    )));
                }
                event.lease_owner = owner.clone();
                event.lease_until = until;
                t.log_insert(PROVISIONING, seq, &encode(&event)?)?;
            }
            Ok(())
        }
        Write::AckProvisioning(seqs) => {
            for seq in seqs {
                t.log_remove(PROVISIONING, seq)?;
            }
            Ok(())
        }
        Write::RetryProvisioning {
            seq,
            attempts,
            not_before,
            error,
        } => {
            let Some(bytes) = t.log_get(PROVISIONING, seq)? else {
                return Ok(());
            };
            let mut event: ProvisioningEvent = decode(&bytes)?;
            event.attempts = attempts;
            event.not_before = not_before;
            event.last_error = error;
            event.lease_owner.clear();
            event.lease_until = 0;
            t.log_insert(PROVISIONING, seq, &encode(&event)?)
        }
        Write::DeadLetter {
            seq,
            attempts,
            error,
        } => {
            let Some(bytes) = t.log_remove(PROVISIONING, seq)? else {
                return Ok(());
            };
            let mut event: ProvisioningEvent = decode(&bytes)?;
            event.attempts = attempts;
            event.last_error = error;
            t.log_insert(DEAD_LETTERS, seq, &encode(&event)?)
        }
        Write::Requeue(seq) => {
            let found = t
                .log_remove(DEAD_LETTERS, seq)?
                .ok_or_else(|| StoreError::Conflict(format!("no dead letter {seq}")))?;
            let mut event: ProvisioningEvent = decode(&found)?;
            event.attempts = 0;
            event.not_before = 0;
            event.lease_owner.clear();
            event.lease_until = 0;
            t.log_insert(PROVISIONING, seq, &encode(&event)?)
        }
        Write::PutRemoteId {
            target,
            local,
            remote,
        } => t.insert(REMOTE_IDS, &link_key(&target, &local), Stored::Text(remote)),
        Write::DeleteRemoteId { target, local } => {
            t.remove(REMOTE_IDS, &link_key(&target, &local)).map(|_| ())
        }
        Write::DeleteRole(name) => {
            for user in all_records::<User>(t, USERS)? {
                if user.roles.contains(&name) {
                    update_user(t, &user.id, |user| user.roles.retain(|r| *r != name))?;
                }
            }
            t.remove(ROLES, &name).map(|_| ())
        }
    }
}

/// Reads a log (outbox, dead letters) in order, keeping what `keep` admits, up to `limit`.
fn read_log(
    t: &dyn Tables,
    log: Log,
    limit: usize,
    keep: impl Fn(&ProvisioningEvent) -> bool,
) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
    let mut out = Vec::new();
    t.log_scan(log, false, &mut |seq, bytes| {
        if out.len() >= limit {
            return Ok(false);
        }
        let event: ProvisioningEvent = decode(bytes)?;
        if keep(&event) {
            out.push((seq, event));
        }
        Ok(true)
    })?;
    Ok(out)
}

/// A count in a fixed window, as [`WINDOWS`] holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Window {
    /// The count.
    count: u32,
    /// When the window ends (`expires`, so that purging removes finished windows).
    expires: u64,
}

/// The live window of `key` at `now`, if any.
fn window(t: &dyn Tables, key: &str, now: u64) -> StoreResult<Option<Window>> {
    Ok(get_record::<Window>(t, WINDOWS, key)?.filter(|w| w.expires > now))
}

/// Whether a JSON record's `expires` (when it has one) is at or before `now`.
fn expired_record(value: &Stored, now: u64) -> bool {
    match value {
        Stored::Json(bytes) => serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("expires").and_then(serde_json::Value::as_u64))
            .is_some_and(|expires| expires <= now),
        Stored::Number(expires) => *expires <= now,
        Stored::Text(_) => false,
    }
}

impl<B: Backend> Store for B {
    fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.read(|t| get_record(t, USERS, id))
    }

    fn user_by_login(&self, name: &str) -> StoreResult<Option<User>> {
        let key = name.to_lowercase();
        self.read(|t| {
            let id = match get_text(t, USERNAMES, &key)? {
                Some(id) => Some(id),
                None => get_text(t, EMAILS, &key)?,
            };
            match id {
                Some(id) => get_record(t, USERS, &id),
                None => Ok(None),
            }
        })
    }

    fn users(&self) -> StoreResult<Vec<User>> {
        self.read(|t| all_records(t, USERS))
    }

    fn role(&self, name: &str) -> StoreResult<Option<Role>> {
        self.read(|t| get_record(t, ROLES, name))
    }

    fn roles(&self) -> StoreResult<Vec<Role>> {
        self.read(|t| all_records(t, ROLES))
    }

    fn session(&self, key: &str) -> StoreResult<Option<Session>> {
        self.read(|t| get_record(t, SESSIONS, key))
    }

    fn login(&self, key: &str) -> StoreResult<Option<Login>> {
        self.read(|t| get_record(t, LOGINS, key))
    }

    fn code(&self, key: &str) -> StoreResult<Option<AuthCode>> {
        self.read(|t| get_record(t, CODES, key))
    }

    fn family_live(&self, family: &str) -> StoreResult<bool> {
        self.read(|t| family_live_in(t, family))
    }

    fn refresh(&self, key: &str) -> StoreResult<Option<RefreshToken>> {
        self.read(|t| get_record(t, REFRESH, key))
    }

    fn access_revoked(&self, jti: &str) -> StoreResult<bool> {
        self.read(|t| Ok(t.get(REVOKED_ACCESS, jti)?.is_some()))
    }

    fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.read(|t| all_records(t, KEYS))
    }

    fn flow_version(&self, version: &str) -> StoreResult<Option<String>> {
        self.read(|t| get_text(t, FLOW_VERSIONS, version))
    }

    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        self.read(|t| {
            let mut out = Vec::new();
            t.log_scan(AUDIT, true, &mut |_, bytes| {
                if out.len() >= limit {
                    return Ok(false);
                }
                out.push(decode(bytes)?);
                Ok(true)
            })?;
            Ok(out)
        })
    }

    fn factors(&self, user: &str) -> StoreResult<Vec<Factor>> {
        let mut out: Vec<Factor> = self.read(|t| {
            Ok(user_factors(t, user)?
                .into_iter()
                .map(|(_, factor)| factor)
                .collect())
        })?;
        out.sort_by(|a, b| (a.created, a.kind, &a.id).cmp(&(b.created, b.kind, &b.id)));
        Ok(out)
    }

    fn user_by_handle(&self, handle: &str) -> StoreResult<Option<String>> {
        self.read(|t| get_text(t, HANDLES, handle))
    }

    fn linked_user(&self, idp: &str, subject: &str) -> StoreResult<Option<String>> {
        self.read(|t| get_text(t, LINKS, &link_key(idp, subject)))
    }

    fn provisioning_events(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        self.read(|t| read_log(t, PROVISIONING, limit, |_| true))
    }

    fn provisioning_due(
        &self,
        now: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        self.read(|t| {
            // Users some worker is delivering wait, whatever their events' own state.
            let mut busy = std::collections::BTreeSet::new();
            t.log_scan(PROVISIONING, false, &mut |_, bytes| {
                let event: ProvisioningEvent = decode(bytes)?;
                if event.leased(now) {
                    busy.insert((event.target, event.user));
                }
                Ok(true)
            })?;
            read_log(t, PROVISIONING, limit, |event| {
                event.not_before <= now
                    && !busy.contains(&(event.target.clone(), event.user.clone()))
            })
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        self.read(|t| read_log(t, DEAD_LETTERS, limit, |_| true))
    }

    fn remote_id(&self, target: &str, local: &str) -> StoreResult<Option<String>> {
        self.read(|t| get_text(t, REMOTE_IDS, &link_key(target, local)))
    }

    fn remote_ids(&self, target: &str, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        let base = link_key(target, "");
        let start = link_key(target, prefix);
        self.read(|t| {
            let mut out = Vec::new();
            // Every key with the prefix sorts below the prefix followed by the last character.
            let end = format!("{start}\u{10ffff}");
            for (key, value) in t.range(REMOTE_IDS, &start, Some(&end))? {
                let Some(local) = key.strip_prefix(&base) else {
                    break;
                };
                if !local.starts_with(prefix) {
                    break;
                }
                out.push((local.to_string(), value.text()?));
            }
            Ok(out)
        })
    }

    fn sessions(&self) -> StoreResult<Vec<Session>> {
        self.read(|t| all_records(t, SESSIONS))
    }

    fn role_members(&self, role: &str) -> StoreResult<Vec<User>> {
        let mut users = self.users()?;
        users.retain(|user| user.roles.iter().any(|r| r == role));
        Ok(users)
    }

    fn challenge(&self, key: &str, now: u64) -> StoreResult<Option<Challenge>> {
        Ok(self
            .read(|t| get_record::<Challenge>(t, CHALLENGES, key))?
            .filter(|c| c.expires > now))
    }

    fn commit(&self, batch: Batch) -> StoreResult<()> {
        commit_batch(self, batch, true)
    }

    fn commit_unflushed(&self, batch: Batch) -> StoreResult<()> {
        commit_batch(self, batch, false)
    }

    fn redeem_code(&self, key: &str, now: u64, issued: &IssuedByCode) -> StoreResult<Redemption> {
        self.write(true, |t| {
            let Some(mut code) = get_record::<AuthCode>(t, CODES, key)? else {
                return Ok((Redemption::Invalid, false));
            };
            if let Some(redeemed) = &code.redeemed {
                // A second use: revoke what the first issued (RFC 6749 §4.1.2).
                if let Some(family) = &redeemed.family {
                    revoke_family(t, family)?;
                }
                t.insert(
                    REVOKED_ACCESS,
                    &redeemed.jti,
                    Stored::Number(redeemed.access_expires),
                )?;
                return Ok((Redemption::Reused, true));
            }
            if code.expires <= now {
                t.remove(CODES, key)?;
                return Ok((Redemption::Invalid, true));
            }
            if let Some((family, expires)) = &issued.family {
                t.insert(FAMILIES, family, Stored::Number(*expires))?;
            }
            code.redeemed = Some(Redeemed {
                family: issued.family.as_ref().map(|(family, _)| family.clone()),
                jti: issued.access.0.clone(),
                access_expires: issued.access.1,
            });
            // Keep the spent code while what it issued lives, so a late reuse still revokes.
            code.expires = issued
                .family
                .as_ref()
                .map_or(issued.access.1, |(_, expires)| *expires)
                .max(issued.access.1);
            put_record(t, CODES, key, &code)?;
            Ok((Redemption::Fresh(Box::new(code)), true))
        })
    }

    fn rotate_refresh(&self, key: &str, new_key: &str, now: u64) -> StoreResult<Rotation> {
        self.write(true, |t| {
            let Some(mut token) = get_record::<RefreshToken>(t, REFRESH, key)? else {
                return Ok((Rotation::Invalid, false));
            };
            if !family_live_in(t, &token.family)? || token.expires <= now {
                return Ok((Rotation::Invalid, false));
            }
            if token.spent {
                revoke_family(t, &token.family)?;
                return Ok((Rotation::Reused, true));
            }
            token.spent = true;
            put_record(t, REFRESH, key, &token)?;
            let next = RefreshToken {
                key: new_key.to_string(),
                spent: false,
                ..token
            };
            put_record(t, REFRESH, new_key, &next)?;
            Ok((Rotation::Rotated(Box::new(next)), true))
        })
    }

    fn window_add(&self, key: &str, seconds: u64, now: u64, add: u32) -> StoreResult<(u32, u64)> {
        self.write(true, |t| {
            let mut current = window(t, key, now)?.unwrap_or(Window {
                count: 0,
                expires: now.saturating_add(seconds),
            });
            if add == 0 {
                return Ok(((current.count, current.expires), false));
            }
            current.count = current.count.saturating_add(add);
            put_record(t, WINDOWS, key, &current)?;
            Ok(((current.count, current.expires), true))
        })
    }

    fn window_admit(&self, limits: &[(&str, u64, u32)], now: u64) -> StoreResult<Result<(), u64>> {
        self.write(true, |t| {
            let mut windows = Vec::new();
            for (key, seconds, max) in limits {
                let current = window(t, key, now)?.unwrap_or(Window {
                    count: 0,
                    expires: now.saturating_add(*seconds),
                });
                if current.count >= *max {
                    return Ok((Err(current.expires.saturating_sub(now).max(1)), false));
                }
                windows.push((*key, current));
            }
            for (key, mut current) in windows {
                current.count = current.count.saturating_add(1);
                put_record(t, WINDOWS, key, &current)?;
            }
            Ok((Ok(()), true))
        })
    }

    fn window_clear(&self, key: &str) -> StoreResult<()> {
        self.write(true, |t| {
            let removed = t.remove(WINDOWS, key)?.is_some();
            Ok(((), removed))
        })
    }

    fn announce_reload(&self, from: &str) -> StoreResult<()> {
        Backend::announce_reload(self, from)
    }

    fn on_reload_announced(&self, heard: super::ReloadListener) -> StoreResult<bool> {
        Backend::on_reload_announced(self, heard)
    }

    fn shared(&self) -> bool {
        Backend::shared(self)
    }

    fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        // One transaction per table: shorter ones conflict less with the requests running
        // beside them (several nodes purge one database).
        let mut removed = 0usize;
        for table in [
            SESSIONS,
            LOGINS,
            CODES,
            REFRESH,
            CHALLENGES,
            FAMILIES,
            REVOKED_ACCESS,
            WINDOWS,
        ] {
            removed += self.write(true, |t| {
                let mut gone = 0usize;
                for (key, value) in t.range(table, "", None)? {
                    if expired_record(&value, now) {
                        t.remove(table, &key)?;
                        gone += 1;
                    }
                }
                Ok((gone, gone > 0))
            })?;
        }
        Ok(removed)
    }
}

fn commit_batch<B: Backend>(backend: &B, batch: Batch, durable: bool) -> StoreResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    backend.write(durable, |t| {
        for write in batch.iter().cloned() {
            // An error aborts the transaction: nothing of the batch is written.
            apply(t, write)?;
        }
        Ok(((), true))
    })
}
