//! The PostgreSQL store: the tables of [`super::tables`] in PostgreSQL, so that several
//! `idflow serve` nodes share users, logins, sessions, codes, tokens, the provisioning outbox
//! and the audit log.
//!
//! Layout: one table of string-keyed entries (`idflow_kv`: the logical table, the key with
//! byte-order collation so that prefix ranges mean what they mean in redb, and the value as
//! `json`, text or a number), one of logs (`idflow_log`, keyed by sequence numbers from one
//! PostgreSQL sequence, so concurrent appends never contend), and the applied migrations.
//! Records are `json` (a DBA can query them with the JSON operators), not `jsonb`, which would
//! reorder the keys of documents that SCIM clients read back as they wrote them.
//!
//! Every write runs in a `SERIALIZABLE` transaction and is retried when PostgreSQL reports a
//! serialization failure, so the conditional writes (a login advanced once, a code redeemed
//! once, a challenge taken once, a refresh token rotated once) hold across nodes exactly as
//! they do in the embedded store's single-writer transactions.
//!
//! The `postgres` client blocks on its own runtime, which must not run inside the server's:
//! each connection therefore lives on a thread of its own, and a transaction sends it one
//! statement at a time (a sync [`Store`](super::Store) over a sync client, usable from async
//! handlers and the CLI alike).

use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use postgres::error::SqlState;
use postgres::{Client, NoTls};

use super::tables::{Backend, Kind, Log, Stored, Table, Tables};
use super::{StoreError, StoreResult};

/// Connections opened when the store is opened.
pub const DEFAULT_CONNECTIONS: usize = 8;

/// Times a transaction is tried before a serialization failure is reported.
const MAX_TRIES: usize = 20;

/// The schema, one entry per version; applied in order, each once, at start (and by
/// `idflow migrate`).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE idflow_kv (
         tbl text NOT NULL,
         key text COLLATE \"C\" NOT NULL,
         json json,
         text text,
         number bigint,
         PRIMARY KEY (tbl, key)
     );
     CREATE TABLE idflow_log (
         tbl text NOT NULL,
         seq bigint NOT NULL,
         value json NOT NULL,
         PRIMARY KEY (tbl, seq)
     );
     CREATE SEQUENCE idflow_log_seq;",
)];

/// Work for a connection's thread: the connected client, or why there is none.
type Job = Box<dyn FnOnce(Result<&mut Client, &str>) + Send>;

/// How long a request waits for a free connection before it fails.
const CHECKOUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects with timeouts, so that a database that stops answering fails requests instead of
/// hanging them: 10 s to connect, TCP keepalives, and statements cut off after 30 s.
fn connect(url: &str) -> Result<Client, String> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| format!("the store URL does not parse: {}", describe(&e)))?;
    config
        .connect_timeout(std::time::Duration::from_secs(10))
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30));
    if config.get_options().is_none() {
        config.options("-c statement_timeout=30000");
    }
    config
        .connect(NoTls)
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", describe(&e)))
}

/// What a transaction runs: its result, and whether to commit.
type TransactionBody<'a, R> = dyn FnMut(&dyn Tables) -> StoreResult<(R, bool)> + 'a;

/// One connection on its own thread.
struct Connection {
    jobs: mpsc::Sender<Job>,
}

impl Connection {
    /// Connects (the first time must succeed: a wrong URL stops the start) and starts the
    /// connection's thread, which connects again whenever the connection was lost (the
    /// database restarted, failed over, or closed it) before the next job.
    fn open(url: &str) -> StoreResult<Connection> {
        let client = connect(url).map_err(StoreError::Failed)?;
        let url = url.to_string();
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("idflow-postgres".into())
            .spawn(move || {
                let mut client = Some(client);
                for job in receiver {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = match connect(&url) {
                            Ok(fresh) => Some(fresh),
                            Err(why) => {
                                tracing::error!(%why, "the store's connection is lost");
                                job(Err(&why));
                                continue;
                            }
                        };
                    }
                    let Some(connected) = client.as_mut() else {
                        continue;
                    };
                    // A job that panics (a malformed row) must not take the thread with it;
                    // the connection's state is then unknown, so the next job reconnects.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(Ok(connected))
                    }));
                    if ran.is_err() {
                        client = None;
                    }
                }
            })
            .map_err(|e| StoreError::Failed(format!("cannot start a connection thread: {e}")))?;
        Ok(Connection { jobs })
    }

    /// Runs `work` on the connection's thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, Failure> {
        let (answer, answered) = mpsc::channel();
        self.jobs
            .send(Box::new(move |client| {
                let _ = answer.send(match client {
                    Ok(client) => work(client).map_err(Failure::from),
                    Err(why) => Err(Failure::Broken(why.to_string())),
                });
            }))
            .map_err(|_| Failure::Broken("the connection thread is gone".into()))?;
        answered
            .recv()
            .unwrap_or_else(|_| Err(Failure::Broken("a statement failed unexpectedly".into())))
    }
}

