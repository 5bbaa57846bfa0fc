//! Blocking work (files, hashing, hard links) off the async executor: every component runs
//! such work through [`blocking`], on tokio's blocking pool, never on a runtime worker.

use std::io;

/// Runs `work` on the blocking pool and returns what it returns. A panic in `work` comes back
/// as an error (the task is gone, not the process).
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))?
}
