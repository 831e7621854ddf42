//! The store: users, roles, sessions, logins in progress, authorization codes, refresh tokens,
//! revoked access tokens, signing keys and the audit log.
//!
//! One trait, [`Store`], so the backend is one module: [`embedded`] (redb) now, PostgreSQL for
//! several nodes later. Reads are point lookups. Every write goes through [`Store::commit`] with
//! a [`Batch`] applied in one durable transaction (a login step's run, its effects and its audit
//! entry land together or not at all), except the two read-modify-write operations whose result
//! decides what the server answers: [`Store::redeem_code`] and [`Store::rotate_refresh`].
//!
//! Tokens and codes are stored under the SHA-256 of their value ([`token_key`]), so a copy of
//! the database does not hand out live credentials.

#[cfg(test)]
pub mod conformance;
pub mod embedded;
pub mod postgres;
pub mod records;
pub mod tables;

pub use embedded::EmbeddedStore;
pub use postgres::PostgresStore;
pub use records::*;

/// A store failure. `Failed` is I/O, corruption or a broken invariant: handlers answer 500 (a
/// `server_error` for OAuth) and log it; no handler panics on one. `Conflict` means a
/// conditional write found the record changed under it (two tabs submitting one login): the
/// batch was not applied and the request may be retried from fresh state.
#[derive(Debug)]
pub enum StoreError {
    /// The store could not do the work.
    Failed(String),
    /// A conditional write lost a race.
    Conflict(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Failed(why) => write!(f, "store: {why}"),
            StoreError::Conflict(why) => write!(f, "conflict: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Why, when a batch failed because a username or email address it claims is taken (by
    /// another user, or by a write that won a race): bad input, not a broken store.
    pub fn name_taken(&self) -> Option<&str> {
        match self {
            StoreError::Failed(why)
                if why.contains("is taken") || why.contains("another user's") =>
            {
                Some(why)
            }
            _ => None,
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// One write; a [`Batch`] applies several atomically.
// A batch holds a handful of writes for one request and lives for one transaction: boxing
// the larger variants would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert a new user; fails the batch if the id, username or email is taken.
    CreateUser(User),
    /// Replace a user (by id), keeping the name indexes right.
    UpdateUser(User),
    /// Replace a user only if the stored record is still `expected` (a conflict otherwise):
    /// a read-modify-write that cannot undo a change made meanwhile.
    ReplaceUser {
        /// The new record.
        user: User,
        /// The record the change was made from.
        expected: Box<User>,
    },
    /// Delete a user with everything that signs in as them: their names, factors (and the
    /// passkey credentials they hold), upstream links, sessions and refresh tokens. Fails with
    /// a conflict if the user is gone.
    DeleteUser(String),
    /// Count a failed credential attempt and lock the user when the count reaches
    /// `lock_after`, in the same transaction (concurrent logins cannot each stay under it).
    RecordFailure {
        /// The user id.
        user: String,
        /// Lock when the count reaches this.
        lock_after: Option<u32>,
        /// For this long.
        lock_seconds: u64,
        /// Now, in seconds since the epoch.
        now: u64,
    },
    /// A login succeeded: the failure count starts again.
    ResetFailures(String),
    /// Replace a user's password hash with one made under the current parameters, only if the
    /// stored hash is still `old` (a password changed meanwhile stays changed).
    RehashPassword {
        /// The user id.
        user: String,
        /// The hash that verified.
        old: String,
        /// The new hash of the same password.
        new: String,
    },
    /// Lock a user until a time.
    LockUser {
        /// The user id.
        user: String,
        /// Seconds since the epoch.
        until: u64,
    },
    /// Give a user a role (no change if the user has it).
    GrantRole {
        /// The user id.
        user: String,
        /// The role.
        role: String,
    },
    /// Take a role from a user.
    RevokeRole {
        /// The user id.
        user: String,
        /// The role.
        role: String,
    },
    /// Insert or replace a role.
    PutRole(Role),
    /// Insert a new role; fails the batch if the name is taken.
    CreateRole(Role),
    /// Insert or replace a browser session.
    PutSession(Session),
    /// Remove a session.
    DeleteSession(String),
    /// Note that a session signed its user in to a SAML service provider (replacing an earlier
    /// note for the same SP); nothing if the session is gone.
    AddSamlParticipant {
        /// The session's key.
        session: String,
        /// The service provider and the NameID it got.
        participant: SamlParticipant,
    },
    /// Remove a session that a login builds on; fails with a conflict if it is gone (ended by
    /// a sign-out or a factor removal meanwhile), so such a login cannot mint a new session.
    TakeSession(String),
    /// Insert a new login in progress.
    PutLogin(Login),
    /// Move a login on from the state the request read: fails the batch with a conflict
    /// unless the stored login still has sequence number `seq`; then stores `next` (whose
    /// `seq` must be one more) or, when `next` is `None`, deletes the login.
    AdvanceLogin {
        /// The login's key.
        key: String,
        /// The sequence number the request read.
        seq: u64,
        /// The new state, or `None` when the login is over.
        next: Option<Login>,
    },
    /// Store a new authorization code.
    PutCode(AuthCode),
    /// Store a new refresh token; fails the batch if its family is not live (revoked by a
    /// code or token reuse in the meantime).
    PutRefresh(RefreshToken),
    /// Revoke every refresh token of a family.
    RevokeFamily(String),
    /// Revoke an access token until it would have expired anyway.
    RevokeAccess {
        /// The token's `jti`.
        jti: String,
        /// Its `exp`.
        expires: u64,
    },
    /// Insert or replace a signing key.
    PutKey(KeyRecord),
    /// Keep a flow version's IR (canonical JSON), so a login started on it can finish after a
    /// restart or on another node even when the flow files have changed since.
    PutFlowVersion {
        /// The version.
        version: String,
        /// The IR as JSON.
        ir: String,
    },
    /// Append to the audit log.
    Audit(AuditEvent),
    /// Insert or replace an enrolled factor (and, for a passkey, its user handle's owner).
    PutFactor(Factor),
    /// Remove a factor.
    DeleteFactor {
        /// The user.
        user: String,
        /// The factor id.
        id: String,
    },
    /// A TOTP code passed: record its time step. Fails the batch with a conflict unless the
    /// step is later than the last one accepted, so a code passes once even when two requests
    /// race with it.
    UseTotpStep {
        /// The user.
        user: String,
        /// The factor id.
        id: String,
        /// The step the code matched.
        step: u64,
        /// Now.
        now: u64,
    },
    /// A recovery code passed: strike it. Fails with a conflict if it was already struck.
    UseRecoveryCode {
        /// The user.
        user: String,
        /// The factor id.
        id: String,
        /// The code's hash.
        hash: String,
        /// Now.
        now: u64,
    },
    /// A passkey assertion passed: store the credential's new state. Fails with a conflict if
    /// the counter does not exceed the stored one (a counting authenticator went backwards:
    /// a replay or a clone), unless both are 0 (an authenticator that does not count).
    UsePasskey {
        /// The user.
        user: String,
        /// The factor id.
        id: String,
        /// The updated webauthn-rs credential.
        passkey: Value,
        /// The assertion's counter.
        counter: u32,
        /// Now.
        now: u64,
    },
    /// End every browser session of a user except one (its key) and revoke the user's refresh
    /// token families, e.g. when a factor is removed: a session or a grant obtained with a lost
    /// phone must not outlive its removal.
    EndUserSessions {
        /// The user.
        user: String,
        /// A session to keep (the one making the change), if any.
        except: Option<String>,
    },
    /// Link an upstream account to a local user, so later logins through that identity
    /// provider map to the same user (replacing an earlier link of the same upstream account).
    LinkIdentity {
        /// The identity provider.
        idp: String,
        /// The upstream subject.
        subject: String,
        /// The local user.
        user: String,
    },
    /// Append a provisioning event to the outbox the provisioning targets read.
    QueueProvisioning(ProvisioningEvent),
    /// A worker takes these events to deliver them until `until`: fails the batch with a
    /// conflict if another worker holds a live claim on any of them, so that of several nodes
    /// sharing the outbox one delivers each event.
    ClaimProvisioning {
        /// The events' sequence numbers.
        seqs: Vec<u64>,
        /// The worker (one per process).
        owner: String,
        /// Until when.
        until: u64,
        /// Now.
        now: u64,
    },
    /// Delivered: remove these events from the outbox (one already gone is no error, so a
    /// redelivery after a crash acknowledges cleanly).
    AckProvisioning(Vec<u64>),
    /// A delivery failed and will be tried again: record the attempt and when it is due.
    RetryProvisioning {
        /// The event's sequence number.
        seq: u64,
        /// Failed attempts so far.
        attempts: u32,
        /// Not before this time.
        not_before: u64,
        /// Why it failed.
        error: String,
    },
    /// A delivery failed for good: move the event to the dead letters, with why.
    DeadLetter {
        /// The event's sequence number.
        seq: u64,
        /// Attempts made.
        attempts: u32,
        /// Why it failed.
        error: String,
    },
    /// Put a dead letter back in the outbox, due at once (after the cause was fixed).
    Requeue(u64),
    /// Remember the id a provisioning target gave a local record (`user:ID`, `group:ROLE`).
    PutRemoteId {
        /// The target.
        target: String,
        /// The local record.
        local: String,
        /// Its id at the target.
        remote: String,
    },
    /// Forget a remote id (the record is gone at the target).
    DeleteRemoteId {
        /// The target.
        target: String,
        /// The local record.
        local: String,
    },
    /// Delete a role and take it from every user holding it.
    DeleteRole(String),
    /// Store a ceremony's state (replacing one with the same key).
    PutChallenge(Challenge),
    /// Record that something was seen (a SAML request or assertion id) until the challenge's
    /// expiry. Fails with a conflict if it was seen already and has not expired: a replay.
    RecordOnce {
        /// What was seen, keyed by purpose and id.
        seen: Challenge,
        /// Now, to tell an expired record (which may be replaced) from a live one.
        now: u64,
    },
    /// Delete a ceremony's state as it is used. Fails with a conflict if it is gone (used by
    /// another request already), so each works once.
    TakeChallenge(String),
}

/// Writes applied in one durable transaction.
pub type Batch = Vec<Write>;

/// What redeeming an authorization code found.
#[derive(Debug, Clone, PartialEq)]
pub enum Redemption {
    /// First use: the code, now marked used with the tokens it is about to issue.
    Fresh(Box<AuthCode>),
    /// The code was used before: what it issued has now been revoked.
    Reused,
    /// No such code, or it expired.
    Invalid,
}

/// What rotating a refresh token found.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The old token is spent; the new one (same family, same grant) is stored.
    Rotated(Box<RefreshToken>),
    /// The token was already spent: its whole family is now revoked.
    Reused,
    /// No such token, expired, or its family was revoked.
    Invalid,
}

/// The tokens a code grant is about to issue, recorded on the code in the same transaction
/// that marks it used, so that a second use can revoke them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedByCode {
    /// The refresh family, when one is issued, and its expiry: created live in the same
    /// transaction.
    pub family: Option<(String, u64)>,
    /// The access token's `jti` and `exp`.
    pub access: (String, u64),
}

/// Everything the server stores.
pub trait Store: Send + Sync {
    /// A user by id.
    fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// A user by username or email (case-insensitive).
    fn user_by_login(&self, name: &str) -> StoreResult<Option<User>>;
    /// Every user, by id.
    fn users(&self) -> StoreResult<Vec<User>>;
    /// A role.
    fn role(&self, name: &str) -> StoreResult<Option<Role>>;
    /// Every role, by name.
    fn roles(&self) -> StoreResult<Vec<Role>>;
    /// A session by [`token_key`] of its cookie.
    fn session(&self, key: &str) -> StoreResult<Option<Session>>;
    /// A login in progress by [`token_key`] of its handle.
    fn login(&self, key: &str) -> StoreResult<Option<Login>>;
    /// An authorization code by [`token_key`].
    fn code(&self, key: &str) -> StoreResult<Option<AuthCode>>;
    /// Whether a refresh family is live (not revoked, not expired and purged).
    fn family_live(&self, family: &str) -> StoreResult<bool>;
    /// A refresh token by [`token_key`].
    fn refresh(&self, key: &str) -> StoreResult<Option<RefreshToken>>;
    /// Whether an access token's `jti` was revoked.
    fn access_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// Every signing key.
    fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// A flow version's IR (canonical JSON), if it was ever live.
    fn flow_version(&self, version: &str) -> StoreResult<Option<String>>;
    /// The newest `limit` audit events, newest first.
    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEvent>>;
    /// A user's enrolled factors, oldest first (then by kind, then id).
    fn factors(&self, user: &str) -> StoreResult<Vec<Factor>>;
    /// The user a WebAuthn user handle belongs to.
    fn user_by_handle(&self, handle: &str) -> StoreResult<Option<String>>;
    /// The local user an upstream account is linked to.
    fn linked_user(&self, idp: &str, subject: &str) -> StoreResult<Option<String>>;
    /// The oldest `limit` provisioning events not yet delivered, with their sequence numbers.
    fn provisioning_events(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>>;
    /// The oldest `limit` undelivered provisioning events that are due at `now` (not backing
    /// off after a failure, not claimed by a worker).
    fn provisioning_due(
        &self,
        now: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, ProvisioningEvent)>>;
    /// The oldest `limit` provisioning events that failed for good.
    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<(u64, ProvisioningEvent)>>;
    /// The id a provisioning target gave a local record, if it is known.
    fn remote_id(&self, target: &str, local: &str) -> StoreResult<Option<String>>;
    /// Every remote id a provisioning target gave local records whose key starts with
    /// `prefix` (`group:` for groups): (local, remote).
    fn remote_ids(&self, target: &str, prefix: &str) -> StoreResult<Vec<(String, String)>>;
    /// Every browser session (for the admin API; a scan).
    fn sessions(&self) -> StoreResult<Vec<Session>>;
    /// Every user holding a role, by id.
    fn role_members(&self, role: &str) -> StoreResult<Vec<User>>;
    /// A ceremony's state by key, if it has not expired.
    fn challenge(&self, key: &str, now: u64) -> StoreResult<Option<Challenge>>;

    /// Applies `batch` in one durable transaction.
    fn commit(&self, batch: Batch) -> StoreResult<()>;
    /// Applies `batch` in one transaction without waiting for it to be flushed (the next
    /// durable commit flushes it). Only for writes whose loss in a crash costs nothing but a
    /// retry: a login that has not yet received any input. Anyone can start a login, so this
    /// keeps unauthenticated requests from costing a flush each.
    fn commit_unflushed(&self, batch: Batch) -> StoreResult<()> {
        self.commit(batch)
    }
    /// Marks a code used and records what it issues, atomically; see [`Redemption`].
    fn redeem_code(&self, key: &str, now: u64, issued: &IssuedByCode) -> StoreResult<Redemption>;
    /// Spends a refresh token and stores its successor under `new_key`, atomically.
    fn rotate_refresh(&self, key: &str, new_key: &str, now: u64) -> StoreResult<Rotation>;
    /// Deletes expired sessions, logins, codes, refresh tokens and revocations; returns how
    /// many records went.
    fn purge_expired(&self, now: u64) -> StoreResult<usize>;

    /// Adds `add` to the count of `key` in its fixed window of `seconds` containing `now`
    /// (starting a new window when the last one ended); returns the count and when the
    /// window ends. For limits that every node sharing the store must count together.
    fn window_add(&self, key: &str, seconds: u64, now: u64, add: u32) -> StoreResult<(u32, u64)>;
    /// Checks every `(key, seconds, max)` and, only if all are under their `max`, adds one to
    /// each, in one transaction; otherwise the seconds until the first full window ends.
    fn window_admit(&self, limits: &[(&str, u64, u32)], now: u64) -> StoreResult<Result<(), u64>>;
    /// Forgets the window of `key`.
    fn window_clear(&self, key: &str) -> StoreResult<()>;

    /// Whether several processes may use this store at once (PostgreSQL): work that one node
    /// must do alone (delivering an outbox event) is then claimed first.
    fn shared(&self) -> bool {
        false
    }

    /// Tells the other nodes sharing this store that node `from` reloaded its configuration,
    /// so that they read theirs again. Nothing for a store only one process opens.
    fn announce_reload(&self, from: &str) -> StoreResult<()> {
        let _ = from;
        Ok(())
    }

    /// Calls `heard` with the announcing node whenever a node announces a reload (this one's
    /// own announcements included: `heard` tells them apart). False when the store has no
    /// other nodes to hear from.
    fn on_reload_announced(&self, heard: ReloadListener) -> StoreResult<bool> {
        let _ = heard;
        Ok(false)
    }
}

/// What [`Store::on_reload_announced`] calls, with the announcing node's id.
pub type ReloadListener = Box<dyn Fn(&str) + Send + Sync>;

/// The key a token or code is stored under: hex SHA-256 of its value.
pub fn token_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
