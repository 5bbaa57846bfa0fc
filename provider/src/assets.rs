//! Publishing assets: upload sessions, dataset manifests and views, DDOs, and the output assets
//! jobs produce.
//!
//! A dataset's files live in the blob store; its manifest (a tree, as the runtime hashes it) is
//! in the database, and a *view* of hard links to the blobs (`<data>/views/<did>/<dataset>/`)
//! is what jobs mount, with the manifest, so the data is never rescanned or rehashed per job.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use cap_std::ambient_authority;
use sqlx::Row;
use tidepool_runtime::tree::{Entry, EntryKind, Tree};
use tidepool_runtime::{Algorithm, InputSpec, Receipt};

use crate::agreement::template::{self, Terms};
use crate::api::{PublishRequest, UploadSession, UploadedFile};
use crate::auth::unix_now;
use crate::ddo::{
    AccessService, AgreementContract, AlgorithmPolicy, AssetKind, ComputeService, DatasetInfo, Ddo, Derivation, Did,
    Environment, Metadata, ProviderInfo, PublicKey, Service,
};
use crate::error::{ApiError, ApiResult};
use crate::provider::Provider;
use crate::store::{addr, parse_addr, parse_b256};

/// Longest relative path of a published file, and deepest nesting.
const MAX_PATH: usize = 1024;
const MAX_DEPTH: usize = 64;

/// Dataset names: what `/data/inputs/<name>` may be.
pub fn check_dataset_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("invalid dataset name `{name}`: use A-Z a-z 0-9 . _ - (at most 64)")))
    }
}

/// File paths inside a dataset: relative, `/`-separated, no `.`/`..`, sane lengths.
pub fn check_path(path: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::BadRequest(format!("invalid file path `{path}`: {why}")));
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("it must be 1 to 1024 bytes");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return bad("it is nested too deeply");
    }
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.len() > 255 || p.contains('\0')) {
        return bad("every component must be a plain name (no empty, `.` or `..` components)");
    }
    Ok(())
}

