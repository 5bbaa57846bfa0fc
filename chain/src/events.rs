//! The agreement's events, read from the contracts' logs.
//!
//! An [`EventReader`] reads forward from a block cursor that its owner persists (the next
//! block to read), and only blocks at least `confirmations` deep, so a reorganisation
//! shallower than that never shows an event that later vanishes. A reader made again from a
//! saved cursor (after a restart) sees every event it had not read. [`EventReader::spawn`]
//! polls in a task and broadcasts each event, for subscribers.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use tokio::sync::{broadcast, watch};

use crate::bindings::{
    AgreementStore, ComputeGrantCondition, ComputeUploadCondition, EscrowReward, LockPaymentCondition,
};
use crate::client::Chain;
use crate::deploy::Contracts;
use crate::error::Result;

/// One event of the agreement lifecycle, with its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgreementEvent {
    ExecuteAgreement { did: B256, consumer: Address, provider: Address },
    FulfillUpload { algorithm_hash: B256 },
    PaymentLocked { amount: U256 },
    ComputeGranted { consumer: Address },
    PaymentReleased { receipt_hash: B256, provider_amount: U256, consumer_refund: U256 },
    PaymentRefund { amount: U256 },
    OutputPublished { output_did: B256 },
}

impl AgreementEvent {
    /// The Solidity event's name.
    pub fn name(&self) -> &'static str {
        match self {
            AgreementEvent::ExecuteAgreement { .. } => "ExecuteAgreement",
            AgreementEvent::FulfillUpload { .. } => "FulfillUpload",
            AgreementEvent::PaymentLocked { .. } => "PaymentLocked",
            AgreementEvent::ComputeGranted { .. } => "ComputeGranted",
            AgreementEvent::PaymentReleased { .. } => "PaymentReleased",
            AgreementEvent::PaymentRefund { .. } => "PaymentRefund",
            AgreementEvent::OutputPublished { .. } => "OutputPublished",
        }
    }
}

/// Where a log is on the chain. Ordered as the chain orders logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    pub block: u64,
    pub log_index: u64,
}

impl EventPosition {
    /// One increasing number for the position: `block × 2²⁴ + log index` (a block holds far
    /// fewer than 2²⁴ logs), for a log id like the embedded keeper's.
    pub fn id(&self) -> u64 {
        (self.block << 24) | (self.log_index & 0xff_ffff)
    }
}

/// An event of one agreement at a position on the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEvent {
    pub agreement_id: B256,
    pub event: AgreementEvent,
    pub position: EventPosition,
    pub tx_hash: B256,
    /// The block's timestamp, when the node includes it in logs.
    pub timestamp: Option<u64>,
}

/// The contracts that emit agreement events.
fn emitters(c: &Contracts) -> Vec<Address> {
    vec![
        c.agreement_store,
        c.lock_payment_condition,
        c.compute_upload_condition,
        c.compute_grant_condition,
        c.escrow_reward,
    ]
}

/// Decodes one log, if it is an agreement event of these contracts.
pub fn decode_log(c: &Contracts, log: &Log) -> Option<ChainEvent> {
    let topic = *log.topic0()?;
    let address = log.address();
    let inner = &log.inner;
    let (agreement_id, event) = if address == c.agreement_store
        && topic == AgreementStore::ExecuteAgreement::SIGNATURE_HASH
    {
        let e = AgreementStore::ExecuteAgreement::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::ExecuteAgreement { did: e.did, consumer: e.consumer, provider: e.provider })
    } else if address == c.compute_upload_condition && topic == ComputeUploadCondition::FulfillUpload::SIGNATURE_HASH {
        let e = ComputeUploadCondition::FulfillUpload::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::FulfillUpload { algorithm_hash: e.algorithmHash })
    } else if address == c.lock_payment_condition && topic == LockPaymentCondition::PaymentLocked::SIGNATURE_HASH {
        let e = LockPaymentCondition::PaymentLocked::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::PaymentLocked { amount: e.amount })
    } else if address == c.compute_grant_condition && topic == ComputeGrantCondition::ComputeGranted::SIGNATURE_HASH {
        let e = ComputeGrantCondition::ComputeGranted::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::ComputeGranted { consumer: e.consumer })
    } else if address == c.escrow_reward && topic == EscrowReward::PaymentReleased::SIGNATURE_HASH {
        let e = EscrowReward::PaymentReleased::decode_log(inner).ok()?;
        let event = AgreementEvent::PaymentReleased {
            receipt_hash: e.receiptHash,
            provider_amount: e.providerAmount,
            consumer_refund: e.consumerRefund,
        };
        (e.agreementId, event)
    } else if address == c.escrow_reward && topic == EscrowReward::PaymentRefund::SIGNATURE_HASH {
        let e = EscrowReward::PaymentRefund::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::PaymentRefund { amount: e.amount })
    } else if address == c.escrow_reward && topic == EscrowReward::OutputPublished::SIGNATURE_HASH {
        let e = EscrowReward::OutputPublished::decode_log(inner).ok()?;
        (e.agreementId, AgreementEvent::OutputPublished { output_did: e.outputDid })
    } else {
        return None;
    };
    Some(ChainEvent {
        agreement_id,
        event,
        position: EventPosition { block: log.block_number?, log_index: log.log_index? },
        tx_hash: log.transaction_hash?,
        timestamp: log.block_timestamp,
    })
}

