//! Talking to the deployed contracts: [`Chain`] reads (agreements, balances, DIDs) and
//! [`Agent`] acts for one party with its key, one typed function per step of the agreement.
//!
//! Who does what (the contracts refuse anyone else):
//!
//! | step | party | function |
//! | --- | --- | --- |
//! | sign the agreement | consumer | [`Agent::sign_service_agreement`] |
//! | `initializeAgreement` | provider, with the consumer's signature | [`Agent::initialize_agreement`] |
//! | `lockPayment` (approve + lock, from the consumer's own wallet) | consumer | [`Agent::lock_payment`] |
//! | sign the algorithm | consumer | [`Agent::sign_algorithm`] |
//! | `fulfillUpload` | provider, with the consumer's signature | [`Agent::fulfill_upload`] |
//! | `grantCompute` | provider | [`Agent::grant_compute`] |
//! | `checkPermissions` | anyone (a view) | [`Chain::check_permissions`] |
//! | `releasePayment` with the receipt | provider | [`Agent::release_payment`] |
//! | `publishOutput` | provider, after the release | [`Agent::publish_output`] |
//! | `refundPayment` after a missed deadline | consumer | [`Agent::refund_payment`] |
//! | `registerAttribute` | a DID's owner | [`Agent::register_attribute`] |

use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::Signer;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolCall};

use crate::bindings::{
    self, AgreementStore, ComputeGrantCondition, ComputeUploadCondition, DIDRegistry, EscrowReward, TidepoolTestToken,
};
use crate::deploy::Contracts;
use crate::error::{ChainError, Result};
pub use crate::sender::{RetryPolicy, TxOutcome, TxSender};
use crate::template::{self, CONDITIONS, REFUND_PAYMENT, RELEASE_PAYMENT};
use crate::transport::HttpTransport;

mod agent;
mod records;

pub use agent::{Agent, Released};
pub use records::{AgreementState, ConditionStatus, DidRecord, OnChainAgreement, OnChainCondition};

/// How to talk to the node.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// Each HTTP request's timeout.
    pub request_timeout: Duration,
    /// How transient RPC errors are retried.
    pub retry: RetryPolicy,
    /// How long to wait for a transaction's receipt.
    pub receipt_timeout: Duration,
    /// The longest pause between two polls for a receipt (polls start at 10 ms and double).
    pub receipt_poll: Duration,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            receipt_timeout: Duration::from_secs(120),
            receipt_poll: Duration::from_secs(1),
        }
    }
}

fn provider(rpc: &str, config: &ChainConfig) -> Result<DynProvider> {
    let url: reqwest::Url = rpc.parse().map_err(|e| ChainError::Invalid(format!("RPC URL `{rpc}`: {e}")))?;
    let transport = HttpTransport::new(url, config.request_timeout)
        .map_err(|e| ChainError::Invalid(format!("HTTP client: {e}")))?;
    // No fillers: `TxSender` fills transactions itself, in an order that cannot leave nonce gaps.
    Ok(ProviderBuilder::new().disable_recommended_fillers().connect_client(transport.into_client()).erased())
}

fn nonzero(b: B256) -> Option<B256> {
    (b != B256::ZERO).then_some(b)
}

/// A connection to a chain where the contracts are deployed: reads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    contracts: Contracts,
    config: ChainConfig,
}

impl Chain {
    /// Connects and checks that the node is on the contracts' chain and that the contracts
    /// are there.
    pub async fn connect(rpc: &str, contracts: Contracts, config: ChainConfig) -> Result<Self> {
        let chain = Self { provider: provider(rpc, &config)?, contracts, config };
        let found = chain.chain_id().await?;
        if found != chain.contracts.chain_id {
            return Err(ChainError::WrongChain { expected: chain.contracts.chain_id, found });
        }
        for (name, address) in chain.contracts.all() {
            let code = chain.retry("code", || async { Ok(chain.provider.get_code_at(address).await?) }).await?;
            if code.is_empty() {
                return Err(ChainError::NoCode { name, address });
            }
        }
        Ok(chain)
    }

    /// A sender for `key` on `rpc`, before there are contracts (deployment).
    pub(crate) async fn sender_for(rpc: &str, key: PrivateKeySigner, config: ChainConfig) -> Result<TxSender> {
        let provider = provider(rpc, &config)?;
        let chain_id = config.retry.run("chain id", || async { Ok(provider.get_chain_id().await?) }).await?;
        Ok(TxSender::new(
            provider,
            EthereumWallet::from(key),
            chain_id,
            config.retry,
            config.receipt_timeout,
            config.receipt_poll,
        ))
    }

    /// A party acting with `key`.
    pub fn agent(&self, key: PrivateKeySigner) -> Agent {
        let key = key.with_chain_id(Some(self.contracts.chain_id));
        let sender = TxSender::new(
            self.provider.clone(),
            EthereumWallet::from(key.clone()),
            self.contracts.chain_id,
            self.config.retry,
            self.config.receipt_timeout,
            self.config.receipt_poll,
        );
        Agent { chain: self.clone(), key, sender: Arc::new(sender) }
    }

    /// Where the contracts are.
    pub fn contracts(&self) -> &Contracts {
        &self.contracts
    }

