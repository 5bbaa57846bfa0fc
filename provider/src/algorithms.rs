//! Algorithms: admitting modules (the runtime's checks, before anything is stored or
//! promised), keeping them in the blob store, and remembering which algorithms were uploaded
//! for which agreement (table `uploads`, owned here). Only one of them is the agreement's: the
//! one whose hash the keeper recorded; a job looks its upload up by that hash.

use std::sync::Arc;

use alloy_primitives::B256;
use tidepool_runtime::{Algorithm, Limits, Runtime};

use crate::blocking::blocking;
use crate::protocol::ddo::Did;
use crate::protocol::signing::unix_now;
use crate::store::blobs::Blobs;
use crate::store::{Db, DbError, Text};

/// Why a module was refused (or could not be checked).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// Over the provider's module size limit.
    #[error("{0}")]
    TooLarge(tidepool_runtime::Error),
    /// Not a module the sandbox runs: malformed, a forbidden import, no `_start`...
    #[error("{0}")]
    Refused(tidepool_runtime::Error),
    /// The runtime itself failed while checking.
    #[error("the runtime could not check the module")]
    Runtime(#[source] tidepool_runtime::Error),
    #[error("the module check did not finish")]
    Interrupted(#[source] std::io::Error),
}

/// The algorithm uploaded for an agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// BLAKE3 of the module: its name in the blob store.
    pub algorithm_hash: B256,
    /// The published algorithm it came from, if any.
    pub algorithm_did: Option<Did>,
    /// The name it runs under (`argv[0]`).
    pub name: String,
}

/// A row of `uploads`.
#[derive(sqlx::FromRow)]
struct UploadRow {
    algorithm_hash: Text<B256>,
    algorithm_did: Option<Text<Did>>,
    name: String,
}

/// Admission, module storage and the record of uploads.
#[derive(Debug)]
pub struct Algorithms {
    db: Db,
    blobs: Arc<Blobs>,
    runtime: Arc<Runtime>,
    /// The limits modules are admitted under (the provider's module size limit among them).
    limits: Limits,
}

impl Algorithms {
    pub fn new(db: Db, blobs: Arc<Blobs>, runtime: Arc<Runtime>, limits: Limits) -> Self {
        Self { db, blobs, runtime, limits }
    }

    /// Runs the runtime's admission on a module (size, format, imports, exports), on a
    /// blocking thread. The compiled module is cached, so a job that runs it starts at once.
    pub async fn admit(&self, algorithm: Algorithm) -> Result<(), AdmissionError> {
        let (runtime, limits) = (self.runtime.clone(), self.limits.clone());
        let checked = blocking(move || Ok(runtime.check_module(&algorithm, &limits)))
            .await
            .map_err(AdmissionError::Interrupted)?;
        checked.map_err(|e| match e {
            tidepool_runtime::Error::ModuleTooLarge { .. } => AdmissionError::TooLarge(e),
            e if e.is_client_error() => AdmissionError::Refused(e),
            e => AdmissionError::Runtime(e),
        })
    }

    /// A stored module's bytes.
    pub async fn module(&self, hash: B256) -> std::io::Result<Vec<u8>> {
        let blobs = self.blobs.clone();
        blocking(move || blobs.read(&hash)).await
    }

    /// Stores a module in the blob store; returns its hash.
    pub async fn store(&self, bytes: Arc<[u8]>) -> std::io::Result<B256> {
        let blobs = self.blobs.clone();
        blocking(move || blobs.put_bytes(&bytes)).await
    }

    /// Records that `upload` was uploaded for `agreement` (before the keeper is asked to
    /// record its hash: of several concurrent uploads, the keeper accepts one).
    pub async fn record_upload(&self, agreement: B256, upload: &Upload) -> Result<(), DbError> {
        self.db
            .execute(
                sqlx::query(
                    "INSERT INTO uploads (agreement_id, algorithm_hash, algorithm_did, name, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agreement_id, algorithm_hash) DO UPDATE SET \
                     algorithm_did = excluded.algorithm_did, name = excluded.name",
                )
                .bind(Text(agreement))
                .bind(Text(upload.algorithm_hash))
                .bind(upload.algorithm_did.map(Text))
                .bind(&upload.name)
                .bind(unix_now() as i64),
            )
            .await?;
        Ok(())
    }

    /// The upload of module `hash` for `agreement` (the hash the keeper recorded), if any.
    pub async fn upload_of(&self, agreement: B256, hash: B256) -> Result<Option<Upload>, DbError> {
        let row: Option<UploadRow> = sqlx::query_as(
            "SELECT algorithm_hash, algorithm_did, name FROM uploads WHERE agreement_id = $1 AND algorithm_hash = $2",
        )
        .bind(Text(agreement))
        .bind(Text(hash))
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| Upload {
            algorithm_hash: r.algorithm_hash.0,
            algorithm_did: r.algorithm_did.map(|d| d.0),
            name: r.name,
        }))
    }
}