/// Why a statement failed.
#[derive(Debug)]
enum Failure {
    /// A serialization failure or deadlock: try the transaction again.
    Retry(String),
    /// Anything else.
    Broken(String),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Failure {
        let retry = matches!(
            error.code(),
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        );
        if retry {
            Failure::Retry(describe(&error))
        } else {
            Failure::Broken(describe(&error))
        }
    }
}

/// The database's own message when there is one (the driver's `Display` says only "db error").
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// Marks a store error as a serialization failure, so the transaction is retried rather than
/// reported.
const RETRY: &str = "postgres: retry: ";

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> StoreError {
        match failure {
            Failure::Retry(why) => StoreError::Failed(format!("{RETRY}{why}")),
            Failure::Broken(why) => StoreError::Failed(format!("postgres: {why}")),
        }
    }
}

fn is_retry(error: &StoreError) -> bool {
    matches!(error, StoreError::Failed(why) if why.starts_with(RETRY))
}

/// A connection taken from the pool; back in the pool when dropped. Dropped by a panic in
/// the middle of a transaction, it ends the transaction first, so the next user of the
/// connection does not continue it.
struct Checkout<'a> {
    store: &'a PostgresStore,
    connection: Option<Connection>,
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .unwrap_or_else(|| unreachable!("a checkout holds its connection until dropped"))
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if std::thread::panicking() {
            let _ = connection.call(|client| client.batch_execute("ROLLBACK"));
        }
        self.store
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(connection);
        self.store.returned.notify_one();
    }
}

/// The channel reload announcements travel on.
const RELOADS: &str = "idflow_reload";

/// The PostgreSQL store.
pub struct PostgresStore {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
    /// Where to connect again (the listener for reload announcements has a connection of its
    /// own).
    url: String,
}

impl PostgresStore {
    /// Connects `connections` times to `url` (`postgres://user:password@host/db`) and applies
    /// the migrations not yet applied.
    pub fn open(url: &str, connections: usize) -> StoreResult<PostgresStore> {
        let store = PostgresStore::open_unmigrated(url, connections)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects without applying migrations (`idflow migrate` applies them itself, to report
    /// what it applied).
    pub fn open_unmigrated(url: &str, connections: usize) -> StoreResult<PostgresStore> {
        let mut idle = Vec::new();
        for _ in 0..connections.max(1) {
            idle.push(Connection::open(url)?);
        }
        let store = PostgresStore {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            url: url.to_string(),
        };
        Ok(store)
    }

    /// Applies the migrations not yet applied; returns the versions it applied. Several nodes
    /// starting at once take turns (an advisory lock), so each version is applied once.
    pub fn migrate(&self) -> StoreResult<Vec<i32>> {
        let connection = self.checkout()?;
        let applied = connection.call(|client| {
            // READ COMMITTED whatever the database's default: the table check must see what a
            // node that held the lock before this one created.
            let mut txn = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::ReadCommitted)
                .start()?;
            txn.batch_execute(
                "SELECT pg_advisory_xact_lock(7203101);
                 CREATE TABLE IF NOT EXISTS idflow_migrations (
                     version integer PRIMARY KEY,
                     applied timestamptz NOT NULL DEFAULT now()
                 );",
            )?;
            let done: Vec<i32> = txn
                .query("SELECT version FROM idflow_migrations", &[])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                txn.batch_execute(sql)?;
                txn.execute(
                    "INSERT INTO idflow_migrations (version) VALUES ($1)",
                    &[version],
                )?;
                applied.push(*version);
            }
            txn.commit()?;
            Ok(applied)
        });
        drop(connection);
        applied.map_err(StoreError::from)
    }

