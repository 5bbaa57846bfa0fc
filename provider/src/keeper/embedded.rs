//! The embedded keeper: agreements, conditions, a token ledger and the event log in the
//! provider's SQLite database. Every operation is one `IMMEDIATE` transaction: the condition
//! checks, the token moves, the state change and the event are committed together or not at all.
//!
//! Its controllers are not contracts; their addresses are derived from their names
//! (`keccak256("tidepool.embedded.<Controller>")[12..]`) so condition keys are still well defined.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256, keccak256};
use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};
use tokio::sync::broadcast;

use super::{
    Agreement, AgreementState, Condition, ConditionStatus, EventName, EventNote, Keeper, KeeperError, KeeperEvent,
    KeeperResult, NewAgreement, Payout,
};
use crate::agreement::template::{Controller, Controllers};
use crate::auth::unix_now;
use crate::ddo::Did;
use crate::store::{Db, addr, parse_addr, parse_b256, parse_u256};

/// The keeper kept in the provider's own database.
#[derive(Debug)]
pub struct EmbeddedKeeper {
    db: Db,
    chain_id: u64,
    controllers: Controllers,
    notes: broadcast::Sender<EventNote>,
}

type Tx = crate::store::writer::WriteTx;

impl EmbeddedKeeper {
    pub async fn new(db: Db, chain_id: u64) -> KeeperResult<Self> {
        let controllers = Controllers(
            Controller::ALL
                .iter()
                .map(|c| (*c, Address::from_slice(&keccak256(format!("tidepool.embedded.{}", c.name()))[12..])))
                .collect(),
        );
        Ok(Self { db, chain_id, controllers, notes: broadcast::Sender::new(4096) })
    }

    async fn tx(&self) -> KeeperResult<Tx> {
        Ok(self.db.write().await?)
    }

    /// Commits; then tells subscribers of the event, if there was one.
    async fn commit(&self, tx: Tx, event: Option<EventNote>) -> KeeperResult<()> {
        tx.commit().await.map_err(|e| storage(e.0))?;
        if let Some(note) = event {
            // No subscriber is fine: the log has it.
            let _ = self.notes.send(note);
        }
        Ok(())
    }
}

/// One agreement's events after `?1` (`?2`: the agreement), through `events_by_agreement`
/// however long the log. (One statement with a `?2 IS NULL OR` filter would make SQLite walk
/// every event after `?1`: from the start, for a new agreement.)
const EVENTS_OF_AGREEMENT: &str = "SELECT id, agreement_id, name, data, created_at FROM events \
     WHERE agreement_id = ?2 AND id > ?1 ORDER BY id LIMIT ?3";
/// All events after `?1` (`?2` unused).
const EVENTS_AFTER: &str =
    "SELECT id, agreement_id, name, data, created_at FROM events WHERE id > ?1 ORDER BY id LIMIT ?3";

fn storage(e: sqlx::Error) -> KeeperError {
    KeeperError::Storage(e.to_string())
}

async fn load(tx: &mut SqliteConnection, id: B256) -> KeeperResult<Agreement> {
    // One query: the agreement's columns repeat on each of its conditions' rows.
    let rows = sqlx::query(
        "SELECT a.*, c.name AS c_name, c.key AS c_key, c.values_hash AS c_values_hash, c.timeout AS c_timeout, \
         c.dependencies AS c_dependencies, c.state AS c_state, c.fulfilled_at AS c_fulfilled_at \
         FROM agreements a LEFT JOIN conditions c ON c.agreement_id = a.id WHERE a.id = ?1 ORDER BY c.position",
    )
    .bind(id.to_string())
    .fetch_all(&mut *tx)
    .await
    .map_err(storage)?;
    let row = rows.first().ok_or(KeeperError::NotFound(id))?;
    let conditions: Vec<_> = rows.iter().filter(|r| r.get::<Option<String>, _>("c_name").is_some()).collect();
    agreement_from_rows(row, &conditions)
}

