//! Jobs: one per agreement, queued in the database ([`store`]), started by the [`scheduler`]
//! when due (`notBefore`) and a slot is free, run in the runtime on a blocking thread
//! ([`execute`]), their outputs and logs moved into the blob store and their receipt signed
//! ([`results`]), and their payment settled ([`settle`]). [`live`] holds what running jobs
//! report. Status codes are [`JobStatus`](crate::protocol::states::JobStatus)'s.
//!
//! Everything a job goes through is a row update, so a provider killed at any point resumes on
//! restart ([`Jobs::start`]): jobs caught mid-run go back to the queue and run again (the same
//! inputs give the same receipt), up to `max_job_attempts`; finished jobs whose payment was not
//! settled are settled. Settling is idempotent on the keeper's side.
//!
//! In cluster mode (a shared PostgreSQL database) the same code runs on every node: workers
//! claim jobs with a lease they renew, and commit results only while they hold it (see
//! [`store`]); a reaper re-queues jobs whose worker stopped renewing; API nodes, which hold the
//! provider's key, sign receipts and settle payments, once per job whoever ran it.
//!
//! [`Jobs`] owns the `jobs` table. It depends on the keeper, the assets and the algorithms,
//! never on the agreement flow or the HTTP layer that call it.

mod error;
mod execute;
mod isolated;
mod live;
mod metrics;
mod results;
mod scheduler;
mod settle;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use alloy_primitives::{Address, B256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use tidepool_runtime::{Limits, Runtime};
use tokio::sync::Notify;
use tracing::instrument;

pub use error::{JobError, JobResult};

use self::live::LiveJobs;
pub use self::store::Lease;
use self::store::{JobRow, JobStore};
use crate::algorithms::Algorithms;
use crate::assets::Assets;
use crate::keeper::Keeper;
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{JobView, ProgressView, ResultEntry, ResultKind, ResultsView};
use crate::protocol::states::JobStatus;
use crate::store::Db;
use crate::store::blobs::Blobs;

/// How jobs run on this provider.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Scratch space of running jobs (`<data>/jobs`).
    pub jobs_dir: PathBuf,
    /// Jobs running at once.
    pub max_concurrent_jobs: usize,
    /// Runs of a job interrupted by restarts before it is failed.
    pub max_job_attempts: u32,
    /// The provider's limits (module size, stack, stdio...): a service's limits override the
    /// ones it offers (fuel, memory, time, outputs).
    pub job_limits: Limits,
    /// Whether this node runs jobs (false: an API node of a cluster with workers).
    pub run_jobs: bool,
    /// Cluster mode: the database is shared by several nodes (leases expire and are reaped,
    /// rather than every active job being re-queued at start).
    pub cluster: bool,
    /// How long a claim holds a job without being renewed.
    pub lease: std::time::Duration,
    /// This node's name in the leases it takes (unique per process).
    pub node: String,
    /// Run jobs in confined worker processes started this way (`None`: on threads of the
    /// daemon).
    pub workers: Option<WorkersConfig>,
}

/// How confined worker processes are started and bounded.
#[derive(Clone, Debug)]
pub struct WorkersConfig {
    /// `tidepool job-worker`.
    pub command: tidepool_sandbox::WorkerCommand,
    /// `tidepool job-template ...`, when workers are forked from a template.
    pub template: Option<tidepool_sandbox::WorkerCommand>,
    /// How workers are confined and bounded, and how many are kept ready.
    pub sandbox: crate::config::SandboxConfig,
    /// The compile cache, which workers may read.
    pub cache_dir: Option<PathBuf>,
}

/// A name for this process's leases: its role, process id and a random suffix (unique across
/// machines and restarts).
pub fn node_name(role: &str) -> String {
    format!("{role}-{}-{}", std::process::id(), hex::encode(&B256::random()[..6]))
}

/// Signs receipts as the provider.
#[derive(Clone, Debug)]
pub struct ReceiptSigner {
    /// The provider's key.
    pub signer: PrivateKeySigner,
    /// The domain receipts are signed under (the provider's).
    pub domain: Eip712Domain,
}