    /// A free connection, returned to the pool when the guard is dropped (a panic included);
    /// an error when none frees up within [`CHECKOUT_TIMEOUT`].
    fn checkout(&self) -> StoreResult<Checkout<'_>> {
        let deadline = std::time::Instant::now() + CHECKOUT_TIMEOUT;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(connection) = idle.pop() {
                return Ok(Checkout {
                    store: self,
                    connection: Some(connection),
                });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Failed(
                    "postgres: no database connection came free in 30 s".into(),
                ));
            }
            idle = self
                .returned
                .wait_timeout(idle, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Runs `body` in a transaction begun with `begin` on a checked-out connection; the
    /// transaction ends with COMMIT when `body` says so, else ROLLBACK.
    fn transaction<R>(&self, begin: &'static str, body: &mut TransactionBody<R>) -> StoreResult<R> {
        let connection = self.checkout()?;
        let result = (|| {
            connection.call(move |client| client.batch_execute(begin))?;
            let outcome = body(&Transaction(&connection));
            let end = match &outcome {
                Ok((_, true)) => "COMMIT",
                _ => "ROLLBACK",
            };
            let ended = connection.call(move |client| client.batch_execute(end));
            let (value, _) = outcome?;
            ended?;
            Ok(value)
        })();
        if result.is_err() {
            // A statement may have failed inside the transaction: make sure it is over.
            let _ = connection.call(|client| client.batch_execute("ROLLBACK"));
        }
        result
    }
}

/// Listens for reload announcements on a connection of its own, connecting again (after a
/// pause) whenever it is lost, for as long as the process lives.
fn listen_for_reloads(url: &str, heard: &super::ReloadListener) {
    let mut first = true;
    loop {
        match connect(url) {
            Ok(mut client) => {
                if let Err(error) = client.batch_execute(&format!("LISTEN {RELOADS}")) {
                    tracing::error!(error = %describe(&error), "cannot listen for reloads");
                } else {
                    // Announcements made while this listener was away are lost: read the files
                    // again once, in case one was.
                    if !first {
                        heard("");
                    }
                    first = false;
                    use postgres::fallible_iterator::FallibleIterator;
                    let mut notifications = client.notifications();
                    let mut waiting = notifications.blocking_iter();
                    loop {
                        match waiting.next() {
                            Ok(Some(notification)) => heard(notification.payload()),
                            Ok(None) => break,
                            Err(error) => {
                                tracing::error!(error = %describe(&error), "lost the reload listener");
                                break;
                            }
                        }
                    }
                }
            }
            Err(why) => tracing::error!(%why, "cannot connect the reload listener"),
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

impl Backend for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    fn announce_reload(&self, from: &str) -> StoreResult<()> {
        let connection = self.checkout()?;
        let from = from.to_string();
        let sent = connection
            .call(move |client| client.execute("SELECT pg_notify($1, $2)", &[&RELOADS, &from]));
        sent.map(drop).map_err(StoreError::from)
    }

    fn on_reload_announced(&self, heard: super::ReloadListener) -> StoreResult<bool> {
        let url = self.url.clone();
        std::thread::Builder::new()
            .name("idflow-reloads".into())
            .spawn(move || listen_for_reloads(&url, &heard))
            .map_err(|e| StoreError::Failed(format!("cannot start the reload listener: {e}")))?;
        Ok(true)
    }

    fn read<R>(&self, read: impl FnOnce(&dyn Tables) -> StoreResult<R>) -> StoreResult<R> {
        let mut read = Some(read);
        self.transaction(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            &mut |t| match read.take() {
                Some(read) => read(t).map(|value| (value, false)),
                None => Err(StoreError::Failed("a read ran twice".into())),
            },
        )
    }

    fn write<R>(
        &self,
        _durable: bool,
        mut write: impl FnMut(&dyn Tables) -> StoreResult<(R, bool)>,
    ) -> StoreResult<R> {
        // PostgreSQL commits durably (synchronous_commit); there is no cheaper kind to offer.
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.transaction("BEGIN ISOLATION LEVEL SERIALIZABLE", &mut write) {
                Err(error) if is_retry(&error) && (tries as usize) < MAX_TRIES => {
                    // Back off a little, at random, so that the transactions that collided do
                    // not collide again at once.
                    let mut random = [0u8; 2];
                    let _ = aws_lc_rs::rand::fill(&mut random);
                    let ceiling = 1u64 << tries.min(7);
                    let micros = u64::from(u16::from_le_bytes(random)) % (ceiling * 500);
                    std::thread::sleep(std::time::Duration::from_micros(micros));
                }
                other => return other,
            }
        }
    }
}

/// A transaction on a checked-out connection, as [`Tables`].
struct Transaction<'a>(&'a Connection);

