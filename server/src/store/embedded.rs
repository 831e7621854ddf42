//! The embedded store: one redb file in the data directory.
//!
//! Why redb and not sled (which the design card named): sled's flush issues `sync_file_range`
//! and never `fsync`, so an acknowledged write can be lost on power loss; redb commits with
//! `fdatasync` (durability `Immediate`, its default), has ACID transactions and is maintained.
//! Records are JSON so that a dump is readable. What the tables mean and how each write
//! changes them is [`super::tables`], shared with every backend; this module is the redb
//! transactions under it and the group commit.
//!
//! redb holds an exclusive lock on the file: one process opens a data directory at a time, so
//! the CLI's `user` and `role` commands work on a stopped server's data directory.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::tables::{self, Backend, Kind, Log, Stored, Table, Tables};
use super::{StoreError, StoreResult};

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

// Each kind of table is a redb table of its natural types (the file format predates
// `tables`, and stays).
fn json_table(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name)
}

fn text_table(table: Table) -> TableDefinition<'static, &'static str, &'static str> {
    TableDefinition::new(table.name)
}

fn number_table(table: Table) -> TableDefinition<'static, &'static str, u64> {
    TableDefinition::new(table.name)
}

fn log_table(log: Log) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(log.name)
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
        for table in tables::ALL_TABLES {
            match table.kind {
                Kind::Json => txn.open_table(json_table(*table)).map(drop),
                Kind::Text => txn.open_table(text_table(*table)).map(drop),
                Kind::Number => txn.open_table(number_table(*table)).map(drop),
            }
            .map_err(fail)?;
        }
        for log in tables::ALL_LOGS {
            txn.open_table(log_table(*log)).map_err(fail)?;
        }
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
        txn.open_table(number_table(tables::META))
            .map_err(fail)?
            .insert("flushes", counter)
            .map_err(fail)?;
        txn.commit().map_err(fail)
    }
}

impl Backend for EmbeddedStore {
    fn read<R>(&self, read: impl FnOnce(&dyn Tables) -> StoreResult<R>) -> StoreResult<R> {
        let txn = self.db.begin_read().map_err(fail)?;
        read(&Reading(&txn))
    }

    fn write<R>(
        &self,
        durable: bool,
        mut write: impl FnMut(&dyn Tables) -> StoreResult<(R, bool)>,
    ) -> StoreResult<R> {
        let txn = self.begin()?;
        // An error drops `txn`, which aborts it.
        let (result, changed) = write(&Writing(&txn))?;
        if !changed {
            txn.abort().map_err(fail)?;
        } else if durable {
            self.finish(txn)?;
        } else {
            txn.commit().map_err(fail)?;
        }
        Ok(result)
    }
}

/// A read-only transaction as [`Tables`].
struct Reading<'a>(&'a ReadTransaction);

/// A write transaction as [`Tables`].
struct Writing<'a>(&'a WriteTransaction);

fn read_only() -> StoreError {
    StoreError::Failed("a write in a read-only transaction".into())
}

/// The value of `key` in a string-keyed table, whatever its kind.
macro_rules! get_any {
    ($txn:expr, $table:expr, $key:expr) => {{
        let (table, key): (Table, &str) = ($table, $key);
        match table.kind {
            Kind::Json => $txn
                .open_table(json_table(table))
                .map_err(fail)?
                .get(key)
                .map_err(fail)?
                .map(|v| Stored::Json(v.value().to_vec())),
            Kind::Text => $txn
                .open_table(text_table(table))
                .map_err(fail)?
                .get(key)
                .map_err(fail)?
                .map(|v| Stored::Text(v.value().to_string())),
            Kind::Number => $txn
                .open_table(number_table(table))
                .map_err(fail)?
                .get(key)
                .map_err(fail)?
                .map(|v| Stored::Number(v.value())),
        }
    }};
}

/// The entries of a string-keyed table in `start..end` (or `start..`).
macro_rules! range_any {
    ($txn:expr, $table:expr, $start:expr, $end:expr) => {{
        let (table, start, end): (Table, &str, Option<&str>) = ($table, $start, $end);
        let mut out = Vec::new();
        macro_rules! scan {
            ($opened:expr, $wrap:expr) => {{
                let opened = $opened.map_err(fail)?;
                let entries = match end {
                    Some(end) => opened.range(start..end).map_err(fail)?,
                    None => opened.range(start..).map_err(fail)?,
                };
                for entry in entries {
                    let (key, value) = entry.map_err(fail)?;
                    out.push((key.value().to_string(), $wrap(value.value())));
                }
            }};
        }
        match table.kind {
            Kind::Json => scan!($txn.open_table(json_table(table)), |v: &[u8]| Stored::Json(
                v.to_vec()
            )),
            Kind::Text => scan!($txn.open_table(text_table(table)), |v: &str| Stored::Text(
                v.to_string()
            )),
            Kind::Number => scan!($txn.open_table(number_table(table)), Stored::Number),
        }
        out
    }};
}

