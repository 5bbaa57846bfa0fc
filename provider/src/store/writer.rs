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
//!
//! The connection is held for every statement a turn runs, so the writer's own statements ride
//! together: a batch begins with the first writer's savepoint (`BEGIN IMMEDIATE; SAVEPOINT`),
//! a writer followed by another releases its savepoint and opens the next one's (`RELEASE;
//! SAVEPOINT`), and the last releases and commits (`RELEASE; COMMIT`): one call per turn
//! instead of two, and none for the batch's ends. The commit, which waits for the disk, runs
//! on a blocking thread (`commit_aside`).
//!
//! Request nonces are kept in memory and written into each batch just before it commits (see
//! [`nonces`](super::nonces)); with none to carry them, a batch is made once they are
//! [`MAX_BATCH_AGE`] old.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::{Any, Transaction};

pub use super::conn::WriteConn;
use super::raw::RawConn;
use tokio::sync::{OwnedMutexGuard, watch};

use super::{DbError, nonces};

/// How long nonces that could not be written wait before their own batch is tried again.
const NONCE_RETRY: Duration = Duration::from_secs(1);
/// A batch is committed once it holds this many changes...
const MAX_BATCH: usize = 64;
/// ...or once it is this old, whoever is waiting. A writer whose batch is still open this long
/// after its turn ends it itself (whoever was to continue it went away, or is slow).
pub(super) const MAX_BATCH_AGE: Duration = Duration::from_millis(5);

/// The writing connection and the batch in progress.
#[derive(Debug)]
pub(super) struct Writer {
    conn: Arc<tokio::sync::Mutex<Conn>>,
    /// Writers waiting for the connection.
    pub(super) queued: AtomicUsize,
    /// [`MAX_BATCH_AGE`], except in tests that need batches to stay open.
    max_age: Duration,
    /// Request nonces accepted and not yet written.
    pub(super) nonces: nonces::Kept,
}

#[derive(Debug)]
struct Conn {
    conn: WriteConn,
    /// The batch of the open transaction, if one is open.
    open: Option<Batch>,
    /// The last batch number handed out.
    last: u64,
    /// A writer left without committing: its savepoint must be rolled back first.
    abandoned: bool,
    /// A savepoint is open that no writer has taken yet: the last writer opened it for the next
    /// one, with its own release.
    ready: bool,
}

#[derive(Debug)]
struct Batch {
    id: u64,
    changes: usize,
    started: Instant,
    /// Set once: whether the batch was committed. Its writers wait on it.
    outcome: watch::Sender<Option<bool>>,
}

impl Batch {
    /// Whether the batch is full or old enough that the writer ending its turn commits it,
    /// whoever is waiting.
    fn closes(&self, max_age: Duration) -> bool {
        self.changes >= MAX_BATCH || self.started.elapsed() >= max_age
    }
}

/// Counts a writer as queued until it is dropped (also when its future is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `work` to its end even if the caller stops waiting for it: a `BEGIN`, `RELEASE` or
/// `COMMIT` cut off half way (an HTTP client that went away cancels its handler) would leave
/// the connection in a state nobody knows. What a caller that went away gets back is dropped,
/// which undoes its turn.
async fn uncancellable<T: Send + 'static>(
    work: impl Future<Output = Result<T, DbError>> + Send + 'static,
) -> Result<T, DbError> {
    tokio::spawn(work).await.map_err(|e| DbError(sqlx::Error::Protocol(format!("the database writer failed: {e}"))))?
}

