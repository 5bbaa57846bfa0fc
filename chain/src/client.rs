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
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::Signer;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolCall, SolStruct};

use crate::bindings::{
    self, AgreementStore, ComputeGrantCondition, ComputeUploadCondition, DIDRegistry, EscrowReward,
    LockPaymentCondition, TidepoolTestToken, eip712,
};
use crate::deploy::Contracts;
use crate::error::{ChainError, Result};
use crate::events::{AgreementEvent, decode_logs};
pub use crate::sender::{RetryPolicy, TxOutcome, TxSender};
use crate::template::{self, CONDITIONS, REFUND_PAYMENT, RELEASE_PAYMENT};
use crate::transport::HttpTransport;

/// How to talk to the node.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// Each HTTP request's timeout.
    pub request_timeout: Duration,
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

/// The condition's status on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    Unfulfilled,
    Fulfilled,
}

/// One condition of an agreement, as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainCondition {
    /// The template's name for it (`lockPayment`...), when its key is the compute template's.
    pub name: Option<&'static str>,
    pub key: B256,
    pub status: ConditionStatus,
    pub control_contract: Address,
    pub dependencies: Vec<B256>,
    /// Seconds after creation; 0 for none.
    pub timeout: u64,
    pub deadline: Option<u64>,
    pub fulfilled_at: Option<u64>,
    pub values_hash: B256,
}

/// Where an agreement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgreementState {
    Active,
    Released,
    Refunded,
}

/// An agreement with its conditions and what the escrow holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainAgreement {
    pub id: B256,
    pub state: AgreementState,
    pub template_id: B256,
    pub did: B256,
    pub consumer: Address,
    pub provider: Address,
    /// Unix seconds (the block's timestamp).
    pub created_at: u64,
    pub conditions: Vec<OnChainCondition>,
    /// Tokens in escrow now.
    pub escrow: U256,
    pub algorithm_hash: Option<B256>,
    pub receipt_hash: Option<B256>,
    pub output_did: Option<B256>,
}

impl OnChainAgreement {
    pub fn condition(&self, name: &str) -> Option<&OnChainCondition> {
        self.conditions.iter().find(|c| c.name == Some(name))
    }

    pub fn is_fulfilled(&self, name: &str) -> bool {
        self.condition(name).is_some_and(|c| c.status == ConditionStatus::Fulfilled)
    }
}

/// A DID's register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DidRecord {
    pub owner: Address,
    pub checksum: B256,
    pub url: String,
    pub updated_at: u64,
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

    pub async fn chain_id(&self) -> Result<u64> {
        self.retry("chain id", || async { Ok(self.provider.get_chain_id().await?) }).await
    }

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

    pub async fn allowance(&self, owner: Address, spender: Address) -> Result<U256> {
        self.view(self.contracts.token, TidepoolTestToken::allowanceCall { _0: owner, _1: spender }).await
    }

    /// A DID's register.
    pub async fn did(&self, did: B256) -> Result<DidRecord> {
        let r = self.view(self.contracts.did_registry, DIDRegistry::getAttributeCall { did }).await?;
        Ok(DidRecord { owner: r.owner, checksum: r.checksum, url: r.url, updated_at: r.updatedAt })
    }
}

/// A party (provider or consumer) acting with its own key. Cheap to clone; clones share one
/// nonce sequence, so many transactions can be in flight at once.
#[derive(Clone, Debug)]
pub struct Agent {
    chain: Chain,
    key: PrivateKeySigner,
    sender: Arc<TxSender>,
}

/// The split a release made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub receipt_hash: B256,
    pub provider_amount: U256,
    pub consumer_refund: U256,
}