macro_rules! log_reads {
    () => {
        fn log_last(&self, log: Log) -> StoreResult<Option<u64>> {
            Ok(self
                .0
                .open_table(log_table(log))
                .map_err(fail)?
                .last()
                .map_err(fail)?
                .map(|(key, _)| key.value()))
        }

        fn log_get(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>> {
            Ok(self
                .0
                .open_table(log_table(log))
                .map_err(fail)?
                .get(seq)
                .map_err(fail)?
                .map(|v| v.value().to_vec()))
        }

        fn log_scan(
            &self,
            log: Log,
            newest_first: bool,
            each: &mut dyn FnMut(u64, &[u8]) -> StoreResult<bool>,
        ) -> StoreResult<()> {
            let table = self.0.open_table(log_table(log)).map_err(fail)?;
            let entries = table.iter().map_err(fail)?;
            let mut visit = |entry: Result<_, redb::StorageError>| -> StoreResult<bool> {
                let (key, value): (redb::AccessGuard<u64>, redb::AccessGuard<&[u8]>) =
                    entry.map_err(fail)?;
                each(key.value(), value.value())
            };
            if newest_first {
                for entry in entries.rev() {
                    if !visit(entry)? {
                        break;
                    }
                }
            } else {
                for entry in entries {
                    if !visit(entry)? {
                        break;
                    }
                }
            }
            Ok(())
        }
    };
}

impl Tables for Reading<'_> {
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Stored>> {
        Ok(get_any!(self.0, table, key))
    }

    fn insert(&self, _: Table, _: &str, _: Stored) -> StoreResult<()> {
        Err(read_only())
    }

    fn remove(&self, _: Table, _: &str) -> StoreResult<Option<Stored>> {
        Err(read_only())
    }

    fn range(
        &self,
        table: Table,
        start: &str,
        end: Option<&str>,
    ) -> StoreResult<Vec<(String, Stored)>> {
        Ok(range_any!(self.0, table, start, end))
    }

    log_reads!();

    fn log_insert(&self, _: Log, _: u64, _: &[u8]) -> StoreResult<()> {
        Err(read_only())
    }

    fn log_remove(&self, _: Log, _: u64) -> StoreResult<Option<Vec<u8>>> {
        Err(read_only())
    }
}

impl Tables for Writing<'_> {
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Stored>> {
        Ok(get_any!(self.0, table, key))
    }

    fn insert(&self, table: Table, key: &str, value: Stored) -> StoreResult<()> {
        match (table.kind, value) {
            (Kind::Json, Stored::Json(bytes)) => self
                .0
                .open_table(json_table(table))
                .map_err(fail)?
                .insert(key, bytes.as_slice())
                .map(drop),
            (Kind::Text, Stored::Text(text)) => self
                .0
                .open_table(text_table(table))
                .map_err(fail)?
                .insert(key, text.as_str())
                .map(drop),
            (Kind::Number, Stored::Number(number)) => self
                .0
                .open_table(number_table(table))
                .map_err(fail)?
                .insert(key, number)
                .map(drop),
            (kind, value) => {
                return Err(StoreError::Failed(format!(
                    "{value:?} does not belong in {} ({kind:?})",
                    table.name
                )));
            }
        }
        .map_err(fail)
    }

    fn remove(&self, table: Table, key: &str) -> StoreResult<Option<Stored>> {
        Ok(match table.kind {
            Kind::Json => self
                .0
                .open_table(json_table(table))
                .map_err(fail)?
                .remove(key)
                .map_err(fail)?
                .map(|v| Stored::Json(v.value().to_vec())),
            Kind::Text => self
                .0
                .open_table(text_table(table))
                .map_err(fail)?
                .remove(key)
                .map_err(fail)?
                .map(|v| Stored::Text(v.value().to_string())),
            Kind::Number => self
                .0
                .open_table(number_table(table))
                .map_err(fail)?
                .remove(key)
                .map_err(fail)?
                .map(|v| Stored::Number(v.value())),
        })
    }

    fn range(
        &self,
        table: Table,
        start: &str,
        end: Option<&str>,
    ) -> StoreResult<Vec<(String, Stored)>> {
        Ok(range_any!(self.0, table, start, end))
    }

    log_reads!();

    fn log_insert(&self, log: Log, seq: u64, value: &[u8]) -> StoreResult<()> {
        self.0
            .open_table(log_table(log))
            .map_err(fail)?
            .insert(seq, value)
            .map_err(fail)?;
        Ok(())
    }

    fn log_remove(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .0
            .open_table(log_table(log))
            .map_err(fail)?
            .remove(seq)
            .map_err(fail)?
            .map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::FAMILIES;
    use crate::store::{
        AuditEvent, AuthCode, Authentication, Challenge, Factor, IssuedByCode, Login, Redemption,
        RefreshToken, Role, Rotation, Session, Store, User, Write,
    };

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
        txn.open_table(number_table(FAMILIES))
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
