//! The keeper: agreements and their conditions, payments, and the ordered event log, behind
//! one trait. [`embedded::EmbeddedKeeper`] keeps them in the provider's SQLite database with a
//! token ledger; an EVM keeper (Solidity contracts) can implement the same trait, and nothing
//! above this module knows which one it talks to.
//!
//! A condition can only be fulfilled while its deadline (creation + timeout) has not passed and
//! once all its dependencies are; each fulfilment emits its event. The payment conditions move
//! tokens: `lockPayment` from the consumer into escrow, `releasePayment` the fuel actually used
//! (times the price) to the provider and the rest back to the consumer, `refundPayment` all of
//! it back when the provider missed a deadline.

pub mod embedded;

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

use crate::protocol::agreement::{Agreement, AgreementState, Payout};
use crate::protocol::ddo::Did;
use crate::protocol::events::{EventNote, KeeperEvent};
use crate::protocol::template::{ConditionName, Controllers};
use crate::store::DbError;

/// What a new agreement is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAgreement {
    pub id: B256,
    pub did: Did,
    pub template_id: B256,
    pub consumer: Address,
    pub provider: Address,
    pub price_per_fuel: U256,
    pub max_fuel: u64,
    pub conditions: Vec<ConditionInit>,
}

/// One condition of a new agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionInit {
    pub name: ConditionName,
    pub key: B256,
    pub values_hash: B256,
    /// Seconds after creation; 0 for no deadline.
    pub timeout: u64,
    pub dependencies: Vec<ConditionName>,
}

/// Why the keeper refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    #[error("no agreement {0}")]
    NotFound(B256),
    #[error("agreement {0} exists already")]
    AlreadyExists(B256),
    #[error("condition `{condition}` is fulfilled already")]
    AlreadyFulfilled { condition: ConditionName },
    #[error("the outputs of agreement {0} are published already")]
    OutputAlreadyPublished(B256),
    #[error("condition `{condition}` cannot be fulfilled before `{missing}`")]
    DependencyUnfulfilled { condition: ConditionName, missing: ConditionName },
    #[error("condition `{condition}` timed out at {deadline}")]
    TimedOut { condition: ConditionName, deadline: u64 },
    #[error("only the agreement's {role} may do this")]
    NotParty { role: &'static str },
    #[error("insufficient balance: {needed} needed, {available} available")]
    InsufficientBalance { needed: U256, available: U256 },
    #[error("the agreement is {state:?}")]
    Closed { state: AgreementState },
    #[error("no refund yet: {0}")]
    NotRefundable(String),
    #[error("invalid agreement: {0}")]
    Invalid(String),
    #[error("this keeper does not support {0}")]
    Unsupported(&'static str),
    #[error("the keeper's storage failed")]
    Storage(#[from] DbError),
    #[error("the keeper's storage holds a value it cannot read: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for KeeperError {
    fn from(e: sqlx::Error) -> Self {
        KeeperError::Storage(DbError(e))
    }
}

pub type KeeperResult<T> = Result<T, KeeperError>;

/// Agreements, conditions, payments and events.
#[async_trait]
pub trait Keeper: Send + Sync + fmt::Debug {
    /// `embedded` or `evm`, as DDOs record it.
    fn kind(&self) -> &'static str;
    fn chain_id(&self) -> u64;
    /// The addresses of the condition controllers (they go into condition keys).
    fn controllers(&self) -> &Controllers;

    /// Creates an agreement; emits `ExecuteAgreement`.
    async fn create_agreement(&self, agreement: NewAgreement) -> KeeperResult<Agreement>;
    async fn agreement(&self, id: B256) -> KeeperResult<Agreement>;
    /// The consumer locks `max_fuel × price`; emits `PaymentLocked`.
    async fn lock_payment(&self, id: B256, payer: Address) -> KeeperResult<()>;
    /// Records the uploaded algorithm; emits `FulfillUpload`.
    async fn fulfill_upload(&self, id: B256, algorithm_hash: B256) -> KeeperResult<()>;
    /// Emits `ComputeGranted`.
    async fn grant_compute(&self, id: B256) -> KeeperResult<()>;
    /// Pays the provider for `fuel_consumed` and returns the rest; emits `PaymentReleased`.
    async fn release_payment(&self, id: B256, receipt_hash: B256, fuel_consumed: u64) -> KeeperResult<Payout>;
    /// Returns the escrow to the consumer after a missed deadline; emits `PaymentRefund`.
    async fn refund_payment(&self, id: B256, caller: Address) -> KeeperResult<U256>;
    /// Records the DID of the outputs; emits `OutputPublished`.
    async fn publish_output(&self, id: B256, did: Did) -> KeeperResult<()>;

    /// Events after `after`, optionally of one agreement, oldest first.
    async fn events_after(&self, after: u64, agreement: Option<B256>, limit: u32) -> KeeperResult<Vec<KeeperEvent>>;
    /// Hears of every new event, once committed: its id and agreement, so that a waiter for
    /// one agreement need not look at others'. A receiver that falls behind gets `Lagged` and
    /// should read the log again.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EventNote>;

    async fn balance(&self, who: Address) -> KeeperResult<U256>;
    /// Adds tokens to an account (development faucet, operator credit).
    async fn credit(&self, who: Address, amount: U256) -> KeeperResult<U256>;
}
