//! The embedded keeper: agreements, conditions, a token ledger and the event log in the
//! provider's database ([`rows`] owns the tables). Every operation is one transaction: the
//! condition checks, the token moves, the state change and the event are committed together or
//! not at all.
//!
//! On SQLite a transaction is begun `IMMEDIATE` on the one writing connection, so steps never
//! overlap. On PostgreSQL (cluster mode) several API nodes run steps at once: a step locks the
//! agreement's row before reading it and the balances it moves before reading them (addresses
//! in order), and takes the event log's lock last, so no two steps fulfil the same condition or
//! spend the same tokens, and event ids are committed in order. A follower task on each node
//! reads what other nodes appended (woken by `NOTIFY`, polling besides) and tells this node's
//! subscribers, so long-polled events wake on every node.
//!
//! Its controllers are not contracts; their addresses are derived from their names
//! (`keccak256("tidepool.embedded.<Controller>")[12..]`) so condition keys are still well defined.

mod rows;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use alloy_sol_types::Eip712Domain;
use async_trait::async_trait;
use tidepool_runtime::Receipt;
use tokio::sync::broadcast;

use self::rows::AgreementUpdate;
use super::{Keeper, KeeperError, KeeperResult, NewAgreement};
use crate::protocol::agreement::{Agreement, AgreementState, ConditionStatus, Payout};
use crate::protocol::ddo::Did;
use crate::protocol::events::{
    AgreementEvent, ComputeGranted, EventNote, ExecuteAgreement, FulfillUpload, KeeperEvent, OutputPublished,
    PaymentLocked, PaymentRefund, PaymentReleased,
};
use crate::protocol::signing::unix_now;
use crate::protocol::template::{ConditionName, Controller, Controllers};
use crate::store::Db;
use crate::store::writer::WriteTx;

/// How often the follower reads the log when no notification came (notifications are best
/// effort).
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The keeper kept in the provider's own database.
#[derive(Debug)]
pub struct EmbeddedKeeper {
    db: Db,
    chain_id: u64,
    controllers: Controllers,
    /// The provider's own signing domain: agreements are checked by the provider.
    domain: Eip712Domain,
    notes: broadcast::Sender<EventNote>,
}

impl EmbeddedKeeper {
    /// The keeper of `provider`, in `db`, on its own "chain" `chain_id`.
    pub fn new(db: Db, chain_id: u64, provider: Address) -> Self {
        let controllers = Controllers(
            Controller::ALL
                .iter()
                .map(|c| (*c, Address::from_slice(&keccak256(format!("tidepool.embedded.{}", c.name()))[12..])))
                .collect(),
        );
        let domain = crate::protocol::eip712::domain(chain_id, provider);
        let notes = broadcast::Sender::new(4096);
        if db.is_shared() {
            tokio::spawn(follow(db.clone(), notes.downgrade()));
        }
        Self { db, chain_id, controllers, domain, notes }
    }

    /// Begins a step: a write transaction and the agreement as it stands in it (locked).
    async fn begin(&self, id: B256) -> KeeperResult<(WriteTx, Agreement)> {
        let mut tx = self.db.write().await?;
        if self.db.is_shared() {
            rows::lock_agreement(&mut tx, id).await?;
        }
        let agreement = rows::load(&mut *tx, id).await?;
        Ok((tx, agreement))
    }

    /// Locks the balances a step is about to read and change (a no-op on SQLite).
    async fn lock_balances(&self, tx: &mut WriteTx, who: &[Address]) -> KeeperResult<()> {
        if self.db.is_shared() {
            let mut who = who.to_vec();
            who.sort();
            who.dedup();
            for w in who {
                rows::lock_balance(tx, w).await?;
            }
        }
        Ok(())
    }

    /// Ends a step: appends `event`, commits, then tells subscribers.
    async fn commit(&self, mut tx: WriteTx, event: AgreementEvent, now: u64) -> KeeperResult<()> {
        if self.db.is_shared() {
            rows::serialize_events(&mut tx).await?;
        }
        let note = rows::emit(&mut tx, event, now).await?;
        tx.commit().await?;
        // No subscriber is fine: the log has it.
        let _ = self.notes.send(note);
        Ok(())
    }
}

/// Checks that condition `name` of `a` can be fulfilled at `now`, and marks it fulfilled.
async fn fulfill(tx: &mut WriteTx, a: &Agreement, name: ConditionName, now: u64) -> KeeperResult<()> {
    if a.state != AgreementState::Active {
        return Err(KeeperError::Closed { state: a.state });
    }
    let c = a.condition(name).ok_or_else(|| KeeperError::Invalid(format!("no condition `{name}`")))?;
    if c.status == ConditionStatus::Fulfilled {
        return Err(KeeperError::AlreadyFulfilled { condition: name });
    }
    if let Some(missing) = c.dependencies.iter().find(|d| !a.is_fulfilled(**d)) {
        return Err(KeeperError::DependencyUnfulfilled { condition: name, missing: *missing });
    }
    if let Some(deadline) = c.deadline
        && now > deadline
    {
        return Err(KeeperError::TimedOut { condition: name, deadline });
    }
    rows::set_fulfilled(tx, a.id, name, now).await
}

