//! Algorithms: admitting modules and algorithms for the environments this provider offers
//! (the runtime's checks, before anything is stored or promised), keeping them in the blob
//! store, and remembering which algorithms were uploaded for which agreement (table
//! `uploads`, owned here). Only one of them is the agreement's: the one whose hash the keeper
//! recorded; a job looks its upload up by that hash.

use std::sync::Arc;

use alloy_primitives::B256;
use tidepool_runtime::files::{FileKind, FileTree};
use tidepool_runtime::tree::{EntryKind, Tree};
use tidepool_runtime::{Algorithm, Environment, Environments, Limits, Runtime};

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
    /// The check's blocking task failed, or the stored module could not be read.
    #[error("the module check did not finish")]
    Interrupted(#[source] std::io::Error),
    /// An algorithm for an environment this provider does not offer.
    #[error("this provider does not offer the environment `{name}` (it offers: {offered})")]
    NoEnvironment {
        /// The environment asked for.
        name: String,
        /// The ones offered, comma-separated.
        offered: String,
    },
    /// A files archive that cannot be read.
    #[error("the algorithm's files cannot be read: {0}")]
    BadFiles(String),
}

/// The algorithm uploaded for an agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The algorithm's hash, as the consumer signed it and receipts record it: BLAKE3 of a
    /// module, or the tree root of an environment algorithm's files.
    pub algorithm_hash: B256,
    /// The blob store's name for what was kept: the module itself, or the files' archive.
    pub blob: B256,
    /// The environment that runs it; `None` for a module.
    pub environment: Option<String>,
    /// The published algorithm it came from, if any.
    pub algorithm_did: Option<Did>,
    /// The name it runs under (`argv[0]`).
    pub name: String,
}

/// A row of `uploads`.
#[derive(sqlx::FromRow)]
struct UploadRow {
    algorithm_hash: Text<B256>,
    blob: Option<Text<B256>>,
    environment: Option<String>,
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
    /// The environments offered (none: only modules run).
    environments: Arc<Environments>,
}

impl Algorithms {
    /// Admission under `limits` with `runtime`, for the `environments` offered; modules kept in `blobs`, uploads recorded in `db`.
    pub fn new(
        db: Db,
        blobs: Arc<Blobs>,
        runtime: Arc<Runtime>,
        limits: Limits,
        environments: Arc<Environments>,
    ) -> Self {
        Self { db, blobs, runtime, limits, environments }
    }

    /// The environments this provider offers.
    pub fn environments(&self) -> &Environments {
        &self.environments
    }

    /// Compiles (or loads from the compile cache) each offered environment's module, one after
    /// the other, so that no consumer waits for it. Failures are logged: an environment whose
    /// module cannot be compiled refuses its jobs with the same error.
    pub async fn prepare_environments(&self) {
        for name in self.environments.names() {
            let (runtime, environments, limits) =
                (self.runtime.clone(), self.environments.clone(), self.limits.clone());
            let started = std::time::Instant::now();
            let what = name.clone();
            let prepared = blocking(move || {
                let environment = environments.get(&what).map_err(std::io::Error::other)?;
                runtime.prepare_environment(&environment, &limits).map_err(std::io::Error::other)
            })
            .await;
            match prepared {
                Ok(cached) => tracing::info!(
                    environment = %name, cached, elapsed_ms = started.elapsed().as_millis() as u64,
                    "environment ready"
                ),
                Err(e) => tracing::error!(environment = %name, error = %e, "the environment cannot be prepared"),
            }
        }
    }

    /// An algorithm for the offered environment `environment`, from its files' archive
    /// (`tidepool-files-v1`), checked as the environment requires (its entry file present).
    pub fn from_archive(&self, environment: &str, name: &str, archive: &[u8]) -> Result<Algorithm, AdmissionError> {
        let environment = self.offered(environment)?;
        let files = FileTree::from_archive(archive, self.limits.module_bytes)
            .map_err(|e| AdmissionError::BadFiles(e.to_string()))?;
        environment.algorithm(name, files).map_err(AdmissionError::Refused)
    }

