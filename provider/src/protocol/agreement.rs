//! Agreements as a keeper holds them (and `GET /api/v1/keeper/agreements/{id}` shows them):
//! parties, terms, conditions, escrow and outcome.

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

use super::ddo::Did;
use super::template::ConditionName;

/// Where a condition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionStatus {
    Unfulfilled,
    Fulfilled,
}

/// A condition of an agreement, as the keeper holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub name: ConditionName,
    pub key: B256,
    pub values_hash: B256,
    pub timeout: u64,
    /// Unix seconds; absent when the condition has no deadline.
    pub deadline: Option<u64>,
    pub dependencies: Vec<ConditionName>,
    pub status: ConditionStatus,
    pub fulfilled_at: Option<u64>,
}

super::named::named_enum! {
    /// Where an agreement stands.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum AgreementState("an agreement state") {
        Active = "active",
        Released = "released",
        Refunded = "refunded",
    }
}

/// An agreement, as the keeper holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    pub id: B256,
    pub did: Did,
    pub template_id: B256,
    pub consumer: Address,
    pub provider: Address,
    pub price_per_fuel: U256,
    pub max_fuel: u64,
    /// Tokens held in escrow now.
    pub escrow: U256,
    pub state: AgreementState,
    pub conditions: Vec<Condition>,
    pub algorithm_hash: Option<B256>,
    pub receipt_hash: Option<B256>,
    pub output_did: Option<Did>,
    pub provider_paid: Option<U256>,
    pub consumer_refunded: Option<U256>,
    pub created_at: u64,
}

impl Agreement {
    /// The condition named `name`, if the agreement has it.
    pub fn condition(&self, name: ConditionName) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.name == name)
    }

    /// Is the condition named `name` fulfilled?
    pub fn is_fulfilled(&self, name: ConditionName) -> bool {
        self.condition(name).is_some_and(|c| c.status == ConditionStatus::Fulfilled)
    }

    /// The condition's deadline (Unix seconds), if it has one.
    pub fn deadline(&self, name: ConditionName) -> Option<u64> {
        self.condition(name).and_then(|c| c.deadline)
    }
}

/// How a release split the escrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payout {
    pub provider_amount: U256,
    pub consumer_refund: U256,
}
