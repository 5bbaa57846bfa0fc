//! Running one claimed job: what it may still do (deadlines, a refund, a stop), what it runs
//! (the uploaded algorithm, the asset's datasets, the service's limits), and the bridge to the
//! runtime on a blocking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tidepool_runtime::{Algorithm, JobSpec, Limits};
use tracing::instrument;

use super::{JobError, JobResult, Jobs, Lease};
use crate::blocking::blocking;
use crate::protocol::agreement::AgreementState;
use crate::protocol::ddo::Environment;
use crate::protocol::signing::unix_now;
use crate::protocol::states::JobStatus;
use crate::protocol::template::ConditionName;

impl Jobs {
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

    /// Removes every job's scratch directory: at start, no job runs yet, so what is there was
    /// left by a daemon that was killed (and the jobs it held run again from the start).
    pub(super) async fn clear_scratch(&self) -> JobResult<()> {
        let dir = self.config.jobs_dir.clone();
        let removed = blocking(move || {
            let mut removed = 0;
            match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
                Ok(entries) => {
                    for entry in entries {
                        let path = entry?.path();
                        if path.is_dir() {
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

    /// Runs one claimed job to the end and stores its results.
    #[instrument(skip_all, fields(job_id = %id))]
    pub(super) async fn execute(&self, id: &str, cancel: Arc<AtomicBool>, lease: &Lease) -> JobResult<()> {
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
        // The module is the one whose hash the keeper recorded, read from the blob store by
        // that hash: never another upload for the same agreement.
        let agreed = a.algorithm_hash.ok_or(JobError::NoUpload(agreement_id))?;
        let upload = self.algorithms.upload_of(agreement_id, agreed).await?.ok_or(JobError::NoUpload(agreement_id))?;
        let algorithm = Algorithm::new(upload.name, self.algorithms.module(agreed).await?);
        if algorithm.hash() != agreed {
            return Err(JobError::Corrupt(format!("the stored module {agreed} does not hash to its name")));
        }

        if cancel.load(Ordering::Relaxed) || row.stop_requested != 0 {
            // Stopped between its claim and here: it never ran, and nothing is charged.
            return self.fail(id, Some(lease), JobStatus::Stopped, "stopped before it started").await;
        }
        let dir = self.config.jobs_dir.join(id);
        let fresh = dir.clone();
        blocking(move || {
            if fresh.exists() {
                std::fs::remove_dir_all(&fresh)?;
            }
            std::fs::create_dir_all(&fresh)
        })
        .await?;
        let mut spec = JobSpec::new(algorithm, inputs, dir.join("outputs"));
        spec.args = row.args.0;
        spec.limits = limits;
        spec.cancel = Some(cancel);
        let (live, job_id) = (self.live.clone(), id.to_string());
        spec.events = Some(Arc::new(move |event| live.record(&job_id, event)));
        let runtime = self.runtime.clone();
        let result = tokio::task::spawn_blocking(move || runtime.run(&spec))
            .await
            .map_err(|e| JobError::TaskFailed(e.to_string()))?;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let status = match e {
                    tidepool_runtime::Error::InvalidInput { .. } => JobStatus::DataProvisioningFailed,
                    ref e if e.is_client_error() => JobStatus::AlgorithmProvisioningFailed,
                    _ => JobStatus::Error,
                };
                let _ = blocking(move || std::fs::remove_dir_all(&dir)).await;
                return self.fail(id, Some(lease), status, &e.to_string()).await;
            }
        };
        self.store_results(id, lease, result, &dir).await?;
        let _ = blocking(move || std::fs::remove_dir_all(&dir)).await;
        Ok(())
    }
}
