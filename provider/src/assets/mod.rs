//! Assets: upload sessions, publishing datasets and algorithms, resolving DDOs, the datasets a
//! job mounts, and the output assets jobs produce.
//!
//! A dataset's files live in the blob store; its manifest (a tree, as the runtime hashes it) is
//! in the database, and a *view* of hard links to the blobs (`<data>/views/<did>/<dataset>/`)
//! is what jobs mount, with the manifest, so the data is never rescanned or rehashed per job.
//!
//! [`Assets`] owns the tables `assets`, `asset_datasets`, `upload_sessions` and
//! `upload_files`. It knows nothing of agreements or jobs: they call it.

mod cache;
mod error;
mod outputs;
mod publish;
mod views;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_primitives::{Address, B256};
use tidepool_runtime::tree::{Entry, EntryKind, Tree};
use tidepool_runtime::{InputSpec, Limits};
use tracing::instrument;

pub use error::{AssetError, AssetResult};
pub use publish::{Offer, computing_service};

use crate::algorithms::Algorithms;
use crate::blocking::blocking;
use crate::config::Operators;
use crate::keeper::Keeper;
use crate::protocol::api::{UploadSession, UploadedFile};
use crate::protocol::ddo::{AssetKind, Ddo, Did};
use crate::protocol::names::{check_dataset_name, check_path};
use crate::protocol::signing::unix_now;
use crate::store::blobs::Blobs;
use crate::store::{Db, Text};

/// What the asset catalogue needs to know about its provider.
#[derive(Clone, Debug)]
pub struct AssetsConfig {
    /// Where dataset views are built (`<data>/views`).
    pub views_dir: PathBuf,
    /// The provider's base URL, for the endpoints in DDOs.
    pub base_url: String,
    /// Who may publish datasets and reference local directories.
    pub operators: Operators,
    /// The most a published service may allow a job (and the default when publishing).
    pub job_limits: Limits,
    /// Largest file accepted when publishing.
    pub max_file_bytes: u64,
}

/// A file streamed to disk (in [`Assets::upload_dir`]) on its way into the blob store.
#[derive(Debug)]
pub struct StagedFile {
    /// The temporary file (removed when dropped).
    pub file: tempfile::TempPath,
    /// BLAKE3 of its contents.
    pub hash: B256,
    /// Its size in bytes.
    pub size: u64,
}

/// The asset catalogue.
#[derive(Debug)]
pub struct Assets {
    db: Db,
    blobs: Arc<Blobs>,
    keeper: Arc<dyn Keeper>,
    algorithms: Arc<Algorithms>,
    config: AssetsConfig,
    cache: cache::Cache,
}

impl Assets {
    /// The asset catalogue in `db` and `blobs`, registering assets with `keeper` and admitting published algorithms through `algorithms`.
    pub fn new(
        db: Db,
        blobs: Arc<Blobs>,
        keeper: Arc<dyn Keeper>,
        algorithms: Arc<Algorithms>,
        config: AssetsConfig,
    ) -> Self {
        Self { db, blobs, keeper, algorithms, config, cache: Default::default() }
    }

    /// Where request bodies on their way into the blob store are written (same filesystem).
    pub fn upload_dir(&self) -> &Path {
        self.blobs.tmp_dir()
    }

    /// Opens an upload session for `owner`.
    pub async fn create_session(&self, owner: Address) -> AssetResult<UploadSession> {
        let id = hex::encode(B256::random());
        self.db
            .execute(
                sqlx::query("INSERT INTO upload_sessions (id, owner, created_at) VALUES ($1, $2, $3)")
                    .bind(&id)
                    .bind(Text(owner))
                    .bind(unix_now() as i64),
            )
            .await?;
        Ok(UploadSession { id })
    }

    /// Checks that `session` exists and belongs to `owner`.
    pub async fn check_session(&self, session: &str, owner: Address) -> AssetResult<()> {
        let stored: Option<Text<Address>> = sqlx::query_scalar("SELECT owner FROM upload_sessions WHERE id = $1")
            .bind(session)
            .fetch_optional(self.db.pool())
            .await?;
        match stored {
            None => Err(AssetError::NoSession(session.to_string())),
            Some(Text(o)) if o == owner => Ok(()),
            Some(_) => Err(AssetError::NotSessionOwner),
        }
    }

