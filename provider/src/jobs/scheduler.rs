//! The scheduler: claims due jobs while slots are free, runs each in a task of its own, and
//! settles what ended; at start, recovers what a crash interrupted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::instrument;

use super::store::{self, Lease};
use super::{JobError, JobResult, Jobs};
use crate::protocol::signing::unix_now;
use crate::protocol::states::JobStatus;

/// How often ended jobs whose settlement failed are retried.
const SETTLE_EVERY: Duration = Duration::from_secs(10);
/// Cluster mode: how often a node that signs receipts looks for jobs to settle when no
/// notification woke it (notifications are best effort).
const CLUSTER_SETTLE_EVERY: Duration = Duration::from_secs(1);

/// One of the `max_concurrent_jobs` slots, held by a job from its claim until its guest has
/// run ([`Slot::ran`]) or the job ended otherwise: what it bounds is running guests (CPU,
/// memory), not the writes that store a run's results and settle it. Freeing it wakes the
/// scheduler, so the next due job starts at once.
pub(super) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    /// As many places for runs storing their results (each holds its outputs on disk and its
    /// logs in memory): a run waits for one, still holding its slot, so storing that falls
    /// behind slows the runs down instead of piling up.
    storing: Arc<Semaphore>,
    jobs: Arc<Jobs>,
}

impl Slot {
    /// The guest has run: takes a place for storing the results, then frees the slot.
    pub(super) async fn ran(self) -> Option<OwnedSemaphorePermit> {
        let storing = self.storing.clone().acquire_owned().await.ok();
        drop(self);
        storing
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free first, then wake: the scheduler counts free slots when it wakes.
        drop(self.permit.take());
        self.jobs.wake.notify_one();
    }
}

impl Jobs {
    /// Resumes interrupted work and starts the scheduler in the background.
    pub async fn start(self: &Arc<Self>) -> JobResult<()> {
        if self.config.cluster {
            // Other nodes may be running jobs right now: only expired leases are taken back,
            // and only the scratch space of jobs no node runs is removed.
            let running = self.store.active().await?.into_iter().map(|(id, _)| id).collect();
            self.clear_scratch(running).await?;
            self.reap().await;
            self.settle_pending().await;
            let jobs = Arc::downgrade(self);
            self.store.db().listen("tidepool_jobs", move || {
                if let Some(jobs) = jobs.upgrade() {
                    jobs.wake.notify_one();
                }
            });
        } else {
            self.recover().await?;
        }
        let jobs = self.clone();
        tokio::spawn(async move { jobs.schedule().await });
        Ok(())
    }

    /// Puts jobs interrupted by a crash back in the queue (or fails them after too many
    /// attempts), then settles what was left unsettled.
    #[instrument(skip_all)]
    async fn recover(&self) -> JobResult<()> {
        self.clear_scratch(Default::default()).await?;
        for (id, attempts) in self.store.active().await? {
            if attempts >= self.config.max_job_attempts {
                let error = format!("interrupted {attempts} times by provider restarts; giving up");
                self.fail(&id, None, JobStatus::Error, &error).await?;
            } else {
                tracing::info!(job_id = %id, attempts, "re-queueing a job interrupted by a restart");
                self.store.set_status(&id, JobStatus::Queued).await?;
            }
        }
        self.settle_pending().await;
        Ok(())
    }

    /// Cluster mode: re-queues (or fails, after `max_job_attempts`) the jobs whose lease ran
    /// out, then settles those that ended so.
    async fn reap(&self) {
        match self.store.reap(store::now_ms(), self.config.max_job_attempts).await {
            Ok(reaped) => {
                for (id, status) in &reaped {
                    tracing::warn!(job_id = %id, status, "its worker stopped renewing the lease; reaped");
                }
                if !reaped.is_empty() {
                    self.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %crate::error_chain(&e), "reaping expired leases"),
        }
    }

    /// Ends a job in `status`, logging why; with a `lease`, only while the job holds it.
    pub(super) async fn fail(&self, id: &str, lease: Option<&Lease>, status: JobStatus, error: &str) -> JobResult<()> {
        if !self.store.fail(id, lease, status, error).await? {
            return Err(JobError::LeaseLost(id.to_string()));
        }
        tracing::warn!(job_id = %id, status = status.text(), error, "job failed");
        Ok(())
    }

    /// The lease a claim made now gets: until when it holds (Unix ms).
    fn lease_until(&self) -> i64 {
        store::now_ms().saturating_add(i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX))
    }

