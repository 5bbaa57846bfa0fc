//! Output assets: what a job produced, published as an asset its consumer owns, downloadable
//! by the consumer only.

use std::collections::BTreeMap;

use alloy_primitives::keccak256;
use tidepool_runtime::Receipt;
use tidepool_runtime::tree::Tree;

use super::publish::new_ddo;
use super::{AssetError, AssetResult, Assets};
use crate::protocol::agreement::Agreement;
use crate::protocol::ddo::{AccessService, AssetKind, DatasetInfo, Derivation, Did, Metadata, Service};
use crate::store::Text;

impl Assets {
    /// Publishes a job's outputs as a new asset owned by the consumer. Idempotent: the DID is
    /// derived from the agreement and the receipt.
    pub async fn publish_output(
        &self,
        agreement: &Agreement,
        job_id: &str,
        receipt: &Receipt,
        outputs: &Tree,
    ) -> AssetResult<Did> {
        let mut id_input = b"tidepool-output".to_vec();
        id_input.extend_from_slice(agreement.id.as_slice());
        id_input.extend_from_slice(receipt.receipt_hash.as_slice());
        let did = Did(keccak256(id_input));
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM assets WHERE did = $1")
            .bind(Text(did))
            .fetch_optional(self.db.pool())
            .await?;
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
            environment: None,
            derived_from: Some(Derivation {
                service_agreement_id: agreement.id,
                receipt_hash: receipt.receipt_hash,
                dataset: agreement.did,
            }),
        };
        let access = Service::Access(AccessService {
            service_definition_id: "1".into(),
            service_endpoint: format!("{}/api/v1/services/compute/jobs/{job_id}/results", self.config.base_url),
            consumer: agreement.consumer,
        });
        let ddo = new_ddo(did, agreement.consumer, metadata, vec![access]);
        let manifests = BTreeMap::from([("outputs".to_string(), outputs.clone())]);
        match self.store_asset(&ddo, agreement.consumer, &manifests).await {
            Ok(()) | Err(AssetError::Exists(_)) => Ok(did),
            Err(e) => Err(e),
        }
    }
}
