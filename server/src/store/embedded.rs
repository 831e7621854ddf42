//! The embedded store: one redb file in the data directory.
//!
//! Why redb and not sled (which the design card named): sled's flush issues `sync_file_range`
//! and never `fsync`, so an acknowledged write can be lost on power loss; redb commits with
//! `fdatasync` (durability `Immediate`, its default), has ACID transactions and is maintained.
//! Records are JSON so that a dump is readable and the format is the same as PostgreSQL's
//! `jsonb` columns will be.
//!
//! redb holds an exclusive lock on the file: one process opens a data directory at a time, so
//! the CLI's `user` and `role` commands work on a stopped server's data directory.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AuditEvent, AuthCode, Batch, Challenge, Factor, IssuedByCode, KeyRecord, Login,
    ProvisioningEvent, Redeemed, Redemption, RefreshToken, Role, Rotation, Session, Store,
    StoreError, StoreResult, User, Write,
};

type Json = TableDefinition<'static, &'static str, &'static [u8]>;

const USERS: Json = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
const EMAILS: TableDefinition<&str, &str> = TableDefinition::new("emails");
const ROLES: Json = TableDefinition::new("roles");
const SESSIONS: Json = TableDefinition::new("sessions");
const LOGINS: Json = TableDefinition::new("logins");
const CODES: Json = TableDefinition::new("codes");
const REFRESH: Json = TableDefinition::new("refresh_tokens");
/// Refresh families: key the family id, value its expiry; a revoked family is removed.
const FAMILIES: TableDefinition<&str, u64> = TableDefinition::new("refresh_families");
const REVOKED_ACCESS: TableDefinition<&str, u64> = TableDefinition::new("revoked_access");
const KEYS: Json = TableDefinition::new("keys");
/// Factors by `USER/FACTOR_ID`, so one user's factors are one key range.
const FACTORS: Json = TableDefinition::new("factors");
/// WebAuthn user handle to user id (usernameless passkey login).
const HANDLES: TableDefinition<&str, &str> = TableDefinition::new("webauthn_handles");
/// WebAuthn credential id to user id: a credential belongs to one account only.
const CREDENTIALS: TableDefinition<&str, &str> = TableDefinition::new("webauthn_credentials");
const CHALLENGES: Json = TableDefinition::new("challenges");
/// `IDP` 0x1f `SUBJECT` to the local user an upstream account is linked to.
const LINKS: TableDefinition<&str, &str> = TableDefinition::new("identity_links");
/// Provisioning events in the order they were emitted.
const PROVISIONING: TableDefinition<u64, &[u8]> = TableDefinition::new("provisioning_outbox");
/// Provisioning events that failed for good, by their outbox sequence number.
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("provisioning_dead_letters");
/// `TARGET` 0x1f `LOCAL` (`user:ID`, `group:ROLE`) to the id the target gave it.
const REMOTE_IDS: TableDefinition<&str, &str> = TableDefinition::new("provisioning_remote_ids");
/// Flow versions that were live: version → IR (JSON text).
const FLOW_VERSIONS: TableDefinition<&str, &str> = TableDefinition::new("flow_versions");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Bookkeeping: the flush counter a group-commit flush writes.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The default page cache: 128 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "idflow.redb";

/// The embedded store.
pub struct EmbeddedStore {
    db: Database,
    syncs: Mutex<Syncs>,
    synced: Condvar,
}

/// Group commit: transactions commit without flushing, then wait for a flush that started
/// after their commit. One flush (an `Immediate` commit, which fdatasyncs and thereby makes
/// every earlier commit durable) serves every transaction that committed before it started,
/// so under load many requests share one fsync instead of queueing for one each. No request
/// is answered before its writes are durable.
#[derive(Default)]
struct Syncs {
    /// Flushes started so far.
    started: u64,
    /// The number of the last flush that succeeded (they run one at a time, in order).
    finished: u64,
    /// Whether a flush is running.
    running: bool,
}

