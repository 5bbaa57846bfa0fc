//! The EVM keeper: the agreement as Solidity contracts on a real chain (`contracts/`), driven
//! with the `tidepool-chain` crate. The provider acts with its own key (initialize with the
//! consumer's signature, fulfil the upload, grant, release with the receipt, publish outputs,
//! register datasets); consumers lock and refund from their own wallets, never through the
//! provider ([`Keeper::consumer_pays_directly`]).
//!
//! The event log is the chain's: an event's id is its position (`block × 2²⁴ + log index`),
//! so the dispatcher's persisted cursor is a block cursor, and a restarted provider reads what
//! it missed. Only blocks `confirmations` deep are read. The terms the contracts do not store
//! (price per fuel and the maximum fuel, which `releasePayment` must be given) are kept in the
//! table `evm_agreements`, owned here.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, Signature, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use async_trait::async_trait;
use tidepool_chain::client::ConditionStatus as ChainConditionStatus;
use tidepool_chain::{Agent, Chain, ChainConfig, ChainError, ChainEvent, Contracts, EventReader, OnChainAgreement};
use tidepool_runtime::Receipt;
use tokio::sync::broadcast;

use super::{Keeper, KeeperError, KeeperResult, NewAgreement};
use crate::protocol::agreement::{Agreement, AgreementState, Condition, ConditionStatus, Payout};
use crate::protocol::ddo::Did;
use crate::protocol::eip712::ServiceAgreement;
use crate::protocol::events::{EventNote, KeeperEvent};
use crate::protocol::signing::unix_now;
use crate::protocol::template::{ConditionName, Controller, Controllers};
use crate::store::{Db, Text};

/// How the provider reaches its chain.
#[derive(Clone, Debug)]
pub struct EvmConfig {
    /// The node's JSON-RPC URL.
    pub rpc: String,
    /// Where the contracts are (`tidepool chain deploy` writes it).
    pub contracts: Contracts,
    /// Blocks an event must be under before it is read (0: the head).
    pub confirmations: u64,
    /// How often new blocks are polled for events.
    pub poll: Duration,
    /// The provider's base URL, registered with its assets.
    pub base_url: String,
}

/// The keeper on an EVM chain.
#[derive(Debug)]
pub struct EvmKeeper {
    chain: Chain,
    agent: Agent,
    config: EvmConfig,
    controllers: Controllers,
    domain: Eip712Domain,
    chain_id: u64,
    /// Owns the table `evm_agreements`.
    db: Db,
    notes: broadcast::Sender<EventNote>,
}

impl EvmKeeper {
    /// Connects to the chain (checking that the contracts are there) as `provider`, and starts
    /// following its events.
    pub async fn connect(config: EvmConfig, provider: PrivateKeySigner, db: Db) -> KeeperResult<Arc<Self>> {
        let chain =
            Chain::connect(&config.rpc, config.contracts.clone(), ChainConfig::default()).await.map_err(chain)?;
        let agent = chain.agent(provider);
        let controllers = Controllers(Controller::ALL.iter().map(|c| (*c, config.contracts.controller(*c))).collect());
        let keeper = Arc::new(Self {
            domain: chain.domain(),
            chain_id: config.contracts.chain_id,
            chain,
            agent,
            controllers,
            config,
            db,
            notes: broadcast::Sender::new(4096),
        });
        keeper.clone().follow().await?;
        Ok(keeper)
    }