/// The provider's jobs: queue, scheduler, execution, results and settlement.
#[derive(Debug)]
pub struct Jobs {
    store: JobStore,
    live: Arc<LiveJobs>,
    wake: Notify,
    keeper: Arc<dyn Keeper>,
    assets: Arc<Assets>,
    algorithms: Arc<Algorithms>,
    blobs: Arc<Blobs>,
    executor: execute::Executor,
    /// `None` on a worker, which never holds the provider's key: receipts are then signed at
    /// settlement, by a node that does.
    receipts: Option<ReceiptSigner>,
    config: JobsConfig,
    metrics: metrics::JobMetrics,
}

/// What a result download reads from.
#[derive(Debug)]
pub enum ResultBody {
    /// An output or a log, open in the blob store.
    File(std::fs::File),
    /// The signed receipt's JSON.
    Bytes(Vec<u8>),
}

impl Jobs {
    /// The jobs component over `db`, calling the other components it runs jobs with. Starts nothing: see [`Jobs::start`].
    #[allow(clippy::too_many_arguments, reason = "each is a component the jobs depend on, wired once")]
    pub fn new(
        db: Db,
        keeper: Arc<dyn Keeper>,
        assets: Arc<Assets>,
        algorithms: Arc<Algorithms>,
        blobs: Arc<Blobs>,
        runtime: Arc<Runtime>,
        receipts: Option<ReceiptSigner>,
        config: JobsConfig,
    ) -> Self {
        let executor = match &config.workers {
            None => execute::Executor::InProcess(runtime),
            Some(w) => execute::Executor::Isolated(Arc::new(isolated::Isolated {
                pool: match &w.template {
                    Some(template) => tidepool_sandbox::Pool::with_template(w.command.clone(), template.clone()),
                    None => tidepool_sandbox::Pool::new(w.command.clone(), w.sandbox.prespawn),
                },
                sandbox: w.sandbox.clone(),
                cache_dir: w.cache_dir.clone(),
            })),
        };
        Self {
            store: JobStore::new(db),
            live: Arc::default(),
            wake: Notify::new(),
            keeper,
            assets,
            algorithms,
            blobs,
            executor,
            receipts,
            config,
            metrics: Default::default(),
        }
    }

    /// Queues the job of agreement `a`. One job per agreement: a second is a conflict.
    #[instrument(skip_all, fields(agreement_id = %a.id))]
    pub async fn enqueue(&self, a: &Agreement, not_before: u64, args: Vec<String>) -> JobResult<JobView> {
        let id = hex::encode(&B256::random()[..16]);
        if let Err(job) = self.store.insert(&id, a.id, a.did, a.consumer, not_before, &args).await? {
            return Err(JobError::AgreementHasJob { agreement: a.id, job });
        }
        self.wake.notify_one();
        tracing::info!(job_id = %id, not_before, "job queued");
        self.load(&id).await
    }

    /// A job, as the API shows it.
    async fn load(&self, id: &str) -> JobResult<JobView> {
        let live = self.live.snapshot(id);
        view_of(self.store.get(id).await?, live)
    }

    /// The job, if `signer` is its consumer.
    pub async fn view(&self, id: &str, signer: Address) -> JobResult<JobView> {
        let live = self.live.snapshot(id);
        let row = self.store.get(id).await?;
        if row.consumer.0 != signer {
            return Err(JobError::NotConsumer { signer });
        }
        view_of(row, live)
    }

    /// The job's results, by index: output files (by path), the two logs, the receipt; with
    /// the job itself and its receipt inline.
    pub async fn results(&self, id: &str, signer: Address) -> JobResult<ResultsView> {
        let (mut view, receipt) = self.listed(id, signer).await?;
        // A receipt this version cannot read (written by a newer node, say) is still served
        // as a file; it is only not inline.
        view.receipt = receipt.and_then(|json| {
            serde_json::from_str(&json)
                .inspect_err(|e| tracing::warn!(job_id = %id, error = %e, "the stored receipt is not inline"))
                .ok()
        });
        view.job = Some(self.load(id).await?);
        Ok(view)
    }

