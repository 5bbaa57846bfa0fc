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
    #[error("no job {0}")]
    NotFound(String),
    #[error("{signer} is not this job's consumer")]
    NotConsumer { signer: Address },
    #[error("job {job} has already ended ({status})")]
    Ended { job: String, status: JobStatus },
    #[error("agreement {agreement} already has job {job}")]
    AgreementHasJob { agreement: B256, job: String },
    #[error("job {job} has no result {index}")]
    NoResult { job: String, index: u32 },
    #[error("result {index} of job {job} has no content")]
    NoContent { job: String, index: u32 },
    #[error("agreement {0} has no uploaded algorithm")]
    NoUpload(B256),
    #[error("{0} has no Computing service")]
    NoComputeService(Did),
    /// This run no longer holds its job's lease (it was reaped and may run elsewhere): what it
    /// would have written was refused.
    #[error("the run of job {0} lost its lease")]
    LeaseLost(String),
    #[error("the job's task failed: {0}")]
    TaskFailed(String),
    #[error("a stored job cannot be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("the runtime failed")]
    Runtime(#[from] tidepool_runtime::Error),
    #[error("job storage failed")]
    Db(#[from] DbError),
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
