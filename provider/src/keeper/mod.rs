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
pub mod evm;

use std::fmt;

use alloy_primitives::{Address, B256, Signature, U256};
use alloy_sol_types::Eip712Domain;
use async_trait::async_trait;
use tidepool_runtime::Receipt;

use crate::protocol::agreement::{Agreement, AgreementState, Payout};
use crate::protocol::ddo::Did;
use crate::protocol::events::{EventNote, KeeperEvent};
use crate::protocol::template::{ConditionName, Controllers};
use crate::store::DbError;

/// What a new agreement is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAgreement {
    /// The agreement's id (chosen by the consumer).
    pub id: B256,
    /// The dataset asset.
    pub did: Did,
    /// The template its conditions are from.
    pub template_id: B256,
    /// Who pays.
    pub consumer: Address,
    /// Who computes and is paid.
    pub provider: Address,
    /// Token base units per unit of fuel.
    pub price_per_fuel: U256,
    /// Fuel the job may burn at most; the escrow is `price_per_fuel * max_fuel`.
    pub max_fuel: u64,
    /// Its conditions, in the template's order.
    pub conditions: Vec<ConditionInit>,
    /// The consumer's EIP-712 signature over the `ServiceAgreement` (under
    /// [`Keeper::agreement_domain`]): a chain keeper has its contract check it again.
    pub signature: Signature,
}

/// One condition of a new agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionInit {
    /// The condition.
    pub name: ConditionName,
    /// Its key: keccak256(templateId, controller, selector).
    pub key: B256,
    /// The hash of its parameters' values.
    pub values_hash: B256,
    /// Seconds after creation; 0 for no deadline.
    pub timeout: u64,
    /// The conditions that must be fulfilled first.
    pub dependencies: Vec<ConditionName>,
}

