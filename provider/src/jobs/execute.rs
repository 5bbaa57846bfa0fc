//! Running one claimed job: what it may still do (deadlines, a refund, a stop), what it runs
//! (the algorithm the keeper recorded, the asset's datasets, the service's limits), and where
//! it runs: the one small interface [`Executor`] hides whether the guest runs on a blocking
//! thread of the daemon (`tidepool run`, tests) or in a confined worker process of its own
//! (`tidepool serve`, see [`super::isolated`] and `tidepool_sandbox`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::path::PathBuf;
use std::time::Duration;

use tidepool_runtime::{Algorithm, InputSpec, JobResult as RunResult, JobSpec, Limits, Runtime};
use tracing::instrument;

use super::isolated::{Isolated, IsolatedJob};
use super::live::LiveJobs;
use super::scheduler::Slot;
use super::{JobError, JobResult, Jobs, Lease};
use crate::algorithms::AdmissionError;
use crate::blocking::blocking;
use crate::protocol::agreement::AgreementState;
use crate::protocol::ddo::Environment;
use crate::protocol::signing::unix_now;
use crate::protocol::states::JobStatus;
use crate::protocol::template::ConditionName;

/// Where jobs run.
#[derive(Debug)]
pub(crate) enum Executor {
    /// On a blocking thread of the daemon, behind the runtime's sandbox only.
    InProcess(Arc<Runtime>),
    /// In a worker process of its own, behind an OS sandbox as well (modules and environment
    /// algorithms alike: the worker loads the environment from its directory).
    Isolated(Arc<Isolated>),
}

/// A job, ready to run.
pub(crate) struct Prepared {
    pub algorithm: Algorithm,
    pub inputs: Vec<InputSpec>,
    /// The job's own, fresh directory: outputs (and, isolated, the module and logs) go here.
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub limits: Limits,
    pub cancel: Arc<AtomicBool>,
}

/// How a run went.
#[derive(Debug)]
pub(crate) enum Ran {
    /// The guest ran: its receipt, logs and outputs.
    Finished(Box<RunResult>),
    /// The job could not run (a bad module or input, a host failure).
    NotRun { status: JobStatus, error: String },
    /// Still running past its wall-clock limit (and the grace after it): killed.
    Killed { after: Duration },
    /// Its worker died without a result.
    Crashed(String),
}

impl Executor {
    /// Runs `job` (off the async executor) and reports how it went.
    pub(crate) async fn run(&self, id: &str, job: Prepared, live: Arc<LiveJobs>) -> JobResult<Ran> {
        match self {
            Executor::InProcess(runtime) => run_in_process(runtime, id, job, live).await,
            Executor::Isolated(isolated) => {
                let algorithm = &job.algorithm;
                let module = match algorithm.files() {
                    Some(files) => files.to_archive().into(),
                    None => algorithm.bytes().clone(),
                };
                let job = IsolatedJob {
                    id: id.to_string(),
                    name: algorithm.name.clone(),
                    module,
                    module_hash: algorithm.hash(),
                    environment: algorithm.environment().cloned(),
                    inputs: job.inputs,
                    dir: job.dir,
                    args: job.args,
                    limits: job.limits,
                    cancel: job.cancel,
                    live,
                };
                // The worker is followed synchronously, on the blocking pool.
                let isolated = isolated.clone();
                tokio::task::spawn_blocking(move || isolated.run(job))
                    .await
                    .map_err(|e| JobError::TaskFailed(e.to_string()))
            }
        }
    }
}

