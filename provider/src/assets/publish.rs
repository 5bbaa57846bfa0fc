//! Publishing an upload session as an asset: its manifests, its DID, its DDO (with the
//! Computing service a dataset offers), its views.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256, keccak256};
use tidepool_runtime::Algorithm;
use tidepool_runtime::tree::Tree;
use tracing::instrument;

use super::{AssetError, AssetResult, Assets, manifest};
use crate::protocol::api::{PublishRequest, Published};
use crate::protocol::ddo::{
    AgreementContract, AlgorithmPolicy, AssetKind, ComputeService, DatasetInfo, Ddo, Did, Environment, Metadata,
    ProviderInfo, PublicKey, Service,
};
use crate::protocol::signing::unix_now;
use crate::protocol::template::{self, ConditionName, Controllers, Terms};
use crate::store::Text;

/// One file of an upload session.
#[derive(sqlx::FromRow)]
struct SessionFile {
    dataset: String,
    path: String,
    blob: Text<B256>,
    size: i64,
}

impl Assets {
    /// Publishes the files of an upload session as an asset.
    #[instrument(skip_all, fields(session))]
    pub async fn publish(&self, owner: Address, session: &str, req: PublishRequest) -> AssetResult<Published> {
        self.check_session(session, owner).await?;
        if req.name.trim().is_empty() {
            return Err(AssetError::Invalid("the asset needs a name".into()));
        }
        let files: Vec<SessionFile> = sqlx::query_as(
            "SELECT dataset, path, blob, size FROM upload_files WHERE session_id = $1 ORDER BY dataset, path",
        )
        .bind(session)
        .fetch_all(self.db.pool())
        .await?;
        let mut datasets: BTreeMap<String, Vec<(String, B256, u64)>> = BTreeMap::new();
        for f in files {
            datasets.entry(f.dataset).or_default().push((f.path, f.blob.0, f.size as u64));
        }
        if datasets.is_empty() {
            return Err(AssetError::Invalid("the upload session holds no files".into()));
        }
        let manifests: BTreeMap<String, Tree> =
            datasets.iter().map(|(name, files)| (name.clone(), manifest(files))).collect();
        let mut algorithm_hash = None;
        match req.kind {
            AssetKind::Dataset if req.environment.is_some() => {
                return Err(AssetError::Invalid("only an algorithm names an environment".into()));
            }
            AssetKind::Dataset => {
                if !self.config.operators.contains(owner) {
                    return Err(AssetError::NotOperator(format!(
                        "{owner} is not an operator of this provider: only operators publish datasets"
                    )));
                }
            }
            AssetKind::Algorithm if let Some(environment) = &req.environment => {
                let [(_, tree)] = manifests.iter().collect::<Vec<_>>()[..] else {
                    return Err(AssetError::Invalid(format!(
                        "an algorithm for {environment} is published as one dataset holding its files"
                    )));
                };
                let name = tidepool_runtime::job::sanitize_name(&req.name);
                let algorithm = self.algorithms.from_tree(environment, &name, tree).await?;
                algorithm_hash = Some(algorithm.hash());
                self.algorithms.admit(algorithm).await?;
            }
            AssetKind::Algorithm => {
                let files: Vec<&(String, B256, u64)> = datasets.values().flatten().collect();
                let [(path, hash, _)] = files.as_slice() else {
                    return Err(AssetError::Invalid("an algorithm is published as exactly one module file".into()));
                };
                let bytes = self.algorithms.module(*hash).await?;
                let name = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".wasm");
                self.algorithms.admit(Algorithm::new(tidepool_runtime::job::sanitize_name(name), bytes)).await?;
                algorithm_hash = Some(*hash);
            }
            AssetKind::Output => return Err(AssetError::Invalid("outputs are published by jobs, not uploaded".into())),
        }
        let mut id_input = owner.to_vec();
        id_input.extend_from_slice(format!("{:?}\0{}", req.kind, req.name).as_bytes());
        for (name, tree) in &manifests {
            id_input.extend_from_slice(name.as_bytes());
            id_input.extend_from_slice(tree.root().as_slice());
        }
        let did = Did(keccak256(id_input));
        let metadata = Metadata {
            name: req.name.clone(),
            description: req.description.clone(),
            author: req.author.clone(),
            license: req.license.clone(),
            kind: req.kind,
            datasets: dataset_infos(&manifests),
            algorithm_hash,
            environment: req.environment.clone(),
            derived_from: None,
        };
        let service = match req.kind {
            AssetKind::Dataset => vec![Service::Computing(Box::new(self.compute_service(did, &req)?))],
            _ => Vec::new(),
        };
        let ddo = new_ddo(did, owner, metadata, service);
        // Published datasets get their views first, so that a broken dataset fails its
        // publication before the asset exists. (A view left by a failed publication is
        // complete, and is used as it is by a later one.)
        for (name, tree) in &manifests {
            self.build_view(did, name, std::sync::Arc::new(tree.clone())).await?;
        }
        if req.kind == AssetKind::Dataset {
            // The keeper's registry names the data a receipt's inputs must be (on a chain, the
            // escrow checks them); registering again is an update by the same owner.
            let roots: Vec<(String, B256)> = manifests.iter().map(|(n, t)| (n.clone(), t.root())).collect();
            let url = format!("{}/api/v1/assets/{did}", self.config.base_url);
            self.keeper.register_asset(did, &roots, &url).await?;
        }
        self.store_asset(&ddo, owner, &manifests).await?;
        let mut tx = self.db.write().await?;
        for q in ["DELETE FROM upload_files WHERE session_id = $1", "DELETE FROM upload_sessions WHERE id = $1"] {
            sqlx::query(q).bind(session).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Published { did, ddo })
    }

    /// The Computing service a dataset offers: limits within the provider's, the price, the
    /// agreement's conditions on this provider's keeper.
    fn compute_service(&self, did: Did, req: &PublishRequest) -> AssetResult<ComputeService> {
        let max = &self.config.job_limits;
        let pick = |asked: Option<u64>, limit: u64, what: &str| match asked {
            None => Ok(limit),
            Some(v) if v == 0 || v > limit => {
                Err(AssetError::Invalid(format!("{what} {v} is outside this provider's range 1..={limit}")))
            }
            Some(v) => Ok(v),
        };
        if let Some((name, t)) = req.timeouts.iter().find(|(_, t)| **t > MAX_CONDITION_TIMEOUT_SECS) {
            return Err(AssetError::Invalid(format!(
                "the timeout of {name:?} is {t} s; at most {MAX_CONDITION_TIMEOUT_SECS} s (100 years) is accepted"
            )));
        }
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
            offers: self.algorithms.environments().describe().into_iter().map(Into::into).collect(),
        };
        let price = req.price_per_fuel.unwrap_or(U256::from(1));
        let provider = self.config.operators.provider();
        let terms =
            Terms { did, provider, consumer: Address::ZERO, price_per_fuel: price, max_fuel: environment.max_fuel };
        let offer = Offer {
            base_url: &self.config.base_url,
            chain_id: self.keeper.chain_id(),
            keeper: self.keeper.kind(),
            controllers: self.keeper.controllers(),
        };
        let policy = req.trusted_algorithms.clone().unwrap_or(AlgorithmPolicy::Any);
        Ok(computing_service(offer, &terms, environment, policy, &req.timeouts))
    }
}

