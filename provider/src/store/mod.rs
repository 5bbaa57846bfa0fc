//! Persistence: the provider's database (through sqlx) and a content-addressed blob store.
//!
//! The database is one of two engines behind the same [`Db`]: components write their SQL
//! once, with `$1`-style parameters both engines accept, as sqlx `Any` queries, and ask
//! [`Db::engine`] for the few statements that differ (row locks, notifications).
//!
//! * **SQLite** (single-node mode, the default; schema in `provider/migrations/`): one file in
//!   WAL mode with `synchronous=FULL`, so a committed transaction survives a power cut. SQLite
//!   admits one writer at a time, and a connection that finds the database locked sleeps and
//!   retries; so every write goes through one dedicated connection ([`Db::write`]), where
//!   writers queue in the process, in order, and share disk flushes (group commit, see
//!   [`writer`]). Each write is one transaction begun `IMMEDIATE`. Reads use connections of
//!   their own ([`read`]) and never wait for writers (WAL). The schema is migrated through
//!   sqlx; after that, statements do not go through sqlx's SQLite driver but run on the thread
//!   that asks for them (`raw`, which says why).
//! * **PostgreSQL** (cluster mode, `--database postgres://...`; schema in
//!   `provider/migrations-postgres/`): several API nodes and workers share it. A write is one
//!   transaction of the pool (read committed); the components lock the rows they read in order
//!   to change them (`FOR UPDATE`, see [`Db::for_update`]), so two nodes never act on the same
//!   row at once. [`Db::notify`] and [`Db::listen`] carry wake-ups between nodes.

pub mod blobs;
mod conn;
pub mod gc;
pub mod lock;
pub mod nonces;
mod raw;
pub mod read;
pub mod s3;
pub mod text;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Any, AnyPool, ConnectOptions, Connection};

pub use text::{JsonText, StoredText, Text};

/// A failure of the database (the cause is its source).
#[derive(Debug, thiserror::Error)]
#[error("the database failed")]
pub struct DbError(#[from] pub sqlx::Error);

impl DbError {
    /// Should this clear by itself (busy, locked, full, unreachable, restarting), so that the
    /// request can be retried later, rather than being a fault?
    pub fn is_transient(&self) -> bool {
        match &self.0 {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(e) => {
                if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // PostgreSQL: connection exceptions (08), insufficient resources (53),
                    // operator intervention (57: shutting down, starting up), serialization
                    // failures and deadlocks (40001, 40P01).
                    let code = pg.code();
                    return ["08", "53", "57"].iter().any(|class| code.starts_with(class))
                        || code == "40001"
                        || code == "40P01";
                }
                // SQLite: BUSY (5), LOCKED (6), FULL (13), READONLY (8), IOERR (10), and their
                // extended codes (the primary code is the low byte).
                let code = e.code().and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
                matches!(code, Some(5 | 6 | 8 | 10 | 13))
            }
            // The connection went away in the middle of a statement (a restarting server).
            sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }

    /// Did a statement break a uniqueness constraint (a row that exists already)?
    pub fn is_unique_violation(&self) -> bool {
        matches!(&self.0, sqlx::Error::Database(e) if e.is_unique_violation())
    }
}

/// Which engine a [`Db`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One SQLite file, one node.
    Sqlite,
    /// A PostgreSQL shared by a cluster's nodes.
    Postgres,
}

/// How long a statement waits for a lock held by another connection, by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider's database.
#[derive(Clone, Debug)]
pub struct Db {
    /// Where reads run (PostgreSQL's pool, or SQLite connections of the node's own).
    reader: read::Reader,
    /// SQLite's one writing connection (group commit); PostgreSQL writes through the pool.
    writer: Option<Arc<writer::Writer>>,
    engine: Engine,
    /// PostgreSQL's URL, for listeners.
    url: Option<String>,
}

/// How long a PostgreSQL request waits for a connection before it is answered "unavailable"
/// (a restarting server should give clients a quick 503, not a hanging request).
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections each node keeps to PostgreSQL at most.
const PG_CONNECTIONS: u32 = 16;

