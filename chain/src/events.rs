//! The agreement's events: declared once here as Solidity events (`sol!`), the very types the
//! contracts emit (a test checks every signature against the contracts' ABI) and the provider's
//! embedded keeper stores, and read from the contracts' logs.
//!
//! An [`EventReader`] reads forward from a block cursor that its owner persists (the next
//! block to read), and only blocks at least `confirmations` deep, so a reorganisation
//! shallower than that never shows an event that later vanishes. A reader made again from a
//! saved cursor (after a restart) sees every event it had not read. [`EventReader::spawn`]
//! polls in a task and broadcasts each event, for subscribers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::client::Chain;
use crate::deploy::Contracts;
use crate::error::Result;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

alloy::sol! {
    /// An agreement was created (the consumer's signature over it checked).
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event ExecuteAgreement(bytes32 indexed agreementId, bytes32 did, address consumer, address provider);

    /// The consumer's algorithm was uploaded; `algorithmHash` is what the job must run.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event FulfillUpload(bytes32 indexed agreementId, bytes32 algorithmHash);

    /// The consumer locked `amount` tokens in escrow.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentLocked(bytes32 indexed agreementId, uint256 amount);

    /// The provider granted the consumer its compute.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event ComputeGranted(bytes32 indexed agreementId, address consumer);

    /// The escrow was split: the provider paid for the fuel used, the rest returned; the
    /// receipt's hash is committed.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentReleased(bytes32 indexed agreementId, bytes32 receiptHash, uint256 providerAmount, uint256 consumerRefund);

    /// The escrow went back to the consumer after the provider missed a deadline.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentRefund(bytes32 indexed agreementId, uint256 amount);

    /// The job's outputs were published as an asset of the consumer (`outputDid`, the 32 bytes
    /// of its `did:op:` DID).
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event OutputPublished(bytes32 indexed agreementId, bytes32 outputDid);
}

/// The name of each event of the lifecycle (the Solidity event's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventName {
    /// [`ExecuteAgreement`]: an agreement was created.
    ExecuteAgreement,
    /// [`FulfillUpload`]: the consumer's algorithm was uploaded.
    FulfillUpload,
    /// [`PaymentLocked`]: the consumer locked the payment in escrow.
    PaymentLocked,
    /// [`ComputeGranted`]: the provider granted the consumer its compute.
    ComputeGranted,
    /// [`PaymentReleased`]: the escrow was split and the receipt's hash committed.
    PaymentReleased,
    /// [`PaymentRefund`]: the escrow went back to the consumer.
    PaymentRefund,
    /// [`OutputPublished`]: the job's outputs were published.
    OutputPublished,
}

