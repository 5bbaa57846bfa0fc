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
    /// Not fulfilled (yet: it may still be, until its deadline).
    Unfulfilled,
    /// Fulfilled by its controller.
    Fulfilled,
}

/// A condition of an agreement, as the keeper holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which condition of the template.
    pub name: ConditionName,
    /// Its key: keccak256(templateId, controller, selector).
    pub key: B256,
    /// The hash of its parameters' values, fixed when the agreement is created.
    pub values_hash: B256,
    /// Seconds after the agreement's creation by which it must be fulfilled (0: none).
    pub timeout: u64,
    /// Unix seconds; absent when the condition has no deadline.
    pub deadline: Option<u64>,
    /// The conditions that must be fulfilled first.
    pub dependencies: Vec<ConditionName>,
    /// Whether it is fulfilled.
    pub status: ConditionStatus,
    /// When it was fulfilled (Unix seconds).
    pub fulfilled_at: Option<u64>,
}

super::named::named_enum! {
    /// Where an agreement stands.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum AgreementState("an agreement state") {
        /// Created; its escrow (if any) is held until a release or a refund.
        Active = "active",
        /// The payment was released: the provider paid for the fuel used, the rest refunded.
        Released = "released",
        /// The consumer took the escrow back after a missed deadline.
        Refunded = "refunded",
    }
}

/// An agreement, as the keeper holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// The agreement's id (chosen by the consumer).
    pub id: B256,
    /// The dataset asset it buys compute on.
    pub did: Did,
    /// The template whose conditions it has.
    pub template_id: B256,
    /// Who pays and runs the algorithm.
    pub consumer: Address,
    /// Who computes and is paid.
    pub provider: Address,
    /// Token base units per unit of fuel.
    pub price_per_fuel: U256,
    /// Fuel the job may burn at most; the escrow is `price_per_fuel * max_fuel`.
    pub max_fuel: u64,
    /// Tokens held in escrow now.
    pub escrow: U256,
    /// Where it stands.
    pub state: AgreementState,
    /// Its conditions, in the template's order.
    pub conditions: Vec<Condition>,
    /// The uploaded algorithm's hash (once the upload condition is fulfilled).
    pub algorithm_hash: Option<B256>,
    /// The job's receipt hash, committed with the release.
    pub receipt_hash: Option<B256>,
    /// The asset published from the job's outputs.
    pub output_did: Option<Did>,
    /// What the release paid the provider.
    pub provider_paid: Option<U256>,
    /// What went back to the consumer (on release or refund).
    pub consumer_refunded: Option<U256>,
    /// When it was created (Unix seconds); condition deadlines count from it.
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
    /// Paid to the provider: the fuel used times the price.
    pub provider_amount: U256,
    /// Returned to the consumer: the rest of the escrow.
    pub consumer_refund: U256,
}