impl Db {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        Self::open_with(path, writer::MAX_BATCH_AGE, DEFAULT_BUSY_TIMEOUT).await
    }

    /// [`open`](Self::open), waiting at most `busy` for a database another process holds
    /// locked (after which the write fails with a transient error: a 503 to the client).
    pub async fn open_with_busy_timeout(path: &Path, busy: Duration) -> Result<Self, DbError> {
        Self::open_with(path, writer::MAX_BATCH_AGE, busy).await
    }

    /// Opens the database a `--database` setting names: a `postgres://` (or `postgresql://`)
    /// URL, or else the path of a SQLite file.
    pub async fn open_url(database: &str) -> Result<Self, DbError> {
        match Self::sqlite_path(database) {
            None => Self::connect_postgres(database).await,
            Some(path) => Self::open(path).await,
        }
    }

    /// Whether `database` (as [`open_url`](Self::open_url) takes it) names a database nodes
    /// share (PostgreSQL), not a SQLite file one process owns.
    pub fn is_shared_url(database: &str) -> bool {
        database.starts_with("postgres://") || database.starts_with("postgresql://")
    }

    /// The SQLite file `database` names (`sqlite://PATH`, or a path), or `None` for a shared
    /// database.
    pub fn sqlite_path(database: &str) -> Option<&Path> {
        (!Self::is_shared_url(database)).then(|| Path::new(database.strip_prefix("sqlite://").unwrap_or(database)))
    }

    /// [`open`](Self::open), with batches committed once `max_batch_age` old (tests that need
    /// a batch to stay open while they arrange writers around it, on a loaded machine).
    async fn open_with(path: &Path, max_batch_age: Duration, busy: Duration) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        // The schema, through SQLite's own driver (its migrations are SQLite's).
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy);
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations").run(&mut conn).await.map_err(sqlx::Error::from)?;
        conn.close().await?;
        let writer = writer::Writer::new(raw::RawConn::open(path, busy)?, max_batch_age);
        let reader = read::Reader::sqlite(path.to_path_buf(), busy);
        Ok(Self { reader, writer: Some(writer), engine: Engine::Sqlite, url: None })
    }

    /// Connects to PostgreSQL at `url` and brings its schema up to date (several nodes may do
    /// so at once: migrations take an advisory lock).
    async fn connect_postgres(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::migrate!("./migrations-postgres").run(&mut conn).await.map_err(sqlx::Error::from)?;
        conn.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(Self {
            reader: read::Reader::postgres(pool),
            writer: None,
            engine: Engine::Postgres,
            url: Some(url.to_string()),
        })
    }

    /// The engine this database runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Is this database shared by several nodes (PostgreSQL)?
    pub fn is_shared(&self) -> bool {
        self.engine == Engine::Postgres
    }

    /// What a `SELECT` that reads a row in order to change it ends with: `FOR UPDATE` on
    /// PostgreSQL, where other nodes write at the same time; nothing on SQLite, whose writes
    /// are serialized already.
    pub fn for_update(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE",
        }
    }

    /// Where reads run: `query.fetch_all(db.pool())`.
    pub fn pool(&self) -> &read::Reader {
        &self.reader
    }

    /// PostgreSQL's pool (SQLite has none: its writes go through [`writer`]).
    fn postgres(&self) -> Result<&AnyPool, DbError> {
        let absent = || DbError(sqlx::Error::Configuration("a SQLite database has no connection pool".into()));
        self.reader.pool().ok_or_else(absent)
    }

    /// A write transaction: statements run on its connection (`&mut *tx`), and
    /// [`commit`](writer::WriteTx::commit) returns once they are durable. Hold it briefly, and
    /// never ask for a second one while holding one (SQLite has one writing connection).
    pub async fn write(&self) -> Result<writer::WriteTx, DbError> {
        match &self.writer {
            Some(writer) => writer.begin(true).await,
            None => Ok(writer::WriteTx::pooled(self.postgres()?.begin().await?)),
        }
    }

    /// Runs one changing statement in its own write transaction. (Boxed for the same reason
    /// as [`writer`]'s own statements.)
    pub fn execute<'a>(
        &'a self,
        query: sqlx::query::Query<'a, Any, sqlx::any::AnyArguments<'a>>,
    ) -> BoxFuture<'a, Result<AnyQueryResult, DbError>> {
        Box::pin(async move {
            match &self.writer {
                Some(writer) => {
                    let mut tx = writer.begin(false).await?;
                    let done = query.execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(done)
                }
                None => Ok(query.execute(self.postgres()?).await?),
            }
        })
    }

    /// Tells every node listening on `channel` (PostgreSQL `NOTIFY`; nothing on SQLite, whose
    /// one node hears its own news in memory). Best effort: listeners also poll.
    pub async fn notify(&self, channel: &str) {
        let Ok(pool) = self.postgres() else { return };
        // (Counted: the `Any` driver reads every row, and has no type for `pg_notify`'s `void`.)
        let sent =
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_notify($1, '')) AS n").bind(channel).execute(pool).await;
        if let Err(e) = sent {
            tracing::debug!(channel, error = %e, "a notification was not sent; listeners poll");
        }
    }

    /// Calls `wake` whenever another node notifies `channel`, for as long as the process runs
    /// (PostgreSQL only: `None` on SQLite). Notifications are best effort (a listener that
    /// reconnects misses those sent meanwhile): whoever waits for them also polls.
    pub fn listen(
        &self,
        channel: &'static str,
        wake: impl Fn() + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.url.clone()?;
        Some(tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                    l.listen(channel).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match listener.await {
                    Ok(mut l) => loop {
                        match l.try_recv().await {
                            Ok(Some(_)) => wake(),
                            // The connection was lost (and is re-established on the next call):
                            // news may have been missed.
                            Ok(None) => wake(),
                            Err(e) => {
                                tracing::debug!(channel, error = %e, "listening failed; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::debug!(channel, error = %e, "cannot listen; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

/// How SQLite plans `sql` (the `detail` column of `EXPLAIN QUERY PLAN`), for tests that
/// check a query keeps to its index. Parameters are left unbound (NULL).
#[cfg(test)]
pub(crate) async fn query_plan(db: &Db, sql: &str) -> Vec<String> {
    use sqlx::Row;
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(db.pool())
        .await
        .expect("explaining a query")
        .iter()
        .map(|r| r.get("detail"))
        .collect()
}

#[cfg(test)]
mod tests;

/// Both engines' schemas, on a real SQLite file and a real PostgreSQL.
#[cfg(test)]
mod engines {
    use std::collections::BTreeSet;

    use super::*;

    /// Every table's columns, as `table.column` (the migrations' own table left out).
    async fn columns(db: &Db, sql: &str) -> BTreeSet<String> {
        let rows: Vec<(String, String)> = sqlx::query_as(sql).fetch_all(db.pool()).await.unwrap();
        rows.into_iter().filter(|(t, _)| t != "_sqlx_migrations").map(|(t, c)| format!("{t}.{c}")).collect()
    }

    #[tokio::test]
    async fn both_schemas_hold_the_same_tables_and_columns() {
        let tmp = tempfile::tempdir().unwrap();
        let sqlite = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let pg = tidepool_test_artifacts::cluster::Postgres::start();
        let postgres = Db::open_url(&pg.url).await.unwrap();
        assert_eq!(postgres.engine(), Engine::Postgres);
        let lite = columns(
            &sqlite,
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .await;
        let post = columns(
            &postgres,
            "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public'",
        )
        .await;
        assert!(lite.contains("jobs.lease_owner") && lite.len() > 60, "{lite:?}");
        let only_lite: Vec<_> = lite.difference(&post).collect();
        let only_post: Vec<_> = post.difference(&lite).collect();
        assert!(
            only_lite.is_empty() && only_post.is_empty(),
            "SQLite only: {only_lite:?}; PostgreSQL only: {only_post:?}"
        );
        // A second node migrating the same database finds it up to date.
        Db::open_url(&pg.url).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nonces_are_atomic_across_nodes() {
        let pg = tidepool_test_artifacts::cluster::Postgres::start();
        let nodes = [Db::open_url(&pg.url).await.unwrap(), Db::open_url(&pg.url).await.unwrap()];
        let address = alloy_primitives::Address::repeat_byte(7);
        let clients: Vec<nonces::Nonces> = (0..8).map(|i| nonces::Nonces::new(nodes[i % 2].clone())).collect();
        for nonce in 1..=5u64 {
            let tries = clients.iter().map(|n| n.accept(address, nonce));
            let accepted = futures_util::future::join_all(tries).await;
            let won = accepted.iter().filter(|r| *r.as_ref().unwrap()).count();
            assert_eq!(won, 1, "nonce {nonce} accepted {won} times");
        }
    }

    #[tokio::test]
    async fn postgres_errors_of_a_stopped_server_are_transient() {
        let pg = tidepool_test_artifacts::cluster::Postgres::start();
        let db = Db::open_url(&pg.url).await.unwrap();
        pg.stop();
        let err = sqlx::query("SELECT 1").execute(db.pool()).await.map_err(DbError).unwrap_err();
        assert!(err.is_transient(), "{:?}", err.0);
        pg.start_again();
        let mut back = false;
        for _ in 0..100 {
            if sqlx::query("SELECT 1").execute(db.pool()).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "the pool reconnects once the server is back");
    }
}