    /// Adds a staged file to `owner`'s session as `dataset/path`: it goes into the blob store
    /// and the session.
    #[instrument(skip_all, fields(session))]
    pub async fn add_file(
        &self,
        owner: Address,
        session: &str,
        dataset: &str,
        path: &str,
        staged: StagedFile,
    ) -> AssetResult<UploadedFile> {
        check_dataset_name(dataset)?;
        check_path(path)?;
        self.check_session(session, owner).await?;
        let (blobs, StagedFile { file, hash, size }) = (self.blobs.clone(), staged);
        blocking(move || {
            let kept = file.keep().map_err(|e| e.error)?;
            blobs.adopt(&kept, &hash)
        })
        .await?;
        self.record_file(session, dataset, path, hash, size).await
    }

    /// Records a file (already in the blob store) in a session.
    async fn record_file(
        &self,
        session: &str,
        dataset: &str,
        path: &str,
        hash: B256,
        size: u64,
    ) -> AssetResult<UploadedFile> {
        self.db
            .execute(
                sqlx::query(
                    "INSERT INTO upload_files (session_id, dataset, path, blob, size) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (session_id, dataset, path) DO UPDATE SET blob = excluded.blob, size = excluded.size",
                )
                .bind(session)
                .bind(dataset)
                .bind(path)
                .bind(Text(hash))
                .bind(size as i64),
            )
            .await?;
        Ok(UploadedFile { dataset: dataset.into(), path: path.into(), hash, size })
    }