    /// An algorithm for the offered environment `environment` made of the files `tree` names
    /// (a published algorithm's dataset), read from the blob store. Its hash is the tree's
    /// root.
    pub async fn from_tree(&self, environment: &str, name: &str, tree: &Tree) -> Result<Algorithm, AdmissionError> {
        let environment = self.offered(environment)?;
        let mut entries = Vec::with_capacity(tree.entries.len());
        let mut bytes = 0u64;
        for entry in &tree.entries {
            let kind = match &entry.kind {
                EntryKind::Dir => FileKind::Dir,
                EntryKind::File { hash, size } => {
                    bytes = bytes.saturating_add(*size);
                    if bytes > self.limits.module_bytes {
                        let limit = self.limits.module_bytes;
                        return Err(AdmissionError::BadFiles(format!("more than {limit} bytes of files")));
                    }
                    FileKind::File(self.module(*hash).await.map_err(AdmissionError::Interrupted)?.into())
                }
                EntryKind::Symlink { target } => FileKind::Symlink(target.clone()),
            };
            entries.push((entry.path.clone(), kind));
        }
        let files = FileTree::from_entries(entries, self.limits.module_bytes)
            .map_err(|e| AdmissionError::BadFiles(e.to_string()))?;
        environment.algorithm(name, files).map_err(AdmissionError::Refused)
    }

    /// The offered environment `name`.
    fn offered(&self, name: &str) -> Result<Arc<Environment>, AdmissionError> {
        let offered = self.environments.names();
        if !offered.iter().any(|n| n == name) {
            let offered = if offered.is_empty() { "modules only".to_string() } else { offered.join(", ") };
            return Err(AdmissionError::NoEnvironment { name: name.to_string(), offered });
        }
        self.environments.get(name).map_err(AdmissionError::Runtime)
    }

    /// Keeps what runs `algorithm` in the blob store (a module, or the files' archive) and
    /// returns its record, to be [`record_upload`](Self::record_upload)ed.
    pub async fn keep(&self, algorithm: &Algorithm, algorithm_did: Option<Did>) -> std::io::Result<Upload> {
        let bytes: Arc<[u8]> = match algorithm.files() {
            Some(files) => files.to_archive().into(),
            None => algorithm.bytes().clone(),
        };
        Ok(Upload {
            algorithm_hash: algorithm.hash(),
            blob: self.store(bytes).await?,
            environment: algorithm.environment().map(|e| e.name().to_string()),
            algorithm_did,
            name: algorithm.name.clone(),
        })
    }

    /// The algorithm an upload recorded, as it runs.
    pub async fn load(&self, upload: &Upload) -> Result<Algorithm, AdmissionError> {
        let bytes = self.module(upload.blob).await.map_err(AdmissionError::Interrupted)?;
        match &upload.environment {
            None => Ok(Algorithm::new(upload.name.clone(), bytes)),
            Some(environment) => self.from_archive(environment, &upload.name, &bytes),
        }
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
                    "INSERT INTO uploads (agreement_id, algorithm_hash, algorithm_did, name, created_at, \
                     environment, blob) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agreement_id, algorithm_hash) \
                     DO UPDATE SET algorithm_did = excluded.algorithm_did, name = excluded.name, \
                     environment = excluded.environment, blob = excluded.blob",
                )
                .bind(Text(agreement))
                .bind(Text(upload.algorithm_hash))
                .bind(upload.algorithm_did.map(Text))
                .bind(&upload.name)
                .bind(unix_now() as i64)
                .bind(upload.environment.as_deref())
                // A module is its own blob: NULL, as rows from before environments.
                .bind((upload.blob != upload.algorithm_hash).then_some(Text(upload.blob))),
            )
            .await?;
        Ok(())
    }

    /// The upload of algorithm `hash` for `agreement` (the hash the keeper recorded), if any.
    pub async fn upload_of(&self, agreement: B256, hash: B256) -> Result<Option<Upload>, DbError> {
        let row: Option<UploadRow> = sqlx::query_as(
            "SELECT algorithm_hash, blob, environment, algorithm_did, name FROM uploads \
             WHERE agreement_id = $1 AND algorithm_hash = $2",
        )
        .bind(Text(agreement))
        .bind(Text(hash))
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| Upload {
            algorithm_hash: r.algorithm_hash.0,
            blob: r.blob.map_or(r.algorithm_hash.0, |b| b.0),
            environment: r.environment,
            algorithm_did: r.algorithm_did.map(|d| d.0),
            name: r.name,
        }))
    }
}
