//! What reads return: an agreement with its conditions and escrow, and a DID's register.

use alloy::primitives::{Address, B256, U256};

/// The condition's status on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// Not fulfilled (yet, or ever: a condition past its deadline stays so).
    Unfulfilled,
    /// Fulfilled by its control contract.
    Fulfilled,
}

/// One condition of an agreement, as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainCondition {
    /// The template's name for it (`lockPayment`...), when its key is the compute template's.
    pub name: Option<&'static str>,
    /// Its key: `keccak256(templateId, controlContract, selector)`, as a DDO lists it.
    pub key: B256,
    /// Fulfilled or not.
    pub status: ConditionStatus,
    /// The contract that alone may fulfill it.
    pub control_contract: Address,
    /// The keys of the conditions that must be fulfilled before it.
    pub dependencies: Vec<B256>,
    /// Seconds after creation; 0 for none.
    pub timeout: u64,
    /// Unix seconds: creation time plus `timeout`; `None` when it has no timeout.
    pub deadline: Option<u64>,
    /// Unix seconds (the fulfilling block's timestamp); `None` while unfulfilled.
    pub fulfilled_at: Option<u64>,
    /// The hash of its values that the consumer signed (what the fulfilling call must match).
    pub values_hash: B256,
}

/// Where an agreement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgreementState {
    /// Neither released nor refunded: conditions may still be fulfilled.
    Active,
    /// `releasePayment` is fulfilled: the provider was paid and the receipt hash committed.
    Released,
    /// `refundPayment` is fulfilled: the consumer took the escrow back.
    Refunded,
}

/// An agreement with its conditions and what the escrow holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainAgreement {
    /// The agreement's id.
    pub id: B256,
    /// Where it stands, from its closing conditions.
    pub state: AgreementState,
    /// The template it follows.
    pub template_id: B256,
    /// The DID of the dataset it buys computation on.
    pub did: B256,
    /// Who pays and runs the algorithm.
    pub consumer: Address,
    /// Who runs the job and is paid for it.
    pub provider: Address,
    /// Unix seconds (the block's timestamp).
    pub created_at: u64,
    /// Its conditions, in the template's order.
    pub conditions: Vec<OnChainCondition>,
    /// Tokens in escrow now.
    pub escrow: U256,
    /// The algorithm's hash, once `uploadAlgorithm` is fulfilled.
    pub algorithm_hash: Option<B256>,
    /// The receipt hash the release committed, once released.
    pub receipt_hash: Option<B256>,
    /// The DID of the outputs' asset, once published.
    pub output_did: Option<B256>,
}

impl OnChainAgreement {
    /// The condition the template names `name` (`lockPayment`...), if the agreement has it.
    pub fn condition(&self, name: &str) -> Option<&OnChainCondition> {
        self.conditions.iter().find(|c| c.name == Some(name))
    }

    /// True when the condition named `name` is fulfilled (false when there is none).
    pub fn is_fulfilled(&self, name: &str) -> bool {
        self.condition(name).is_some_and(|c| c.status == ConditionStatus::Fulfilled)
    }
}

/// A DID's register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DidRecord {
    /// Who registered it (and alone may update it).
    pub owner: Address,
    /// Which data the asset is (for a dataset asset, its inputs hashed as a receipt encodes them).
    pub checksum: B256,
    /// Where its DDO is.
    pub url: String,
    /// Unix seconds of the last registration.
    pub updated_at: u64,
}