/// The longest condition timeout an asset may set: 100 years, so that the agreement's time
/// plus it fits every keeper's arithmetic (a larger one made every `initialize` of the asset
/// fail, blaming the consumer).
pub const MAX_CONDITION_TIMEOUT_SECS: u64 = 100 * 365 * 86_400;

/// Who offers a Computing service, and on which keeper.
#[derive(Clone, Copy, Debug)]
pub struct Offer<'a> {
    /// The provider's public URL.
    pub base_url: &'a str,
    /// The chain the keeper's agreements are signed for.
    pub chain_id: u64,
    /// The keeper's kind: `embedded` or `evm`.
    pub keeper: &'a str,
    /// The keeper's condition controllers.
    pub controllers: &'a Controllers,
}

/// The Computing service (definition `1`) of `terms.did`, whose jobs run in `environment`:
/// its endpoints, the provider, the price, the agreement's conditions on `offer`'s keeper
/// (`timeouts` overriding the defaults by name).
pub fn computing_service(
    offer: Offer<'_>,
    terms: &Terms,
    environment: Environment,
    trusted_algorithms: AlgorithmPolicy,
    timeouts: &BTreeMap<ConditionName, u64>,
) -> ComputeService {
    let base = format!("{}/api/v1/services/compute", offer.base_url);
    ComputeService {
        service_definition_id: "1".into(),
        template_id: template::template_id(),
        initialize_endpoint: format!("{base}/initialize"),
        upload_endpoint: format!("{base}/upload"),
        service_endpoint: format!("{base}/exec"),
        provider: ProviderInfo {
            kind: "tidepool".into(),
            address: terms.provider,
            chain_id: offer.chain_id,
            keeper: offer.keeper.into(),
            environment,
        },
        price_per_fuel: terms.price_per_fuel,
        trusted_algorithms,
        service_agreement_contract: AgreementContract {
            contract_name: "TidepoolComputeAgreement".into(),
            fulfillment_operator: 1,
            events: crate::protocol::handlers::event_handlers(),
        },
        conditions: template::condition_specs(offer.controllers, terms, timeouts),
    }
}

/// What a DDO says about each dataset.
pub(super) fn dataset_infos(manifests: &BTreeMap<String, Tree>) -> Vec<DatasetInfo> {
    manifests
        .iter()
        .map(|(name, tree)| {
            let (files, bytes) = tree.file_stats();
            DatasetInfo { name: name.clone(), files, bytes, root: tree.root() }
        })
        .collect()
}

/// A DDO owned by `owner`, created now.
pub(super) fn new_ddo(did: Did, owner: Address, metadata: Metadata, service: Vec<Service>) -> Ddo {
    Ddo {
        context: "https://w3id.org/did/v1".into(),
        id: did,
        created: unix_now(),
        public_key: vec![PublicKey { id: format!("{did}#owner"), kind: "EthereumECDSAKey".into(), owner }],
        metadata,
        service,
    }
}
