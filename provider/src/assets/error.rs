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
    /// No upload session has this id (404).
    #[error("no upload session {0}")]
    NoSession(String),
    /// The session was opened by another address (403).
    #[error("the upload session belongs to another address")]
    NotSessionOwner,
    /// Only the provider's operators may do this.
    #[error("{0}")]
    NotOperator(String),
    /// No asset has this DID (404).
    #[error("no asset {0}")]
    NotFound(Did),
    /// An asset with this DID is published already (409).
    #[error("{0} is published already")]
    Exists(Did),
    /// A file over the provider's file size limit (413).
    #[error("{path} is over the {limit}-byte file limit")]
    FileTooLarge {
        /// The file's path in its dataset.
        path: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The keeper refused to register the asset, or could not be reached.
    #[error(transparent)]
    Keeper(#[from] crate::keeper::KeeperError),
    /// A published algorithm's module was refused.
    #[error(transparent)]
    Module(#[from] AdmissionError),
    /// The database failed (503 when transient, else 500).
    #[error("asset storage failed")]
    Db(#[from] DbError),
    /// Files (staging, views, blobs) failed (500).
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
