//! The embedded keeper's tables, read and written through typed rows: `agreements`,
//! `conditions`, `events` and `balances` (schema in `provider/migrations/`). Only the embedded
//! keeper touches these tables.

use alloy_primitives::{Address, B256, U256};
use sqlx::{Any, Executor};

use crate::store::writer::WriteConn;

use super::super::{KeeperError, KeeperResult, NewAgreement};
use crate::protocol::agreement::{Agreement, AgreementState, Condition, ConditionStatus};
use crate::protocol::ddo::Did;
use crate::protocol::events::{AgreementEvent, EventNote, KeeperEvent};
use crate::protocol::template::ConditionName;
use crate::store::{JsonText as Json, Text};

/// An agreement's row, joined with one of its conditions' (`c_*`, NULL for an agreement
/// without conditions).
#[derive(sqlx::FromRow)]
struct AgreementRow {
    id: Text<B256>,
    did: Text<B256>,
    template_id: Text<B256>,
    consumer: Text<Address>,
    provider: Text<Address>,
    price_per_fuel: Text<U256>,
    max_fuel: i64,
    escrow: Text<U256>,
    state: String,
    algorithm_hash: Option<Text<B256>>,
    receipt_hash: Option<Text<B256>>,
    output_did: Option<Text<B256>>,
    provider_paid: Option<Text<U256>>,
    consumer_refunded: Option<Text<U256>>,
    created_at: i64,
    #[sqlx(flatten)]
    condition: ConditionRow,
}

#[derive(sqlx::FromRow)]
struct ConditionRow {
    c_name: Option<String>,
    c_key: Option<Text<B256>>,
    c_values_hash: Option<Text<B256>>,
    c_timeout: Option<i64>,
    c_dependencies: Option<Json<Vec<ConditionName>>>,
    c_state: Option<String>,
    c_fulfilled_at: Option<i64>,
}

fn corrupt(what: impl std::fmt::Display) -> KeeperError {
    KeeperError::Corrupt(what.to_string())
}

impl ConditionRow {
    /// The condition, if the row has one.
    fn condition(self, created_at: u64) -> KeeperResult<Option<Condition>> {
        let Some(name) = self.c_name else { return Ok(None) };
        let missing = || corrupt(format!("condition `{name}` has a NULL column"));
        let timeout = self.c_timeout.ok_or_else(missing)? as u64;
        Ok(Some(Condition {
            name: name.parse().map_err(corrupt)?,
            key: self.c_key.ok_or_else(missing)?.0,
            values_hash: self.c_values_hash.ok_or_else(missing)?.0,
            timeout,
            deadline: (timeout > 0).then(|| created_at + timeout),
            dependencies: self.c_dependencies.ok_or_else(missing)?.0,
            status: match self.c_state.as_deref() {
                Some("fulfilled") => ConditionStatus::Fulfilled,
                Some("unfulfilled") => ConditionStatus::Unfulfilled,
                other => return Err(corrupt(format!("condition `{name}` is in state {other:?}"))),
            },
            fulfilled_at: self.c_fulfilled_at.map(|t| t as u64),
        }))
    }
}

fn state_of(text: &str) -> KeeperResult<AgreementState> {
    text.parse().map_err(corrupt)
}