fn agreement_from_rows(
    row: &sqlx::sqlite::SqliteRow,
    conditions: &[&sqlx::sqlite::SqliteRow],
) -> KeeperResult<Agreement> {
    let created_at: i64 = row.get("created_at");
    let opt_b256 = |col: &str| -> KeeperResult<Option<B256>> {
        row.get::<Option<String>, _>(col).map(|s| parse_b256(&s)).transpose().map_err(KeeperError::from)
    };
    let opt_u256 = |col: &str| -> KeeperResult<Option<U256>> {
        row.get::<Option<String>, _>(col).map(|s| parse_u256(&s)).transpose().map_err(KeeperError::from)
    };
    let state = match row.get::<String, _>("state").as_str() {
        "active" => AgreementState::Active,
        "released" => AgreementState::Released,
        "refunded" => AgreementState::Refunded,
        other => return Err(KeeperError::Storage(format!("unknown agreement state {other}"))),
    };
    let conditions = conditions
        .iter()
        .map(|c| {
            let timeout: i64 = c.get("c_timeout");
            Ok(Condition {
                name: c.get("c_name"),
                key: parse_b256(&c.get::<String, _>("c_key"))?,
                values_hash: parse_b256(&c.get::<String, _>("c_values_hash"))?,
                timeout: timeout as u64,
                deadline: (timeout > 0).then(|| created_at as u64 + timeout as u64),
                dependencies: serde_json::from_str(&c.get::<String, _>("c_dependencies"))
                    .map_err(|e| KeeperError::Storage(e.to_string()))?,
                status: if c.get::<String, _>("c_state") == "fulfilled" {
                    ConditionStatus::Fulfilled
                } else {
                    ConditionStatus::Unfulfilled
                },
                fulfilled_at: c.get::<Option<i64>, _>("c_fulfilled_at").map(|t| t as u64),
            })
        })
        .collect::<KeeperResult<Vec<_>>>()?;
    Ok(Agreement {
        id: parse_b256(&row.get::<String, _>("id"))?,
        did: Did(parse_b256(&row.get::<String, _>("did"))?),
        template_id: parse_b256(&row.get::<String, _>("template_id"))?,
        consumer: parse_addr(&row.get::<String, _>("consumer"))?,
        provider: parse_addr(&row.get::<String, _>("provider"))?,
        price_per_fuel: parse_u256(&row.get::<String, _>("price_per_fuel"))?,
        max_fuel: row.get::<i64, _>("max_fuel") as u64,
        escrow: parse_u256(&row.get::<String, _>("escrow"))?,
        state,
        conditions,
        algorithm_hash: opt_b256("algorithm_hash")?,
        receipt_hash: opt_b256("receipt_hash")?,
        output_did: opt_b256("output_did")?.map(Did),
        provider_paid: opt_u256("provider_paid")?,
        consumer_refunded: opt_u256("consumer_refunded")?,
        created_at: created_at as u64,
    })
}

/// Checks that `name` can be fulfilled now, and marks it fulfilled.
async fn fulfill(tx: &mut SqliteConnection, a: &Agreement, name: &str, now: u64) -> KeeperResult<()> {
    if a.state != AgreementState::Active {
        return Err(KeeperError::Closed { state: a.state });
    }
    let c = a.condition(name).ok_or_else(|| KeeperError::Invalid(format!("no condition `{name}`")))?;
    if c.status == ConditionStatus::Fulfilled {
        return Err(KeeperError::AlreadyFulfilled { condition: name.into() });
    }
    if let Some(missing) = c.dependencies.iter().find(|d| !a.is_fulfilled(d)) {
        return Err(KeeperError::DependencyUnfulfilled { condition: name.into(), missing: missing.clone() });
    }
    if let Some(deadline) = c.deadline
        && now > deadline
    {
        return Err(KeeperError::TimedOut { condition: name.into(), deadline });
    }
    sqlx::query("UPDATE conditions SET state = 'fulfilled', fulfilled_at = ?1 WHERE agreement_id = ?2 AND name = ?3")
        .bind(now as i64)
        .bind(a.id.to_string())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    Ok(())
}