    /// The job's results as listed, and its stored receipt (JSON), if `signer` is its
    /// consumer.
    async fn listed(&self, id: &str, signer: Address) -> JobResult<(ResultsView, Option<String>)> {
        let row = self.store.results(id).await?;
        if row.consumer.0 != signer {
            return Err(JobError::NotConsumer { signer });
        }
        let receipt = row.receipt;
        let mut results = row.results.map(|r| r.0).unwrap_or_default();
        // In a cluster the receipt is signed at settlement, after its entry was written: its
        // size and hash are the stored receipt's, as served.
        if let Some(entry) = results.iter_mut().find(|r| r.kind == ResultKind::Receipt) {
            entry.size = receipt.as_ref().map_or(0, |r| r.len() as u64);
            entry.hash = receipt.as_deref().map(|r| tidepool_runtime::tree::blake3_b256(r.as_bytes()));
        }
        let view = ResultsView {
            job_id: id.to_string(),
            results,
            outputs: row.outputs.map(|o| o.0),
            job: None,
            receipt: None,
        };
        Ok((view, receipt))
    }

    /// Opens result `index` of a job for its consumer.
    pub async fn open_result(&self, id: &str, signer: Address, index: u32) -> JobResult<(ResultEntry, ResultBody)> {
        let (listed, receipt) = self.listed(id, signer).await?;
        let entry = listed
            .results
            .into_iter()
            .find(|r| r.index == index)
            .ok_or_else(|| JobError::NoResult { job: id.to_string(), index })?;
        let body = match (entry.kind, entry.hash) {
            (ResultKind::Receipt, _) => ResultBody::Bytes(receipt.unwrap_or_default().into_bytes()),
            (_, Some(hash)) => {
                let blobs = self.blobs.clone();
                ResultBody::File(crate::blocking::blocking(move || blobs.open_blob(&hash)).await?)
            }
            (_, None) => return Err(JobError::NoContent { job: id.to_string(), index }),
        };
        Ok((entry, body))
    }

    /// Stops a job: a running one at its next tick (it ends with outcome `stopped`), a
    /// queued one at once (and its whole escrow goes back).
    #[instrument(skip_all, fields(job_id = %id))]
    pub async fn stop(&self, id: &str, signer: Address) -> JobResult<JobView> {
        let job = self.view(id, signer).await?;
        if job.status.is_terminal() {
            return Err(JobError::Ended { job: id.to_string(), status: job.status });
        }
        self.live.cancel(id);
        if self.store.stop_queued(id).await? {
            // Never started: the whole escrow goes back to the consumer. The stop is done and
            // committed; a settlement that fails now (the keeper out of reach) is finished by
            // the pending settlements' pass, and must not turn the stop into an error whose
            // retry would be a conflict.
            if let Err(e) = self.settle(id).await {
                tracing::warn!(job_id = %id, error = %e, "settling a stopped job failed; it will be retried");
            }
        } else {
            // Claimed meanwhile: it is live from before its claim, so its flag is here now if
            // it runs on this node; whichever node runs it hears of the stop from its row.
            self.store.request_stop(id).await?;
            self.live.cancel(id);
        }
        self.load(id).await
    }
}

/// A job's row as the API shows it, with its live stage and progress if it runs.
fn view_of(row: JobRow, live: (Option<JobStatus>, Option<ProgressView>)) -> JobResult<JobView> {
    let mut status = row.status()?;
    let (stage, progress) = live;
    if let (Some(stage), true) = (stage, status.is_active()) {
        status = stage;
    }
    Ok(JobView {
        payment: row.payment()?,
        job_id: row.id,
        service_agreement_id: row.agreement_id.0,
        did: row.did.0,
        status,
        status_text: status.text().into(),
        created_at: row.created_at as u64,
        updated_at: row.updated_at as u64,
        not_before: row.not_before as u64,
        attempts: row.attempts as u32,
        progress,
        outcome: row.outcome.map(|o| o.0),
        error: row.error,
        receipt_hash: row.receipt_hash.map(|h| h.0),
        output_did: row.output_did.map(|d| d.0),
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_periodic_queries_use_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&tmp.path().join("t.db")).await.unwrap();
        let plan = crate::store::query_plan(&db, &super::store::unsettled_query()).await;
        assert!(plan.iter().any(|d| d.contains("jobs_unsettled")), "{plan:?}");
    }
}
