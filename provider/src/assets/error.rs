//! Why publishing or reading an asset failed.

use crate::algorithms::AdmissionError;
use crate::protocol::ddo::Did;
use crate::protocol::names::NameError;
use crate::store::DbError;

/// Why an asset operation failed. The HTTP layer maps each variant to its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssetError {
    /// A dataset name or file path breaks the rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The request makes no sense as it stands (no name, no files, two modules...).
    #[error("{0}")]
    Invalid(String),
    #[error("no upload session {0}")]
    NoSession(String),
    #[error("the upload session belongs to another address")]
    NotSessionOwner,
    /// Only the provider's operators may do this.
    #[error("{0}")]
    NotOperator(String),
    #[error("no asset {0}")]
    NotFound(Did),
    #[error("{0} is published already")]
    Exists(Did),
    #[error("{path} is over the {limit}-byte file limit")]
    FileTooLarge { path: String, limit: u64 },
    /// A published algorithm's module was refused.
    #[error(transparent)]
    Module(#[from] AdmissionError),
    #[error("asset storage failed")]
    Db(#[from] DbError),
    #[error("file storage failed")]
    Io(#[from] std::io::Error),
    /// A stored DDO or manifest cannot be read back.
    #[error("a stored asset cannot be read")]
    Corrupt(#[from] serde_json::Error),
}

impl From<sqlx::Error> for AssetError {
    fn from(e: sqlx::Error) -> Self {
        AssetError::Db(DbError(e))
    }
}

/// Results of asset operations.
pub type AssetResult<T> = Result<T, AssetError>;