async fn emit(
    tx: &mut SqliteConnection,
    agreement: B256,
    name: EventName,
    data: serde_json::Value,
    now: u64,
) -> KeeperResult<EventNote> {
    let id = sqlx::query("INSERT INTO events (agreement_id, name, data, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(agreement.to_string())
        .bind(name.as_str())
        .bind(data.to_string())
        .bind(now as i64)
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .last_insert_rowid();
    Ok(EventNote { id: id as u64, agreement })
}

async fn balance_in(tx: &mut SqliteConnection, who: Address) -> KeeperResult<U256> {
    let amount: Option<String> = sqlx::query_scalar("SELECT amount FROM balances WHERE address = ?1")
        .bind(addr(who))
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
    amount.map_or(Ok(U256::ZERO), |a| Ok(parse_u256(&a)?))
}

async fn set_balance(tx: &mut SqliteConnection, who: Address, amount: U256) -> KeeperResult<()> {
    sqlx::query("INSERT INTO balances (address, amount) VALUES (?1, ?2) ON CONFLICT (address) DO UPDATE SET amount = excluded.amount")
        .bind(addr(who))
        .bind(amount.to_string())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    Ok(())
}

async fn add_balance(tx: &mut SqliteConnection, who: Address, amount: U256) -> KeeperResult<U256> {
    let new = balance_in(tx, who).await?.checked_add(amount).ok_or(KeeperError::Invalid("balance overflow".into()))?;
    set_balance(tx, who, new).await?;
    Ok(new)
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

    async fn create_agreement(&self, n: NewAgreement) -> KeeperResult<Agreement> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM agreements WHERE id = ?1")
            .bind(n.id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
        if exists.is_some() {
            return Err(KeeperError::AlreadyExists(n.id));
        }
        sqlx::query(
            "INSERT INTO agreements (id, did, template_id, consumer, provider, price_per_fuel, max_fuel, escrow, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '0', 'active', ?8)",
        )
        .bind(n.id.to_string())
        .bind(n.did.0.to_string())
        .bind(n.template_id.to_string())
        .bind(addr(n.consumer))
        .bind(addr(n.provider))
        .bind(n.price_per_fuel.to_string())
        .bind(i64::try_from(n.max_fuel).map_err(|_| KeeperError::Invalid("max fuel too large".into()))?)
        .bind(now as i64)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        if !n.conditions.is_empty() {
            // All conditions in one statement.
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO conditions (agreement_id, position, name, key, values_hash, timeout, dependencies, state) ",
            );
            let mut timeouts = Vec::new();
            for c in &n.conditions {
                timeouts.push(i64::try_from(c.timeout).map_err(|_| KeeperError::Invalid("timeout too large".into()))?);
            }
            insert.push_values(n.conditions.iter().zip(timeouts).enumerate(), |mut b, (i, (c, timeout))| {
                b.push_bind(n.id.to_string())
                    .push_bind(i as i64)
                    .push_bind(c.name.clone())
                    .push_bind(c.key.to_string())
                    .push_bind(c.values_hash.to_string())
                    .push_bind(timeout)
                    .push_bind(serde_json::Value::from(c.dependencies.clone()).to_string())
                    .push_bind("unfulfilled");
            });
            insert.build().execute(&mut *tx).await.map_err(storage)?;
        }
        let data = serde_json::json!({ "did": n.did, "consumer": n.consumer, "provider": n.provider });
        let event = emit(&mut tx, n.id, EventName::ExecuteAgreement, data, now).await?;
        self.commit(tx, Some(event)).await?;
        self.agreement(n.id).await
    }

    async fn agreement(&self, id: B256) -> KeeperResult<Agreement> {
        let mut conn = self.db.pool().acquire().await.map_err(storage)?;
        load(&mut conn, id).await
    }

    async fn lock_payment(&self, id: B256, payer: Address) -> KeeperResult<()> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        if payer != a.consumer {
            return Err(KeeperError::NotParty { role: "consumer" });
        }
        fulfill(&mut tx, &a, "lockPayment", now).await?;
        let amount = a.price_per_fuel.saturating_mul(U256::from(a.max_fuel));
        let available = balance_in(&mut tx, payer).await?;
        if available < amount {
            return Err(KeeperError::InsufficientBalance { needed: amount, available });
        }
        set_balance(&mut tx, payer, available - amount).await?;
        sqlx::query("UPDATE agreements SET escrow = ?1 WHERE id = ?2")
            .bind(amount.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let event = emit(&mut tx, id, EventName::PaymentLocked, serde_json::json!({ "amount": amount }), now).await?;
        self.commit(tx, Some(event)).await
    }

    async fn fulfill_upload(&self, id: B256, algorithm_hash: B256) -> KeeperResult<()> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        fulfill(&mut tx, &a, "uploadAlgorithm", now).await?;
        sqlx::query("UPDATE agreements SET algorithm_hash = ?1 WHERE id = ?2")
            .bind(algorithm_hash.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let data = serde_json::json!({ "algorithmHash": algorithm_hash });
        let event = emit(&mut tx, id, EventName::FulfillUpload, data, now).await?;
        self.commit(tx, Some(event)).await
    }

    async fn grant_compute(&self, id: B256) -> KeeperResult<()> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        fulfill(&mut tx, &a, "grantCompute", now).await?;
        let data = serde_json::json!({ "consumer": a.consumer });
        let event = emit(&mut tx, id, EventName::ComputeGranted, data, now).await?;
        self.commit(tx, Some(event)).await
    }

    async fn release_payment(&self, id: B256, receipt_hash: B256, fuel_consumed: u64) -> KeeperResult<Payout> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        fulfill(&mut tx, &a, "releasePayment", now).await?;
        let provider_amount = a.price_per_fuel.saturating_mul(U256::from(fuel_consumed)).min(a.escrow);
        let consumer_refund = a.escrow - provider_amount;
        add_balance(&mut tx, a.provider, provider_amount).await?;
        add_balance(&mut tx, a.consumer, consumer_refund).await?;
        sqlx::query(
            "UPDATE agreements SET escrow = '0', state = 'released', receipt_hash = ?1, provider_paid = ?2, \
             consumer_refunded = ?3 WHERE id = ?4",
        )
        .bind(receipt_hash.to_string())
        .bind(provider_amount.to_string())
        .bind(consumer_refund.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        let payout = Payout { provider_amount, consumer_refund };
        let data = serde_json::json!({
            "receiptHash": receipt_hash,
            "fuelConsumed": fuel_consumed,
            "providerAmount": provider_amount,
            "consumerRefund": consumer_refund,
        });
        let event = emit(&mut tx, id, EventName::PaymentReleased, data, now).await?;
        self.commit(tx, Some(event)).await?;
        Ok(payout)
    }

    async fn refund_payment(&self, id: B256, caller: Address) -> KeeperResult<U256> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        if caller != a.consumer {
            return Err(KeeperError::NotParty { role: "consumer" });
        }
        if a.state != AgreementState::Active {
            return Err(KeeperError::Closed { state: a.state });
        }
        if !a.is_fulfilled("lockPayment") {
            return Err(KeeperError::NotRefundable("no payment was locked".into()));
        }
        let missed = |name: &str| {
            a.condition(name).is_some_and(|c| {
                c.status == ConditionStatus::Unfulfilled && c.deadline.is_some_and(|deadline| now > deadline)
            })
        };
        if !missed("grantCompute") && !missed("releasePayment") {
            let deadline = a.condition("releasePayment").and_then(|c| c.deadline);
            return Err(KeeperError::NotRefundable(match deadline {
                Some(d) => format!("the provider has until {d} (now {now}) to deliver"),
                None => "the provider has no deadline".into(),
            }));
        }
        // refundPayment's only dependency is lockPayment; its own timeout is unset.
        fulfill(&mut tx, &a, "refundPayment", now).await?;
        add_balance(&mut tx, a.consumer, a.escrow).await?;
        sqlx::query("UPDATE agreements SET escrow = '0', state = 'refunded', consumer_refunded = ?1 WHERE id = ?2")
            .bind(a.escrow.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let event = emit(&mut tx, id, EventName::PaymentRefund, serde_json::json!({ "amount": a.escrow }), now).await?;
        self.commit(tx, Some(event)).await?;
        Ok(a.escrow)
    }

    async fn publish_output(&self, id: B256, did: Did) -> KeeperResult<()> {
        let now = unix_now();
        let mut tx = self.tx().await?;
        let a = load(&mut tx, id).await?;
        if a.state != AgreementState::Released {
            return Err(KeeperError::Invalid("outputs are published after the payment is released".into()));
        }
        if a.output_did.is_some() {
            return Err(KeeperError::AlreadyFulfilled { condition: "outputPublished".into() });
        }
        sqlx::query("UPDATE agreements SET output_did = ?1 WHERE id = ?2")
            .bind(did.0.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let event = emit(&mut tx, id, EventName::OutputPublished, serde_json::json!({ "did": did }), now).await?;
        self.commit(tx, Some(event)).await
    }

    async fn events_after(&self, after: u64, agreement: Option<B256>, limit: u32) -> KeeperResult<Vec<KeeperEvent>> {
        let sql = if agreement.is_some() { EVENTS_OF_AGREEMENT } else { EVENTS_AFTER };
        let rows = sqlx::query(sql)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(agreement.map(|a| a.to_string()))
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(KeeperEvent {
                    id: r.get::<i64, _>("id") as u64,
                    agreement_id: parse_b256(&r.get::<String, _>("agreement_id"))?,
                    name: r.get::<String, _>("name").parse().map_err(KeeperError::Storage)?,
                    data: serde_json::from_str(&r.get::<String, _>("data"))
                        .map_err(|e| KeeperError::Storage(e.to_string()))?,
                    timestamp: r.get::<i64, _>("created_at") as u64,
                })
            })
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<EventNote> {
        self.notes.subscribe()
    }

    async fn balance(&self, who: Address) -> KeeperResult<U256> {
        let mut conn = self.db.pool().acquire().await.map_err(storage)?;
        balance_in(&mut conn, who).await
    }

    async fn credit(&self, who: Address, amount: U256) -> KeeperResult<U256> {
        let mut tx = self.tx().await?;
        let new = add_balance(&mut tx, who, amount).await?;
        self.commit(tx, None).await?;
        Ok(new)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::template::{self, Terms};
    use crate::keeper::ConditionInit;

    async fn keeper() -> (tempfile::TempDir, EmbeddedKeeper) {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("k.db")).await.unwrap();
        (tmp, EmbeddedKeeper::new(db, 1337).await.unwrap())
    }

    fn new_agreement(k: &EmbeddedKeeper, id: u8, timeouts: &[(&str, u64)]) -> NewAgreement {
        let terms = Terms {
            did: Did(B256::repeat_byte(9)),
            provider: Address::repeat_byte(0xaa),
            consumer: Address::repeat_byte(0xcc),
            price_per_fuel: U256::from(2),
            max_fuel: 1_000,
        };
        let t: BTreeMap<String, u64> = timeouts.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        let specs = template::condition_specs(k.controllers(), &terms, &t);
        NewAgreement {
            id: B256::repeat_byte(id),
            did: terms.did,
            template_id: template::template_id(),
            consumer: terms.consumer,
            provider: terms.provider,
            price_per_fuel: terms.price_per_fuel,
            max_fuel: terms.max_fuel,
            conditions: specs
                .iter()
                .map(|c| ConditionInit {
                    name: c.name.clone(),
                    key: c.key,
                    values_hash: terms.values_hash(&c.name).unwrap(),
                    timeout: c.timeout,
                    dependencies: c.dependencies.clone(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn the_happy_path_moves_tokens_and_logs_events_in_order() {
        let (_t, k) = keeper().await;
        let mut notes = k.subscribe();
        let (provider, consumer) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xcc));
        k.credit(consumer, U256::from(5_000)).await.unwrap();
        let a = k.create_agreement(new_agreement(&k, 1, &[])).await.unwrap();
        assert!(matches!(k.create_agreement(new_agreement(&k, 1, &[])).await, Err(KeeperError::AlreadyExists(_))));
        assert!(matches!(k.grant_compute(a.id).await, Err(KeeperError::DependencyUnfulfilled { .. })));
        assert!(matches!(k.lock_payment(a.id, provider).await, Err(KeeperError::NotParty { .. })));
        k.lock_payment(a.id, consumer).await.unwrap();
        assert!(matches!(k.lock_payment(a.id, consumer).await, Err(KeeperError::AlreadyFulfilled { .. })));
        assert_eq!(k.balance(consumer).await.unwrap(), U256::from(3_000));
        k.fulfill_upload(a.id, B256::repeat_byte(4)).await.unwrap();
        k.grant_compute(a.id).await.unwrap();
        let payout = k.release_payment(a.id, B256::repeat_byte(5), 300).await.unwrap();
        assert_eq!(payout, Payout { provider_amount: U256::from(600), consumer_refund: U256::from(1_400) });
        assert_eq!(k.balance(provider).await.unwrap(), U256::from(600));
        assert_eq!(k.balance(consumer).await.unwrap(), U256::from(4_400));
        assert!(matches!(k.refund_payment(a.id, consumer).await, Err(KeeperError::Closed { .. })));
        k.publish_output(a.id, Did(B256::repeat_byte(6))).await.unwrap();
        let names: Vec<EventName> =
            k.events_after(0, Some(a.id), 100).await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                EventName::ExecuteAgreement,
                EventName::PaymentLocked,
                EventName::FulfillUpload,
                EventName::ComputeGranted,
                EventName::PaymentReleased,
                EventName::OutputPublished
            ]
        );
        assert_eq!(notes.try_recv().map(|n| (n.id, n.agreement)), Ok((1, a.id)), "subscribers hear of events");
        let a = k.agreement(a.id).await.unwrap();
        assert_eq!((a.state, a.escrow), (AgreementState::Released, U256::ZERO));
    }

    #[tokio::test]
    async fn event_queries_use_their_indexes() {
        let (_t, k) = keeper().await;
        for (sql, index) in [(EVENTS_OF_AGREEMENT, "events_by_agreement"), (EVENTS_AFTER, "INTEGER PRIMARY KEY")] {
            let plan = crate::store::query_plan(&k.db, sql).await;
            assert!(plan.iter().any(|d| d.contains(index)), "{sql}: {plan:?}");
        }
        // And both work, with and without an agreement.
        let a = k.create_agreement(new_agreement(&k, 7, &[])).await.unwrap();
        let b = k.create_agreement(new_agreement(&k, 8, &[])).await.unwrap();
        let of_b = k.events_after(0, Some(b.id), 10).await.unwrap();
        assert_eq!(of_b.iter().map(|e| e.agreement_id).collect::<Vec<_>>(), vec![b.id]);
        assert_eq!(k.events_after(0, None, 10).await.unwrap().len(), 2);
        assert!(k.events_after(of_b[0].id, Some(a.id), 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refunds_need_a_missed_deadline() {
        let (_t, k) = keeper().await;
        let consumer = Address::repeat_byte(0xcc);
        k.credit(consumer, U256::from(2_000)).await.unwrap();
        let a = k.create_agreement(new_agreement(&k, 2, &[("grantCompute", 1), ("releasePayment", 1)])).await.unwrap();
        k.lock_payment(a.id, consumer).await.unwrap();
        assert!(matches!(k.refund_payment(a.id, consumer).await, Err(KeeperError::NotRefundable(_))));
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        assert!(matches!(
            k.grant_compute(a.id).await,
            Err(KeeperError::TimedOut { .. }) | Err(KeeperError::DependencyUnfulfilled { .. })
        ));
        assert_eq!(k.refund_payment(a.id, consumer).await.unwrap(), U256::from(2_000));
        assert_eq!(k.balance(consumer).await.unwrap(), U256::from(2_000));
        assert!(matches!(k.release_payment(a.id, B256::ZERO, 1).await, Err(KeeperError::Closed { .. })));
    }

    #[tokio::test]
    async fn insufficient_funds_change_nothing() {
        let (_t, k) = keeper().await;
        let consumer = Address::repeat_byte(0xcc);
        k.credit(consumer, U256::from(10)).await.unwrap();
        let a = k.create_agreement(new_agreement(&k, 3, &[])).await.unwrap();
        assert!(matches!(k.lock_payment(a.id, consumer).await, Err(KeeperError::InsufficientBalance { .. })));
        let a = k.agreement(a.id).await.unwrap();
        assert!(!a.is_fulfilled("lockPayment"), "the transaction rolled back");
        assert_eq!(k.balance(consumer).await.unwrap(), U256::from(10));
    }
}
