//! Why a job operation failed.

use alloy_primitives::{Address, B256};

use crate::assets::AssetError;
use crate::keeper::KeeperError;
use crate::protocol::ddo::Did;
use crate::protocol::states::JobStatus;
use crate::store::DbError;

/// Why a job operation failed. The HTTP layer maps each variant to its status; the scheduler
/// logs the ones a job meets while it runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No job has this id (404).
    #[error("no job {0}")]
    NotFound(String),
    /// The signer is not the job's consumer (403).
    #[error("{signer} is not this job's consumer")]
    NotConsumer {
        /// Who signed the request.
        signer: Address,
    },
    /// The job has ended: it cannot be stopped (409).
    #[error("job {job} has already ended ({status})")]
    Ended {
        /// The job.
        job: String,
        /// The status it ended in.
        status: JobStatus,
    },
    /// The agreement already has a job (409).
    #[error("agreement {agreement} already has job {job}")]
    AgreementHasJob {
        /// The agreement.
        agreement: B256,
        /// Its job.
        job: String,
    },
    /// The job has no result with this index (404).
    #[error("job {job} has no result {index}")]
    NoResult {
        /// The job.
        job: String,
        /// The index asked for.
        index: u32,
    },
    /// A result that should have content has none stored (500).
    #[error("result {index} of job {job} has no content")]
    NoContent {
        /// The job.
        job: String,
        /// The result's index.
        index: u32,
    },
    /// The agreement has no uploaded algorithm to run (500).
    #[error("agreement {0} has no uploaded algorithm")]
    NoUpload(B256),
    /// The job's asset has no Computing service (500).
    #[error("{0} has no Computing service")]
    NoComputeService(Did),
    /// This run no longer holds its job's lease (it was reaped and may run elsewhere): what it
    /// would have written was refused.
    #[error("the run of job {0} lost its lease")]
    LeaseLost(String),
    /// A job's task panicked or was cancelled (500).
    #[error("the job's task failed: {0}")]
    TaskFailed(String),
    /// A stored job does not parse (500).
    #[error("a stored job cannot be read: {0}")]
    Corrupt(String),
    /// The keeper refused or failed (its own statuses).
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    /// The assets component failed (its own statuses).
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The runtime failed on the provider's side (500).
    #[error("the runtime failed")]
    Runtime(#[from] tidepool_runtime::Error),
    /// The database failed (503 when transient, else 500).
    #[error("job storage failed")]
    Db(#[from] DbError),
    /// Job files (scratch space, blobs) failed (500).
    #[error("job files failed")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Db(DbError(e))
    }
}

impl From<serde_json::Error> for JobError {
    fn from(e: serde_json::Error) -> Self {
        JobError::Corrupt(e.to_string())
    }
}

/// Results of job operations.
pub type JobResult<T> = Result<T, JobError>;