/// Reads agreement `id` with its conditions, in one query (the agreement's columns repeat on
/// each of its conditions' rows).
pub(super) async fn load<'c>(conn: impl Executor<'c, Database = Any>, id: B256) -> KeeperResult<Agreement> {
    let rows: Vec<AgreementRow> = sqlx::query_as(
        "SELECT a.*, c.name AS c_name, c.key AS c_key, c.values_hash AS c_values_hash, c.timeout AS c_timeout, \
         c.dependencies AS c_dependencies, c.state AS c_state, c.fulfilled_at AS c_fulfilled_at \
         FROM agreements a LEFT JOIN conditions c ON c.agreement_id = a.id WHERE a.id = $1 ORDER BY c.position",
    )
    .bind(Text(id))
    .fetch_all(conn)
    .await?;
    let mut rows = rows.into_iter();
    let first = rows.next().ok_or(KeeperError::NotFound(id))?;
    let created_at = first.created_at as u64;
    let mut conditions = Vec::new();
    let mut agreement = Agreement {
        id: first.id.0,
        did: Did(first.did.0),
        template_id: first.template_id.0,
        consumer: first.consumer.0,
        provider: first.provider.0,
        price_per_fuel: first.price_per_fuel.0,
        max_fuel: first.max_fuel as u64,
        escrow: first.escrow.0,
        state: state_of(&first.state)?,
        conditions: Vec::new(),
        algorithm_hash: first.algorithm_hash.map(|h| h.0),
        receipt_hash: first.receipt_hash.map(|h| h.0),
        output_did: first.output_did.map(|d| Did(d.0)),
        provider_paid: first.provider_paid.map(|a| a.0),
        consumer_refunded: first.consumer_refunded.map(|a| a.0),
        created_at,
    };
    for row in std::iter::once(first.condition).chain(rows.map(|r| r.condition)) {
        conditions.extend(row.condition(created_at)?);
    }
    agreement.conditions = conditions;
    Ok(agreement)
}

/// Is there an agreement `id`?
pub(super) async fn exists(conn: &mut WriteConn, id: B256) -> KeeperResult<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM agreements WHERE id = $1").bind(Text(id)).fetch_optional(&mut *conn).await?;
    Ok(found.is_some())
}