impl Writer {
    pub(super) fn new(conn: RawConn, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            conn: Arc::new(tokio::sync::Mutex::new(Conn {
                conn: WriteConn::Sqlite(conn),
                open: None,
                last: 0,
                abandoned: false,
                ready: false,
            })),
            queued: AtomicUsize::new(0),
            max_age,
            nonces: nonces::Kept::default(),
        })
    }

    /// Waits for the connection and opens a savepoint in the current batch. Without
    /// `savepoint`, the writer promises to run a single statement (atomic by itself), which
    /// saves a round trip; it still takes a savepoint the writer before it opened for it.
    pub(super) async fn begin(self: &Arc<Self>, savepoint: bool) -> Result<WriteTx, DbError> {
        let this = self.clone();
        uncancellable(async move {
            let mut conn = {
                let _queued = Queued::new(&this.queued);
                this.conn.clone().lock_owned().await
            };
            this.settle(&mut conn).await;
            let holds = if conn.open.is_none() {
                let sql = if savepoint { "BEGIN IMMEDIATE; SAVEPOINT tidepool_write" } else { "BEGIN IMMEDIATE" };
                if let Err(e) = exec(&mut conn.conn, sql).await {
                    // The savepoint may be what failed: leave no transaction behind. (Fails
                    // harmlessly when none was begun.)
                    let _ = exec(&mut conn.conn, "ROLLBACK").await;
                    return Err(e);
                }
                conn.last += 1;
                let (id, outcome) = (conn.last, watch::Sender::new(None));
                conn.open = Some(Batch { id, changes: 0, started: Instant::now(), outcome });
                savepoint
            } else if conn.ready {
                conn.ready = false;
                true
            } else if savepoint {
                if let Err(e) = exec(&mut conn.conn, "SAVEPOINT tidepool_write").await {
                    // Leave no half-open state behind: end the batch, failing it.
                    this.finish(&mut conn, false).await;
                    return Err(e);
                }
                true
            } else {
                false
            };
            conn.abandoned = holds; // until released
            Ok(WriteTx { inner: Inner::Batch { conn: Some(conn), writer: this, savepoint: holds } })
        })
        .await
    }

    /// Undoes a turn that was left half way (its savepoint not released); if that fails, the
    /// batch's state is unknown, and it is failed.
    async fn settle(&self, conn: &mut Conn) {
        if conn.abandoned {
            conn.abandoned = false;
            if rollback_savepoint(conn).await.is_err() {
                self.finish(conn, false).await;
            }
        }
    }

    /// Commits (or, when `ok` is false, rolls back) the open batch and tells its writers.
    async fn finish(&self, conn: &mut Conn, ok: bool) -> bool {
        self.finish_with(conn, ok, "COMMIT").await
    }

    /// [`finish`](Self::finish), committing with `commit` (which may release the last
    /// writer's savepoint first, in the same round trip). A savepoint left open for a writer
    /// who never came is committed with the rest: it holds no change.
    async fn finish_with(&self, conn: &mut Conn, ok: bool, commit: &'static str) -> bool {
        conn.ready = false;
        let Some(batch) = conn.open.take() else { return ok };
        let nonces = if ok { self.nonces.take() } else { Vec::new() };
        let committed = ok
            && nonces::write(&mut conn.conn, &nonces).await.is_ok()
            && commit_aside(&mut conn.conn, commit).await.is_ok();
        self.nonces.committed(nonces, committed);
        if !committed {
            tracing::error!(batch = batch.id, changes = batch.changes, "a write batch could not be committed");
            // Fails harmlessly when SQLite already rolled the transaction back itself.
            let _ = exec(&mut conn.conn, "ROLLBACK").await;
        }
        batch.outcome.send_replace(Some(committed));
        committed
    }

    /// Ends this writer's turn: keeps its changes in the batch, and commits the batch unless
    /// someone is waiting to continue it; returns once the batch is committed.
    async fn end_turn(self: Arc<Self>, mut conn: OwnedMutexGuard<Conn>, savepoint: bool) -> Result<(), DbError> {
        conn.abandoned = false;
        let Some(batch) = conn.open.as_mut() else { return Ok(()) };
        batch.changes += 1;
        let (id, outcome) = (batch.id, batch.outcome.subscribe());
        if batch.closes(self.max_age) || self.queued.load(Ordering::SeqCst) == 0 {
            return self.commit_now(&mut conn, savepoint).await;
        }
        // Someone is waiting for the connection: they continue the batch, and the last of
        // them commits it.
        if savepoint {
            if let Err(e) = exec(&mut conn.conn, "RELEASE tidepool_write; SAVEPOINT tidepool_write").await {
                // Whether this turn's changes are in the batch is unknown: fail the batch, so
                // that nobody is told their changes were kept when they may not be.
                self.finish(&mut conn, false).await;
                return Err(e);
            }
            conn.ready = true;
        }
        drop(conn);
        self.wait(id, outcome).await
    }

    /// Has the nonces waiting be written once [`MAX_BATCH_AGE`] old, unless a batch carries
    /// them before.
    pub(super) fn commit_soon(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.max_age).await;
            while this.nonces.pending() {
                let written = match this.begin(false).await {
                    Ok(tx) => tx.commit().await,
                    Err(e) => Err(e),
                };
                let Err(e) = written else { break };
                // They are waiting again: try again in a while (a batch may carry them first).
                tracing::warn!(error = %e, "request nonces could not be written yet; retrying");
                tokio::time::sleep(NONCE_RETRY).await;
            }
        });
    }

    /// Commits the open batch, releasing the ending writer's `savepoint` in the same round
    /// trip; an error if that failed.
    async fn commit_now(&self, conn: &mut Conn, savepoint: bool) -> Result<(), DbError> {
        let commit = if savepoint { "RELEASE tidepool_write; COMMIT" } else { "COMMIT" };
        if self.finish_with(conn, true, commit).await { Ok(()) } else { Err(commit_failed()) }
    }

    /// Waits for batch `id` to be finished; finishes it itself when nobody has for a while.
    async fn wait(&self, id: u64, mut outcome: watch::Receiver<Option<bool>>) -> Result<(), DbError> {
        loop {
            let seen = tokio::time::timeout(self.max_age, outcome.wait_for(Option::is_some))
                .await
                .map(|r| r.map(|committed| *committed == Some(true)));
            match seen {
                Ok(Ok(committed)) => return if committed { Ok(()) } else { Err(commit_failed()) },
                // The batch was dropped unfinished: only when the connection itself goes.
                Ok(Err(_)) => return Err(commit_failed()),
                Err(_) => {
                    let mut conn = self.conn.clone().lock_owned().await;
                    self.settle(&mut conn).await;
                    if conn.open.as_ref().is_some_and(|b| b.id == id) {
                        self.finish(&mut conn, true).await;
                    }
                }
            }
        }
    }
}

