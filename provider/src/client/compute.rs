//! The agreement flow, one request per step: initialize, upload the algorithm, lock the
//! payment, exec, follow the job, download its results, stop, refund.

use std::path::Path;

use alloy_primitives::{B256, U256, keccak256};

use super::transport::{check, decode};
use super::{Client, ClientError, ClientResult, flow};
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{
    ExecRequest, InitializeRequest, JobView, RefundView, ResultsView, UploadQuery, UploadResponse,
};
use crate::protocol::ddo::Did;
use crate::protocol::eip712;
use crate::protocol::signing::sign_typed;

impl Client {
    /// Proposes an agreement (its signed terms); the provider creates it on the keeper and
    /// answers the agreement as created.
    pub async fn initialize(&self, req: &InitializeRequest) -> ClientResult<Agreement> {
        self.post_json("/api/v1/services/compute/initialize", req).await
    }

    /// Uploads a module for an agreement, with the signed checksum; it runs as `name`.
    pub async fn upload_module(&self, agreement: B256, module: &[u8], name: &str) -> ClientResult<UploadResponse> {
        let hash = tidepool_runtime::tree::blake3_b256(module);
        let checksum = sign_typed(
            &self.signer,
            &self.agreement_domain(),
            &eip712::Algorithm { serviceAgreementId: agreement, algorithmHash: hash },
        );
        let name = tidepool_runtime::job::sanitize_name(name);
        let path = format!(
            "/api/v1/services/compute/upload?serviceAgreementId={agreement}&signedChecksum={checksum}&algorithmName={name}"
        );
        let signed = self.sign(reqwest::Method::POST, &path, keccak256(module));
        let req = || self.to_next(&signed).header("content-type", "application/wasm").body(module.to_vec());
        decode(self.send_with(req).await?).await
    }

    /// Uploads an algorithm for an environment the provider offers: its files' archive, under
    /// the consumer's signature over their tree root.
    pub async fn upload_files(&self, agreement: B256, files: &flow::FilesAlgorithm) -> ClientResult<UploadResponse> {
        let checksum = sign_typed(
            &self.signer,
            &self.agreement_domain(),
            &eip712::Algorithm { serviceAgreementId: agreement, algorithmHash: files.algorithm_hash },
        );
        // Names travel in the signed query as they are: both must be plain names.
        if !tidepool_runtime::job::is_valid_name(&files.environment) {
            return Err(ClientError::Flow(format!("`{}` is not an environment's name", files.environment)));
        }
        let name = tidepool_runtime::job::sanitize_name(&files.name);
        let path = format!(
            "/api/v1/services/compute/upload?serviceAgreementId={agreement}&signedChecksum={checksum}&algorithmName={name}\
             &environment={}",
            files.environment
        );
        let signed = self.sign(reqwest::Method::POST, &path, keccak256(&files.archive));
        let req = || {
            self.to_next(&signed).header("content-type", "application/vnd.tidepool.files").body(files.archive.clone())
        };
        decode(self.send_with(req).await?).await
    }

    /// Names a published algorithm for an agreement (`hash`: its module's BLAKE3, from its DDO).
    pub async fn upload_published(&self, agreement: B256, did: Did, hash: B256) -> ClientResult<UploadResponse> {
        let checksum = sign_typed(
            &self.signer,
            &self.agreement_domain(),
            &eip712::Algorithm { serviceAgreementId: agreement, algorithmHash: hash },
        );
        let query = UploadQuery {
            service_agreement_id: agreement,
            signed_checksum: checksum,
            algorithm_did: Some(did),
            algorithm_name: None,
            environment: None,
        };
        let qs = format!(
            "serviceAgreementId={}&signedChecksum={}&algorithmDid={}",
            query.service_agreement_id, query.signed_checksum, did
        );
        let path = format!("/api/v1/services/compute/upload?{qs}");
        let signed = self.sign(reqwest::Method::POST, &path, keccak256([]));
        decode(self.send_with(|| self.to_next(&signed).timeout(self.timeout)).await?).await
    }

    /// Locks the agreement's payment: through the provider, or from the consumer's own
    /// wallet when the keeper is on a chain (ERC-20 approve, then lock).
    pub async fn lock_payment(&self, agreement: B256) -> ClientResult<Agreement> {
        let Some(wallet) = self.wallet()? else {
            return self
                .post_json(&format!("/api/v1/keeper/agreements/{agreement}/lock-payment"), &serde_json::json!({}))
                .await;
        };
        let a = self.agreement(agreement).await?;
        let amount = a.price_per_fuel.saturating_mul(U256::from(a.max_fuel));
        wallet.lock_payment(agreement, a.provider, amount).await.map_err(|e| ClientError::Chain(Box::new(e)))?;
        self.agreement(agreement).await
    }

    /// Asks for the job of an agreement whose compute is granted; answers the queued job.
    pub async fn exec(&self, req: &ExecRequest) -> ClientResult<JobView> {
        self.post_json("/api/v1/services/compute/exec", req).await
    }

    /// The job `id` (its status and, once ended, its outcome); only its consumer may ask.
    pub async fn job(&self, id: &str) -> ClientResult<JobView> {
        self.get_signed(&format!("/api/v1/services/compute/jobs/{id}")).await
    }

    /// The results of the ended job `id`: the signed receipt and the list of files to download.
    pub async fn results(&self, id: &str) -> ClientResult<ResultsView> {
        self.get_signed(&format!("/api/v1/services/compute/jobs/{id}/results")).await
    }

    /// Downloads result `index` of a job to `dest` (streamed); returns its size in bytes.
    pub async fn download(&self, id: &str, index: u32, dest: &Path) -> ClientResult<u64> {
        let path = format!("/api/v1/services/compute/jobs/{id}/results/{index}");
        let signed = self.sign(reqwest::Method::GET, &path, keccak256([]));
        let resp = self.send_with(|| self.to_next(&signed)).await?;
        let resp = check(resp).await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::File::create(dest).await?;
        let mut stream = resp.bytes_stream();
        let mut size = 0u64;
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Protocol(e.to_string()))?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        // `flush` reports a failed last write, which tokio's `sync_all` does not.
        file.flush().await?;
        file.sync_all().await?;
        Ok(size)
    }

    /// Asks the provider to stop the job `id`; answers the job as it is then.
    pub async fn stop(&self, id: &str) -> ClientResult<JobView> {
        self.post_json(&format!("/api/v1/services/compute/jobs/{id}/stop"), &serde_json::json!({})).await
    }

    /// Takes back the payment of an agreement whose provider missed its deadline: through the
    /// provider, or with the consumer's own transaction on a chain.
    pub async fn refund(&self, agreement: B256) -> ClientResult<U256> {
        if let Some(wallet) = self.wallet()? {
            let (_, amount) = wallet.refund_payment(agreement).await.map_err(|e| ClientError::Chain(Box::new(e)))?;
            return Ok(amount);
        }
        let v: RefundView =
            self.post_json(&format!("/api/v1/keeper/agreements/{agreement}/refund"), &serde_json::json!({})).await?;
        Ok(v.refunded)
    }
}
