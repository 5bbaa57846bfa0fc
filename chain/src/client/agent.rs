//! [`Agent`]: one party acting with its key, one typed function per step of the agreement.

use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::Signer;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolStruct};

use super::Chain;
use crate::bindings::{
    AgreementStore, ComputeGrantCondition, ComputeUploadCondition, DIDRegistry, EscrowReward, LockPaymentCondition,
    TidepoolTestToken, eip712,
};
use crate::error::{ChainError, Result};
use crate::events::{AgreementEvent, decode_logs};
use crate::sender::{TxOutcome, TxSender};

/// A party (provider or consumer) acting with its own key. Cheap to clone; clones share one
/// nonce sequence, so many transactions can be in flight at once.
#[derive(Clone, Debug)]
pub struct Agent {
    pub(super) chain: Chain,
    pub(super) key: PrivateKeySigner,
    pub(super) sender: Arc<TxSender>,
}

/// The split a release made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The receipt hash committed on chain.
    pub receipt_hash: B256,
    /// Tokens paid to the provider (price per fuel × fuel used, at most the escrow).
    pub provider_amount: U256,
    /// Tokens returned to the consumer (the rest of the escrow).
    pub consumer_refund: U256,
}

impl Agent {
    /// The agent's address (its key's).
    pub fn address(&self) -> Address {
        self.sender.address()
    }

    /// The chain it acts on.
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

    /// The consumer's signature of an agreement (see
    /// [`service_agreement`](crate::template::service_agreement)).
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
        let amount = match self.event_of(&out, |e| matches!(e, AgreementEvent::PaymentRefund(_))) {
            Some(AgreementEvent::PaymentRefund(refund)) => refund.amount,
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
        match self.event_of(&out, |e| matches!(e, AgreementEvent::PaymentReleased(_))) {
            Some(AgreementEvent::PaymentReleased(r)) => Ok((
                out,
                Released {
                    receipt_hash: r.receiptHash,
                    provider_amount: r.providerAmount,
                    consumer_refund: r.consumerRefund,
                },
            )),
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

    /// Lets `spender` move up to `amount` of the agent's tokens (ERC-20 `approve`).
    pub async fn approve(&self, spender: Address, amount: U256) -> Result<TxOutcome> {
        self.send(self.chain.contracts.token, TidepoolTestToken::approveCall { spender, amount }).await
    }

    /// Sends `amount` tokens to `to` (ERC-20 `transfer`).
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