#[async_trait]
impl Keeper for EmbeddedKeeper {
    fn kind(&self) -> &'static str {
        "embedded"
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

    async fn create_agreement(&self, n: NewAgreement) -> KeeperResult<Agreement> {
        let now = unix_now();
        let mut tx = self.db.write().await?;
        if rows::exists(&mut tx, n.id).await? {
            return Err(KeeperError::AlreadyExists(n.id));
        }
        match rows::insert(&mut tx, &n, now).await {
            // Created by another node meanwhile.
            Err(KeeperError::Storage(e)) if e.is_unique_violation() => return Err(KeeperError::AlreadyExists(n.id)),
            other => other?,
        }
        let event = ExecuteAgreement { agreementId: n.id, did: n.did.0, consumer: n.consumer, provider: n.provider };
        self.commit(tx, AgreementEvent::ExecuteAgreement(event), now).await?;
        self.agreement(n.id).await
    }

    async fn agreement(&self, id: B256) -> KeeperResult<Agreement> {
        rows::load(self.db.pool(), id).await
    }

    async fn lock_payment(&self, id: B256, payer: Address) -> KeeperResult<()> {
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        if payer != a.consumer {
            return Err(KeeperError::NotParty { role: "consumer" });
        }
        fulfill(&mut tx, &a, ConditionName::LockPayment, now).await?;
        self.lock_balances(&mut tx, &[payer]).await?;
        let amount = a.price_per_fuel.saturating_mul(U256::from(a.max_fuel));
        let available = rows::balance(&mut *tx, payer).await?;
        if available < amount {
            return Err(KeeperError::InsufficientBalance { needed: amount, available });
        }
        rows::set_balance(&mut tx, payer, available - amount).await?;
        rows::update(&mut tx, id, AgreementUpdate { escrow: Some(amount), ..Default::default() }).await?;
        self.commit(tx, AgreementEvent::PaymentLocked(PaymentLocked { agreementId: id, amount }), now).await
    }

    async fn fulfill_upload(&self, id: B256, algorithm_hash: B256, _signature: Signature) -> KeeperResult<()> {
        // The provider checked the consumer's signature; there is no one else to check it.
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        fulfill(&mut tx, &a, ConditionName::UploadAlgorithm, now).await?;
        rows::update(&mut tx, id, AgreementUpdate { algorithm_hash: Some(algorithm_hash), ..Default::default() })
            .await?;
        let event = FulfillUpload { agreementId: id, algorithmHash: algorithm_hash };
        self.commit(tx, AgreementEvent::FulfillUpload(event), now).await
    }

    async fn grant_compute(&self, id: B256) -> KeeperResult<()> {
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        fulfill(&mut tx, &a, ConditionName::GrantCompute, now).await?;
        let event = ComputeGranted { agreementId: id, consumer: a.consumer };
        self.commit(tx, AgreementEvent::ComputeGranted(event), now).await
    }

    async fn release_payment(&self, id: B256, receipt: Option<&Receipt>) -> KeeperResult<Payout> {
        // No receipt: nothing is owed for it, and the whole escrow goes back at once.
        let (receipt_hash, fuel_consumed) = receipt.map_or((B256::ZERO, 0), |r| (r.receipt_hash, r.fuel_consumed));
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        fulfill(&mut tx, &a, ConditionName::ReleasePayment, now).await?;
        self.lock_balances(&mut tx, &[a.provider, a.consumer]).await?;
        let provider_amount = a.price_per_fuel.saturating_mul(U256::from(fuel_consumed)).min(a.escrow);
        let consumer_refund = a.escrow - provider_amount;
        rows::add_balance(&mut tx, a.provider, provider_amount).await?;
        rows::add_balance(&mut tx, a.consumer, consumer_refund).await?;
        let update = AgreementUpdate {
            escrow: Some(U256::ZERO),
            state: Some(AgreementState::Released),
            receipt_hash: Some(receipt_hash),
            provider_paid: Some(provider_amount),
            consumer_refunded: Some(consumer_refund),
            ..Default::default()
        };
        rows::update(&mut tx, id, update).await?;
        let event = PaymentReleased {
            agreementId: id,
            receiptHash: receipt_hash,
            providerAmount: provider_amount,
            consumerRefund: consumer_refund,
        };
        self.commit(tx, AgreementEvent::PaymentReleased(event), now).await?;
        Ok(Payout { provider_amount, consumer_refund })
    }