impl Agent {
    pub fn address(&self) -> Address {
        self.sender.address()
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    async fn send<C: SolCall>(&self, to: Address, call: C) -> Result<TxOutcome> {
        self.sender.call(to, call.abi_encode().into()).await
    }

    /// The one event of `outcome` (e.g. `PaymentReleased` of a release).
    fn event_of(&self, outcome: &TxOutcome, pick: impl Fn(&AgreementEvent) -> bool) -> Option<AgreementEvent> {
        decode_logs(&self.chain.contracts, &outcome.logs).into_iter().map(|e| e.event).find(pick)
    }

    async fn sign<T: SolStruct + Sync>(&self, value: &T) -> Result<Bytes> {
        let hash = value.eip712_signing_hash(&self.chain.domain());
        let signature = self.key.sign_hash(&hash).await.map_err(ChainError::Signing)?;
        Ok(signature.as_bytes().into())
    }

    // --- the consumer --------------------------------------------------------------------

    /// The consumer's signature of an agreement (see [`template::service_agreement`]).
    pub async fn sign_service_agreement(&self, agreement: &eip712::ServiceAgreement) -> Result<Bytes> {
        self.sign(agreement).await
    }

    /// The consumer's signature of the algorithm it uploads for an agreement.
    pub async fn sign_algorithm(&self, agreement_id: B256, algorithm_hash: B256) -> Result<Bytes> {
        self.sign(&eip712::Algorithm { serviceAgreementId: agreement_id, algorithmHash: algorithm_hash }).await
    }

    /// Locks `amount` (the agreement's `maxFuel × pricePerFuel`) from the consumer's wallet:
    /// approves the escrow for it if the allowance is short, then `lockPayment`. Returns both
    /// transactions (the approval is `None` when none was needed). One consumer's locks should
    /// not run concurrently: they share its allowance.
    pub async fn lock_payment(
        &self,
        agreement_id: B256,
        provider: Address,
        amount: U256,
    ) -> Result<(Option<TxOutcome>, TxOutcome)> {
        let c = &self.chain.contracts;
        let approval = if self.chain.allowance(self.address(), c.escrow_reward).await? < amount {
            Some(self.approve(c.escrow_reward, amount).await?)
        } else {
            None
        };
        let call = LockPaymentCondition::lockPaymentCall { agreementId: agreement_id, provider, amount };
        Ok((approval, self.send(c.lock_payment_condition, call).await?))
    }

    /// Takes the escrow back after the provider missed a deadline. Returns the amount.
    pub async fn refund_payment(&self, agreement_id: B256) -> Result<(TxOutcome, U256)> {
        let call = EscrowReward::refundPaymentCall { agreementId: agreement_id };
        let out = self.send(self.chain.contracts.escrow_reward, call).await?;
        let amount = match self.event_of(&out, |e| matches!(e, AgreementEvent::PaymentRefund { .. })) {
            Some(AgreementEvent::PaymentRefund { amount }) => amount,
            _ => U256::ZERO,
        };
        Ok((out, amount))
    }

    // --- the provider --------------------------------------------------------------------

    /// Creates the agreement the consumer signed, with the caller as its provider.
    pub async fn initialize_agreement(
        &self,
        did: B256,
        consumer: Address,
        agreement: &eip712::ServiceAgreement,
        signature: Bytes,
    ) -> Result<TxOutcome> {
        let call = AgreementStore::initializeAgreementCall {
            agreementId: agreement.serviceAgreementId,
            templateId: agreement.templateId,
            did,
            consumer,
            conditionKeys: agreement.conditionKeys.clone(),
            valuesHashList: agreement.valuesHashList.clone(),
            timeouts: agreement.timeouts.clone(),
            signature,
        };
        self.send(self.chain.contracts.agreement_store, call).await
    }

    /// Fulfills `uploadAlgorithm` with the consumer's signed algorithm hash.
    pub async fn fulfill_upload(
        &self,
        agreement_id: B256,
        algorithm_hash: B256,
        signature: Bytes,
    ) -> Result<TxOutcome> {
        let call = ComputeUploadCondition::fulfillUploadCall {
            agreementId: agreement_id,
            algorithmHash: algorithm_hash,
            signature,
        };
        self.send(self.chain.contracts.compute_upload_condition, call).await
    }

    /// Fulfills `grantCompute` for the agreement's consumer.
    pub async fn grant_compute(&self, agreement_id: B256, consumer: Address) -> Result<TxOutcome> {
        let call = ComputeGrantCondition::grantComputeCall { agreementId: agreement_id, consumer };
        self.send(self.chain.contracts.compute_grant_condition, call).await
    }

    /// Releases the payment for the job's receipt: the contract checks the receipt against the
    /// agreement, commits its hash and splits the escrow.
    pub async fn release_payment(
        &self,
        agreement_id: B256,
        price_per_fuel: U256,
        max_fuel: u64,
        receipt: EscrowReward::Receipt,
    ) -> Result<(TxOutcome, Released)> {
        let call = EscrowReward::releasePaymentCall {
            agreementId: agreement_id,
            pricePerFuel: price_per_fuel,
            maxFuel: max_fuel,
            receipt,
        };
        let out = self.send(self.chain.contracts.escrow_reward, call).await?;
        match self.event_of(&out, |e| matches!(e, AgreementEvent::PaymentReleased { .. })) {
            Some(AgreementEvent::PaymentReleased { receipt_hash, provider_amount, consumer_refund }) => {
                Ok((out, Released { receipt_hash, provider_amount, consumer_refund }))
            }
            _ => Err(ChainError::Invalid(format!("release {} emitted no PaymentReleased", out.tx_hash))),
        }
    }

    /// Registers the released agreement's outputs as an asset owned by its consumer.
    pub async fn publish_output(&self, agreement_id: B256, output_did: B256, url: String) -> Result<TxOutcome> {
        let call = EscrowReward::publishOutputCall { agreementId: agreement_id, outputDid: output_did, url };
        self.send(self.chain.contracts.escrow_reward, call).await
    }

    /// Registers (or, as its owner, updates) a DID.
    pub async fn register_attribute(&self, did: B256, checksum: B256, url: String) -> Result<TxOutcome> {
        let call = DIDRegistry::registerAttributeCall { did, checksum, url };
        self.send(self.chain.contracts.did_registry, call).await
    }

    // --- the token -----------------------------------------------------------------------

    pub async fn approve(&self, spender: Address, amount: U256) -> Result<TxOutcome> {
        self.send(self.chain.contracts.token, TidepoolTestToken::approveCall { spender, amount }).await
    }

    pub async fn transfer(&self, to: Address, amount: U256) -> Result<TxOutcome> {
        self.send(self.chain.contracts.token, TidepoolTestToken::transferCall { to, amount }).await
    }

    /// Mints test tokens (the test token's deployer only).
    pub async fn mint(&self, to: Address, amount: U256) -> Result<TxOutcome> {
        self.send(self.chain.contracts.token, TidepoolTestToken::mintCall { to, amount }).await
    }

    /// Sends any call from this agent (for what has no typed function here).
    pub async fn send_raw(&self, to: Address, input: Bytes) -> Result<TxOutcome> {
        self.sender.call(to, input).await
    }
}