    /// The scheduler's loop: start what is due, now and then settle what is pending (and, in
    /// cluster mode, reap expired leases), sleep until woken (a job queued or ended) or a
    /// second passes.
    async fn schedule(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_concurrent_jobs.max(1)));
        let storing = Arc::new(Semaphore::new(self.config.max_concurrent_jobs.max(1)));
        let (mut last_settle, mut last_reap) = (Instant::now(), Instant::now());
        let settle_every =
            if self.config.cluster && self.receipts.is_some() { CLUSTER_SETTLE_EVERY } else { SETTLE_EVERY };
        loop {
            if self.config.run_jobs
                && let Err(e) = self.start_due(&slots, &storing).await
            {
                tracing::error!(error = %crate::error_chain(&e), "scheduling jobs");
            }
            if self.config.cluster && last_reap.elapsed() > self.config.lease / 2 {
                self.reap().await;
                last_reap = Instant::now();
            }
            if last_settle.elapsed() > settle_every {
                self.settle_pending().await;
                last_settle = Instant::now();
            }
            let woken = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await.is_ok();
            if woken && self.config.cluster && self.receipts.is_some() {
                // Another node's news: a job ended there, perhaps.
                last_settle = Instant::now() - settle_every - Duration::from_millis(1);
            }
        }
    }

    /// Claims due jobs, as many as there are free slots, and starts them.
    async fn start_due(self: &Arc<Self>, slots: &Arc<Semaphore>, storing: &Arc<Semaphore>) -> JobResult<()> {
        let free = slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let mut claimed = Vec::new();
        if self.config.cluster {
            for (id, lease) in self.store.claim_due(unix_now(), &self.config.node, self.lease_until(), free).await? {
                // A stop asked for before this node knew the job is in its row (see `execute`).
                let cancel = self.live.insert(&id);
                claimed.push((id, lease, cancel));
            }
        } else {
            let due = self.store.due(unix_now(), free).await?;
            // A job is live from before its claim, so that a stop request that finds it
            // claimed always finds the flag to stop it with (see `Jobs::stop`).
            let cancels: Vec<_> = due.iter().map(|id| self.live.insert(id)).collect();
            let leases = match self.store.claim(&due, &self.config.node, self.lease_until()).await {
                Ok(leases) => leases,
                Err(e) => {
                    due.iter().for_each(|id| self.live.remove(id));
                    return Err(e);
                }
            };
            for ((id, lease), cancel) in due.into_iter().zip(leases).zip(cancels) {
                match lease {
                    Some(lease) => claimed.push((id, lease, cancel)),
                    None => self.live.remove(&id),
                }
            }
        }
        for (id, lease, cancel) in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else { return Ok(()) };
            let slot = Slot { permit: Some(permit), storing: storing.clone(), jobs: self.clone() };
            let jobs = self.clone();
            let run_cancel = cancel.clone();
            tokio::spawn(async move {
                let heartbeat = jobs
                    .config
                    .cluster
                    .then(|| tokio::spawn(jobs.clone().heartbeat(id.clone(), lease.clone(), cancel.clone())));
                // In a task of its own, so that a panic in it still ends the job here (failed,
                // settled, no longer live) instead of leaving it active with no one running it.
                let run = tokio::spawn({
                    let (jobs, id, lease) = (jobs.clone(), id.clone(), lease.clone());
                    async move { jobs.execute(&id, cancel, &lease, slot).await }
                });
                let result = run.await.unwrap_or_else(|e| Err(JobError::TaskFailed(e.to_string())));
                if let Some(heartbeat) = heartbeat {
                    heartbeat.abort();
                }
                match result {
                    Ok(()) => {}
                    Err(JobError::LeaseLost(_)) => {
                        tracing::warn!(job_id = %id, attempt = lease.attempt, "the lease was lost: this run's results are discarded");
                    }
                    Err(e) => {
                        tracing::error!(job_id = %id, error = %crate::error_chain(&e), "job error");
                        let _ = jobs
                            .fail(&id, Some(&lease), JobStatus::Error, "the provider failed while running the job")
                            .await;
                    }
                }
                // Unless a crashed run put it back in the queue and it was claimed again.
                jobs.live.remove_run(&id, &run_cancel);
                if let Err(e) = jobs.settle(&id).await {
                    tracing::error!(job_id = %id, error = %crate::error_chain(&e), "settling failed; will retry");
                }
            });
        }
        Ok(())
    }

    /// Cluster mode: renews a running job's lease every third of its length; stops the run
    /// when a stop is asked for or the lease is lost (reaped while this node was away).
    async fn heartbeat(self: Arc<Self>, id: String, lease: Lease, cancel: Arc<AtomicBool>) {
        loop {
            tokio::time::sleep(self.config.lease / 3).await;
            match self.store.renew(&id, &lease, self.lease_until()).await {
                Ok(Some(false)) => {}
                Ok(Some(true)) => cancel.store(true, Ordering::Relaxed),
                Ok(None) => {
                    tracing::warn!(job_id = %id, attempt = lease.attempt, "the lease was lost; stopping the run");
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
                // The database may come back before the lease runs out; if not, the commit
                // will be refused.
                Err(e) => tracing::warn!(job_id = %id, error = %crate::error_chain(&e), "renewing the lease failed"),
            }
        }
    }
}