fn fail(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(fail)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Failed(format!("corrupt record: {e}")))
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir` with the default page cache.
    pub fn open(data_dir: &Path) -> StoreResult<EmbeddedStore> {
        EmbeddedStore::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of at most `cache_bytes` (what bounds the server's
    /// memory as sessions and tokens accumulate).
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Failed(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Failed(format!(
                    "{} is in use by another idflow process (stop the server to use the CLI on it)",
                    path.display()
                )),
                other => StoreError::Failed(format!("cannot open {}: {other}", path.display())),
            })?;
        let txn = db.begin_write().map_err(fail)?;
        for table in [
            USERS, ROLES, SESSIONS, LOGINS, CODES, REFRESH, KEYS, FACTORS, CHALLENGES,
        ] {
            txn.open_table(table).map_err(fail)?;
        }
        txn.open_table(USERNAMES).map_err(fail)?;
        txn.open_table(EMAILS).map_err(fail)?;
        txn.open_table(HANDLES).map_err(fail)?;
        txn.open_table(CREDENTIALS).map_err(fail)?;
        txn.open_table(LINKS).map_err(fail)?;
        txn.open_table(PROVISIONING).map_err(fail)?;
        txn.open_table(DEAD_LETTERS).map_err(fail)?;
        txn.open_table(REMOTE_IDS).map_err(fail)?;
        txn.open_table(FAMILIES).map_err(fail)?;
        txn.open_table(REVOKED_ACCESS).map_err(fail)?;
        txn.open_table(AUDIT).map_err(fail)?;
        txn.open_table(META).map_err(fail)?;
        txn.open_table(FLOW_VERSIONS).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(EmbeddedStore {
            db,
            syncs: Mutex::new(Syncs::default()),
            synced: Condvar::new(),
        })
    }

    /// A write transaction that commits without flushing; [`Self::finish`] makes it durable.
    fn begin(&self) -> StoreResult<WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(fail)?;
        txn.set_durability(Durability::None).map_err(fail)?;
        Ok(txn)
    }

    /// Commits `txn` and returns once it is durable (see [`Syncs`]).
    fn finish(&self, txn: WriteTransaction) -> StoreResult<()> {
        txn.commit().map_err(fail)?;
        let mut syncs = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
        // The first flush to start from now on covers this commit.
        let needed = syncs.started;
        while syncs.finished <= needed {
            if syncs.running {
                syncs = self.synced.wait(syncs).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            syncs.running = true;
            syncs.started += 1;
            let flush = syncs.started;
            drop(syncs);
            let flushed = self.flush(flush);
            syncs = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
            syncs.running = false;
            // A failed flush proves nothing: waiters stay and one of them flushes again.
            if flushed.is_ok() {
                syncs.finished = flush;
            }
            self.synced.notify_all();
            flushed?;
        }
        Ok(())
    }

    /// An `Immediate` commit: persists every commit before it.
    fn flush(&self, counter: u64) -> StoreResult<()> {
        let txn = self.db.begin_write().map_err(fail)?;
        txn.open_table(META)
            .map_err(fail)?
            .insert("flushes", counter)
            .map_err(fail)?;
        txn.commit().map_err(fail)
    }

    fn get<T: DeserializeOwned>(&self, table: Json, key: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(table).map_err(fail)?;
        match table.get(key).map_err(fail)? {
            Some(value) => decode(value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(&self, table: Json) -> StoreResult<Vec<T>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(table).map_err(fail)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(fail)? {
            let (_, value) = entry.map_err(fail)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }
}

fn put<T: Serialize>(txn: &WriteTransaction, table: Json, key: &str, value: &T) -> StoreResult<()> {
    let bytes = encode(value)?;
    txn.open_table(table)
        .map_err(fail)?
        .insert(key, bytes.as_slice())
        .map_err(fail)?;
    Ok(())
}

fn get_in<T: DeserializeOwned>(
    txn: &WriteTransaction,
    table: Json,
    key: &str,
) -> StoreResult<Option<T>> {
    let table = txn.open_table(table).map_err(fail)?;
    let value = table.get(key).map_err(fail)?;
    match value {
        Some(value) => decode(value.value()).map(Some),
        None => Ok(None),
    }
}

fn remove(txn: &WriteTransaction, table: Json, key: &str) -> StoreResult<()> {
    txn.open_table(table)
        .map_err(fail)?
        .remove(key)
        .map_err(fail)?;
    Ok(())
}

/// Claims `name` in an index for `id`; fails if another id holds it.
fn claim_name(
    txn: &WriteTransaction,
    index: TableDefinition<&str, &str>,
    name: &str,
    id: &str,
    what: &str,
) -> StoreResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    let key = name.to_lowercase();
    let mut table = txn.open_table(index).map_err(fail)?;
    let holder = table
        .get(key.as_str())
        .map_err(fail)?
        .map(|v| v.value().to_string());
    if let Some(holder) = holder
        && holder != id
    {
        return Err(StoreError::Failed(format!("the {what} `{name}` is taken")));
    }
    table.insert(key.as_str(), id).map_err(fail)?;
    Ok(())
}

/// Fails if `name` is held in `other` (usernames and emails must not shadow each other: a
/// login by name looks in both).
fn not_held_by_another(
    txn: &WriteTransaction,
    other: TableDefinition<&str, &str>,
    name: &str,
    id: &str,
) -> StoreResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    let table = txn.open_table(other).map_err(fail)?;
    let holder = table
        .get(name.to_lowercase().as_str())
        .map_err(fail)?
        .map(|v| v.value().to_string());
    match holder {
        Some(holder) if holder != id => Err(StoreError::Failed(format!(
            "`{name}` is another user's username or email"
        ))),
        _ => Ok(()),
    }
}

fn release_name(
    txn: &WriteTransaction,
    index: TableDefinition<&str, &str>,
    name: &str,
) -> StoreResult<()> {
    if !name.is_empty() {
        let key = name.to_lowercase();
        txn.open_table(index)
            .map_err(fail)?
            .remove(key.as_str())
            .map_err(fail)?;
    }
    Ok(())
}

fn write_user(txn: &WriteTransaction, user: &User, old: Option<&User>) -> StoreResult<()> {
    if let Some(old) = old {
        if !old.username.eq_ignore_ascii_case(&user.username) {
            release_name(txn, USERNAMES, &old.username)?;
        }
        if !old.email.eq_ignore_ascii_case(&user.email) {
            release_name(txn, EMAILS, &old.email)?;
        }
    }
    not_held_by_another(txn, EMAILS, &user.username, &user.id)?;
    not_held_by_another(txn, USERNAMES, &user.email, &user.id)?;
    claim_name(txn, USERNAMES, &user.username, &user.id, "username")?;
    claim_name(txn, EMAILS, &user.email, &user.id, "email")?;
    put(txn, USERS, &user.id, user)
}

fn update_user(
    txn: &WriteTransaction,
    id: &str,
    change: impl FnOnce(&mut User),
) -> StoreResult<()> {
    let mut user: User =
        get_in(txn, USERS, id)?.ok_or_else(|| StoreError::Failed(format!("no user `{id}`")))?;
    change(&mut user);
    put(txn, USERS, id, &user)
}

fn revoke_family(txn: &WriteTransaction, family: &str) -> StoreResult<()> {
    txn.open_table(FAMILIES)
        .map_err(fail)?
        .remove(family)
        .map_err(fail)?;
    Ok(())
}

fn family_live(txn: &WriteTransaction, family: &str) -> StoreResult<bool> {
    Ok(txn
        .open_table(FAMILIES)
        .map_err(fail)?
        .get(family)
        .map_err(fail)?
        .is_some())
}

/// Records that `name` in `table` belongs to `user`; a name another user holds fails the batch.
fn claim_owner(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &str>,
    name: &str,
    user: &str,
    what: &str,
) -> StoreResult<()> {
    let mut owners = txn.open_table(table).map_err(fail)?;
    let owner = owners
        .get(name)
        .map_err(fail)?
        .map(|v| v.value().to_string());
    if owner.as_ref().is_some_and(|owner| owner != user) {
        return Err(StoreError::Conflict(format!(
            "that {what} is registered to another account"
        )));
    }
    owners.insert(name, user).map_err(fail)?;
    Ok(())
}

/// Removes `key` from `table`; a key already gone fails the batch with a conflict (what makes
/// a challenge or a replaced session usable once).
fn take(txn: &WriteTransaction, table: Json, key: &str, gone: &str) -> StoreResult<()> {
    let found = txn
        .open_table(table)
        .map_err(fail)?
        .remove(key)
        .map_err(fail)?
        .is_some();
    if found {
        Ok(())
    } else {
        Err(StoreError::Conflict(gone.into()))
    }
}

/// The key range holding exactly one user's factors (`USER/...`; `0` follows `/`).
fn factor_range(user: &str) -> (String, String) {
    (format!("{user}/"), format!("{user}0"))
}

/// Appends `value` under the next sequence number of a log table (audit, provisioning).
fn append<T: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<u64, &[u8]>,
    value: &T,
) -> StoreResult<()> {
    let mut table = txn.open_table(table).map_err(fail)?;
    let next = table
        .last()
        .map_err(fail)?
        .map(|(key, _)| key.value() + 1)
        .unwrap_or(1);
    let bytes = encode(value)?;
    table.insert(next, bytes.as_slice()).map_err(fail)?;
    Ok(())
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
    txn: &WriteTransaction,
    user: &str,
    id: &str,
    change: impl FnOnce(&mut Factor) -> StoreResult<()>,
) -> StoreResult<()> {
    let key = factor_key(user, id);
    let mut factor: Factor = get_in(txn, FACTORS, &key)?
        .ok_or_else(|| StoreError::Conflict(format!("factor {id} of {user} is gone")))?;
    change(&mut factor)?;
    put(txn, FACTORS, &key, &factor)
}

fn apply(txn: &WriteTransaction, write: Write) -> StoreResult<()> {
    match write {
        Write::CreateUser(user) => {
            if get_in::<User>(txn, USERS, &user.id)?.is_some() {
                return Err(StoreError::Failed(format!(
                    "the user id `{}` is taken",
                    user.id
                )));
            }
            write_user(txn, &user, None)
        }
        Write::DeleteUser(id) => {
            let user: User = get_in(txn, USERS, &id)?
                .ok_or_else(|| StoreError::Conflict(format!("no user `{id}`")))?;
            release_name(txn, USERNAMES, &user.username)?;
            release_name(txn, EMAILS, &user.email)?;
            remove(txn, USERS, &id)?;
            let (start, end) = factor_range(&id);
            let mut factors = Vec::new();
            for entry in txn
                .open_table(FACTORS)
                .map_err(fail)?
                .range(start.as_str()..end.as_str())
                .map_err(fail)?
            {
                let (key, value) = entry.map_err(fail)?;
                let factor: Factor = decode(value.value())?;
                factors.push((key.value().to_string(), factor.credential_id));
            }
            for (key, credential) in factors {
                remove(txn, FACTORS, &key)?;
                if let Some(credential) = credential {
                    txn.open_table(CREDENTIALS)
                        .map_err(fail)?
                        .remove(credential.as_str())
                        .map_err(fail)?;
                }
            }
            txn.open_table(LINKS)
                .map_err(fail)?
                .retain(|_, user| user != id)
                .map_err(fail)?;
            apply(
                txn,
                Write::EndUserSessions {
                    user: id,
                    except: None,
                },
            )
        }
        Write::ReplaceUser { user, expected } => {
            let old: User = get_in(txn, USERS, &user.id)?
                .ok_or_else(|| StoreError::Conflict(format!("no user `{}`", user.id)))?;
            if old != *expected {
                return Err(StoreError::Conflict(format!(
                    "the user `{}` changed meanwhile",
                    user.id
                )));
            }
            write_user(txn, &user, Some(&old))
        }
        Write::UpdateUser(user) => {
            let old: User = get_in(txn, USERS, &user.id)?
                .ok_or_else(|| StoreError::Failed(format!("no user `{}`", user.id)))?;
            write_user(txn, &user, Some(&old))
        }
        Write::RecordFailure {
            user,
            lock_after,
            lock_seconds,
            now,
        } => update_user(txn, &user, |user| {
            user.failed_attempts = user.failed_attempts.saturating_add(1);
            if lock_after.is_some_and(|limit| user.failed_attempts >= limit) {
                user.locked_until = now.saturating_add(lock_seconds);
                user.failed_attempts = 0;
            }
        }),
        Write::ResetFailures(user) => update_user(txn, &user, |user| user.failed_attempts = 0),
        Write::RehashPassword { user, old, new } => update_user(txn, &user, |user| {
            if user.password_hash.as_deref() == Some(old.as_str()) {
                user.password_hash = Some(new);
            }
        }),
        Write::LockUser { user, until } => update_user(txn, &user, |user| {
            user.locked_until = user.locked_until.max(until);
        }),
        Write::GrantRole { user, role } => update_user(txn, &user, |user| {
            if !user.roles.contains(&role) {
                user.roles.push(role);
            }
        }),
        Write::RevokeRole { user, role } => {
            update_user(txn, &user, |user| user.roles.retain(|r| *r != role))
        }
        Write::PutRole(role) => put(txn, ROLES, &role.name.clone(), &role),
        Write::CreateRole(role) => {
            if get_in::<Role>(txn, ROLES, &role.name)?.is_some() {
                return Err(StoreError::Failed(format!(
                    "the role name `{}` is taken",
                    role.name
                )));
            }
            put(txn, ROLES, &role.name.clone(), &role)
        }
        Write::PutSession(session) => put(txn, SESSIONS, &session.key.clone(), &session),
        Write::DeleteSession(key) => remove(txn, SESSIONS, &key),
        Write::AddSamlParticipant {
            session,
            participant,
        } => {
            let Some(mut found) = get_in::<Session>(txn, SESSIONS, &session)? else {
                return Ok(());
            };
            found.saml.retain(|p| p.sp != participant.sp);
            found.saml.push(participant);
            put(txn, SESSIONS, &session, &found)
        }
        Write::PutLogin(login) => put(txn, LOGINS, &login.key.clone(), &login),
        Write::AdvanceLogin { key, seq, next } => {
            let current: Option<Login> = get_in(txn, LOGINS, &key)?;
            if current.map(|login| login.seq) != Some(seq) {
                return Err(StoreError::Conflict(
                    "the login moved on in another request".into(),
                ));
            }
            match next {
                Some(next) => put(txn, LOGINS, &key, &next),
                None => remove(txn, LOGINS, &key),
            }
        }
        Write::PutCode(code) => put(txn, CODES, &code.key.clone(), &code),
        Write::PutRefresh(token) => {
            if !family_live(txn, &token.family)? {
                return Err(StoreError::Conflict(format!(
                    "refresh family {} is not live",
                    token.family
                )));
            }
            put(txn, REFRESH, &token.key.clone(), &token)
        }
        Write::RevokeFamily(family) => revoke_family(txn, &family),
        Write::RevokeAccess { jti, expires } => {
            txn.open_table(REVOKED_ACCESS)
                .map_err(fail)?
                .insert(jti.as_str(), expires)
                .map_err(fail)?;
            Ok(())
        }
        Write::PutKey(key) => put(txn, KEYS, &key.kid.clone(), &key),
        Write::PutFlowVersion { version, ir } => {
            txn.open_table(FLOW_VERSIONS)
                .map_err(fail)?
                .insert(version.as_str(), ir.as_str())
                .map_err(fail)?;
            Ok(())
        }
        Write::PutFactor(factor) => {
            if let Some(handle) = &factor.user_handle {
                claim_owner(txn, HANDLES, handle, &factor.user, "WebAuthn user handle")?;
            }
            if let Some(credential) = &factor.credential_id {
                claim_owner(txn, CREDENTIALS, credential, &factor.user, "passkey")?;
            }
            put(txn, FACTORS, &factor_key(&factor.user, &factor.id), &factor)
        }
        Write::DeleteFactor { user, id } => {
            let key = factor_key(&user, &id);
            let credential =
                get_in::<Factor>(txn, FACTORS, &key)?.and_then(|factor| factor.credential_id);
            remove(txn, FACTORS, &key)?;
            if let Some(credential) = credential {
                // Freed only when no other factor of the user still names it.
                let (start, end) = factor_range(&user);
                let mut still_used = false;
                let factors = txn.open_table(FACTORS).map_err(fail)?;
                for entry in factors.range(start.as_str()..end.as_str()).map_err(fail)? {
                    let (_, value) = entry.map_err(fail)?;
                    let other: Factor = decode(value.value())?;
                    still_used |= other.credential_id.as_deref() == Some(credential.as_str());
                }
                if !still_used {
                    txn.open_table(CREDENTIALS)
                        .map_err(fail)?
                        .remove(credential.as_str())
                        .map_err(fail)?;
                }
            }
            Ok(())
        }
        Write::EndUserSessions { user, except } => {
            // Sessions and refresh tokens are keyed by their secret's hash, not by user: scans,
            // for a rare event.
            let mut sessions = txn.open_table(SESSIONS).map_err(fail)?;
            sessions
                .retain(|key, value| {
                    except.as_deref() == Some(key)
                        || serde_json::from_slice::<Session>(value).map_or(true, |s| s.user != user)
                })
                .map_err(fail)?;
            let mut families = Vec::new();
            for entry in txn
                .open_table(REFRESH)
                .map_err(fail)?
                .iter()
                .map_err(fail)?
            {
                let (_, value) = entry.map_err(fail)?;
                if let Ok(token) = serde_json::from_slice::<RefreshToken>(value.value())
                    && token.authentication.user == user
                {
                    families.push(token.family);
                }
            }
            for family in families {
                revoke_family(txn, &family)?;
            }
            Ok(())
        }
        Write::TakeSession(key) => take(
            txn,
            SESSIONS,
            &key,
            "the session this sign-in builds on has ended",
        ),
        Write::UseTotpStep {
            user,
            id,
            step,
            now,
        } => update_factor(txn, &user, &id, |factor| {
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
        } => update_factor(txn, &user, &id, |factor| {
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
        } => update_factor(txn, &user, &id, |factor| {
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
        Write::PutChallenge(challenge) => put(txn, CHALLENGES, &challenge.key.clone(), &challenge),
        Write::TakeChallenge(key) => take(txn, CHALLENGES, &key, "the challenge was already used"),
        Write::RecordOnce { seen, now } => {
            let live = get_in::<Challenge>(txn, CHALLENGES, &seen.key)?
                .is_some_and(|existing| existing.expires > now);
            if live {
                return Err(StoreError::Conflict(format!(
                    "{} was already seen",
                    seen.key
                )));
            }
            put(txn, CHALLENGES, &seen.key.clone(), &seen)
        }
        Write::Audit(event) => append(txn, AUDIT, &event),
        Write::LinkIdentity { idp, subject, user } => {
            txn.open_table(LINKS)
                .map_err(fail)?
                .insert(link_key(&idp, &subject).as_str(), user.as_str())
                .map_err(fail)?;
            Ok(())
        }
        Write::QueueProvisioning(event) => {
            // Sequence numbers come from a counter, not the last key: an emptied outbox must
            // not hand out a number a dead letter already holds.
            let mut meta = txn.open_table(META).map_err(fail)?;
            let last_key = txn
                .open_table(PROVISIONING)
                .map_err(fail)?
                .last()
                .map_err(fail)?
                .map(|(key, _)| key.value())
                .unwrap_or(0);
            let counter = meta
                .get(PROVISIONING_SEQ)
                .map_err(fail)?
                .map(|v| v.value())
                .unwrap_or(0);
            let next = counter.max(last_key) + 1;
            meta.insert(PROVISIONING_SEQ, next).map_err(fail)?;
            let bytes = encode(&event)?;
            txn.open_table(PROVISIONING)
                .map_err(fail)?
                .insert(next, bytes.as_slice())
                .map_err(fail)?;
            Ok(())
        }
        Write::AckProvisioning(seqs) => {
            let mut table = txn.open_table(PROVISIONING).map_err(fail)?;
            for seq in seqs {
                table.remove(seq).map_err(fail)?;
            }
            Ok(())
        }
        Write::RetryProvisioning {
            seq,
            attempts,
            not_before,
            error,
        } => {
            let mut table = txn.open_table(PROVISIONING).map_err(fail)?;
            let found = table.get(seq).map_err(fail)?.map(|v| v.value().to_vec());
            let Some(bytes) = found else {
                return Ok(());
            };
            let mut event: ProvisioningEvent = decode(&bytes)?;
            event.attempts = attempts;
            event.not_before = not_before;
            event.last_error = error;
            let bytes = encode(&event)?;
            table.insert(seq, bytes.as_slice()).map_err(fail)?;
            Ok(())
        }
        Write::DeadLetter {
            seq,
            attempts,
            error,
        } => {
            let found = txn
                .open_table(PROVISIONING)
                .map_err(fail)?
                .remove(seq)
                .map_err(fail)?
                .map(|v| v.value().to_vec());
            let Some(bytes) = found else {
                return Ok(());
            };
            let mut event: ProvisioningEvent = decode(&bytes)?;
            event.attempts = attempts;
            event.last_error = error;
            let bytes = encode(&event)?;
            txn.open_table(DEAD_LETTERS)
                .map_err(fail)?
                .insert(seq, bytes.as_slice())
                .map_err(fail)?;
            Ok(())
        }
        Write::Requeue(seq) => {
            let found = txn
                .open_table(DEAD_LETTERS)
                .map_err(fail)?
                .remove(seq)
                .map_err(fail)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::Conflict(format!("no dead letter {seq}")))?;
            let mut event: ProvisioningEvent = decode(&found)?;
            event.attempts = 0;
            event.not_before = 0;
            let bytes = encode(&event)?;
            txn.open_table(PROVISIONING)
                .map_err(fail)?
                .insert(seq, bytes.as_slice())
                .map_err(fail)?;
            Ok(())
        }
        Write::PutRemoteId {
            target,
            local,
            remote,
        } => {
            txn.open_table(REMOTE_IDS)
                .map_err(fail)?
                .insert(link_key(&target, &local).as_str(), remote.as_str())
                .map_err(fail)?;
            Ok(())
        }
        Write::DeleteRemoteId { target, local } => {
            txn.open_table(REMOTE_IDS)
                .map_err(fail)?
                .remove(link_key(&target, &local).as_str())
                .map_err(fail)?;
            Ok(())
        }
        Write::DeleteRole(name) => {
            let holders: Vec<User> = {
                let table = txn.open_table(USERS).map_err(fail)?;
                let mut holders = Vec::new();
                for entry in table.iter().map_err(fail)? {
                    let (_, value) = entry.map_err(fail)?;
                    let user: User = decode(value.value())?;
                    if user.roles.contains(&name) {
                        holders.push(user);
                    }
                }
                holders
            };
            for user in holders {
                update_user(txn, &user.id, |user| user.roles.retain(|r| *r != name))?;
            }
            remove(txn, ROLES, &name)
        }
    }
}

/// The META key of the provisioning outbox's last sequence number.
const PROVISIONING_SEQ: &str = "provisioning_seq";

/// Reads a log table (outbox, dead letters) in order, keeping what `keep` admits.
fn read_log(
    db: &Database,
    table: TableDefinition<u64, &[u8]>,
    limit: usize,
    keep: impl Fn(&ProvisioningEvent) -> bool,
) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
    let txn = db.begin_read().map_err(fail)?;
    let table = txn.open_table(table).map_err(fail)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(fail)? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = entry.map_err(fail)?;
        let event: ProvisioningEvent = decode(value.value())?;
        if keep(&event) {
            out.push((key.value(), event));
        }
    }
    Ok(out)
}

impl Store for EmbeddedStore {
    fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.get(USERS, id)
    }

    fn user_by_login(&self, name: &str) -> StoreResult<Option<User>> {
        let key = name.to_lowercase();
        let id = {
            let txn = self.db.begin_read().map_err(fail)?;
            let by_name = txn.open_table(USERNAMES).map_err(fail)?;
            let by_email = txn.open_table(EMAILS).map_err(fail)?;
            let found = by_name.get(key.as_str()).map_err(fail)?;
            match found {
                Some(id) => Some(id.value().to_string()),
                None => by_email
                    .get(key.as_str())
                    .map_err(fail)?
                    .map(|id| id.value().to_string()),
            }
        };
        match id {
            Some(id) => self.user(&id),
            None => Ok(None),
        }
    }

    fn users(&self) -> StoreResult<Vec<User>> {
        self.all(USERS)
    }

    fn role(&self, name: &str) -> StoreResult<Option<Role>> {
        self.get(ROLES, name)
    }

    fn roles(&self) -> StoreResult<Vec<Role>> {
        self.all(ROLES)
    }

    fn session(&self, id: &str) -> StoreResult<Option<Session>> {
        self.get(SESSIONS, id)
    }

    fn login(&self, handle: &str) -> StoreResult<Option<Login>> {
        self.get(LOGINS, handle)
    }

    fn code(&self, key: &str) -> StoreResult<Option<AuthCode>> {
        self.get(CODES, key)
    }

    fn family_live(&self, family: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(FAMILIES).map_err(fail)?;
        Ok(table.get(family).map_err(fail)?.is_some())
    }

    fn refresh(&self, key: &str) -> StoreResult<Option<RefreshToken>> {
        self.get(REFRESH, key)
    }

    fn access_revoked(&self, jti: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(REVOKED_ACCESS).map_err(fail)?;
        Ok(table.get(jti).map_err(fail)?.is_some())
    }

    fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.all(KEYS)
    }

    fn flow_version(&self, version: &str) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(FLOW_VERSIONS).map_err(fail)?;
        Ok(table
            .get(version)
            .map_err(fail)?
            .map(|ir| ir.value().to_string()))
    }

    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(AUDIT).map_err(fail)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(fail)?.rev().take(limit) {
            let (_, value) = entry.map_err(fail)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    fn factors(&self, user: &str) -> StoreResult<Vec<Factor>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(FACTORS).map_err(fail)?;
        let (start, end) = factor_range(user);
        let mut out: Vec<Factor> = Vec::new();
        for entry in table.range(start.as_str()..end.as_str()).map_err(fail)? {
            let (_, value) = entry.map_err(fail)?;
            out.push(decode(value.value())?);
        }
        out.sort_by(|a, b| (a.created, a.kind, &a.id).cmp(&(b.created, b.kind, &b.id)));
        Ok(out)
    }

    fn user_by_handle(&self, handle: &str) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(HANDLES).map_err(fail)?;
        Ok(table
            .get(handle)
            .map_err(fail)?
            .map(|v| v.value().to_string()))
    }

    fn linked_user(&self, idp: &str, subject: &str) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(LINKS).map_err(fail)?;
        Ok(table
            .get(link_key(idp, subject).as_str())
            .map_err(fail)?
            .map(|v| v.value().to_string()))
    }

    fn provisioning_events(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        read_log(&self.db, PROVISIONING, limit, |_| true)
    }

    fn provisioning_due(
        &self,
        now: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        read_log(&self.db, PROVISIONING, limit, |event| {
            event.not_before <= now
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>> {
        read_log(&self.db, DEAD_LETTERS, limit, |_| true)
    }

    fn remote_id(&self, target: &str, local: &str) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(REMOTE_IDS).map_err(fail)?;
        Ok(table
            .get(link_key(target, local).as_str())
            .map_err(fail)?
            .map(|v| v.value().to_string()))
    }

    fn remote_ids(&self, target: &str, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(REMOTE_IDS).map_err(fail)?;
        let start = link_key(target, prefix);
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            let Some(local) = key.value().strip_prefix(&link_key(target, "")) else {
                break;
            };
            if !local.starts_with(prefix) {
                break;
            }
            out.push((local.to_string(), value.value().to_string()));
        }
        Ok(out)
    }

    fn sessions(&self) -> StoreResult<Vec<Session>> {
        self.all(SESSIONS)
    }

    fn role_members(&self, role: &str) -> StoreResult<Vec<User>> {
        let mut users = self.users()?;
        users.retain(|user| user.roles.iter().any(|r| r == role));
        Ok(users)
    }

    fn challenge(&self, key: &str, now: u64) -> StoreResult<Option<Challenge>> {
        Ok(self
            .get::<Challenge>(CHALLENGES, key)?
            .filter(|c| c.expires > now))
    }

    fn commit(&self, batch: Batch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        for write in batch {
            // An error drops `txn`, which aborts it: nothing of the batch is written.
            apply(&txn, write)?;
        }
        self.finish(txn)
    }

    fn commit_unflushed(&self, batch: Batch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        for write in batch {
            apply(&txn, write)?;
        }
        txn.commit().map_err(fail)
    }

    fn redeem_code(&self, key: &str, now: u64, issued: &IssuedByCode) -> StoreResult<Redemption> {
        let txn = self.begin()?;
        let Some(mut code) = get_in::<AuthCode>(&txn, CODES, key)? else {
            return Ok(Redemption::Invalid);
        };
        if let Some(redeemed) = &code.redeemed {
            // A second use: revoke what the first issued (RFC 6749 §4.1.2).
            if let Some(family) = &redeemed.family {
                revoke_family(&txn, family)?;
            }
            txn.open_table(REVOKED_ACCESS)
                .map_err(fail)?
                .insert(redeemed.jti.as_str(), redeemed.access_expires)
                .map_err(fail)?;
            self.finish(txn)?;
            return Ok(Redemption::Reused);
        }
        if code.expires <= now {
            remove(&txn, CODES, key)?;
            self.finish(txn)?;
            return Ok(Redemption::Invalid);
        }
        if let Some((family, expires)) = &issued.family {
            txn.open_table(FAMILIES)
                .map_err(fail)?
                .insert(family.as_str(), *expires)
                .map_err(fail)?;
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
        put(&txn, CODES, key, &code)?;
        self.finish(txn)?;
        Ok(Redemption::Fresh(Box::new(code)))
    }

    fn rotate_refresh(&self, key: &str, new_key: &str, now: u64) -> StoreResult<Rotation> {
        let txn = self.begin()?;
        let Some(mut token) = get_in::<RefreshToken>(&txn, REFRESH, key)? else {
            return Ok(Rotation::Invalid);
        };
        if !family_live(&txn, &token.family)? || token.expires <= now {
            return Ok(Rotation::Invalid);
        }
        if token.spent {
            revoke_family(&txn, &token.family)?;
            self.finish(txn)?;
            return Ok(Rotation::Reused);
        }
        token.spent = true;
        put(&txn, REFRESH, key, &token)?;
        let next = RefreshToken {
            key: new_key.to_string(),
            spent: false,
            ..token
        };
        put(&txn, REFRESH, new_key, &next)?;
        self.finish(txn)?;
        Ok(Rotation::Rotated(Box::new(next)))
    }

    fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        let txn = self.begin()?;
        let mut removed = 0usize;
        for table in [SESSIONS, LOGINS, CODES, REFRESH, CHALLENGES] {
            let mut table = txn.open_table(table).map_err(fail)?;
            table
                .retain(|_, value| {
                    let keep = serde_json::from_slice::<serde_json::Value>(value)
                        .ok()
                        .and_then(|v| v.get("expires").and_then(serde_json::Value::as_u64))
                        .is_none_or(|expires| expires > now);
                    removed += usize::from(!keep);
                    keep
                })
                .map_err(fail)?;
        }
        for table in [FAMILIES, REVOKED_ACCESS] {
            let mut table = txn.open_table(table).map_err(fail)?;
            table
                .retain(|_, expires| {
                    let keep = expires > now;
                    removed += usize::from(!keep);
                    keep
                })
                .map_err(fail)?;
        }
        self.finish(txn)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Authentication;

    fn store() -> (EmbeddedStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "idflow-store-test-{}-{}",
            std::process::id(),
            crate::crypto::random_token(6)
        ));
        (EmbeddedStore::open(&dir).expect("open"), dir)
    }

    /// Starts a live refresh family, as a code redemption does.
    fn start_family(store: &EmbeddedStore, family: &str, expires: u64) {
        let txn = store.db.begin_write().expect("txn");
        txn.open_table(FAMILIES)
            .expect("table")
            .insert(family, expires)
            .expect("insert");
        txn.commit().expect("commit");
    }

    fn factor(user: &str, id: &str, kind: crate::store::FactorKind) -> Factor {
        Factor {
            id: id.into(),
            user: user.into(),
            kind,
            label: String::new(),
            created: 1,
            last_used: 0,
            sealed_secret: None,
            last_step: 0,
            passkey: None,
            credential_id: None,
            counter: 0,
            user_handle: None,
            code_hashes: Vec::new(),
        }
    }

    #[test]
    fn a_totp_step_passes_once_and_never_goes_back() {
        let (store, dir) = store();
        let totp = factor("u1", "f1", crate::store::FactorKind::Totp);
        store.commit(vec![Write::PutFactor(totp)]).expect("put");
        let using = |step| Write::UseTotpStep {
            user: "u1".into(),
            id: "f1".into(),
            step,
            now: 5,
        };
        store.commit(vec![using(10)]).expect("first use");
        assert!(matches!(
            store.commit(vec![using(10)]),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.commit(vec![using(9)]),
            Err(StoreError::Conflict(_))
        ));
        store.commit(vec![using(11)]).expect("a later step");
        assert_eq!(store.factors("u1").expect("factors")[0].last_step, 11);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn recovery_codes_strike_once_and_passkey_counters_only_rise() {
        let (store, dir) = store();
        let mut codes = factor("u1", "r", crate::store::FactorKind::RecoveryCodes);
        codes.code_hashes = vec!["h1".into(), "h2".into()];
        let passkey = factor("u1", "p", crate::store::FactorKind::Passkey);
        store
            .commit(vec![Write::PutFactor(codes), Write::PutFactor(passkey)])
            .expect("put");
        let strike = || Write::UseRecoveryCode {
            user: "u1".into(),
            id: "r".into(),
            hash: "h1".into(),
            now: 2,
        };
        store.commit(vec![strike()]).expect("first use");
        assert!(matches!(
            store.commit(vec![strike()]),
            Err(StoreError::Conflict(_))
        ));
        let assert_with = |counter| Write::UsePasskey {
            user: "u1".into(),
            id: "p".into(),
            passkey: serde_json::json!({}),
            counter,
            now: 3,
        };
        store.commit(vec![assert_with(4)]).expect("counter rises");
        assert!(matches!(
            store.commit(vec![assert_with(4)]),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.commit(vec![assert_with(1)]),
            Err(StoreError::Conflict(_))
        ));
        let factors = store.factors("u1").expect("factors");
        assert_eq!(
            factors.iter().find(|f| f.id == "p").map(|f| f.counter),
            Some(4)
        );
        assert_eq!(
            factors
                .iter()
                .find(|f| f.id == "r")
                .map(|f| f.code_hashes.clone()),
            Some(vec!["h2".to_string()])
        );
        // Another user's factors are a different range.
        assert!(store.factors("u").expect("factors").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn deleting_a_user_frees_their_names_and_removes_factors_links_and_sessions() {
        let (store, dir) = store();
        let mut ann = User::new("u1".into(), "ann".into(), 0);
        ann.email = "ann@example.com".into();
        let session = Session {
            key: "s1".into(),
            sid: "s1".into(),
            user: "u1".into(),
            auth_time: 1,
            amr: Vec::new(),
            acr: String::new(),
            claims: Default::default(),
            flow: String::new(),
            expires: u64::MAX,
            csrf: String::new(),
            steps: Vec::new(),
            identifier: String::new(),
            saml: Vec::new(),
        };
        store
            .commit(vec![
                Write::CreateUser(ann),
                Write::PutFactor(factor("u1", "f1", crate::store::FactorKind::Totp)),
                Write::LinkIdentity {
                    idp: "google".into(),
                    subject: "g-1".into(),
                    user: "u1".into(),
                },
                Write::PutSession(session),
            ])
            .expect("setup");
        store
            .commit(vec![Write::DeleteUser("u1".into())])
            .expect("delete");
        assert_eq!(store.user("u1").expect("read"), None);
        assert!(store.factors("u1").expect("read").is_empty());
        assert_eq!(store.linked_user("google", "g-1").expect("read"), None);
        assert!(store.session("s1").expect("read").is_none());
        let again = User::new("u2".into(), "ANN@example.com".into(), 0);
        store
            .commit(vec![Write::CreateUser(again)])
            .expect("the name and address are free again");
        assert!(matches!(
            store.commit(vec![Write::DeleteUser("u1".into())]),
            Err(StoreError::Conflict(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_replacement_applies_only_over_the_record_it_was_made_from() {
        let (store, dir) = store();
        let ann = User::new("u1".into(), "ann".into(), 0);
        store
            .commit(vec![Write::CreateUser(ann.clone())])
            .expect("create");
        let mut renamed = ann.clone();
        renamed.username = "ann2".into();
        // Meanwhile an administrator grants a role.
        store
            .commit(vec![Write::GrantRole {
                user: "u1".into(),
                role: "approver".into(),
            }])
            .expect("grant");
        let stale = Write::ReplaceUser {
            user: renamed.clone(),
            expected: Box::new(ann),
        };
        assert!(matches!(
            store.commit(vec![stale]),
            Err(StoreError::Conflict(_))
        ));
        let current = store.user("u1").expect("read").expect("there");
        assert_eq!(
            current.roles,
            vec!["approver".to_string()],
            "the grant stays"
        );
        let mut fresh = current.clone();
        fresh.username = "ann2".into();
        store
            .commit(vec![Write::ReplaceUser {
                user: fresh,
                expected: Box::new(current),
            }])
            .expect("over the current record");
        assert!(store.user_by_login("ann2").expect("read").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn deleting_a_users_sessions_keeps_the_one_asked_and_other_users() {
        let (store, dir) = store();
        let session = |key: &str, user: &str| Session {
            key: key.into(),
            sid: key.into(),
            user: user.into(),
            auth_time: 1,
            amr: Vec::new(),
            acr: String::new(),
            claims: Default::default(),
            flow: String::new(),
            expires: u64::MAX,
            csrf: String::new(),
            steps: Vec::new(),
            identifier: String::new(),
            saml: Vec::new(),
        };
        store
            .commit(vec![
                Write::PutSession(session("a1", "alice")),
                Write::PutSession(session("a2", "alice")),
                Write::PutSession(session("b1", "bob")),
            ])
            .expect("put");
        store
            .commit(vec![Write::EndUserSessions {
                user: "alice".into(),
                except: Some("a2".into()),
            }])
            .expect("delete");
        assert!(store.session("a1").expect("read").is_none());
        assert!(store.session("a2").expect("read").is_some());
        assert!(store.session("b1").expect("read").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_challenge_is_taken_once_and_expires_and_a_handle_keeps_its_owner() {
        let (store, dir) = store();
        let challenge = crate::store::Challenge {
            key: "login:passkey".into(),
            user: "u1".into(),
            data: serde_json::json!({ "state": 1 }),
            expires: 100,
        };
        store
            .commit(vec![Write::PutChallenge(challenge)])
            .expect("put");
        assert!(
            store
                .challenge("login:passkey", 99)
                .expect("read")
                .is_some()
        );
        assert!(
            store
                .challenge("login:passkey", 100)
                .expect("read")
                .is_none(),
            "expired"
        );
        store
            .commit(vec![Write::TakeChallenge("login:passkey".into())])
            .expect("taken");
        let seen = |expires| Challenge {
            key: "saml-assertion:a1".into(),
            user: String::new(),
            data: serde_json::Value::Null,
            expires,
        };
        let once = |expires, now| Write::RecordOnce {
            seen: seen(expires),
            now,
        };
        store.commit(vec![once(200, 100)]).expect("first sight");
        assert!(
            matches!(
                store.commit(vec![once(300, 150)]),
                Err(StoreError::Conflict(_))
            ),
            "a replay within the window is refused"
        );
        store
            .commit(vec![once(400, 250)])
            .expect("after its expiry the id may be recorded again");
        assert!(matches!(
            store.commit(vec![Write::TakeChallenge("login:passkey".into())]),
            Err(StoreError::Conflict(_))
        ));
        let mut mine = factor("u1", "p1", crate::store::FactorKind::Passkey);
        mine.user_handle = Some("handle-1".into());
        store.commit(vec![Write::PutFactor(mine)]).expect("put");
        assert_eq!(
            store.user_by_handle("handle-1").expect("read").as_deref(),
            Some("u1")
        );
        let mut theirs = factor("u2", "p2", crate::store::FactorKind::Passkey);
        theirs.user_handle = Some("handle-1".into());
        assert!(store.commit(vec![Write::PutFactor(theirs)]).is_err());
        // A credential id belongs to one account; removing the passkey frees it.
        let mut first = factor("u1", "c1", crate::store::FactorKind::Passkey);
        first.credential_id = Some("cred".into());
        store.commit(vec![Write::PutFactor(first)]).expect("put");
        let mut copy = factor("u3", "c3", crate::store::FactorKind::Passkey);
        copy.credential_id = Some("cred".into());
        assert!(matches!(
            store.commit(vec![Write::PutFactor(copy.clone())]),
            Err(StoreError::Conflict(_))
        ));
        store
            .commit(vec![Write::DeleteFactor {
                user: "u1".into(),
                id: "c1".into(),
            }])
            .expect("delete");
        store
            .commit(vec![Write::PutFactor(copy)])
            .expect("now free");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn authentication() -> Authentication {
        Authentication {
            user: "u1".into(),
            sid: "s".into(),
            auth_time: 1,
            amr: vec!["pwd".into()],
            acr: "1".into(),
            claims: Default::default(),
        }
    }

    fn refresh(key: &str, family: &str, expires: u64) -> RefreshToken {
        RefreshToken {
            key: key.into(),
            family: family.into(),
            client_id: "app".into(),
            scopes: vec!["openid".into()],
            authentication: authentication(),
            expires,
            spent: false,
        }
    }

    fn code(key: &str, expires: u64) -> AuthCode {
        AuthCode {
            key: key.into(),
            request: Default::default(),
            authentication: authentication(),
            expires,
            redeemed: None,
        }
    }

    #[test]
    fn records_keep_their_flat_stored_form() {
        // `Authentication` is flattened: stored codes and tokens keep top-level fields.
        let stored = serde_json::to_value(refresh("r", "f", 9)).expect("json");
        assert_eq!(stored["user"], "u1");
        assert_eq!(stored["amr"], serde_json::json!(["pwd"]));
        let back: RefreshToken = serde_json::from_value(stored).expect("parse");
        assert_eq!(back, refresh("r", "f", 9));
    }

    #[test]
    fn usernames_and_emails_are_unique_and_case_insensitive() {
        let (store, _dir) = store();
        let mut alice = User::new("u1".into(), "Alice".into(), 0);
        alice.email = "alice@example.com".into();
        store
            .commit(vec![Write::CreateUser(alice.clone())])
            .expect("create");
        assert_eq!(
            store.user_by_login("alice").expect("read"),
            Some(alice.clone())
        );
        assert_eq!(
            store.user_by_login("ALICE@example.com").expect("read"),
            Some(alice.clone())
        );
        let twin = User::new("u2".into(), "alice".into(), 0);
        let error = store.commit(vec![Write::CreateUser(twin)]).unwrap_err();
        assert!(error.to_string().contains("taken"), "{error}");
        assert_eq!(
            store.user("u2").expect("read"),
            None,
            "the failed batch wrote nothing"
        );
        // Renaming releases the old name.
        alice.username = "alicia".into();
        store
            .commit(vec![Write::UpdateUser(alice)])
            .expect("update");
        assert!(store.user_by_login("alice").expect("read").is_none());
        assert!(store.user_by_login("alicia").expect("read").is_some());
    }

    #[test]
    fn a_username_cannot_shadow_another_users_email() {
        let (store, _dir) = store();
        let mut alice = User::new("u1".into(), "alice".into(), 0);
        alice.email = "alice@example.com".into();
        store
            .commit(vec![Write::CreateUser(alice)])
            .expect("create");
        let shadow = User::new("u2".into(), "Alice@Example.com".into(), 0);
        assert!(store.commit(vec![Write::CreateUser(shadow)]).is_err());
        let mut bob = User::new("u3".into(), "bob".into(), 0);
        bob.email = "alice".into();
        assert!(store.commit(vec![Write::CreateUser(bob)]).is_err());
    }

    #[test]
    fn a_login_advances_only_from_the_state_a_request_read() {
        let (store, _dir) = store();
        let login = |seq| Login {
            key: "k".into(),
            seq,
            browser: String::new(),
            csrf: String::new(),
            run: idflow_engine::Run::new("f", "v", "s", Default::default()),
            output: idflow_engine::Output::Denied {
                reason: String::new(),
            },
            authorize: None,
            saml: None,
            expires: 100,
            supersedes: None,
            replaces: None,
        };
        store.commit(vec![Write::PutLogin(login(0))]).expect("put");
        let step = |seq, next| Write::AdvanceLogin {
            key: "k".into(),
            seq,
            next,
        };
        store
            .commit(vec![step(0, Some(login(1)))])
            .expect("first step");
        // A second request that read seq 0 lost the race.
        let error = store.commit(vec![step(0, Some(login(1)))]).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        store.commit(vec![step(1, None)]).expect("finish");
        assert_eq!(store.login("k").expect("read"), None);
        assert!(
            store.commit(vec![step(1, None)]).is_err(),
            "a finished login cannot finish twice"
        );
    }

    #[test]
    fn concurrent_commits_all_land_through_group_commit() {
        let (store, _dir) = store();
        let store = std::sync::Arc::new(store);
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let store = std::sync::Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let user = User::new(format!("u{t}-{i}"), format!("n{t}-{i}"), 0);
                        store.commit(vec![Write::CreateUser(user)]).expect("commit");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
        assert_eq!(store.users().expect("read").len(), 160);
        let flushes = store.syncs.lock().expect("lock").finished;
        assert!((1..=160).contains(&flushes), "{flushes} flushes");
    }

    #[test]
    fn unflushed_commits_are_visible_at_once_and_kept_after_a_durable_one() {
        let (store, dir) = store();
        store
            .commit_unflushed(vec![Write::CreateUser(User::new(
                "u1".into(),
                "a".into(),
                0,
            ))])
            .expect("unflushed");
        assert!(store.user("u1").expect("read").is_some());
        store
            .commit(vec![Write::CreateUser(User::new(
                "u2".into(),
                "b".into(),
                0,
            ))])
            .expect("durable");
        drop(store);
        let store = EmbeddedStore::open(&dir).expect("reopen");
        assert!(store.user("u1").expect("read").is_some());
    }

    #[test]
    fn a_failed_batch_writes_nothing() {
        let (store, _dir) = store();
        let batch = vec![
            Write::PutRole(Role {
                name: "r".into(),
                description: String::new(),
                privileges: vec![],
                external_id: None,
            }),
            Write::ResetFailures("nobody".into()),
        ];
        assert!(store.commit(batch).is_err());
        assert_eq!(store.role("r").expect("read"), None);
    }

    #[test]
    fn failures_lock_at_the_threshold_in_the_same_write() {
        let (store, _dir) = store();
        store
            .commit(vec![Write::CreateUser(User::new(
                "u1".into(),
                "bob".into(),
                0,
            ))])
            .expect("create");
        let failure = || Write::RecordFailure {
            user: "u1".into(),
            lock_after: Some(3),
            lock_seconds: 900,
            now: 1000,
        };
        store
            .commit(vec![failure(), failure()])
            .expect("two failures");
        let user = store.user("u1").expect("read").expect("user");
        assert_eq!((user.failed_attempts, user.locked_until), (2, 0));
        store.commit(vec![failure()]).expect("third failure");
        let user = store.user("u1").expect("read").expect("user");
        assert_eq!(user.locked_until, 1900);
        assert!(user.locked_at(1899) && !user.locked_at(1900));
    }

    #[test]
    fn a_code_redeems_once_and_its_reuse_revokes_what_it_issued() {
        let (store, _dir) = store();
        store
            .commit(vec![Write::PutCode(code("k", 100))])
            .expect("put");
        let issued = IssuedByCode {
            family: Some(("f1".into(), 1000)),
            access: ("jti1".into(), 400),
        };
        assert!(matches!(
            store.redeem_code("k", 50, &issued),
            Ok(Redemption::Fresh(_))
        ));
        store
            .commit(vec![Write::PutRefresh(refresh("r1", "f1", 1000))])
            .expect("refresh");
        assert_eq!(
            store.redeem_code("k", 51, &issued).expect("redeem"),
            Redemption::Reused
        );
        // The spent code outlives its 100 s: a late replay still revokes.
        assert_eq!(store.purge_expired(300).expect("purge"), 0);
        assert!(store.code("k").expect("read").is_some());
        assert!(store.access_revoked("jti1").expect("read"));
        assert_eq!(
            store.rotate_refresh("r1", "r2", 60).expect("rotate"),
            Rotation::Invalid
        );
    }

    #[test]
    fn an_expired_code_is_invalid() {
        let (store, _dir) = store();
        store
            .commit(vec![Write::PutCode(code("k", 100))])
            .expect("put");
        let issued = IssuedByCode {
            family: None,
            access: ("j".into(), 1),
        };
        assert_eq!(
            store.redeem_code("k", 100, &issued).expect("redeem"),
            Redemption::Invalid
        );
    }

    #[test]
    fn refresh_rotation_spends_and_reuse_revokes_the_family() {
        let (store, _dir) = store();
        start_family(&store, "f", 1000);
        store
            .commit(vec![Write::PutRefresh(refresh("r1", "f", 1000))])
            .expect("put");
        let Rotation::Rotated(next) = store.rotate_refresh("r1", "r2", 10).expect("rotate") else {
            panic!("first rotation must succeed");
        };
        assert_eq!((next.key.as_str(), next.family.as_str()), ("r2", "f"));
        assert_eq!(
            store.rotate_refresh("r1", "r3", 11).expect("rotate"),
            Rotation::Reused
        );
        // The legitimate successor dies with its family.
        assert_eq!(
            store.rotate_refresh("r2", "r4", 12).expect("rotate"),
            Rotation::Invalid
        );
        assert_eq!(
            store.rotate_refresh("nope", "r5", 12).expect("rotate"),
            Rotation::Invalid
        );
    }

    #[test]
    fn refresh_tokens_expire() {
        let (store, _dir) = store();
        start_family(&store, "f", 1000);
        store
            .commit(vec![Write::PutRefresh(refresh("r1", "f", 1000))])
            .expect("put");
        assert_eq!(
            store.rotate_refresh("r1", "r2", 1000).expect("rotate"),
            Rotation::Invalid
        );
        assert_eq!(
            store.purge_expired(1000).expect("purge"),
            2,
            "token and family"
        );
    }

    #[test]
    fn data_survives_reopening_and_the_file_is_locked_while_open() {
        let (store, dir) = store();
        store
            .commit(vec![Write::CreateUser(User::new(
                "u1".into(),
                "bob".into(),
                0,
            ))])
            .expect("create");
        let error = EmbeddedStore::open(&dir).err().expect("second open fails");
        assert!(error.to_string().contains("in use"), "{error}");
        drop(store);
        let store = EmbeddedStore::open(&dir).expect("reopen");
        assert!(store.user("u1").expect("read").is_some());
    }

    #[test]
    fn the_audit_log_reads_newest_first() {
        let (store, _dir) = store();
        let event = |name: &str| AuditEvent {
            time: 1,
            event: name.into(),
            actor: String::new(),
            subject: String::new(),
            ip: String::new(),
            detail: serde_json::Value::Null,
        };
        store
            .commit(vec![Write::Audit(event("a")), Write::Audit(event("b"))])
            .expect("audit");
        store.commit(vec![Write::Audit(event("c"))]).expect("audit");
        let log: Vec<_> = store
            .audit_log(2)
            .expect("read")
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(log, ["c", "b"]);
    }
}