    /// The underlying alloy provider (no fillers; for reads).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The EIP-712 domain of the signatures the contracts check.
    pub fn domain(&self) -> Eip712Domain {
        bindings::domain(self.contracts.chain_id, self.contracts.agreement_store)
    }

    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.config.retry.run(what, op).await
    }

    /// Calls a view function of a contract (for what has no typed function here).
    pub async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return> {
        let request = TransactionRequest::default().to(to).input(call.abi_encode().into());
        let out = self.retry(C::SIGNATURE, || async { Ok(self.provider.call(request.clone()).await?) }).await?;
        Ok(C::abi_decode_returns(&out)?)
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> Result<u64> {
        self.retry("chain id", || async { Ok(self.provider.get_chain_id().await?) }).await
    }

    /// A block's timestamp (Unix seconds).
    pub async fn block_timestamp(&self, block: u64) -> Result<u64> {
        let found =
            self.retry("block", || async { Ok(self.provider.get_block_by_number(block.into()).await?) }).await?;
        found.map(|b| b.header.timestamp).ok_or_else(|| ChainError::Invalid(format!("no block {block}")))
    }

    /// The latest block's number.
    pub async fn block_number(&self) -> Result<u64> {
        self.retry("block number", || async { Ok(self.provider.get_block_number().await?) }).await
    }

    /// An agreement with its conditions, escrow, algorithm, receipt and output.
    pub async fn agreement(&self, id: B256) -> Result<OnChainAgreement> {
        let c = &self.contracts;
        let (v, escrow, algorithm, receipt, output) = tokio::try_join!(
            self.view(c.agreement_store, AgreementStore::getAgreementCall { agreementId: id }),
            self.view(c.escrow_reward, EscrowReward::lockedCall { agreementId: id }),
            self.view(c.compute_upload_condition, ComputeUploadCondition::algorithmHashOfCall { agreementId: id }),
            self.view(c.escrow_reward, EscrowReward::receiptHashOfCall { agreementId: id }),
            self.view(c.escrow_reward, EscrowReward::outputDidOfCall { agreementId: id }),
        )?;
        let keys = template::condition_keys(c);
        let conditions: Vec<OnChainCondition> = v
            .conditions
            .into_iter()
            .map(|cv| OnChainCondition {
                name: keys.iter().position(|k| *k == cv.key).map(|i| CONDITIONS[i].name),
                key: cv.key,
                status: if cv.status == 1 { ConditionStatus::Fulfilled } else { ConditionStatus::Unfulfilled },
                control_contract: cv.controlContract,
                dependencies: cv.dependencies,
                timeout: cv.timeout,
                deadline: (cv.deadline != 0).then_some(cv.deadline),
                fulfilled_at: (cv.fulfilledAt != 0).then_some(cv.fulfilledAt),
                values_hash: cv.valuesHash,
            })
            .collect();
        let fulfilled =
            |i: usize| conditions.iter().any(|c| c.key == keys[i] && c.status == ConditionStatus::Fulfilled);
        let state = if fulfilled(RELEASE_PAYMENT) {
            AgreementState::Released
        } else if fulfilled(REFUND_PAYMENT) {
            AgreementState::Refunded
        } else {
            AgreementState::Active
        };
        let parties = |i: usize| v.parties.get(i).copied().unwrap_or_default();
        Ok(OnChainAgreement {
            id,
            state,
            template_id: v.templateId,
            did: v.did,
            consumer: parties(0),
            provider: parties(1),
            created_at: v.createdAt,
            conditions,
            escrow,
            algorithm_hash: nonzero(algorithm),
            receipt_hash: nonzero(receipt),
            output_did: nonzero(output),
        })
    }

    /// The receipt hash committed by the release of an agreement, if released.
    pub async fn receipt_hash(&self, id: B256) -> Result<Option<B256>> {
        let c = &self.contracts;
        Ok(nonzero(self.view(c.escrow_reward, EscrowReward::receiptHashOfCall { agreementId: id }).await?))
    }

    /// True while `consumer` may run the agreement's job (granted, not yet released or refunded).
    pub async fn check_permissions(&self, id: B256, consumer: Address) -> Result<bool> {
        let call = ComputeGrantCondition::checkPermissionsCall { agreementId: id, consumer };
        self.view(self.contracts.compute_grant_condition, call).await
    }

    /// A token balance.
    pub async fn balance(&self, who: Address) -> Result<U256> {
        self.view(self.contracts.token, TidepoolTestToken::balanceOfCall(who)).await
    }

    /// How many of `owner`'s tokens `spender` may still move (ERC-20 `allowance`).
    pub async fn allowance(&self, owner: Address, spender: Address) -> Result<U256> {
        self.view(self.contracts.token, TidepoolTestToken::allowanceCall { _0: owner, _1: spender }).await
    }

    /// A DID's register.
    pub async fn did(&self, did: B256) -> Result<DidRecord> {
        let r = self.view(self.contracts.did_registry, DIDRegistry::getAttributeCall { did }).await?;
        Ok(DidRecord { owner: r.owner, checksum: r.checksum, url: r.url, updated_at: r.updatedAt })
    }
}