/// Runs `job` on a blocking thread of this process, behind the runtime's sandbox.
async fn run_in_process(runtime: &Arc<Runtime>, id: &str, job: Prepared, live: Arc<LiveJobs>) -> JobResult<Ran> {
    let mut spec = JobSpec::new(job.algorithm, job.inputs, job.dir.join("outputs"));
    spec.args = job.args;
    spec.limits = job.limits;
    spec.cancel = Some(job.cancel);
    let job_id = id.to_string();
    spec.events = Some(Arc::new(move |event| live.record(&job_id, event)));
    let runtime = runtime.clone();
    let result = tokio::task::spawn_blocking(move || runtime.run(&spec))
        .await
        .map_err(|e| JobError::TaskFailed(e.to_string()))?;
    Ok(match result {
        Ok(r) => Ran::Finished(Box::new(r)),
        Err(e) => Ran::NotRun {
            status: match e {
                tidepool_runtime::Error::InvalidInput { .. } => JobStatus::DataProvisioningFailed,
                ref e if e.is_client_error() => JobStatus::AlgorithmProvisioningFailed,
                _ => JobStatus::Error,
            },
            error: e.to_string(),
        },
    })
}

impl Jobs {
    /// A job whose worker died without a result: queued again, or quarantined once it has
    /// had `max_job_attempts` runs (a job that kills its worker every time must not take
    /// the others' turns for ever).
    async fn crashed(&self, id: &str, lease: &Lease, detail: &str) -> JobResult<()> {
        let attempts = lease.attempt;
        if attempts >= i64::from(self.config.max_job_attempts) {
            let error = format!("its worker died on each of {attempts} attempts (the last: {detail})");
            return self.fail(id, Some(lease), JobStatus::Quarantined, &error).await;
        }
        tracing::warn!(job_id = %id, attempts, detail, "a job's worker died; queueing it again");
        if !self.store.requeue(id, lease).await? {
            return Err(JobError::LeaseLost(id.to_string()));
        }
        Ok(())
    }

    /// The limits of a job on a service: what the DDO's environment offers, within the
    /// provider's own.
    fn limits_of(&self, env: &Environment) -> Limits {
        Limits {
            fuel: env.max_fuel,
            memory_bytes: env.memory_bytes,
            timeout_ms: env.timeout_ms,
            output_bytes: env.output_bytes,
            output_files: env.output_files,
            ..self.config.job_limits.clone()
        }
    }