    /// Tells subscribers of every new event, from the current head on.
    async fn follow(self: Arc<Self>) -> KeeperResult<()> {
        let head = self.chain.block_number().await.map_err(chain)?;
        let reader = EventReader::new(self.chain.clone(), head + 1, self.config.confirmations);
        let subscription = reader.spawn(self.config.poll);
        let mut events = subscription.subscribe();
        let notes = self.notes.clone();
        tokio::spawn(async move {
            // The subscription polls as long as it is held.
            let _subscription = subscription;
            loop {
                match events.recv().await {
                    Ok(e) => {
                        let _ = notes.send(EventNote {
                            id: e.position.id(),
                            agreement: e.agreement_id,
                            name: e.event.name(),
                        });
                    }
                    // Missed some: long-polling waiters read the log again when their wait
                    // ends, so nothing is lost, only heard of later.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(())
    }

    /// The price per fuel and maximum fuel this provider agreed to for `id`.
    async fn terms(&self, id: B256) -> KeeperResult<Option<(U256, u64)>> {
        let row: Option<(Text<U256>, i64)> =
            sqlx::query_as("SELECT price_per_fuel, max_fuel FROM evm_agreements WHERE agreement_id = ?1")
                .bind(Text(id))
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.map(|(price, fuel)| (price.0, fuel as u64)))
    }

    /// The name of the template condition whose key is `key` on these contracts.
    fn condition_name(&self, key: B256) -> Option<ConditionName> {
        tidepool_chain::template::condition_name(&self.config.contracts, key).and_then(|n| n.parse().ok())
    }

    /// A chain error as the keeper's, with condition keys named.
    fn refusal(&self, e: ChainError) -> KeeperError {
        let name = |key: B256| self.condition_name(key).unwrap_or(ConditionName::GrantCompute);
        match e {
            ChainError::AlreadyExists { id } => KeeperError::AlreadyExists(id),
            ChainError::NotFound { id } => KeeperError::NotFound(id),
            ChainError::AlreadyFulfilled { condition, .. } => {
                KeeperError::AlreadyFulfilled { condition: name(condition) }
            }
            ChainError::DependencyUnfulfilled { condition, dependency, .. } => {
                KeeperError::DependencyUnfulfilled { condition: name(condition), missing: name(dependency) }
            }
            ChainError::TimedOut { condition, deadline, .. } => {
                KeeperError::TimedOut { condition: name(condition), deadline }
            }
            ChainError::AgreementClosed { agreement } => {
                // The contracts do not say how it closed; the agreement does.
                KeeperError::Invalid(format!("agreement {agreement} is closed"))
            }
            ChainError::NotParty { .. } | ChainError::NotControlContract { .. } | ChainError::Unauthorized { .. } => {
                KeeperError::NotParty { role: "party" }
            }
            ChainError::InsufficientBalance { balance, needed, .. } => {
                KeeperError::InsufficientBalance { needed, available: balance }
            }
            ChainError::ReceiptMismatch { reason, .. } => KeeperError::ReceiptRefused(format!("{reason:?}")),
            ChainError::NotRefundable { agreement } => {
                KeeperError::NotRefundable(format!("agreement {agreement}: no deadline has passed"))
            }
            ChainError::OutputAlreadyPublished { agreement, .. } => KeeperError::OutputAlreadyPublished(agreement),
            ChainError::InvalidSignature
            | ChainError::ValuesMismatch { .. }
            | ChainError::ConditionKeyMismatch { .. } => KeeperError::Invalid(e.to_string()),
            e => chain(e),
        }
    }

    /// Maps a refusal to `Closed` when the agreement is in fact closed (the contracts' one
    /// `AgreementClosed` does not say whether it was released or refunded).
    async fn closed_or(&self, id: B256, e: ChainError) -> KeeperError {
        if let ChainError::AgreementClosed { .. } = e
            && let Ok(a) = self.agreement(id).await
        {
            return KeeperError::Closed { state: a.state };
        }
        self.refusal(e)
    }

    /// The protocol's view of an agreement on chain.
    async fn view(&self, a: OnChainAgreement) -> KeeperResult<Agreement> {
        let (price_per_fuel, max_fuel) = self.terms(a.id).await?.unwrap_or_default();
        let names: Vec<(B256, Option<ConditionName>)> =
            a.conditions.iter().map(|c| (c.key, c.name.and_then(|n| n.parse().ok()))).collect();
        let name_of = |key: &B256| names.iter().find(|(k, _)| k == key).and_then(|(_, n)| *n);
        let conditions = a
            .conditions
            .iter()
            .filter_map(|c| {
                Some(Condition {
                    name: name_of(&c.key)?,
                    key: c.key,
                    values_hash: c.values_hash,
                    timeout: c.timeout,
                    deadline: c.deadline,
                    dependencies: c.dependencies.iter().filter_map(name_of).collect(),
                    status: match c.status {
                        ChainConditionStatus::Fulfilled => ConditionStatus::Fulfilled,
                        ChainConditionStatus::Unfulfilled => ConditionStatus::Unfulfilled,
                    },
                    fulfilled_at: c.fulfilled_at,
                })
            })
            .collect();
        Ok(Agreement {
            id: a.id,
            did: Did(a.did),
            template_id: a.template_id,
            consumer: a.consumer,
            provider: a.provider,
            price_per_fuel,
            max_fuel,
            escrow: a.escrow,
            state: match a.state {
                tidepool_chain::AgreementState::Active => AgreementState::Active,
                tidepool_chain::AgreementState::Released => AgreementState::Released,
                tidepool_chain::AgreementState::Refunded => AgreementState::Refunded,
            },
            conditions,
            algorithm_hash: a.algorithm_hash,
            receipt_hash: a.receipt_hash,
            output_did: a.output_did.map(Did),
            provider_paid: None,
            consumer_refunded: None,
            created_at: a.created_at,
        })
    }

    async fn entry(&self, e: ChainEvent) -> KeeperEvent {
        // A log without its block's timestamp: ask for the block's (or say now).
        let timestamp = match e.timestamp {
            Some(t) => t,
            None => self.chain.block_timestamp(e.position.block).await.unwrap_or_else(|_| unix_now()),
        };
        KeeperEvent { id: e.position.id(), agreement_id: e.agreement_id, event: e.event, timestamp }
    }
}

/// A failure to talk to the chain: transient ones are worth retrying.
fn chain(e: ChainError) -> KeeperError {
    KeeperError::Unreachable(Box::new(e))
}

#[async_trait]
impl Keeper for EvmKeeper {
    fn kind(&self) -> &'static str {
        "evm"
    }

    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn controllers(&self) -> &Controllers {
        &self.controllers
    }

    fn agreement_domain(&self) -> &Eip712Domain {
        &self.domain
    }

    fn consumer_pays_directly(&self) -> bool {
        true
    }

    async fn create_agreement(&self, n: NewAgreement) -> KeeperResult<Agreement> {
        let signed = ServiceAgreement {
            templateId: n.template_id,
            conditionKeys: n.conditions.iter().map(|c| c.key).collect(),
            valuesHashList: n.conditions.iter().map(|c| c.values_hash).collect(),
            timeouts: n.conditions.iter().map(|c| U256::from(c.timeout)).collect(),
            serviceAgreementId: n.id,
        };
        let max_fuel = i64::try_from(n.max_fuel).map_err(|_| KeeperError::Invalid("max fuel too large".into()))?;
        // Recorded first (idempotently): the terms must be known whenever the agreement is.
        self.db
            .execute(
                sqlx::query(
                    "INSERT INTO evm_agreements (agreement_id, price_per_fuel, max_fuel, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (agreement_id) DO NOTHING",
                )
                .bind(Text(n.id))
                .bind(Text(n.price_per_fuel))
                .bind(max_fuel)
                .bind(unix_now() as i64),
            )
            .await?;
        self.agent
            .initialize_agreement(n.did.0, n.consumer, &signed, n.signature.as_bytes().into())
            .await
            .map_err(|e| self.refusal(e))?;
        self.agreement(n.id).await
    }

    async fn agreement(&self, id: B256) -> KeeperResult<Agreement> {
        let a = self.chain.agreement(id).await.map_err(|e| self.refusal(e))?;
        self.view(a).await
    }

    async fn lock_payment(&self, _id: B256, _payer: Address) -> KeeperResult<()> {
        Err(KeeperError::Unsupported("locking a payment through the provider: lock it on chain from your own wallet"))
    }

    async fn fulfill_upload(&self, id: B256, algorithm_hash: B256, signature: Signature) -> KeeperResult<()> {
        match self.agent.fulfill_upload(id, algorithm_hash, signature.as_bytes().into()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.closed_or(id, e).await),
        }
    }

    async fn grant_compute(&self, id: B256) -> KeeperResult<()> {
        let consumer = self.chain.agreement(id).await.map_err(|e| self.refusal(e))?.consumer;
        match self.agent.grant_compute(id, consumer).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.closed_or(id, e).await),
        }
    }

    async fn release_payment(&self, id: B256, receipt: Option<&Receipt>) -> KeeperResult<Payout> {
        let Some(receipt) = receipt else {
            return Err(KeeperError::Unsupported(
                "releasing a payment without a receipt: the consumer is refunded after the deadline",
            ));
        };
        let (price, max_fuel) =
            self.terms(id).await?.ok_or_else(|| KeeperError::Invalid(format!("this provider did not create {id}")))?;
        match self.agent.release_payment(id, price, max_fuel, receipt.into()).await {
            Ok((_, released)) => {
                Ok(Payout { provider_amount: released.provider_amount, consumer_refund: released.consumer_refund })
            }
            Err(e) => Err(self.closed_or(id, e).await),
        }
    }

    async fn refund_payment(&self, _id: B256, _caller: Address) -> KeeperResult<U256> {
        Err(KeeperError::Unsupported("refunds through the provider: refund on chain from your own wallet"))
    }

    async fn publish_output(&self, id: B256, did: Did) -> KeeperResult<()> {
        let url = format!("{}/api/v1/assets/{did}", self.config.base_url);
        match self.agent.publish_output(id, did.0, url).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.closed_or(id, e).await),
        }
    }

    async fn register_asset(&self, did: Did, datasets: &[(String, B256)], url: &str) -> KeeperResult<()> {
        let checksum = tidepool_chain::template::dataset_checksum(datasets.iter().map(|(n, r)| (n.as_str(), *r)));
        self.agent.register_attribute(did.0, checksum, url.to_string()).await.map_err(|e| self.refusal(e))?;
        Ok(())
    }

    async fn events_after(&self, after: u64, agreement: Option<B256>, limit: u32) -> KeeperResult<Vec<KeeperEvent>> {
        // An id is `block << 24 | log index`: read from the block of `after` on.
        let from = (after >> 24).max(self.config.contracts.deployed_at_block);
        let reader = EventReader::new(self.chain.clone(), from, self.config.confirmations);
        let events = match agreement {
            Some(id) => reader.agreement_events(id, from).await,
            None => {
                let mut reader = reader;
                reader.poll().await
            }
        }
        .map_err(chain)?;
        let mut out = Vec::new();
        for e in events.into_iter().filter(|e| e.position.id() > after).take(limit as usize) {
            out.push(self.entry(e).await);
        }
        Ok(out)
    }

    fn subscribe(&self) -> broadcast::Receiver<EventNote> {
        self.notes.subscribe()
    }

    async fn balance(&self, who: Address) -> KeeperResult<U256> {
        self.chain.balance(who).await.map_err(|e| self.refusal(e))
    }

    async fn credit(&self, who: Address, amount: U256) -> KeeperResult<U256> {
        // Only on a development chain whose token the provider deployed.
        self.agent.mint(who, amount).await.map_err(|e| match e {
            ChainError::Unauthorized { .. }
            | ChainError::Reverted { .. }
            | ChainError::RevertedWithoutReason { .. } => {
                KeeperError::Unsupported("credit: only the token's deployer mints, on a development chain")
            }
            e => self.refusal(e),
        })?;
        self.balance(who).await
    }
}
