//! Persistence: one SQLite database (through sqlx, schema in `provider/migrations/`) and a
//! content-addressed blob store on disk.
//!
//! The database runs in WAL mode with `synchronous=FULL`: a committed transaction survives a
//! power cut. Every state change is one transaction, begun `IMMEDIATE` so two writers never
//! deadlock on upgrading a read lock.
//!
//! SQLite admits one writer at a time, and a connection that finds the database locked sleeps
//! and retries (its busy handler backs off by milliseconds). So every write goes through one
//! dedicated connection ([`Db::write`]): writers queue for it in the process, in order, and
//! concurrent writers share disk flushes (group commit, see [`writer`]). Reads use a pool of
//! their own and never wait for writers (WAL).

pub mod blobs;
pub mod nonces;
pub mod text;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

pub use text::{StoredText, Text};

/// A failure of the database (the cause is its source).
#[derive(Debug, thiserror::Error)]
#[error("the database failed")]
pub struct DbError(#[from] pub sqlx::Error);

impl DbError {
    /// Should this clear by itself (busy, locked, full, unreachable), so that the request can
    /// be retried later, rather than being a fault?
    pub fn is_transient(&self) -> bool {
        match &self.0 {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(e) => {
                // SQLite: BUSY (5), LOCKED (6), FULL (13), READONLY (8), IOERR (10), and their
                // extended codes (the primary code is the low byte).
                let code = e.code().and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
                matches!(code, Some(5 | 6 | 8 | 10 | 13))
            }
            _ => false,
        }
    }
}

/// How long a statement waits for a lock held by another connection, by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
    writer: Arc<writer::Writer>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        Self::open_with(path, writer::MAX_BATCH_AGE, DEFAULT_BUSY_TIMEOUT).await
    }

    /// [`open`](Self::open), waiting at most `busy` for a database another process holds
    /// locked (after which the write fails with a transient error: a 503 to the client).
    pub async fn open_with_busy_timeout(path: &Path, busy: Duration) -> Result<Self, DbError> {
        Self::open_with(path, writer::MAX_BATCH_AGE, busy).await
    }

    /// [`open`](Self::open), with batches committed once `max_batch_age` old (tests that need
    /// a batch to stay open while they arrange writers around it, on a loaded machine).
    async fn open_with(path: &Path, max_batch_age: Duration, busy: Duration) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy);
        let writing = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations").run(&writing).await.map_err(sqlx::Error::from)?;
        let writer = writer::Writer::new(writing.acquire().await?.detach(), max_batch_age);
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        Ok(Self { pool, writer })
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction: statements run on the writing connection (`&mut *tx`), and
    /// [`commit`](writer::WriteTx::commit) returns once they are on disk. Hold it briefly, and
    /// never ask for a second one while holding one: there is one writing connection.
    pub async fn write(&self) -> Result<writer::WriteTx, DbError> {
        self.writer.begin(true).await
    }

    /// Runs one changing statement in its own write transaction. (Boxed for the same reason
    /// as [`writer`]'s own statements.)
    pub fn execute<'a>(
        &'a self,
        query: sqlx::query::Query<'a, Sqlite, sqlx::sqlite::SqliteArguments<'a>>,
    ) -> BoxFuture<'a, Result<sqlx::sqlite::SqliteQueryResult, DbError>> {
        Box::pin(async move {
            let mut tx = self.writer.begin(false).await?;
            let done = query.execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done)
        })
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
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_commits_and_an_abandoned_one_leaves_no_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let insert =
            |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES (?1, ?2)").bind(format!("a{n}")).bind(n);
        let writers = (0..64).map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.write().await.unwrap();
                insert(n).execute(&mut *tx).await.unwrap();
                if n % 4 == 3 {
                    // Changed its mind: dropped without commit, in the middle of others' batch.
                    drop(tx);
                } else if n % 4 == 2 {
                    // A failing statement: the error reaches the writer, who gives up.
                    assert!(insert(n).execute(&mut *tx).await.is_err(), "a duplicate key fails");
                } else {
                    tx.commit().await.unwrap();
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        let kept: Vec<i64> =
            sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
        assert_eq!(kept, (0..64).filter(|n| n % 4 < 2).collect::<Vec<_>>(), "exactly the committed writers' rows");
        // A later writer still works, and sees everything committed.
        let mut tx = db.write().await.unwrap();
        insert(100).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces").fetch_one(db.pool()).await.unwrap();
        assert_eq!(count, 33);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_goes_away_while_queued_leaves_no_one_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let insert =
            |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES (?1, ?2)").bind(format!("a{n}")).bind(n);
        let mut first = db.write().await.unwrap();
        insert(1).execute(&mut *first).await.unwrap();
        // A second writer queues for the connection, then its caller goes away (an HTTP
        // client disconnecting cancels its handler).
        let queued = tokio::spawn({
            let db = db.clone();
            async move { db.write().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        queued.abort();
        let _ = queued.await;
        // The first writer's commit, and a lone writer after it, complete (a leaked queue
        // count or an unfinished batch would leave them waiting for a writer that never comes).
        let done = tokio::time::timeout(Duration::from_secs(30), async {
            first.commit().await.unwrap();
            let mut tx = db.write().await.unwrap();
            insert(2).execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        })
        .await;
        assert!(done.is_ok(), "the writers were left waiting");
        let kept: Vec<i64> =
            sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
        assert_eq!(kept, vec![1, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_sqlite_rolled_back_fails_its_writers_and_no_one_after() {
        let tmp = tempfile::tempdir().unwrap();
        // The batch must stay open while the writers are arranged around it, however slow the
        // machine: a batch older than the age limit is committed by whoever ends a turn.
        let db = Db::open_with(&tmp.path().join("t.db"), Duration::from_secs(60), DEFAULT_BUSY_TIMEOUT).await.unwrap();
        let insert =
            |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES (?1, ?2)").bind(format!("a{n}")).bind(n);
        let queued = |n: usize| {
            let db = db.clone();
            async move {
                while db.writer.queued.load(std::sync::atomic::Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        // Writer 1 ends its turn while others wait for the connection, so it waits for the
        // batch. Writer 2's single statement ends the whole transaction, as a full disk or an
        // I/O error does, and fails. Writer 3 comes next.
        let mut first = db.write().await.unwrap();
        insert(1).execute(&mut *first).await.unwrap();
        let second = tokio::spawn({
            let db = db.clone();
            async move {
                let mut tx = db.writer.begin(false).await.unwrap();
                sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
                drop(tx); // as after a failed statement
            }
        });
        queued(1).await;
        let third = tokio::spawn({
            let db = db.clone();
            async move {
                let mut tx = db.write().await.unwrap();
                insert(3).execute(&mut *tx).await.unwrap();
                tx.commit().await
            }
        });
        queued(2).await;
        // Writer 1's change is gone, and it is told so; writer 3's is kept, and it is told so.
        assert!(first.commit().await.is_err(), "told that its change was kept, though it was rolled back");
        second.await.unwrap();
        assert!(third.await.unwrap().is_ok(), "told that its change failed, though it was kept");
        let kept: Vec<i64> =
            sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
        assert_eq!(kept, vec![3]);
    }

    #[tokio::test]
    async fn the_database_is_wal_and_fully_synchronous() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.pool()).await.unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }
}