/// The agreement events among `logs`, in their order.
pub fn decode_logs(c: &Contracts, logs: &[Log]) -> Vec<ChainEvent> {
    logs.iter().filter_map(|l| decode_log(c, l)).collect()
}

/// Reads events forward from a block cursor.
#[derive(Clone, Debug)]
pub struct EventReader {
    chain: Chain,
    /// The next block to read.
    cursor: u64,
    confirmations: u64,
    /// The most blocks one `eth_getLogs` asks for (nodes limit ranges).
    max_range: u64,
}

impl EventReader {
    /// A reader from block `cursor` (a saved [`cursor`](Self::cursor), or
    /// `Contracts::deployed_at_block` the first time) that reads only blocks at least
    /// `confirmations` deep (0: up to the head).
    pub fn new(chain: Chain, cursor: u64, confirmations: u64) -> Self {
        Self { chain, cursor, confirmations, max_range: 2_000 }
    }

    /// Limits how many blocks one log query spans.
    pub fn with_max_range(mut self, blocks: u64) -> Self {
        self.max_range = blocks.max(1);
        self
    }

    /// The next block this reader will read: what to persist.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Every event of the contracts from the cursor up to the confirmed head, oldest first;
    /// advances the cursor past them. The cursor moves only over ranges read completely.
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>> {
        let head = self.chain.block_number().await?;
        let Some(last) = head.checked_sub(self.confirmations) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        while self.cursor <= last {
            let to = last.min(self.cursor + self.max_range - 1);
            out.extend(self.read(self.cursor, to, None).await?);
            self.cursor = to + 1;
        }
        Ok(out)
    }

    /// One agreement's events in blocks `from..=head - confirmations`, without moving the cursor.
    pub async fn agreement_events(&self, agreement_id: B256, from: u64) -> Result<Vec<ChainEvent>> {
        let head = self.chain.block_number().await?;
        let Some(last) = head.checked_sub(self.confirmations) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut start = from;
        while start <= last {
            let to = last.min(start + self.max_range - 1);
            out.extend(self.read(start, to, Some(agreement_id)).await?);
            start = to + 1;
        }
        Ok(out)
    }

    async fn read(&self, from: u64, to: u64, agreement: Option<B256>) -> Result<Vec<ChainEvent>> {
        let contracts = self.chain.contracts();
        let mut filter = Filter::new().address(emitters(contracts)).from_block(from).to_block(to);
        if let Some(id) = agreement {
            // Every agreement event has the agreement id as its first indexed field.
            filter = filter.topic1(id);
        }
        let provider = self.chain.provider();
        let logs = self.chain.retry("logs", || async { Ok(provider.get_logs(&filter).await?) }).await?;
        let mut events = decode_logs(contracts, &logs);
        events.sort_by_key(|e| e.position);
        Ok(events)
    }

    /// Polls every `interval` in a task and broadcasts each new event; the latest cursor is
    /// published for the owner to persist. The task ends when the returned handle drops.
    pub fn spawn(mut self, interval: Duration) -> Subscription {
        let (events, _) = broadcast::channel(4096);
        let (cursor_tx, cursor) = watch::channel(self.cursor);
        let sender = events.clone();
        let task = tokio::spawn(async move {
            loop {
                match self.poll().await {
                    Ok(new) => {
                        for e in new {
                            // No subscriber is fine: the chain keeps the log.
                            let _ = sender.send(e);
                        }
                        let _ = cursor_tx.send(self.cursor);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading agreement events"),
                }
                tokio::time::sleep(interval).await;
            }
        });
        Subscription { events, cursor, task }
    }
}

/// A polling [`EventReader`] in a task (see [`EventReader::spawn`]).
#[derive(Debug)]
pub struct Subscription {
    events: broadcast::Sender<ChainEvent>,
    cursor: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Hears of every event read from now on. A receiver that falls behind gets `Lagged` and
    /// should read the log again from its own cursor.
    pub fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }

    /// The cursor after the last events broadcast.
    pub fn cursor(&self) -> u64 {
        *self.cursor.borrow()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