/// Inserts a new agreement and its conditions, unfulfilled.
pub(super) async fn insert(conn: &mut WriteConn, n: &NewAgreement, now: u64) -> KeeperResult<()> {
    let max_fuel = i64::try_from(n.max_fuel).map_err(|_| KeeperError::Invalid("max fuel too large".into()))?;
    sqlx::query(
        "INSERT INTO agreements (id, did, template_id, consumer, provider, price_per_fuel, max_fuel, escrow, state, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, '0', 'active', $8)",
    )
    .bind(Text(n.id))
    .bind(Text(n.did.0))
    .bind(Text(n.template_id))
    .bind(Text(n.consumer))
    .bind(Text(n.provider))
    .bind(Text(n.price_per_fuel))
    .bind(max_fuel)
    .bind(now as i64)
    .execute(&mut *conn)
    .await?;
    if n.conditions.is_empty() {
        return Ok(());
    }
    let mut timeouts = Vec::new();
    for c in &n.conditions {
        timeouts.push(i64::try_from(c.timeout).map_err(|_| KeeperError::Invalid("timeout too large".into()))?);
    }
    // All conditions in one statement (placeholders written out: sqlx's query builder writes
    // `?`, which PostgreSQL does not take).
    const COLUMNS: usize = 8;
    let rows: Vec<String> = (0..n.conditions.len())
        .map(|r| {
            let marks: Vec<String> = (1..=COLUMNS).map(|c| format!("${}", r * COLUMNS + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO conditions (agreement_id, position, name, key, values_hash, timeout, dependencies, state) \
         VALUES {}",
        rows.join(", ")
    );
    let mut insert = sqlx::query(&sql);
    for (i, (c, timeout)) in n.conditions.iter().zip(timeouts).enumerate() {
        insert = insert
            .bind(Text(n.id))
            .bind(i as i64)
            .bind(c.name.as_str())
            .bind(Text(c.key))
            .bind(Text(c.values_hash))
            .bind(timeout)
            .bind(Json(c.dependencies.clone()))
            .bind("unfulfilled");
    }
    insert.execute(&mut *conn).await?;
    Ok(())
}

/// Marks condition `name` of agreement `id` fulfilled at `now`.
pub(super) async fn set_fulfilled(conn: &mut WriteConn, id: B256, name: ConditionName, now: u64) -> KeeperResult<()> {
    sqlx::query("UPDATE conditions SET state = 'fulfilled', fulfilled_at = $1 WHERE agreement_id = $2 AND name = $3")
        .bind(now as i64)
        .bind(Text(id))
        .bind(name.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The columns of `agreements` a step changes (`None`: unchanged).
#[derive(Debug, Default)]
pub(super) struct AgreementUpdate {
    pub escrow: Option<U256>,
    pub state: Option<AgreementState>,
    pub algorithm_hash: Option<B256>,
    pub receipt_hash: Option<B256>,
    pub output_did: Option<Did>,
    pub provider_paid: Option<U256>,
    pub consumer_refunded: Option<U256>,
}

/// Applies `update` to agreement `id`.
pub(super) async fn update(conn: &mut WriteConn, id: B256, update: AgreementUpdate) -> KeeperResult<()> {
    sqlx::query(
        "UPDATE agreements SET escrow = COALESCE($1, escrow), state = COALESCE($2, state), \
         algorithm_hash = COALESCE($3, algorithm_hash), receipt_hash = COALESCE($4, receipt_hash), \
         output_did = COALESCE($5, output_did), provider_paid = COALESCE($6, provider_paid), \
         consumer_refunded = COALESCE($7, consumer_refunded) WHERE id = $8",
    )
    .bind(update.escrow.map(Text))
    .bind(update.state.map(AgreementState::as_str))
    .bind(update.algorithm_hash.map(Text))
    .bind(update.receipt_hash.map(Text))
    .bind(update.output_did.map(|d| Text(d.0)))
    .bind(update.provider_paid.map(Text))
    .bind(update.consumer_refunded.map(Text))
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends `event` to the log; returns its position.
pub(super) async fn emit(conn: &mut WriteConn, event: AgreementEvent, now: u64) -> KeeperResult<EventNote> {
    let agreement = event.agreement_id();
    let name = event.name();
    // The event's fields, as its `data` on the wire.
    let stored = serde_json::to_value(&event).map_err(corrupt)?;
    let data = stored.get("data").cloned().unwrap_or_default();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (agreement_id, name, data, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(Text(agreement))
    .bind(name.as_str())
    .bind(Json(data))
    .bind(now as i64)
    .fetch_one(&mut *conn)
    .await?;
    Ok(EventNote { id: id as u64, agreement, name })
}

/// An event's row.
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    agreement_id: Text<B256>,
    name: String,
    data: Json<serde_json::Value>,
    created_at: i64,
}

impl EventRow {
    fn event(self) -> KeeperResult<KeeperEvent> {
        // The stored name and data are the event's tagged form.
        let tagged = serde_json::json!({ "name": self.name, "data": self.data.0 });
        let event: AgreementEvent =
            serde_json::from_value(tagged).map_err(|e| corrupt(format!("event {}: {e}", self.id)))?;
        Ok(KeeperEvent {
            id: self.id as u64,
            agreement_id: self.agreement_id.0,
            event,
            timestamp: self.created_at as u64,
        })
    }
}

/// One agreement's events after `$1` (`$2`: the agreement), through `events_by_agreement`
/// however long the log. (One statement with a `$2 IS NULL OR` filter would make SQLite walk
/// every event after `$1`: from the start, for a new agreement.)
pub(super) const EVENTS_OF_AGREEMENT: &str = "SELECT id, agreement_id, name, data, created_at FROM events \
     WHERE agreement_id = $2 AND id > $1 ORDER BY id LIMIT $3";
/// All events after `$1`.
pub(super) const EVENTS_AFTER: &str =
    "SELECT id, agreement_id, name, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2";

/// Events after `after` (of one agreement, if given), oldest first.
pub(super) async fn events_after<'c>(
    conn: impl Executor<'c, Database = Any>,
    after: u64,
    agreement: Option<B256>,
    limit: u32,
) -> KeeperResult<Vec<KeeperEvent>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows: Vec<EventRow> = match agreement {
        Some(agreement) => {
            sqlx::query_as(EVENTS_OF_AGREEMENT)
                .bind(after)
                .bind(Text(agreement))
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?
        }
        None => sqlx::query_as(EVENTS_AFTER).bind(after).bind(i64::from(limit)).fetch_all(conn).await?,
    };
    rows.into_iter().map(EventRow::event).collect()
}

/// The ids, agreements and names of the events after `after`, oldest first (what other nodes'
/// commits added: see `EmbeddedKeeper`'s follower).
pub(super) async fn notes_after<'c>(
    conn: impl Executor<'c, Database = Any>,
    after: u64,
    limit: u32,
) -> KeeperResult<Vec<EventNote>> {
    let rows: Vec<(i64, Text<B256>, String)> =
        sqlx::query_as("SELECT id, agreement_id, name FROM events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(id, agreement, name)| {
            Ok(EventNote { id: id as u64, agreement: agreement.0, name: name.parse().map_err(corrupt)? })
        })
        .collect()
}

/// The newest event's id (0 for an empty log).
pub(super) async fn last_event<'c>(conn: impl Executor<'c, Database = Any>) -> KeeperResult<u64> {
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(conn).await?;
    Ok(last.unwrap_or(0) as u64)
}

/// PostgreSQL: locks agreement `id`'s row until the transaction ends, so that two nodes never
/// run a step of the same agreement at once (a condition fulfilled twice, an escrow spent
/// twice). (SQLite's one writer serializes steps already.)
pub(super) async fn lock_agreement(conn: &mut WriteConn, id: B256) -> KeeperResult<()> {
    sqlx::query("SELECT id FROM agreements WHERE id = $1 FOR UPDATE").bind(Text(id)).fetch_optional(&mut *conn).await?;
    Ok(())
}

/// PostgreSQL: locks an account's balance row (creating it at 0) until the transaction ends.
pub(super) async fn lock_balance(conn: &mut WriteConn, who: Address) -> KeeperResult<()> {
    sqlx::query("INSERT INTO balances (address, amount) VALUES ($1, '0') ON CONFLICT (address) DO NOTHING")
        .bind(Text(who))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT amount FROM balances WHERE address = $1 FOR UPDATE")
        .bind(Text(who))
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// PostgreSQL: takes the event log's lock until the transaction ends, then announces the
/// commit to other nodes. Event ids come from a sequence, handed out before commit: without
/// the lock, a transaction could commit id 11 while id 10 is still uncommitted, and a reader
/// that saw 11 would never look back for 10. With it, ids are committed in order.
pub(super) async fn serialize_events(conn: &mut WriteConn) -> KeeperResult<()> {
    // (Counted: the `Any` driver reads every row, and has no type for these functions' `void`.)
    sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock(7243661), pg_notify('tidepool_events', '')) AS l")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An account's balance (0 if it has none).
pub(super) async fn balance<'c>(conn: impl Executor<'c, Database = Any>, who: Address) -> KeeperResult<U256> {
    let amount: Option<Text<U256>> = sqlx::query_scalar("SELECT amount FROM balances WHERE address = $1")
        .bind(Text(who))
        .fetch_optional(conn)
        .await?;
    Ok(amount.map_or(U256::ZERO, |a| a.0))
}

/// Sets an account's balance.
pub(super) async fn set_balance(conn: &mut WriteConn, who: Address, amount: U256) -> KeeperResult<()> {
    sqlx::query(
        "INSERT INTO balances (address, amount) VALUES ($1, $2) \
         ON CONFLICT (address) DO UPDATE SET amount = excluded.amount",
    )
    .bind(Text(who))
    .bind(Text(amount))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds `amount` to an account; returns the new balance.
pub(super) async fn add_balance(conn: &mut WriteConn, who: Address, amount: U256) -> KeeperResult<U256> {
    let new =
        balance(&mut *conn, who).await?.checked_add(amount).ok_or(KeeperError::Invalid("balance overflow".into()))?;
    set_balance(conn, who, new).await?;
    Ok(new)
}