/// The value of an entry as its table's kind says; a column of the wrong kind (a row written
/// by hand) is an error, not a panic.
fn stored(kind: Kind, row: &postgres::Row) -> StoreResult<Stored> {
    let column = |index: usize| {
        StoreError::Failed(format!(
            "postgres: column {index} of an entry is empty or of the wrong type"
        ))
    };
    Ok(match kind {
        Kind::Json => Stored::Json(
            row.try_get::<_, String>(0)
                .map_err(|_| column(0))?
                .into_bytes(),
        ),
        Kind::Text => Stored::Text(row.try_get(1).map_err(|_| column(1))?),
        Kind::Number => Stored::Number(to_u64(row.try_get(2).map_err(|_| column(2))?)?),
    })
}

fn to_u64(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Failed(format!("negative number {value}")))
}

fn to_i64(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Failed(format!("number {value} too large")))
}

/// The columns of an entry, in the order `stored` reads them.
const COLUMNS: &str = "json::text, text, number";

impl Tables for Transaction<'_> {
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Stored>> {
        let key = key.to_string();
        let rows = self.0.call(move |client| {
            client.query(
                &format!("SELECT {COLUMNS} FROM idflow_kv WHERE tbl = $1 AND key = $2"),
                &[&table.name, &key],
            )
        })?;
        rows.first().map(|row| stored(table.kind, row)).transpose()
    }

    fn insert(&self, table: Table, key: &str, value: Stored) -> StoreResult<()> {
        let key = key.to_string();
        let (json, text, number): (Option<String>, Option<String>, Option<i64>) = match value {
            Stored::Json(bytes) => (
                Some(String::from_utf8(bytes).map_err(|e| StoreError::Failed(e.to_string()))?),
                None,
                None,
            ),
            Stored::Text(text) => (None, Some(text), None),
            Stored::Number(number) => (None, None, Some(to_i64(number)?)),
        };
        self.0.call(move |client| {
            client.execute(
                "INSERT INTO idflow_kv (tbl, key, json, text, number)
                 VALUES ($1, $2, $3::text::json, $4, $5)
                 ON CONFLICT (tbl, key) DO UPDATE
                 SET json = EXCLUDED.json, text = EXCLUDED.text, number = EXCLUDED.number",
                &[&table.name, &key, &json, &text, &number],
            )
        })?;
        Ok(())
    }

    fn remove(&self, table: Table, key: &str) -> StoreResult<Option<Stored>> {
        let key = key.to_string();
        let rows = self.0.call(move |client| {
            client.query(
                &format!("DELETE FROM idflow_kv WHERE tbl = $1 AND key = $2 RETURNING {COLUMNS}"),
                &[&table.name, &key],
            )
        })?;
        rows.first().map(|row| stored(table.kind, row)).transpose()
    }

    fn range(
        &self,
        table: Table,
        start: &str,
        end: Option<&str>,
    ) -> StoreResult<Vec<(String, Stored)>> {
        let start = start.to_string();
        let end = end.map(String::from);
        let rows = self.0.call(move |client| {
            client.query(
                &format!(
                    "SELECT {COLUMNS}, key FROM idflow_kv
                     WHERE tbl = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)
                     ORDER BY key"
                ),
                &[&table.name, &start, &end],
            )
        })?;
        rows.iter()
            .map(|row| Ok((row.get(3), stored(table.kind, row)?)))
            .collect()
    }

    fn log_last(&self, log: Log) -> StoreResult<Option<u64>> {
        let rows = self.0.call(move |client| {
            client.query(
                "SELECT max(seq) FROM idflow_log WHERE tbl = $1",
                &[&log.name],
            )
        })?;
        rows.first()
            .and_then(|row| row.get::<_, Option<i64>>(0))
            .map(to_u64)
            .transpose()
    }

    fn log_append(&self, log: Log, value: &[u8]) -> StoreResult<u64> {
        let value =
            String::from_utf8(value.to_vec()).map_err(|e| StoreError::Failed(e.to_string()))?;
        let rows = self.0.call(move |client| {
            client.query(
                "INSERT INTO idflow_log (tbl, seq, value)
                 VALUES ($1, nextval('idflow_log_seq'), $2::text::json) RETURNING seq",
                &[&log.name, &value],
            )
        })?;
        let seq: i64 = rows
            .first()
            .map(|row| row.get(0))
            .ok_or_else(|| StoreError::Failed("no sequence number".into()))?;
        to_u64(seq)
    }

    fn log_get(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        let seq = to_i64(seq)?;
        let rows = self.0.call(move |client| {
            client.query(
                "SELECT value::text FROM idflow_log WHERE tbl = $1 AND seq = $2",
                &[&log.name, &seq],
            )
        })?;
        Ok(rows.first().map(|row| row.get::<_, String>(0).into_bytes()))
    }

    fn log_insert(&self, log: Log, seq: u64, value: &[u8]) -> StoreResult<()> {
        let seq = to_i64(seq)?;
        let value =
            String::from_utf8(value.to_vec()).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.0.call(move |client| {
            client.execute(
                "INSERT INTO idflow_log (tbl, seq, value) VALUES ($1, $2, $3::text::json)
                 ON CONFLICT (tbl, seq) DO UPDATE SET value = EXCLUDED.value",
                &[&log.name, &seq, &value],
            )
        })?;
        Ok(())
    }

    fn log_remove(&self, log: Log, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        let seq = to_i64(seq)?;
        let rows = self.0.call(move |client| {
            client.query(
                "DELETE FROM idflow_log WHERE tbl = $1 AND seq = $2 RETURNING value::text",
                &[&log.name, &seq],
            )
        })?;
        Ok(rows.first().map(|row| row.get::<_, String>(0).into_bytes()))
    }

    fn log_scan(
        &self,
        log: Log,
        newest_first: bool,
        each: &mut dyn FnMut(u64, &[u8]) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        // In pages, so that reading the newest audit entries does not read the whole log.
        const PAGE: i64 = 500;
        let mut after: Option<i64> = None;
        loop {
            let query = if newest_first {
                "SELECT seq, value::text FROM idflow_log
                 WHERE tbl = $1 AND ($2::bigint IS NULL OR seq < $2)
                 ORDER BY seq DESC LIMIT $3"
            } else {
                "SELECT seq, value::text FROM idflow_log
                 WHERE tbl = $1 AND ($2::bigint IS NULL OR seq > $2)
                 ORDER BY seq LIMIT $3"
            };
            let rows = self
                .0
                .call(move |client| client.query(query, &[&log.name, &after, &PAGE]))?;
            for row in &rows {
                let seq: i64 = row.get(0);
                let value: String = row.get(1);
                if !each(to_u64(seq)?, value.as_bytes())? {
                    return Ok(());
                }
                after = Some(seq);
            }
            if rows.len() < PAGE as usize {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a new database of its own in the PostgreSQL that `IDFLOW_TEST_POSTGRES`
    /// names (`scripts/postgres` starts one); none without it, unless
    /// `IDFLOW_TEST_POSTGRES_REQUIRED` is set (as `scripts/test` does), which makes that a
    /// failure rather than a skip.
    fn store() -> Option<PostgresStore> {
        store_named().map(|(store, _)| store)
    }

    /// [`store`], with its database's name.
    fn store_named() -> Option<(PostgresStore, String)> {
        let Ok(admin_url) = std::env::var("IDFLOW_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("IDFLOW_TEST_POSTGRES_REQUIRED").is_none(),
                "IDFLOW_TEST_POSTGRES is not set: run scripts/postgres"
            );
            return None;
        };
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).expect("random");
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("idflow_test_{name}");
        let mut admin = Client::connect(&admin_url, NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let mut url = url::Url::parse(&admin_url).expect("url");
        url.set_path(&format!("/{name}"));
        Some((PostgresStore::open(url.as_str(), 4).expect("open"), name))
    }

    mod conformance {
        crate::store_conformance!(super::store);
    }

    #[test]
    fn migrations_apply_once_however_often_the_store_opens() {
        let Some(store) = store() else { return };
        assert_eq!(store.migrate().expect("again"), Vec::<i32>::new());
    }

    #[test]
    fn connections_the_database_dropped_are_opened_again() {
        use crate::store::Store;
        let Some((store, name)) = store_named() else {
            return;
        };
        store.users().expect("works");
        let admin_url = std::env::var("IDFLOW_TEST_POSTGRES").expect("url");
        let mut admin = Client::connect(&admin_url, NoTls).expect("connect");
        let dropped = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .expect("terminate");
        assert!(
            dropped >= 4,
            "the pool's connections were dropped ({dropped})"
        );
        // Each dropped connection may fail the one request that finds it dead; then it is
        // opened again, and the store works as before.
        let mut failures = 0;
        for _ in 0..20 {
            if store.users().is_err() {
                failures += 1;
            }
        }
        assert!(failures <= 4, "{failures} requests failed");
        store
            .commit(vec![crate::store::Write::CreateUser(
                crate::store::User::new("u1".into(), "ann".into(), 0),
            )])
            .expect("writes work again");
        assert!(store.user("u1").expect("read").is_some());
    }
}
