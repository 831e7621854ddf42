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
//!
//! An I/O error (a full disk, a file system the kernel turned read-only) latches redb: it
//! refuses every later write until the file is closed and opened again. The store does that
//! itself after such an error ([`EmbeddedStore::reopen`]), so writes resume once the cause is
//! gone, without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition, TransactionError, WriteTransaction,
};

use super::tables::{self, Backend, Kind, Log, Stored, Table, Tables};
use super::{StoreError, StoreResult};

/// The default page cache: 128 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "idflow.redb";

/// The embedded store.
pub struct EmbeddedStore {
    /// The open database: every transaction runs under a read lock, and [`Self::reopen`]
    /// takes the write lock to replace it once none is running. `None` only after a reopen
    /// failed to open the file again (the next request tries again).
    db: RwLock<Option<Database>>,
    /// The file, and the page cache, to open it again with.
    path: PathBuf,
    cache_bytes: usize,
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

/// A redb error as a store error, saying in words when the disk is full or read-only (the
/// operator's problem, not a bug).
fn fail(error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    let hint = match &error {
        redb::Error::Io(io) => io_hint(io),
        _ => "",
    };
    StoreError::Failed(format!("{hint}{error}"))
}

fn io_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            "the disk of the data directory is full (writes resume once there is room): "
        }
        std::io::ErrorKind::ReadOnlyFilesystem => {
            "the data directory is on a read-only file system: "
        }
        _ => "",
    }
}

/// Whether an I/O error has latched `db` (redb then refuses every write transaction until
/// the file is opened again; a failed commit can also leave its allocator state discarded,
/// which only a reopen repairs). Unknown, so false, while another write transaction runs:
/// that one will see the error and come here itself.
fn latched(db: &Database) -> bool {
    matches!(
        db.try_begin_write(),
        Err(TransactionError::Storage(
            StorageError::PreviousIo | StorageError::Corrupted(_)
        ))
    )
}

/// Opens (creating if needed) the redb file.
fn open_file(path: &Path, cache_bytes: usize) -> StoreResult<Database> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Failed(format!(
                "{} is in use by another idflow process (stop the server to use the CLI on it)",
                path.display()
            )),
            redb::DatabaseError::Storage(StorageError::Io(io)) => StoreError::Failed(format!(
                "cannot open {}: {}{io}",
                path.display(),
                io_hint(&io)
            )),
            other => StoreError::Failed(format!("cannot open {}: {other}", path.display())),
        })
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
        let db = open_file(&path, cache_bytes)?;
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
            db: RwLock::new(Some(db)),
            path,
            cache_bytes,
            syncs: Mutex::new(Syncs::default()),
            synced: Condvar::new(),
        })
    }

    /// Runs `f` on the open database, under the read lock (so [`Self::reopen`] waits for it).
    fn with_db<R>(&self, f: impl FnOnce(&Database) -> StoreResult<R>) -> StoreResult<R> {
        {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = db.as_ref() {
                return f(db);
            }
        }
        self.reopen()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Failed(format!(
                "{} is closed after an I/O error",
                self.path.display()
            ))),
        }
    }

    /// After a failed transaction: when an I/O error latched the database, closes and opens
    /// it again (redb recovers the file as after a crash: every durable commit, so every
    /// write answered as done, is there). Errs, saying why, when the file cannot be opened
    /// for writing (a read-only file system): the latched handle is then kept, its cache
    /// still serving reads, and the next failure tries again. While the disk stays full each
    /// failed write costs a reopen; writes that fit in the file's free pages succeed.
    fn recover(&self) -> StoreResult<()> {
        let broken = {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            db.as_ref().is_none_or(latched)
        };
        if broken {
            self.reopen()?;
        }
        Ok(())
    }

    /// Replaces a latched (or missing) database with the file opened again. Closing the old
    /// handle releases the file's lock: should another process (the CLI) take it before the
    /// open, the open fails and leaves no handle, and the next request tries again.
    fn reopen(&self) -> StoreResult<()> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| {
                StoreError::Failed(format!(
                    "cannot reopen {} after an I/O error: {}{e}",
                    self.path.display(),
                    io_hint(&e)
                ))
            })?;
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have reopened it while this one waited for the lock.
        if slot.as_ref().is_some_and(|db| !latched(db)) {
            return Ok(());
        }
        // Closing releases the file's lock; a latched handle writes nothing as it closes.
        drop(slot.take());
        let db = open_file(&self.path, self.cache_bytes)?;
        *slot = Some(db);
        tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
        Ok(())
    }

    /// A write transaction that commits without flushing; [`Self::finish`] makes it durable.
    fn begin(db: &Database) -> StoreResult<WriteTransaction> {
        let mut txn = db.begin_write().map_err(fail)?;
        txn.set_durability(Durability::None).map_err(fail)?;
        Ok(txn)
    }

    /// Commits `txn` and returns once it is durable (see [`Syncs`]).
    fn finish(&self, db: &Database, txn: WriteTransaction) -> StoreResult<()> {
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
            let flushed = Self::flush(db, flush);
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
    fn flush(db: &Database, counter: u64) -> StoreResult<()> {
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(number_table(tables::META))
            .map_err(fail)?
            .insert("flushes", counter)
            .map_err(fail)?;
        txn.commit().map_err(fail)
    }
}

impl Backend for EmbeddedStore {
    fn read<R>(&self, read: impl FnOnce(&dyn Tables) -> StoreResult<R>) -> StoreResult<R> {
        let result = self.with_db(|db| {
            let txn = db.begin_read().map_err(fail)?;
            read(&Reading(&txn))
        });
        self.settle(result)
    }

    fn write<R>(
        &self,
        durable: bool,
        mut write: impl FnMut(&dyn Tables) -> StoreResult<(R, bool)>,
    ) -> StoreResult<R> {
        let result = self.with_db(|db| {
            let txn = Self::begin(db)?;
            // An error drops `txn`, which aborts it.
            let (result, changed) = write(&Writing(&txn))?;
            if !changed {
                txn.abort().map_err(fail)?;
            } else if durable {
                self.finish(db, txn)?;
            } else {
                txn.commit().map_err(fail)?;
            }
            Ok(result)
        });
        self.settle(result)
    }
}

impl EmbeddedStore {
    /// A transaction's result, after [`Self::recover`] when it failed (not for a conflict,
    /// which is the store working). When the store cannot be reopened, that is the error:
    /// it says why the next requests fail too.
    fn settle<R>(&self, result: StoreResult<R>) -> StoreResult<R> {
        match result {
            Err(StoreError::Failed(why)) => {
                self.recover()?;
                Err(StoreError::Failed(why))
            }
            other => other,
        }
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
