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
    use crate::store::conformance::refresh;
    use crate::store::{RefreshToken, Store, User, Write};

    fn store() -> (EmbeddedStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "idflow-store-test-{}-{}",
            std::process::id(),
            crate::crypto::random_token(6)
        ));
        (EmbeddedStore::open(&dir).expect("open"), dir)
    }

    mod conformance {
        crate::store_conformance!(|| Some(super::store().0));
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
}