pub async fn create_session(p: &Provider, owner: Address) -> ApiResult<UploadSession> {
    let id = hex::encode(B256::random());
    p.db.execute(
        sqlx::query("INSERT INTO upload_sessions (id, owner, created_at) VALUES (?1, ?2, ?3)")
            .bind(&id)
            .bind(addr(owner))
            .bind(unix_now() as i64),
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(UploadSession { id })
}

/// Checks that `session` exists and belongs to `owner`.
pub async fn check_session(p: &Provider, session: &str, owner: Address) -> ApiResult<()> {
    let stored: Option<String> = sqlx::query_scalar("SELECT owner FROM upload_sessions WHERE id = ?1")
        .bind(session)
        .fetch_optional(p.db.pool())
        .await
        .map_err(ApiError::internal)?;
    match stored {
        None => Err(ApiError::NotFound(format!("no upload session {session}"))),
        Some(o) if parse_addr(&o)? == owner => Ok(()),
        Some(_) => Err(ApiError::Forbidden("the upload session belongs to another address".into())),
    }
}

/// Records a file (already in the blob store) in a session.
pub async fn record_file(
    p: &Provider,
    session: &str,
    dataset: &str,
    path: &str,
    hash: B256,
    size: u64,
) -> ApiResult<UploadedFile> {
    p.db.execute(
        sqlx::query(
            "INSERT INTO upload_files (session_id, dataset, path, blob, size) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (session_id, dataset, path) DO UPDATE SET blob = excluded.blob, size = excluded.size",
        )
        .bind(session)
        .bind(dataset)
        .bind(path)
        .bind(hash.to_string())
        .bind(size as i64),
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(UploadedFile { dataset: dataset.into(), path: path.into(), hash, size })
}

/// Copies a directory on the provider's disk into a session's dataset (operators only).
pub async fn reference_dir(
    p: &Arc<Provider>,
    owner: Address,
    session: &str,
    dataset: &str,
    dir: PathBuf,
) -> ApiResult<Vec<UploadedFile>> {
    if !p.is_operator(owner) {
        return Err(ApiError::Forbidden("only the provider's operators may reference local directories".into()));
    }
    check_session(p, session, owner).await?;
    check_dataset_name(dataset)?;
    let p2 = p.clone();
    let stored = tokio::task::spawn_blocking(move || -> ApiResult<Vec<(String, B256, u64)>> {
        let tree =
            tidepool_runtime::tree::scan(&dir).map_err(|e| ApiError::BadRequest(format!("{}: {e}", dir.display())))?;
        let mut out = Vec::new();
        for entry in tree.entries {
            match entry.kind {
                EntryKind::Dir => {}
                EntryKind::Symlink { .. } => {
                    return Err(ApiError::BadRequest(format!("{}: symlinks cannot be published", entry.path)));
                }
                EntryKind::File { .. } => {
                    check_path(&entry.path)?;
                    let file = std::fs::File::open(dir.join(&entry.path))?;
                    let (hash, size) = p2.blobs.put_reader(file, p2.config.max_file_bytes)?.ok_or_else(|| {
                        ApiError::TooLarge(format!(
                            "{} is over the {}-byte file limit",
                            entry.path, p2.config.max_file_bytes
                        ))
                    })?;
                    out.push((entry.path, hash, size));
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;
    let mut files = Vec::new();
    for (path, hash, size) in stored {
        files.push(record_file(p, session, dataset, &path, hash, size).await?);
    }
    Ok(files)
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

/// Publishes the files of an upload session as an asset.
pub async fn publish(
    p: &Arc<Provider>,
    owner: Address,
    session: &str,
    req: PublishRequest,
) -> ApiResult<crate::api::Published> {
    check_session(p, session, owner).await?;
    if req.name.trim().is_empty() {
        return Err(ApiError::BadRequest("the asset needs a name".into()));
    }
    let rows =
        sqlx::query("SELECT dataset, path, blob, size FROM upload_files WHERE session_id = ?1 ORDER BY dataset, path")
            .bind(session)
            .fetch_all(p.db.pool())
            .await
            .map_err(ApiError::internal)?;
    let mut datasets: BTreeMap<String, Vec<(String, B256, u64)>> = BTreeMap::new();
    for r in &rows {
        datasets.entry(r.get("dataset")).or_default().push((
            r.get("path"),
            parse_b256(&r.get::<String, _>("blob"))?,
            r.get::<i64, _>("size") as u64,
        ));
    }
    if datasets.is_empty() {
        return Err(ApiError::BadRequest("the upload session holds no files".into()));
    }
    let manifests: BTreeMap<String, Tree> =
        datasets.iter().map(|(name, files)| (name.clone(), manifest(files))).collect();
    let mut algorithm_hash = None;
    match req.kind {
        AssetKind::Dataset => {
            if !p.is_operator(owner) {
                return Err(ApiError::Forbidden(format!(
                    "{owner} is not an operator of this provider: only operators publish datasets"
                )));
            }
        }
        AssetKind::Algorithm => {
            let files: Vec<&(String, B256, u64)> = datasets.values().flatten().collect();
            let [(path, hash, _)] = files.as_slice() else {
                return Err(ApiError::BadRequest("an algorithm is published as exactly one module file".into()));
            };
            let bytes = p.blobs.read(hash)?;
            let name = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".wasm");
            let alg = Algorithm::new(tidepool_runtime::job::sanitize_name(name), bytes);
            check_module(p, alg).await?;
            algorithm_hash = Some(*hash);
        }
        AssetKind::Output => return Err(ApiError::BadRequest("outputs are published by jobs, not uploaded".into())),
    }
    let mut id_input = owner.to_vec();
    id_input.extend_from_slice(format!("{:?}\0{}", req.kind, req.name).as_bytes());
    for (name, tree) in &manifests {
        id_input.extend_from_slice(name.as_bytes());
        id_input.extend_from_slice(tree.root().as_slice());
    }
    let did = Did(keccak256(id_input));
    let infos = manifests
        .iter()
        .map(|(name, tree)| {
            let (files, bytes) = tree.file_stats();
            DatasetInfo { name: name.clone(), files, bytes, root: tree.root() }
        })
        .collect();
    let metadata = Metadata {
        name: req.name.clone(),
        description: req.description.clone(),
        author: req.author.clone(),
        license: req.license.clone(),
        kind: req.kind,
        datasets: infos,
        algorithm_hash,
        derived_from: None,
    };
    let service = match req.kind {
        AssetKind::Dataset => vec![Service::Computing(Box::new(compute_service(p, did, &req)?))],
        _ => Vec::new(),
    };
    let ddo = new_ddo(did, owner, metadata, service);
    // Published datasets get their views first, so that a broken dataset fails its
    // publication before the asset exists. (A view left by a failed publication is complete,
    // and is used as it is by a later one.)
    for (name, tree) in &manifests {
        build_view(p, did, name, tree)?;
    }
    store_asset(p, &ddo, owner, &manifests).await?;
    let mut tx = p.db.write().await?;
    for q in ["DELETE FROM upload_files WHERE session_id = ?1", "DELETE FROM upload_sessions WHERE id = ?1"] {
        sqlx::query(q).bind(session).execute(&mut *tx).await.map_err(ApiError::internal)?;
    }
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(crate::api::Published { did, ddo })
}

/// Runs the runtime's admission on a module (compile, imports, exports).
pub async fn check_module(p: &Arc<Provider>, alg: Algorithm) -> ApiResult<()> {
    let p = p.clone();
    let limits = tidepool_runtime::Limits { module_bytes: p.config.max_module_bytes, ..p.config.job_limits.clone() };
    tokio::task::spawn_blocking(move || p.runtime.check_module(&alg, &limits))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            tidepool_runtime::Error::ModuleTooLarge { .. } => ApiError::TooLarge(e.to_string()),
            e if e.is_client_error() => ApiError::Unprocessable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        })
}

fn new_ddo(did: Did, owner: Address, metadata: Metadata, service: Vec<Service>) -> Ddo {
    Ddo {
        context: "https://w3id.org/did/v1".into(),
        id: did,
        created: unix_now(),
        public_key: vec![PublicKey { id: format!("{did}#owner"), kind: "EthereumECDSAKey".into(), owner }],
        metadata,
        service,
    }
}

fn compute_service(p: &Provider, did: Did, req: &PublishRequest) -> ApiResult<ComputeService> {
    let max = &p.config.job_limits;
    let pick = |asked: Option<u64>, limit: u64, what: &str| match asked {
        None => Ok(limit),
        Some(v) if v == 0 || v > limit => {
            Err(ApiError::BadRequest(format!("{what} {v} is outside this provider's range 1..={limit}")))
        }
        Some(v) => Ok(v),
    };
    let l = &req.limits;
    let environment = Environment {
        runtime: "wasmtime".into(),
        runtime_version: tidepool_runtime::engine::WASMTIME_VERSION.into(),
        tidepool_version: tidepool_runtime::VERSION.into(),
        max_fuel: pick(l.max_fuel, max.fuel, "maxFuel")?,
        memory_bytes: pick(l.memory_bytes, max.memory_bytes, "memoryBytes")?,
        timeout_ms: pick(l.timeout_ms, max.timeout_ms, "timeoutMs")?,
        output_bytes: pick(l.output_bytes, max.output_bytes, "outputBytes")?,
        output_files: pick(l.output_files, max.output_files, "outputFiles")?,
    };
    if let Some(bad) = req.timeouts.keys().find(|k| !template::CONDITIONS.iter().any(|c| c.name == k.as_str())) {
        return Err(ApiError::BadRequest(format!("`{bad}` is not a condition of the compute template")));
    }
    let price = req.price_per_fuel.unwrap_or(U256::from(1));
    let terms = Terms {
        did,
        provider: p.address(),
        consumer: Address::ZERO,
        price_per_fuel: price,
        max_fuel: environment.max_fuel,
    };
    let base = format!("{}/api/v1/services/compute", p.config.base_url());
    Ok(ComputeService {
        service_definition_id: "1".into(),
        template_id: template::template_id(),
        initialize_endpoint: format!("{base}/initialize"),
        upload_endpoint: format!("{base}/upload"),
        service_endpoint: format!("{base}/exec"),
        provider: ProviderInfo {
            kind: "tidepool".into(),
            address: p.address(),
            chain_id: p.keeper.chain_id(),
            keeper: p.keeper.kind().into(),
            environment,
        },
        price_per_fuel: price,
        trusted_algorithms: req.trusted_algorithms.clone().unwrap_or(AlgorithmPolicy::Any),
        service_agreement_contract: AgreementContract {
            contract_name: "TidepoolComputeAgreement".into(),
            fulfillment_operator: 1,
            events: template::event_handlers(),
        },
        conditions: template::condition_specs(p.keeper.controllers(), &terms, &req.timeouts),
    })
}

/// Stores an asset and its manifests. `Conflict` if the DID exists. (Views are built when a
/// job first needs them: see [`inputs`].)
async fn store_asset(p: &Provider, ddo: &Ddo, owner: Address, manifests: &BTreeMap<String, Tree>) -> ApiResult<()> {
    let mut tx = p.db.write().await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM assets WHERE did = ?1")
        .bind(ddo.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    if exists.is_some() {
        return Err(ApiError::Conflict(format!("{} is published already", ddo.id)));
    }
    sqlx::query("INSERT INTO assets (did, kind, owner, ddo, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(ddo.id.to_string())
        .bind(serde_json::to_value(ddo.metadata.kind).map_err(ApiError::internal)?.as_str().unwrap_or_default())
        .bind(addr(owner))
        .bind(serde_json::to_string(ddo).map_err(ApiError::internal)?)
        .bind(ddo.created as i64)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    for (name, tree) in manifests {
        sqlx::query("INSERT INTO asset_datasets (did, name, manifest) VALUES (?1, ?2, ?3)")
            .bind(ddo.id.to_string())
            .bind(name)
            .bind(serde_json::to_string(tree).map_err(ApiError::internal)?)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
    }
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(())
}

fn view_dir(p: &Provider, did: Did, dataset: &str) -> PathBuf {
    p.config.data_dir.join("views").join(hex::encode(did.0)).join(dataset)
}

/// Hard-links a dataset's blobs into its view directory (again, if it was removed).
fn build_view(p: &Provider, did: Did, dataset: &str, tree: &Tree) -> ApiResult<PathBuf> {
    let dir = view_dir(p, did, dataset);
    if dir.is_dir() {
        return Ok(dir);
    }
    // A staging directory of its own: two jobs (or a job and a publication) may build the
    // same view at once; the first to finish provides it.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = dir.with_extension(format!("building-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let cap = cap_std::fs::Dir::open_ambient_dir(&staging, ambient_authority())?;
    for e in &tree.entries {
        match &e.kind {
            EntryKind::Dir => cap.create_dir_all(&e.path)?,
            EntryKind::File { hash, .. } => p.blobs.link_into(hash, &cap, &e.path)?,
            EntryKind::Symlink { .. } => {}
        }
    }
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another build finished first (renaming onto a non-empty directory fails).
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e.into())
        }
    }
}

/// An asset's DDO.
pub async fn ddo(p: &Provider, did: Did) -> ApiResult<Ddo> {
    if let Some(ddo) = p.assets.ddo(did) {
        return Ok(ddo);
    }
    let json: Option<String> = sqlx::query_scalar("SELECT ddo FROM assets WHERE did = ?1")
        .bind(did.to_string())
        .fetch_optional(p.db.pool())
        .await
        .map_err(ApiError::internal)?;
    let json = json.ok_or_else(|| ApiError::NotFound(format!("no asset {did}")))?;
    let ddo: Ddo = serde_json::from_str(&json).map_err(ApiError::internal)?;
    p.assets.keep_ddo(&ddo);
    Ok(ddo)
}

/// The DDOs of every asset, newest first (optionally of one kind).
pub async fn list(p: &Provider, kind: Option<AssetKind>) -> ApiResult<Vec<Ddo>> {
    let kind =
        kind.map(|k| serde_json::to_value(k).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default());
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT ddo FROM assets WHERE (?1 IS NULL OR kind = ?1) ORDER BY created_at DESC, did")
            .bind(kind)
            .fetch_all(p.db.pool())
            .await
            .map_err(ApiError::internal)?;
    rows.iter().map(|j| serde_json::from_str(j).map_err(ApiError::internal)).collect()
}

/// The datasets of an asset, ready to mount in a job (views with their manifests).
pub async fn inputs(p: &Provider, did: Did) -> ApiResult<Vec<InputSpec>> {
    // (A view removed by hand is rebuilt below.)
    if let Some(inputs) = p.assets.inputs(did).filter(|i| i.iter().all(|i| i.dir.is_dir())) {
        return Ok(inputs);
    }
    let rows = sqlx::query("SELECT name, manifest FROM asset_datasets WHERE did = ?1 ORDER BY name")
        .bind(did.to_string())
        .fetch_all(p.db.pool())
        .await
        .map_err(ApiError::internal)?;
    rows.iter()
        .map(|r| {
            let name: String = r.get("name");
            let tree: Tree = serde_json::from_str(&r.get::<String, _>("manifest")).map_err(ApiError::internal)?;
            let dir = build_view(p, did, &name, &tree)?;
            Ok(InputSpec { manifest: Some(Arc::new(tree)), ..InputSpec::new(name, dir) })
        })
        .collect::<ApiResult<Vec<_>>>()
        .inspect(|inputs| p.assets.keep_inputs(did, inputs))
}

/// Published assets never change: their DDOs and mountable datasets are kept in memory after
/// first use (up to a bound), sparing a query and a parse on every request about them.
#[derive(Debug, Default)]
pub struct Cache {
    ddos: std::sync::Mutex<HashMap<Did, Ddo>>,
    inputs: std::sync::Mutex<HashMap<Did, Vec<InputSpec>>>,
}

/// Entries kept per map; past it, the map starts over.
const CACHED: usize = 4096;

impl Cache {
    fn ddo(&self, did: Did) -> Option<Ddo> {
        self.ddos.lock().unwrap_or_else(|p| p.into_inner()).get(&did).cloned()
    }

    fn keep_ddo(&self, ddo: &Ddo) {
        let mut ddos = self.ddos.lock().unwrap_or_else(|p| p.into_inner());
        if ddos.len() >= CACHED {
            ddos.clear();
        }
        ddos.insert(ddo.id, ddo.clone());
    }

    fn inputs(&self, did: Did) -> Option<Vec<InputSpec>> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).get(&did).cloned()
    }

    fn keep_inputs(&self, did: Did, inputs: &[InputSpec]) {
        let mut all = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= CACHED {
            all.clear();
        }
        all.insert(did, inputs.to_vec());
    }
}

/// Publishes a job's outputs as a new asset owned by the consumer. Idempotent: the DID is
/// derived from the agreement and the receipt.
pub async fn publish_output(
    p: &Provider,
    agreement: &crate::keeper::Agreement,
    job_id: &str,
    receipt: &Receipt,
    outputs: &Tree,
) -> ApiResult<Did> {
    let mut id_input = b"tidepool-output".to_vec();
    id_input.extend_from_slice(agreement.id.as_slice());
    id_input.extend_from_slice(receipt.receipt_hash.as_slice());
    let did = Did(keccak256(id_input));
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM assets WHERE did = ?1")
        .bind(did.to_string())
        .fetch_optional(p.db.pool())
        .await
        .map_err(ApiError::internal)?;
    if exists.is_some() {
        return Ok(did);
    }
    let (files, bytes) = outputs.file_stats();
    let metadata = Metadata {
        name: format!("Outputs of job {job_id}"),
        description: format!("Outputs of {} on {}", receipt.algorithm_name, agreement.did),
        author: String::new(),
        license: String::new(),
        kind: AssetKind::Output,
        datasets: vec![DatasetInfo { name: "outputs".into(), files, bytes, root: receipt.outputs_root }],
        algorithm_hash: Some(receipt.algorithm_hash),
        derived_from: Some(Derivation {
            service_agreement_id: agreement.id,
            receipt_hash: receipt.receipt_hash,
            dataset: agreement.did,
        }),
    };
    let access = Service::Access(AccessService {
        service_definition_id: "1".into(),
        service_endpoint: format!("{}/api/v1/services/compute/jobs/{job_id}/results", p.config.base_url()),
        consumer: agreement.consumer,
    });
    let ddo = new_ddo(did, agreement.consumer, metadata, vec![access]);
    let manifests = BTreeMap::from([("outputs".to_string(), outputs.clone())]);
    match store_asset(p, &ddo, agreement.consumer, &manifests).await {
        Ok(()) | Err(ApiError::Conflict(_)) => Ok(did),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        for ok in ["books", "a.b-c_1"] {
            check_dataset_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "spa ce", &"x".repeat(65)] {
            assert!(check_dataset_name(bad).is_err(), "{bad}");
        }
        for ok in ["a.txt", "dir/sub/a.txt"] {
            check_path(ok).unwrap();
        }
        for bad in ["", "/abs", "a//b", "../up", "a/./b", "a/", "x\0y"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

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