/// One writer's turn. On SQLite, a savepoint in the current batch of the one writing
/// connection; on PostgreSQL, a transaction of the pool. Deref to the connection to run
/// statements (`query.execute(&mut *tx)`), then [`commit`](Self::commit).
#[derive(Debug)]
pub struct WriteTx {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Batch { conn: Option<OwnedMutexGuard<Conn>>, writer: Arc<Writer>, savepoint: bool },
    Pooled(Option<WriteConn>),
}

impl WriteTx {
    /// A PostgreSQL transaction (rolled back if dropped without commit).
    pub(super) fn pooled(tx: Transaction<'static, Any>) -> Self {
        Self { inner: Inner::Pooled(Some(WriteConn::Postgres(tx))) }
    }

    /// Keeps this writer's changes and returns once they are durable.
    pub async fn commit(mut self) -> Result<(), DbError> {
        match &mut self.inner {
            Inner::Batch { conn, writer, savepoint } => {
                let Some(conn) = conn.take() else { return Ok(()) };
                uncancellable(writer.clone().end_turn(conn, *savepoint)).await
            }
            Inner::Pooled(tx) => match tx.take() {
                Some(WriteConn::Postgres(tx)) => Ok(tx.commit().await?),
                _ => Ok(()),
            },
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = WriteConn;

    fn deref(&self) -> &WriteConn {
        match &self.inner {
            Inner::Batch { conn, .. } => conn.as_ref().map(|c| &c.conn),
            Inner::Pooled(tx) => tx.as_ref(),
        }
        .expect("a WriteTx is used only before commit")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut WriteConn {
        match &mut self.inner {
            Inner::Batch { conn, .. } => conn.as_mut().map(|c| &mut c.conn),
            Inner::Pooled(tx) => tx.as_mut(),
        }
        .expect("a WriteTx is used only before commit")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // A pooled transaction rolls itself back when dropped.
        let Inner::Batch { conn, writer, savepoint } = &mut self.inner else { return };
        // Dropped without commit (an error, a refusal): undo this writer's changes. If nobody
        // else is coming, the batch must still be committed for the writers before us.
        let Some(mut conn) = conn.take() else { return };
        let (writer, savepoint) = (writer.clone(), *savepoint);
        let cleanup = async move {
            let ok = if savepoint {
                conn.abandoned = false;
                rollback_savepoint(&mut conn).await.is_ok()
            } else {
                // A single statement that failed changed nothing, unless the error was one
                // (a full disk, an I/O error) after which SQLite rolls back the whole
                // transaction: then the batch is lost, and its writers must hear so.
                in_transaction(&mut conn.conn).await
            };
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
    exec(&mut conn.conn, "ROLLBACK TO tidepool_write; RELEASE tidepool_write").await
}

/// Whether the connection is inside a transaction. (`BEGIN` fails inside one; outside, the
/// transaction it opens is rolled back at once.) Only asked after a failed statement.
async fn in_transaction(conn: &mut WriteConn) -> bool {
    match exec(conn, "BEGIN").await {
        Err(_) => true,
        Ok(()) => {
            let _ = exec(conn, "ROLLBACK").await;
            false
        }
    }
}

/// Runs a statement of the writer's own (`BEGIN`, `SAVEPOINT`...). Boxed: an unboxed future
/// here trips rustc's check that callers' futures are `Send` ("`Executor` is not general
/// enough", rust-lang/rust#102211).
fn exec<'c>(conn: &'c mut WriteConn, sql: &'static str) -> BoxFuture<'c, Result<(), DbError>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

/// Runs `commit` on SQLite's connection on a blocking thread: it waits for the disk, and the
/// runtime's thread is better spent meanwhile on the requests that make the next batch.
async fn commit_aside(conn: &mut WriteConn, commit: &'static str) -> Result<(), DbError> {
    let WriteConn::Sqlite(raw) = conn else { return exec(conn, commit).await };
    let mut taken = std::mem::replace(raw, RawConn::closed());
    let flushed = tokio::task::spawn_blocking(move || {
        let done = taken.run(commit, Vec::new(), true, |_| {});
        (taken, done)
    })
    .await;
    match flushed {
        Ok((taken, done)) => {
            *raw = taken;
            done.map(drop).map_err(DbError)
        }
        // Only a panic in SQLite's call: the connection is gone with it, and every later write
        // fails (a restart opens it again).
        Err(e) => Err(DbError(sqlx::Error::Protocol(format!("the database writer failed: {e}")))),
    }
}

fn commit_failed() -> DbError {
    DbError(sqlx::Error::Protocol("the database could not commit the change".into()))
}
