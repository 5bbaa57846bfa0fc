//! The consumer's and publisher's side: a typed HTTP client that signs every request with the
//! caller's key ([`Client`]), publishing helpers, and the whole consumer flow ([`flow`]).

pub mod flow;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::agreement::Agreement;
use crate::protocol::api::{
    BalanceView, CreditRequest, ErrorBody, EventsView, ExecRequest, InitializeRequest, JobView, ProviderView,
    PublishRequest, Published, ReferenceRequest, RefundView, ResultsView, UploadQuery, UploadResponse, UploadSession,
    UploadedFile,
};
use crate::protocol::ddo::{Ddo, Did};
use crate::protocol::eip712;
use crate::protocol::events::KeeperEvent;
use crate::protocol::signing::{Envelope, sign_typed, unix_now};

/// What went wrong talking to a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the provider at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the provider answered {status} ({code}): {message}")]
    Api { status: u16, code: String, message: String },
    #[error("the provider sent an unreadable response: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Flow(String),
    #[error("the chain")]
    Chain(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// A client of one provider, signing as one key. A provider may be reached at several URLs
/// (the API nodes of a cluster): requests then take turns, and a request that cannot reach
/// one node (refused, never sent) goes to the next.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    bases: Vec<String>,
    turn: std::sync::atomic::AtomicUsize,
    signer: PrivateKeySigner,
    /// The consumer's own wallet on the keeper's chain, for a provider whose consumers lock
    /// and refund payments themselves.
    wallet: Option<tidepool_chain::Agent>,
    provider: ProviderView,
    domain: Eip712Domain,
    nonce: AtomicU64,
}

/// How long a signed request stays valid.
const REQUEST_TTL: u64 = 300;