    async fn refund_payment(&self, id: B256, caller: Address) -> KeeperResult<U256> {
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        if caller != a.consumer {
            return Err(KeeperError::NotParty { role: "consumer" });
        }
        if a.state != AgreementState::Active {
            return Err(KeeperError::Closed { state: a.state });
        }
        if !a.is_fulfilled(ConditionName::LockPayment) {
            return Err(KeeperError::NotRefundable("no payment was locked".into()));
        }
        let missed = |name: ConditionName| {
            a.condition(name).is_some_and(|c| {
                c.status == ConditionStatus::Unfulfilled && c.deadline.is_some_and(|deadline| now > deadline)
            })
        };
        if !missed(ConditionName::GrantCompute) && !missed(ConditionName::ReleasePayment) {
            return Err(KeeperError::NotRefundable(match a.deadline(ConditionName::ReleasePayment) {
                Some(d) => format!("the provider has until {d} (now {now}) to deliver"),
                None => "the provider has no deadline".into(),
            }));
        }
        // refundPayment's only dependency is lockPayment; its own timeout is unset.
        fulfill(&mut tx, &a, ConditionName::RefundPayment, now).await?;
        self.lock_balances(&mut tx, &[a.consumer]).await?;
        rows::add_balance(&mut tx, a.consumer, a.escrow).await?;
        let update = AgreementUpdate {
            escrow: Some(U256::ZERO),
            state: Some(AgreementState::Refunded),
            consumer_refunded: Some(a.escrow),
            ..Default::default()
        };
        rows::update(&mut tx, id, update).await?;
        self.commit(tx, AgreementEvent::PaymentRefund(PaymentRefund { agreementId: id, amount: a.escrow }), now)
            .await?;
        Ok(a.escrow)
    }

    async fn publish_output(&self, id: B256, did: Did) -> KeeperResult<()> {
        let now = unix_now();
        let (mut tx, a) = self.begin(id).await?;
        if a.state != AgreementState::Released {
            return Err(KeeperError::Invalid("outputs are published after the payment is released".into()));
        }
        if a.output_did.is_some() {
            return Err(KeeperError::OutputAlreadyPublished(id));
        }
        rows::update(&mut tx, id, AgreementUpdate { output_did: Some(did), ..Default::default() }).await?;
        self.commit(tx, AgreementEvent::OutputPublished(OutputPublished { agreementId: id, outputDid: did.0 }), now)
            .await
    }

    async fn register_asset(&self, _did: Did, _datasets: &[(String, B256)], _url: &str) -> KeeperResult<()> {
        // The provider's own catalogue is the registry.
        Ok(())
    }

    async fn events_after(&self, after: u64, agreement: Option<B256>, limit: u32) -> KeeperResult<Vec<KeeperEvent>> {
        rows::events_after(self.db.pool(), after, agreement, limit).await
    }

    fn subscribe(&self) -> broadcast::Receiver<EventNote> {
        self.notes.subscribe()
    }

    async fn balance(&self, who: Address) -> KeeperResult<U256> {
        rows::balance(self.db.pool(), who).await
    }

    async fn credit(&self, who: Address, amount: U256) -> KeeperResult<U256> {
        let mut tx = self.db.write().await?;
        self.lock_balances(&mut tx, &[who]).await?;
        let new = rows::add_balance(&mut tx, who, amount).await?;
        tx.commit().await?;
        Ok(new)
    }
}

/// Follows the log that other nodes append to (cluster mode): tells this node's subscribers of
/// every event past the last one seen, when another node notifies a commit and every
/// [`FOLLOW_EVERY`] besides; ends with the keeper.
async fn follow(db: Db, notes: broadcast::WeakSender<EventNote>) {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let listener = db.listen("tidepool_events", {
        let wake = wake.clone();
        move || wake.notify_one()
    });
    let mut last = None;
    while let Some(notes) = notes.upgrade() {
        let read = async {
            let after = match last {
                Some(l) => l,
                None => *last.insert(rows::last_event(db.pool()).await?),
            };
            rows::notes_after(db.pool(), after, 1000).await
        };
        match read.await {
            Ok(news) => {
                for note in news {
                    last = Some(note.id);
                    let _ = notes.send(note);
                }
            }
            Err(e) => tracing::debug!(error = %crate::error_chain(&e), "following the event log"),
        }
        drop(notes);
        let _ = tokio::time::timeout(FOLLOW_EVERY, wake.notified()).await;
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}

/// The balances of several accounts, for reports.
pub async fn balances(keeper: &dyn Keeper, who: &[Address]) -> KeeperResult<BTreeMap<Address, U256>> {
    let mut out = BTreeMap::new();
    for w in who {
        out.insert(*w, keeper.balance(*w).await?);
    }
    Ok(out)
}