/// Why the keeper refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// No agreement has this id (404).
    #[error("no agreement {0}")]
    NotFound(B256),
    /// An agreement with this id exists (409).
    #[error("agreement {0} exists already")]
    AlreadyExists(B256),
    /// The condition is fulfilled already: the step was done (409).
    #[error("condition `{condition}` is fulfilled already")]
    AlreadyFulfilled {
        /// The condition.
        condition: ConditionName,
    },
    /// The agreement's outputs are published already (409).
    #[error("the outputs of agreement {0} are published already")]
    OutputAlreadyPublished(B256),
    /// A dependency of the condition is not fulfilled yet (409).
    #[error("condition `{condition}` cannot be fulfilled before `{missing}`")]
    DependencyUnfulfilled {
        /// The condition asked for.
        condition: ConditionName,
        /// The dependency not fulfilled yet.
        missing: ConditionName,
    },
    /// The condition's deadline passed (409).
    #[error("condition `{condition}` timed out at {deadline}")]
    TimedOut {
        /// The condition.
        condition: ConditionName,
        /// Its deadline (Unix seconds).
        deadline: u64,
    },
    /// The caller is not the party the step belongs to (403).
    #[error("only the agreement's {role} may do this")]
    NotParty {
        /// Whose step it is (e.g. `consumer`).
        role: &'static str,
    },
    /// The payer's balance is too low for the escrow (402).
    #[error("insufficient balance: {needed} needed, {available} available")]
    InsufficientBalance {
        /// The escrow asked for.
        needed: U256,
        /// The payer's balance.
        available: U256,
    },
    /// The agreement was released or refunded already (409).
    #[error("the agreement is {state:?}")]
    Closed {
        /// Where the agreement stands.
        state: AgreementState,
    },
    /// A refund before any deadline the provider missed (409).
    #[error("no refund yet: {0}")]
    NotRefundable(String),
    /// The agreement or a step's input is invalid (400).
    #[error("invalid agreement: {0}")]
    Invalid(String),
    /// This keeper does not do this (e.g. a chain keeper's payments are the consumer's own transactions) (400).
    #[error("this keeper does not support {0}")]
    Unsupported(&'static str),
    /// The keeper (a contract) refused the receipt as not matching the agreement.
    #[error("the receipt does not match the agreement: {0}")]
    ReceiptRefused(String),
    /// The keeper could not be reached or did not answer (a chain node): worth retrying.
    #[error("the keeper is unreachable")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The embedded keeper's database failed (503 when transient, else 500).
    #[error("the keeper's storage failed")]
    Storage(#[from] DbError),
    /// A stored value does not parse (500).
    #[error("the keeper's storage holds a value it cannot read: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for KeeperError {
    fn from(e: sqlx::Error) -> Self {
        KeeperError::Storage(DbError(e))
    }
}

/// What the keeper's calls return.
pub type KeeperResult<T> = Result<T, KeeperError>;

/// Agreements, conditions, payments and events.
#[async_trait]
pub trait Keeper: Send + Sync + fmt::Debug {
    /// `embedded` or `evm`, as DDOs record it.
    fn kind(&self) -> &'static str;
    /// The chain id of the EIP-712 domains (the embedded keeper's is configured).
    fn chain_id(&self) -> u64;
    /// The addresses of the condition controllers (they go into condition keys).
    fn controllers(&self) -> &Controllers;
    /// The domain consumers sign agreements (`ServiceAgreement`) and algorithms (`Algorithm`)
    /// under: the provider's for the embedded keeper, the agreement store contract's on a
    /// chain (where the contracts check them).
    fn agreement_domain(&self) -> &Eip712Domain;
    /// Whether consumers lock and refund payments themselves, with their own wallets (a
    /// chain), rather than through the provider's keeper facade.
    fn consumer_pays_directly(&self) -> bool {
        false
    }

    /// Creates an agreement; emits `ExecuteAgreement`.
    async fn create_agreement(&self, agreement: NewAgreement) -> KeeperResult<Agreement>;
    /// The agreement `id` as the keeper holds it.
    async fn agreement(&self, id: B256) -> KeeperResult<Agreement>;
    /// The consumer locks `max_fuel × price`; emits `PaymentLocked`. (On a chain, consumers
    /// lock from their own wallets: [`KeeperError::Unsupported`].)
    async fn lock_payment(&self, id: B256, payer: Address) -> KeeperResult<()>;
    /// Records the uploaded algorithm, with the consumer's signed checksum
    /// (`Algorithm(serviceAgreementId, algorithmHash)` under the agreement domain); emits
    /// `FulfillUpload`.
    async fn fulfill_upload(&self, id: B256, algorithm_hash: B256, signature: Signature) -> KeeperResult<()>;
    /// Emits `ComputeGranted`.
    async fn grant_compute(&self, id: B256) -> KeeperResult<()>;
    /// Pays the provider for the receipt's fuel and returns the rest, committing the receipt's
    /// hash; emits `PaymentReleased`. A job that produced no receipt (`None`) pays nothing:
    /// the embedded keeper returns the whole escrow at once; a chain keeper cannot release
    /// without a receipt ([`KeeperError::Unsupported`]), and the consumer is refunded after
    /// the deadline.
    async fn release_payment(&self, id: B256, receipt: Option<&Receipt>) -> KeeperResult<Payout>;
    /// Returns the escrow to the consumer after a missed deadline; emits `PaymentRefund`. (On
    /// a chain, the consumer's own transaction: [`KeeperError::Unsupported`].)
    async fn refund_payment(&self, id: B256, caller: Address) -> KeeperResult<U256>;
    /// Records the DID of the outputs; emits `OutputPublished`.
    async fn publish_output(&self, id: B256, did: Did) -> KeeperResult<()>;
    /// Registers a published dataset asset: its DID, the tree roots of its datasets (by name),
    /// and where it is served. On a chain this is the DID registry, which release checks a
    /// receipt's inputs against; the embedded keeper keeps nothing.
    async fn register_asset(&self, did: Did, datasets: &[(String, B256)], url: &str) -> KeeperResult<()>;

    /// Events after `after`, optionally of one agreement, oldest first.
    async fn events_after(&self, after: u64, agreement: Option<B256>, limit: u32) -> KeeperResult<Vec<KeeperEvent>>;
    /// Hears of every new event, once committed: its id and agreement, so that a waiter for
    /// one agreement need not look at others'. A receiver that falls behind gets `Lagged` and
    /// should read the log again.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EventNote>;

    /// The token balance of `who`, in base units.
    async fn balance(&self, who: Address) -> KeeperResult<U256>;
    /// Adds tokens to an account (development faucet, operator credit).
    async fn credit(&self, who: Address, amount: U256) -> KeeperResult<U256>;
}
