//! The scheduler: claims due jobs while slots are free, runs each in a task of its own, and
//! settles what ended; at start, recovers what a crash interrupted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::instrument;

use super::{JobResult, Jobs};
use crate::protocol::signing::unix_now;
use crate::protocol::states::JobStatus;

/// How often ended jobs whose settlement failed are retried.
const SETTLE_EVERY: Duration = Duration::from_secs(10);

impl Jobs {
    /// Resumes interrupted work and starts the scheduler in the background.
    pub async fn start(self: &Arc<Self>) -> JobResult<()> {
        self.recover().await?;
        let jobs = self.clone();
        tokio::spawn(async move { jobs.schedule().await });
        Ok(())
    }

    /// Puts jobs interrupted by a crash back in the queue (or fails them after too many
    /// attempts), then settles what was left unsettled.
    #[instrument(skip_all)]
    async fn recover(&self) -> JobResult<()> {
        self.clear_scratch().await?;
        for (id, attempts) in self.store.active().await? {
            if attempts >= self.config.max_job_attempts {
                let error = format!("interrupted {attempts} times by provider restarts; giving up");
                self.fail(&id, JobStatus::Error, &error).await?;
            } else {
                tracing::info!(job_id = %id, attempts, "re-queueing a job interrupted by a restart");
                self.store.set_status(&id, JobStatus::Queued).await?;
            }
        }
        self.settle_pending().await;
        Ok(())
    }

    /// Ends a job in `status`, logging why.
    pub(super) async fn fail(&self, id: &str, status: JobStatus, error: &str) -> JobResult<()> {
        self.store.fail(id, status, error).await?;
        tracing::warn!(job_id = %id, status = status.text(), error, "job failed");
        Ok(())
    }

    /// The scheduler's loop: start what is due, now and then settle what is pending, sleep
    /// until woken (a job queued or ended) or a second passes.
    async fn schedule(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_concurrent_jobs.max(1)));
        let mut last_settle = Instant::now();
        loop {
            if let Err(e) = self.start_due(&slots).await {
                tracing::error!(error = %crate::error_chain(&e), "scheduling jobs");
            }
            if last_settle.elapsed() > SETTLE_EVERY {
                self.settle_pending().await;
                last_settle = Instant::now();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }

    /// Claims due jobs, as many as there are free slots, and starts them.
    async fn start_due(self: &Arc<Self>, slots: &Arc<Semaphore>) -> JobResult<()> {
        let free = slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        for id in self.store.due(unix_now(), free).await? {
            // The job is live from before its claim, so that a stop request that finds it
            // claimed always finds the flag to stop it with (see `Jobs::stop`).
            let cancel = self.live.insert(&id);
            match self.store.claim(&id).await {
                Ok(true) => {}
                other => {
                    self.live.remove(&id);
                    other?;
                    continue;
                }
            }
            let Ok(permit) = slots.clone().acquire_owned().await else { return Ok(()) };
            let jobs = self.clone();
            tokio::spawn(async move {
                // In a task of its own, so that a panic in it still ends the job here (failed,
                // settled, no longer live) instead of leaving it active with no one running it.
                let run = tokio::spawn({
                    let (jobs, id) = (jobs.clone(), id.clone());
                    async move { jobs.execute(&id, cancel).await }
                });
                let result = run.await.unwrap_or_else(|e| Err(super::JobError::TaskFailed(e.to_string())));
                if let Err(e) = result {
                    tracing::error!(job_id = %id, error = %crate::error_chain(&e), "job error");
                    let _ = jobs.fail(&id, JobStatus::Error, "the provider failed while running the job").await;
                }
                jobs.live.remove(&id);
                drop(permit);
                if let Err(e) = jobs.settle(&id).await {
                    tracing::error!(job_id = %id, error = %crate::error_chain(&e), "settling failed; will retry");
                }
                jobs.wake.notify_one();
            });
        }
        Ok(())
    }
}