    /// Removes the jobs' scratch directories, at start, except those of the jobs in `running`
    /// (in a cluster, jobs other nodes may be running on a data directory they share): what is
    /// there was left by a daemon that was killed (and the jobs it held run again from the
    /// start).
    pub(super) async fn clear_scratch(&self, running: std::collections::HashSet<String>) -> JobResult<()> {
        let dir = self.config.jobs_dir.clone();
        let removed = blocking(move || {
            let mut removed = 0;
            match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
                Ok(entries) => {
                    for entry in entries {
                        let entry = entry?;
                        if entry.file_name().to_str().is_some_and(|name| running.contains(name)) {
                            continue;
                        }
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            std::fs::remove_dir_all(&path)?;
                        } else {
                            std::fs::remove_file(&path)?;
                        }
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await?;
        if removed > 0 {
            tracing::info!(entries = removed, "removed job scratch space left by a previous run");
        }
        Ok(())
    }

    /// Runs one claimed job to the end and stores its results. Its `slot` is freed once the
    /// guest has run, before the results are stored (see [`Slot::ran`]).
    #[instrument(skip_all, fields(job_id = %id))]
    pub(super) async fn execute(&self, id: &str, cancel: Arc<AtomicBool>, lease: &Lease, slot: Slot) -> JobResult<()> {
        let row = self.store.run_row(id).await?;
        let agreement_id = row.agreement_id.0;
        let a = self.keeper.agreement(agreement_id).await?;
        if a.deadline(ConditionName::ReleasePayment).is_some_and(|deadline| unix_now() >= deadline) {
            return self
                .fail(
                    id,
                    Some(lease),
                    JobStatus::DeadlineMissed,
                    "the payment deadline passed before the job could start",
                )
                .await;
        }
        if a.state != AgreementState::Active {
            return self
                .fail(
                    id,
                    Some(lease),
                    JobStatus::DeadlineMissed,
                    "the agreement was refunded before the job could start",
                )
                .await;
        }
        let ddo = self.assets.ddo(a.did).await?;
        let service = ddo.compute_service("1").ok_or(JobError::NoComputeService(a.did))?;
        let limits = self.limits_of(&service.provider.environment);
        let inputs = self.assets.inputs(a.did).await?;
        // The algorithm is the one whose hash the keeper recorded, read from the blob store:
        // never another upload for the same agreement.
        let agreed = a.algorithm_hash.ok_or(JobError::NoUpload(agreement_id))?;
        let upload = self.algorithms.upload_of(agreement_id, agreed).await?.ok_or(JobError::NoUpload(agreement_id))?;
        let algorithm = match self.algorithms.load(&upload).await {
            Ok(algorithm) => algorithm,
            Err(AdmissionError::Interrupted(e)) => return Err(e.into()),
            // An environment withdrawn since the upload, say.
            Err(e) => {
                let message = crate::error_chain(&e);
                return self.fail(id, Some(lease), JobStatus::AlgorithmProvisioningFailed, &message).await;
            }
        };
        if algorithm.hash() != agreed {
            return Err(JobError::Corrupt(format!("the stored algorithm {agreed} does not hash to its name")));
        }

        if cancel.load(Ordering::Relaxed) || row.stop_requested != 0 {
            // Stopped between its claim and here: it never ran, and nothing is charged.
            return self.fail(id, Some(lease), JobStatus::Stopped, "stopped before it started").await;
        }
        let scratch = Scratch(self.config.jobs_dir.join(id));
        let fresh = scratch.0.clone();
        blocking(move || {
            if fresh.exists() {
                std::fs::remove_dir_all(&fresh)?;
            }
            std::fs::create_dir_all(&fresh)
        })
        .await?;
        // In a cluster, the stages go to the shared database too: an API node cannot see this
        // node's live state. Written in order, by one task.
        if self.store.db().is_shared() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (store, job_id, lease) = (self.store.clone(), id.to_string(), lease.clone());
            tokio::spawn(async move {
                while let Some(stage) = rx.recv().await {
                    if let Err(e) = store.set_stage(&job_id, &lease, stage).await {
                        tracing::warn!(error = %e, "the job's stage could not be recorded");
                    }
                }
            });
            self.live.follow_stages(id, tx);
        }
        let job = Prepared { algorithm, inputs, dir: scratch.0.clone(), args: row.args.0, limits, cancel };
        let ran = self.executor.run(id, job, self.live.clone()).await?;
        // The slot is freed once the guest has run (a run that did not finish keeps it until
        // the job is failed or back in the queue).
        let (result, _storing) = match ran {
            Ran::Finished(result) => (*result, slot.ran().await),
            Ran::NotRun { status, error } => return self.fail(id, Some(lease), status, &error).await,
            Ran::Killed { after } => {
                let error = format!("timeout: still running {} s after it started, and killed", after.as_secs());
                return self.fail(id, Some(lease), JobStatus::AlgorithmFailed, &error).await;
            }
            Ran::Crashed(detail) => return self.crashed(id, lease, &detail).await,
        };
        self.store_results(id, lease, result, &scratch.0).await
    }
}

/// A job's scratch directory, removed when the run ends however it ends (an error included).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "a job's scratch directory could not be removed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn a_jobs_scratch_directory_goes_when_its_run_does_even_on_an_early_return() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job-1");
        let run = |fail: bool| -> Result<(), ()> {
            let scratch = Scratch(dir.clone());
            std::fs::create_dir_all(scratch.0.join("outputs/deep")).unwrap();
            std::fs::write(scratch.0.join("outputs/deep/file"), "x").unwrap();
            if fail {
                return Err(());
            }
            Ok(())
        };
        for fail in [true, false] {
            let _ = run(fail);
            assert!(!dir.exists(), "fail={fail}");
        }
        // Already gone: nothing to do, nothing to complain about.
        drop(Scratch(dir.clone()));
    }
}
