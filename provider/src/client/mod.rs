//! The consumer's and publisher's side: a typed HTTP client that signs every request with the
//! caller's key ([`Client`]), publishing helpers, and the whole consumer flow ([`flow`]).
//!
//! One `impl Client` block per concern: connecting (here), signing and sending (`transport`),
//! publishing (`publish`), the keeper's views (`keeper`), the agreement flow (`compute`).

mod compute;
pub mod flow;
mod keeper;
mod publish;
mod results;
mod transport;

use std::sync::atomic::AtomicU64;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;

use self::transport::decode;
use crate::protocol::api::ProviderView;
use crate::protocol::eip712;

/// What went wrong talking to a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request never got an answer: the node refused, was unreachable, or the connection
    /// broke (on every node tried).
    #[error("cannot reach the provider at {url}: {source}")]
    Connect {
        /// The URL asked (empty when reqwest does not know it).
        url: String,
        /// What reqwest saw.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an error status and its error body.
    #[error("the provider answered {status} ({code}): {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code from the body (`"http"` when the body was not ours).
        code: String,
        /// The error's message (or the whole body, when it was not ours).
        message: String,
    },
    /// A success whose body is not what the request expects (or a body that cannot be sent).
    #[error("the provider sent an unreadable response: {0}")]
    Protocol(String),
    /// Reading a local file or writing a download failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The flow cannot go on: a check failed (terms, receipt, outputs), a step timed out, or
    /// the arguments do not fit this provider.
    #[error("{0}")]
    Flow(String),
    /// The consumer's wallet on the keeper's chain failed (connecting, locking, refunding).
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

/// What the client's calls return.
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
    /// How long a JSON request may take end to end.
    timeout: std::time::Duration,
}

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a JSON request may take, from connecting to the last byte of its answer: longer
/// than the longest event wait (30 s), so that a provider that accepted the connection and
/// then fell silent is an error, not a wait without end. (Uploads and downloads, whose time
/// grows with their size, have the connect timeout only.)
const JSON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// How long an idle connection is kept for the next request: below the server's shortest
/// sensible keep-alive (its header read timeout, 10 s by default), so that a request is not
/// sent on a connection the server is closing at that moment.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Client {
    /// Connects to the provider at `base` (e.g. `http://127.0.0.1:8030`) as `signer`.
    pub async fn connect(base: &str, signer: PrivateKeySigner) -> ClientResult<Self> {
        Self::connect_with_timeout(base, signer, JSON_TIMEOUT).await
    }

    /// [`Client::connect`], with each JSON request allowed `timeout` end to end (90 s by
    /// default) before it fails.
    pub async fn connect_with_timeout(
        base: &str,
        signer: PrivateKeySigner,
        timeout: std::time::Duration,
    ) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Connect { url: base.clone(), source: e })?;
        let url = format!("{base}/api/v1/provider");
        let resp = http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ClientError::Connect { url: base.clone(), source: e })?;
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
            timeout,
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

    /// The address this client signs as (the consumer or publisher).
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// What the provider said about itself when this client connected.
    pub fn provider(&self) -> &ProviderView {
        &self.provider
    }

    /// The domain requests are signed under (the provider's).
    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    /// The key this client signs with.
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }
}