impl EventName {
    /// Every event, in lifecycle order.
    pub const ALL: &'static [EventName] = &[
        EventName::ExecuteAgreement,
        EventName::FulfillUpload,
        EventName::PaymentLocked,
        EventName::ComputeGranted,
        EventName::PaymentReleased,
        EventName::PaymentRefund,
        EventName::OutputPublished,
    ];

    /// The Solidity event's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::ExecuteAgreement => "ExecuteAgreement",
            EventName::FulfillUpload => "FulfillUpload",
            EventName::PaymentLocked => "PaymentLocked",
            EventName::ComputeGranted => "ComputeGranted",
            EventName::PaymentReleased => "PaymentReleased",
            EventName::PaymentRefund => "PaymentRefund",
            EventName::OutputPublished => "OutputPublished",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`EventName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an agreement event")]
pub struct UnknownEvent(pub String);

impl FromStr for EventName {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> std::result::Result<Self, UnknownEvent> {
        Self::ALL.iter().copied().find(|e| e.as_str() == s).ok_or_else(|| UnknownEvent(s.to_string()))
    }
}

/// One event of an agreement, with its typed fields. Serialized as `{"name", "data"}`, the
/// form a keeper's event log shows on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "data")]
pub enum AgreementEvent {
    /// An agreement was created.
    ExecuteAgreement(ExecuteAgreement),
    /// The consumer's algorithm was uploaded.
    FulfillUpload(FulfillUpload),
    /// The consumer locked the payment in escrow.
    PaymentLocked(PaymentLocked),
    /// The provider granted the consumer its compute.
    ComputeGranted(ComputeGranted),
    /// The escrow was split and the receipt's hash committed.
    PaymentReleased(PaymentReleased),
    /// The escrow went back to the consumer.
    PaymentRefund(PaymentRefund),
    /// The job's outputs were published.
    OutputPublished(OutputPublished),
}

impl AgreementEvent {
    /// Which event this is.
    pub fn name(&self) -> EventName {
        match self {
            AgreementEvent::ExecuteAgreement(_) => EventName::ExecuteAgreement,
            AgreementEvent::FulfillUpload(_) => EventName::FulfillUpload,
            AgreementEvent::PaymentLocked(_) => EventName::PaymentLocked,
            AgreementEvent::ComputeGranted(_) => EventName::ComputeGranted,
            AgreementEvent::PaymentReleased(_) => EventName::PaymentReleased,
            AgreementEvent::PaymentRefund(_) => EventName::PaymentRefund,
            AgreementEvent::OutputPublished(_) => EventName::OutputPublished,
        }
    }

    /// The agreement it is about.
    pub fn agreement_id(&self) -> B256 {
        match self {
            AgreementEvent::ExecuteAgreement(e) => e.agreementId,
            AgreementEvent::FulfillUpload(e) => e.agreementId,
            AgreementEvent::PaymentLocked(e) => e.agreementId,
            AgreementEvent::ComputeGranted(e) => e.agreementId,
            AgreementEvent::PaymentReleased(e) => e.agreementId,
            AgreementEvent::PaymentRefund(e) => e.agreementId,
            AgreementEvent::OutputPublished(e) => e.agreementId,
        }
    }
}

/// Where a log is on the chain. Ordered as the chain orders logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    /// The block's number.
    pub block: u64,
    /// The log's index in its block.
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
    /// The agreement it is about.
    pub agreement_id: B256,
    /// The event, decoded.
    pub event: AgreementEvent,
    /// Where its log is.
    pub position: EventPosition,
    /// The transaction that emitted it.
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
    let event = if address == c.agreement_store && topic == ExecuteAgreement::SIGNATURE_HASH {
        AgreementEvent::ExecuteAgreement(ExecuteAgreement::decode_log(inner).ok()?.data)
    } else if address == c.compute_upload_condition && topic == FulfillUpload::SIGNATURE_HASH {
        AgreementEvent::FulfillUpload(FulfillUpload::decode_log(inner).ok()?.data)
    } else if address == c.lock_payment_condition && topic == PaymentLocked::SIGNATURE_HASH {
        AgreementEvent::PaymentLocked(PaymentLocked::decode_log(inner).ok()?.data)
    } else if address == c.compute_grant_condition && topic == ComputeGranted::SIGNATURE_HASH {
        AgreementEvent::ComputeGranted(ComputeGranted::decode_log(inner).ok()?.data)
    } else if address == c.escrow_reward && topic == PaymentReleased::SIGNATURE_HASH {
        AgreementEvent::PaymentReleased(PaymentReleased::decode_log(inner).ok()?.data)
    } else if address == c.escrow_reward && topic == PaymentRefund::SIGNATURE_HASH {
        AgreementEvent::PaymentRefund(PaymentRefund::decode_log(inner).ok()?.data)
    } else if address == c.escrow_reward && topic == OutputPublished::SIGNATURE_HASH {
        AgreementEvent::OutputPublished(OutputPublished::decode_log(inner).ok()?.data)
    } else {
        return None;
    };
    Some(ChainEvent {
        agreement_id: event.agreement_id(),
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

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;

    use super::*;
    use crate::bindings::{
        AgreementStore, ComputeGrantCondition, ComputeUploadCondition, EscrowReward, LockPaymentCondition,
    };

    #[test]
    fn the_declared_events_are_the_contracts_events() {
        let pairs = [
            (ExecuteAgreement::SIGNATURE_HASH, AgreementStore::ExecuteAgreement::SIGNATURE_HASH),
            (FulfillUpload::SIGNATURE_HASH, ComputeUploadCondition::FulfillUpload::SIGNATURE_HASH),
            (PaymentLocked::SIGNATURE_HASH, LockPaymentCondition::PaymentLocked::SIGNATURE_HASH),
            (ComputeGranted::SIGNATURE_HASH, ComputeGrantCondition::ComputeGranted::SIGNATURE_HASH),
            (PaymentReleased::SIGNATURE_HASH, EscrowReward::PaymentReleased::SIGNATURE_HASH),
            (PaymentRefund::SIGNATURE_HASH, EscrowReward::PaymentRefund::SIGNATURE_HASH),
            (OutputPublished::SIGNATURE_HASH, EscrowReward::OutputPublished::SIGNATURE_HASH),
        ];
        for (declared, contract) in pairs {
            assert_eq!(declared, contract);
        }
        let signatures = [
            ExecuteAgreement::SIGNATURE,
            FulfillUpload::SIGNATURE,
            PaymentLocked::SIGNATURE,
            ComputeGranted::SIGNATURE,
            PaymentReleased::SIGNATURE,
            PaymentRefund::SIGNATURE,
            OutputPublished::SIGNATURE,
        ];
        for (&name, signature) in EventName::ALL.iter().zip(signatures) {
            assert!(signature.starts_with(&format!("{name}(")), "{name} vs {signature}");
            assert_eq!(name.as_str().parse::<EventName>(), Ok(name));
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
    }

    #[test]
    fn events_travel_as_name_and_typed_data() {
        let event = AgreementEvent::PaymentReleased(PaymentReleased {
            agreementId: B256::repeat_byte(1),
            receiptHash: B256::repeat_byte(2),
            providerAmount: U256::from(600),
            consumerRefund: U256::from(1_400),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["name"], "PaymentReleased");
        assert_eq!(json["data"]["receiptHash"], B256::repeat_byte(2).to_string());
        assert_eq!(serde_json::from_value::<AgreementEvent>(json).unwrap(), event);
        assert_eq!((event.name(), event.agreement_id()), (EventName::PaymentReleased, B256::repeat_byte(1)));
    }
}