    /// Copies a directory on the provider's disk into a session's dataset (operators only).
    #[instrument(skip_all, fields(session))]
    pub async fn reference_dir(
        &self,
        owner: Address,
        session: &str,
        dataset: &str,
        dir: PathBuf,
    ) -> AssetResult<Vec<UploadedFile>> {
        if !self.config.operators.contains(owner) {
            return Err(AssetError::NotOperator(
                "only the provider's operators may reference local directories".into(),
            ));
        }
        self.check_session(session, owner).await?;
        check_dataset_name(dataset)?;
        let (blobs, limit) = (self.blobs.clone(), self.config.max_file_bytes);
        let stored = tokio::task::spawn_blocking(move || -> AssetResult<Vec<(String, B256, u64)>> {
            let tree = tidepool_runtime::tree::scan(&dir)
                .map_err(|e| AssetError::Invalid(format!("{}: {e}", dir.display())))?;
            let mut out = Vec::new();
            for entry in tree.entries {
                match entry.kind {
                    EntryKind::Dir => {}
                    EntryKind::Symlink { .. } => {
                        return Err(AssetError::Invalid(format!("{}: symlinks cannot be published", entry.path)));
                    }
                    EntryKind::File { .. } => {
                        check_path(&entry.path)?;
                        let file = std::fs::File::open(dir.join(&entry.path))?;
                        let (hash, size) = blobs
                            .put_reader(file, limit)?
                            .ok_or_else(|| AssetError::FileTooLarge { path: entry.path.clone(), limit })?;
                        out.push((entry.path, hash, size));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| AssetError::Io(std::io::Error::other(e)))??;
        let mut files = Vec::new();
        for (path, hash, size) in stored {
            files.push(self.record_file(session, dataset, &path, hash, size).await?);
        }
        Ok(files)
    }

    /// An asset's DDO.
    pub async fn ddo(&self, did: Did) -> AssetResult<Ddo> {
        if let Some(ddo) = self.cache.ddo(did) {
            return Ok(ddo);
        }
        let json: Option<String> = sqlx::query_scalar("SELECT ddo FROM assets WHERE did = $1")
            .bind(Text(did))
            .fetch_optional(self.db.pool())
            .await?;
        let ddo: Ddo = serde_json::from_str(&json.ok_or(AssetError::NotFound(did))?)?;
        self.cache.keep_ddo(&ddo);
        Ok(ddo)
    }

    /// The DDOs of every asset, newest first (optionally of one kind).
    pub async fn list(&self, kind: Option<AssetKind>) -> AssetResult<Vec<Ddo>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT ddo FROM assets WHERE ($1 IS NULL OR kind = $1) ORDER BY created_at DESC, did")
                .bind(kind.map(AssetKind::as_str))
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows.iter().map(|j| serde_json::from_str(j)).collect::<Result<_, _>>()?)
    }

    /// The manifests of an asset's datasets, by name.
    pub async fn manifests(&self, did: Did) -> AssetResult<Vec<(String, Arc<Tree>)>> {
        let rows: Vec<(String, crate::store::JsonText<Tree>)> =
            sqlx::query_as("SELECT name, manifest FROM asset_datasets WHERE did = $1 ORDER BY name")
                .bind(Text(did))
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows.into_iter().map(|(name, tree)| (name, Arc::new(tree.0))).collect())
    }

    /// The datasets of an asset, ready to mount in a job (views with their manifests).
    pub async fn inputs(&self, did: Did) -> AssetResult<Vec<InputSpec>> {
        // (A view removed by hand is rebuilt below.)
        if let Some(inputs) = self.cache.inputs(did) {
            let dirs: Vec<PathBuf> = inputs.iter().map(|i| i.dir.clone()).collect();
            if blocking(move || Ok(dirs.iter().all(|d| d.is_dir()))).await? {
                return Ok(inputs);
            }
        }
        let mut inputs = Vec::new();
        for (name, tree) in self.manifests(did).await? {
            let dir = self.build_view(did, &name, tree.clone()).await?;
            inputs.push(InputSpec { manifest: Some(tree), ..InputSpec::new(name, dir) });
        }
        self.cache.keep_inputs(did, &inputs);
        Ok(inputs)
    }

    /// Stores an asset and its manifests; [`AssetError::Exists`] if the DID exists. (Views are
    /// built when a job first needs them: see [`inputs`](Self::inputs).)
    async fn store_asset(&self, ddo: &Ddo, owner: Address, manifests: &BTreeMap<String, Tree>) -> AssetResult<()> {
        let mut tx = self.db.write().await?;
        // (Nothing is inserted when the asset exists, also when another node inserts it meanwhile.)
        let inserted = sqlx::query(
            "INSERT INTO assets (did, kind, owner, ddo, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (did) DO NOTHING",
        )
        .bind(Text(ddo.id))
        .bind(ddo.metadata.kind.as_str())
        .bind(Text(owner))
        .bind(crate::store::JsonText(ddo))
        .bind(ddo.created as i64)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AssetError::Exists(ddo.id));
        }
        for (name, tree) in manifests {
            sqlx::query("INSERT INTO asset_datasets (did, name, manifest) VALUES ($1, $2, $3)")
                .bind(Text(ddo.id))
                .bind(name)
                .bind(crate::store::JsonText(tree))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The tree of a dataset made of `files` (path, hash, size): the files and every directory
/// above them, in canonical order.
pub fn manifest(files: &[(String, B256, u64)]) -> Tree {
    let mut entries: BTreeMap<String, EntryKind> = BTreeMap::new();
    for (path, hash, size) in files {
        let mut prefix = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map(|(_, dirs)| dirs.to_vec()).unwrap_or_default()
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            entries.insert(prefix.clone(), EntryKind::Dir);
        }
        entries.insert(path.clone(), EntryKind::File { size: *size, hash: *hash });
    }
    Tree { entries: entries.into_iter().map(|(path, kind)| Entry { path, kind }).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_match_a_scan_of_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = [("a.txt", "alpha"), ("sub/deep/b.txt", "beta"), ("sub/c.txt", "gamma")];
        let mut listed = Vec::new();
        for (path, text) in files {
            let p = tmp.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            listed.push((path.to_string(), B256::from(*blake3::hash(text.as_bytes()).as_bytes()), text.len() as u64));
        }
        let scanned = tidepool_runtime::tree::scan(tmp.path()).unwrap();
        assert_eq!(manifest(&listed), scanned);
        assert_eq!(manifest(&listed).root(), scanned.root());
    }
}
