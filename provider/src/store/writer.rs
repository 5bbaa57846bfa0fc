//! Group commit over SQLite's one writing connection.
//!
//! SQLite admits one writer at a time, and with `synchronous=FULL` every commit waits for the
//! disk. Committing each state change on its own caps the provider at one disk flush per
//! change. Instead, writers take turns on the writing connection, each inside its own
//! `SAVEPOINT` of a shared transaction; the writer that finds nobody waiting after it (or that
//! closes a full or old batch) commits the whole batch with one flush, and every writer of the
//! batch returns from [`WriteTx::commit`] only once that flush is done. So a commit is exactly
//! as durable as before, a lone writer is exactly as fast as before, and concurrent writers
//! share flushes.
//!
//! A [`WriteTx`] dropped without `commit` is rolled back to its savepoint, leaving the batch's
//! other changes intact.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::SqliteConnection;
use tokio::sync::{OwnedMutexGuard, watch};

use super::DbError;

/// A batch is committed once it holds this many changes...
const MAX_BATCH: usize = 64;
/// ...or once it is this old, whoever is waiting.
const MAX_BATCH_AGE: Duration = Duration::from_millis(5);

/// The writing connection and the batch in progress.
#[derive(Debug)]
pub(super) struct Writer {
    conn: Arc<tokio::sync::Mutex<Conn>>,
    /// Writers waiting for the connection.
    queued: AtomicUsize,
    /// The newest committed (or failed) batch.
    done: watch::Sender<u64>,
    /// Recent batches whose commit failed (failures are rare; the oldest are forgotten).
    failed: Mutex<HashSet<u64>>,
}

#[derive(Debug)]
struct Conn {
    conn: SqliteConnection,
    /// The batch of the open transaction, if one is open.
    open: Option<Batch>,
    /// The last batch number handed out.
    last: u64,
    /// A writer left without committing: its savepoint must be rolled back first.
    abandoned: bool,
}

#[derive(Debug, Clone, Copy)]
struct Batch {
    id: u64,
    changes: usize,
    started: Instant,
}

impl Writer {
    pub(super) fn new(conn: SqliteConnection) -> Arc<Self> {
        Arc::new(Self {
            conn: Arc::new(tokio::sync::Mutex::new(Conn { conn, open: None, last: 0, abandoned: false })),
            queued: AtomicUsize::new(0),
            done: watch::Sender::new(0),
            failed: Mutex::default(),
        })
    }

    /// Waits for the connection and opens a savepoint in the current batch. Without
    /// `savepoint`, the writer promises to run a single statement (atomic by itself), which
    /// saves two round trips.
    pub(super) async fn begin(self: &Arc<Self>, savepoint: bool) -> Result<WriteTx, DbError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut conn = self.conn.clone().lock_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if conn.abandoned && rollback_savepoint(&mut conn).await.is_err() {
            self.finish(&mut conn, false).await;
            conn.abandoned = false;
        }
        if conn.open.is_none() {
            exec(&mut conn.conn, "BEGIN IMMEDIATE").await?;
            conn.last += 1;
            conn.open = Some(Batch { id: conn.last, changes: 0, started: Instant::now() });
        }
        if savepoint {
            if let Err(e) = exec(&mut conn.conn, "SAVEPOINT tidepool_write").await {
                // Leave no half-open state behind: end the batch, failing it.
                self.finish(&mut conn, false).await;
                return Err(e);
            }
            conn.abandoned = true; // until released
        }
        Ok(WriteTx { conn: Some(conn), writer: self.clone(), savepoint })
    }

    /// Commits (or, when `ok` is false, rolls back) the open batch and tells its writers.
    async fn finish(&self, conn: &mut Conn, ok: bool) -> bool {
        let Some(batch) = conn.open.take() else { return ok };
        let committed = ok && exec(&mut conn.conn, "COMMIT").await.is_ok();
        if !committed {
            tracing::error!(batch = batch.id, changes = batch.changes, "a write batch could not be committed");
            let _ = exec(&mut conn.conn, "ROLLBACK").await;
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.retain(|id| id + 1024 > batch.id);
            failed.insert(batch.id);
        }
        self.done.send_replace(batch.id);
        committed
    }

    /// Waits until batch `id` is finished; true if it was committed.
    async fn wait(&self, id: u64) -> bool {
        let mut done = self.done.subscribe();
        // The sender lives as long as `self`, so this only ends when the batch is done.
        let _ = done.wait_for(|d| *d >= id).await;
        !self.failed.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }
}

/// One writer's turn: a savepoint in the current batch. Deref to the connection to run
/// statements (`query.execute(&mut *tx)`), then [`commit`](Self::commit).
#[derive(Debug)]
pub struct WriteTx {
    conn: Option<OwnedMutexGuard<Conn>>,
    writer: Arc<Writer>,
    savepoint: bool,
}

impl WriteTx {
    /// Keeps this writer's changes and returns once they are on disk.
    pub async fn commit(mut self) -> Result<(), DbError> {
        let Some(mut conn) = self.conn.take() else { return Ok(()) };
        if self.savepoint {
            exec(&mut conn.conn, "RELEASE tidepool_write").await?;
            conn.abandoned = false;
        }
        let batch = match &mut conn.open {
            Some(b) => {
                b.changes += 1;
                *b
            }
            None => return Ok(()),
        };
        let full = batch.changes >= MAX_BATCH || batch.started.elapsed() >= MAX_BATCH_AGE;
        if full || self.writer.queued.load(Ordering::SeqCst) == 0 {
            let committed = self.writer.finish(&mut conn, true).await;
            return if committed { Ok(()) } else { Err(commit_failed()) };
        }
        // Someone is waiting for the connection: they continue the batch, and the last of
        // them commits it.
        drop(conn);
        if self.writer.wait(batch.id).await { Ok(()) } else { Err(commit_failed()) }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().map(|c| &c.conn).expect("a WriteTx is used only before commit")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().map(|c| &mut c.conn).expect("a WriteTx is used only before commit")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // Dropped without commit (an error, a refusal): undo this writer's changes. If nobody
        // else is coming, the batch must still be committed for the writers before us.
        let Some(mut conn) = self.conn.take() else { return };
        let (writer, savepoint) = (self.writer.clone(), self.savepoint);
        let cleanup = async move {
            // A single statement that failed changed nothing.
            let ok = !savepoint || rollback_savepoint(&mut conn).await.is_ok();
            if !ok || writer.queued.load(Ordering::SeqCst) == 0 {
                writer.finish(&mut conn, ok).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(cleanup);
            }
            // Outside a runtime (shutdown): the open transaction dies with the connection, and
            // SQLite rolls it back.
            Err(_) => drop(cleanup),
        }
    }
}

async fn rollback_savepoint(conn: &mut Conn) -> Result<(), DbError> {
    exec(&mut conn.conn, "ROLLBACK TO tidepool_write").await?;
    exec(&mut conn.conn, "RELEASE tidepool_write").await?;
    conn.abandoned = false;
    Ok(())
}

/// Runs a statement of the writer's own (`BEGIN`, `SAVEPOINT`...). Boxed: an unboxed future
/// here trips rustc's check that callers' futures are `Send` ("`Executor` is not general
/// enough", rust-lang/rust#102211).
fn exec<'c>(conn: &'c mut SqliteConnection, sql: &'static str) -> BoxFuture<'c, Result<(), DbError>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

fn commit_failed() -> DbError {
    DbError(sqlx::Error::Protocol("the database could not commit the change".into()))
}