impl Client {
    /// Connects to the provider at `base` (e.g. `http://127.0.0.1:8030`) as `signer`.
    pub async fn connect(base: &str, signer: PrivateKeySigner) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_string();
        let http =
            reqwest::Client::builder().build().map_err(|e| ClientError::Connect { url: base.clone(), source: e })?;
        let url = format!("{base}/api/v1/provider");
        let resp = http.get(&url).send().await.map_err(|e| ClientError::Connect { url: base.clone(), source: e })?;
        let provider: ProviderView = decode(resp).await?;
        let domain = eip712::domain(provider.chain_id, provider.address);
        Ok(Self {
            http,
            bases: vec![base],
            turn: Default::default(),
            signer,
            wallet: None,
            provider,
            domain,
            nonce: AtomicU64::new(0),
        })
    }

    /// Connects the consumer's wallet on the keeper's chain (`rpc`, `contracts`), acting with
    /// this client's key: needed with a provider whose keeper is on a chain
    /// ([`ProviderView::consumer_pays_directly`]).
    pub async fn with_wallet(mut self, rpc: &str, contracts: tidepool_chain::Contracts) -> ClientResult<Self> {
        if contracts.chain_id != self.provider.chain_id {
            return Err(ClientError::Flow(format!(
                "the contracts are on chain {}, the provider's keeper on chain {}",
                contracts.chain_id, self.provider.chain_id
            )));
        }
        if self.provider.consumer_pays_directly && contracts.agreement_store != self.provider.agreement_verifier {
            return Err(ClientError::Flow(format!(
                "the contracts' agreement store is {}, the provider's is {}",
                contracts.agreement_store, self.provider.agreement_verifier
            )));
        }
        let chain = tidepool_chain::Chain::connect(rpc, contracts, tidepool_chain::ChainConfig::default())
            .await
            .map_err(|e| ClientError::Chain(Box::new(e)))?;
        self.wallet = Some(chain.agent(self.signer.clone()));
        Ok(self)
    }

    /// The wallet, when the provider's consumers pay directly; `None` when they pay through
    /// the provider.
    fn wallet(&self) -> ClientResult<Option<&tidepool_chain::Agent>> {
        match (&self.wallet, self.provider.consumer_pays_directly) {
            (_, false) => Ok(None),
            (Some(w), true) => Ok(Some(w)),
            (None, true) => Err(ClientError::Flow(
                "this provider's keeper is on a chain: consumers lock and refund from their own wallets; give \
                 the chain's RPC URL and the contracts file (--chain-rpc, --contracts)"
                    .into(),
            )),
        }
    }

    /// The domain the consumer signs agreements and algorithms under (the keeper's).
    pub fn agreement_domain(&self) -> Eip712Domain {
        eip712::domain(self.provider.chain_id, self.provider.agreement_verifier)
    }

    /// Connects to a provider served by several API nodes (`bases`, at least one), which must
    /// all be the same provider; requests take turns between them.
    pub async fn connect_many(bases: &[&str], signer: PrivateKeySigner) -> ClientResult<Self> {
        let (first, rest) = bases.split_first().ok_or_else(|| ClientError::Protocol("no provider URL".into()))?;
        let mut client = Self::connect(first, signer.clone()).await?;
        for base in rest {
            let mut other = Self::connect(base, signer.clone()).await?;
            if other.provider.address != client.provider.address || other.provider.chain_id != client.provider.chain_id
            {
                return Err(ClientError::Protocol(format!("{base} is another provider than {first}")));
            }
            client.bases.push(other.bases.remove(0));
        }
        Ok(client)
    }

    /// The URL of the next request's node.
    fn base(&self) -> &str {
        &self.bases[self.turn.fetch_add(1, Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends what `make` builds (again, to the next node, while a node cannot be reached or
    /// closed the connection without an answer: a node killed since its connection was pooled).
    /// A request a dying node did apply is refused when sent again (each step of the flow is
    /// once per agreement: a second one is a conflict), so a retry never applies one twice.
    async fn send_with(&self, make: impl Fn() -> reqwest::RequestBuilder) -> ClientResult<reqwest::Response> {
        let mut tries = self.bases.len();
        loop {
            tries -= 1;
            match make().send().await {
                Ok(response) => return Ok(response),
                Err(e) if (e.is_connect() || closed_unanswered(&e)) && tries > 0 => continue,
                Err(e) => {
                    let url = e.url().map_or_else(String::new, |u| u.to_string());
                    return Err(ClientError::Connect { url, source: e });
                }
            }
        }
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    pub fn provider(&self) -> &ProviderView {
        &self.provider
    }

    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// A nonce greater than every one this client used: milliseconds since the epoch, bumped
    /// when two requests fall in the same millisecond.
    fn next_nonce(&self) -> u64 {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut prev = self.nonce.load(Ordering::Relaxed);
        loop {
            let next = now_ms.max(prev + 1);
            match self.nonce.compare_exchange(prev, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// A signed request: `path` includes the query; `body` is hashed into the signature.
    fn signed(&self, method: reqwest::Method, path: &str, body_hash: B256) -> reqwest::RequestBuilder {
        let nonce = self.next_nonce();
        let expiry = unix_now() + REQUEST_TTL;
        let request = eip712::Request {
            method: method.as_str().to_string(),
            path: path.to_string(),
            contentHash: body_hash,
            nonce,
            expiry,
        };
        let envelope = Envelope {
            address: self.address(),
            nonce,
            expiry,
            content_hash: Some(body_hash),
            signature: sign_typed(&self.signer, &self.domain, &request),
        };
        let mut builder = self.http.request(method, format!("{}{path}", self.base()));
        for (name, value) in envelope.headers() {
            builder = builder.header(name, value);
        }
        builder
    }

    /// Sends once, to the next node (a streamed body cannot be sent twice).
    async fn send(&self, builder: reqwest::RequestBuilder) -> ClientResult<reqwest::Response> {
        builder.send().await.map_err(|e| {
            let url = e.url().map_or_else(String::new, |u| u.to_string());
            ClientError::Connect { url, source: e }
        })
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let hash = keccak256(&bytes);
        let req = || {
            self.signed(reqwest::Method::POST, path, hash)
                .header("content-type", "application/json")
                .body(bytes.clone())
        };
        decode(self.send_with(req).await?).await
    }

    async fn get_signed<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        decode(self.send_with(|| self.signed(reqwest::Method::GET, path, keccak256([]))).await?).await
    }

    async fn get_public<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        decode(self.send_with(|| self.http.get(format!("{}{path}", self.base()))).await?).await
    }

    // ---- publishing -------------------------------------------------------------------------

    pub async fn create_session(&self) -> ClientResult<String> {
        let s: UploadSession = self.post_json("/api/v1/uploads", &serde_json::json!({})).await?;
        Ok(s.id)
    }

    /// Uploads one file (streamed; it is read twice: once to sign its hash, once to send it).
    pub async fn upload_file(
        &self,
        session: &str,
        dataset: &str,
        path: &str,
        local: &Path,
    ) -> ClientResult<UploadedFile> {
        let local_owned = local.to_path_buf();
        let hash = tokio::task::spawn_blocking(move || -> std::io::Result<B256> {
            let mut f = std::fs::File::open(local_owned)?;
            let mut h = alloy_primitives::Keccak256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    return Ok(h.finalize());
                }
                h.update(&buf[..n]);
            }
        })
        .await
        .map_err(|e| ClientError::Flow(e.to_string()))??;
        let file = tokio::fs::File::open(local).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let encoded: Vec<String> = path.split('/').map(url_segment).collect();
        let url_path = format!("/api/v1/uploads/{session}/files/{}/{}", url_segment(dataset), encoded.join("/"));
        decode(self.send(self.signed(reqwest::Method::PUT, &url_path, hash).body(body)).await?).await
    }

    /// Asks the provider to copy a directory on its own disk into a dataset (operators only).
    pub async fn reference(&self, session: &str, dataset: &str, local_path: &Path) -> ClientResult<Vec<UploadedFile>> {
        let req = ReferenceRequest { dataset: dataset.into(), local_path: local_path.to_path_buf() };
        self.post_json(&format!("/api/v1/uploads/{session}/reference"), &req).await
    }

    pub async fn publish(&self, session: &str, req: &PublishRequest) -> ClientResult<Published> {
        self.post_json(&format!("/api/v1/uploads/{session}/publish"), req).await
    }

    /// Uploads every file of each `(dataset, directory)` and publishes them as one asset.
    pub async fn publish_dirs(
        &self,
        datasets: &[(String, std::path::PathBuf)],
        req: &PublishRequest,
    ) -> ClientResult<Published> {
        let session = self.create_session().await?;
        for (name, dir) in datasets {
            let tree =
                tidepool_runtime::tree::scan(dir).map_err(|e| ClientError::Flow(format!("{}: {e}", dir.display())))?;
            for entry in &tree.entries {
                match &entry.kind {
                    tidepool_runtime::tree::EntryKind::File { .. } => {
                        self.upload_file(&session, name, &entry.path, &dir.join(&entry.path)).await?;
                    }
                    tidepool_runtime::tree::EntryKind::Dir => {}
                    tidepool_runtime::tree::EntryKind::Symlink { .. } => {
                        return Err(ClientError::Flow(format!(
                            "{}/{}: symlinks cannot be published",
                            dir.display(),
                            entry.path
                        )));
                    }
                }
            }
        }
        self.publish(&session, req).await
    }

    // ---- reading ----------------------------------------------------------------------------

    pub async fn ddo(&self, did: Did) -> ClientResult<Ddo> {
        self.get_public(&format!("/api/v1/assets/{did}")).await
    }

    pub async fn assets(&self) -> ClientResult<Vec<Ddo>> {
        self.get_public("/api/v1/assets").await
    }

    pub async fn agreement(&self, id: B256) -> ClientResult<Agreement> {
        self.get_public(&format!("/api/v1/keeper/agreements/{id}")).await
    }

    /// Keeper events after `after` (of one agreement, if given).
    pub async fn events(&self, after: u64, agreement: Option<B256>) -> ClientResult<Vec<KeeperEvent>> {
        self.wait_for_events(after, agreement, Duration::ZERO).await
    }

    /// Events after `after` (of one agreement, if given); when there are none yet, the
    /// provider holds the request until one arrives or `wait` passes (then: none).
    pub async fn wait_for_events(
        &self,
        after: u64,
        agreement: Option<B256>,
        wait: Duration,
    ) -> ClientResult<Vec<KeeperEvent>> {
        let filter = agreement.map(|a| format!("&agreement={a}")).unwrap_or_default();
        let started = std::time::Instant::now();
        let v: EventsView = self
            .get_public(&format!("/api/v1/keeper/events?after={after}{filter}&waitMs={}", wait.as_millis()))
            .await?;
        if v.events.is_empty() {
            // A provider that does not long-poll answers at once: do not ask again at once.
            // (Capped, so that a long wait does not turn into a long sleep.)
            tokio::time::sleep(wait.saturating_sub(started.elapsed()).min(Duration::from_millis(250))).await;
        }
        Ok(v.events)
    }

    pub async fn balance(&self, who: Address) -> ClientResult<U256> {
        let v: BalanceView = self.get_public(&format!("/api/v1/keeper/balances/{who}")).await?;
        Ok(v.balance)
    }

    /// Credits `amount` to `who` (operators only).
    pub async fn credit(&self, who: Address, amount: U256) -> ClientResult<U256> {
        let v: BalanceView = self.post_json("/api/v1/keeper/credit", &CreditRequest { address: who, amount }).await?;
        Ok(v.balance)
    }

    /// Asks a development provider's faucet for tokens.
    pub async fn faucet(&self) -> ClientResult<U256> {
        let v: BalanceView = self.post_json("/api/v1/keeper/faucet", &serde_json::json!({})).await?;
        Ok(v.balance)
    }

    // ---- the agreement flow -----------------------------------------------------------------

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
        let hash = keccak256(module);
        let req = || {
            self.signed(reqwest::Method::POST, &path, hash)
                .header("content-type", "application/wasm")
                .body(module.to_vec())
        };
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
        let hash = keccak256(&files.archive);
        let req = || {
            self.signed(reqwest::Method::POST, &path, hash)
                .header("content-type", "application/vnd.tidepool.files")
                .body(files.archive.clone())
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
        decode(self.send_with(|| self.signed(reqwest::Method::POST, &path, keccak256([]))).await?).await
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

    pub async fn exec(&self, req: &ExecRequest) -> ClientResult<JobView> {
        self.post_json("/api/v1/services/compute/exec", req).await
    }

    pub async fn job(&self, id: &str) -> ClientResult<JobView> {
        self.get_signed(&format!("/api/v1/services/compute/jobs/{id}")).await
    }

    pub async fn results(&self, id: &str) -> ClientResult<ResultsView> {
        self.get_signed(&format!("/api/v1/services/compute/jobs/{id}/results")).await
    }

    /// Downloads result `index` of a job to `dest` (streamed).
    pub async fn download(&self, id: &str, index: u32, dest: &Path) -> ClientResult<u64> {
        let path = format!("/api/v1/services/compute/jobs/{id}/results/{index}");
        let resp = self.send_with(|| self.signed(reqwest::Method::GET, &path, keccak256([]))).await?;
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
        file.sync_all().await?;
        Ok(size)
    }

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

/// Percent-encodes one path segment.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Turns an error response into `ClientError::Api`.
async fn check(resp: reqwest::Response) -> ClientResult<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(ClientError::Api { status, code: e.error.code, message: e.error.message }),
        Err(_) => Err(ClientError::Api { status, code: "http".into(), message: text }),
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> ClientResult<T> {
    let resp = check(resp).await?;
    let text = resp.text().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Protocol(format!("{e}: {}", text.chars().take(200).collect::<String>())))
}

/// Did the node close the connection before answering (hyper's "incomplete message")?
fn closed_unanswered(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(url_segment("a b/ü.txt"), "a%20b%2F%C3%BC.txt");
        assert_eq!(url_segment("plain-name_1.csv"), "plain-name_1.csv");
    }
}
