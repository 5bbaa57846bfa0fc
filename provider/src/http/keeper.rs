//! The embedded keeper's HTTP facade: agreements, payments, events, balances. With an EVM
//! keeper the same operations are contract calls made from the consumer's wallet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use alloy_primitives::{Address, B256};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::instrument;

use super::extract::{ApiPath, ApiQuery, SignedJson};
use super::{Api, ApiError, ApiResult};
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{BalanceView, CreditRequest, Empty, EventsView, RefundView};
use crate::protocol::events::EventName;

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/keeper/agreements/{id}", get(agreement))
        .route("/api/v1/keeper/agreements/{id}/lock-payment", post(lock_payment))
        .route("/api/v1/keeper/agreements/{id}/refund", post(refund))
        .route("/api/v1/keeper/events", get(events))
        .route("/api/v1/keeper/balances/{address}", get(balance))
        .route("/api/v1/keeper/faucet", post(faucet))
        .route("/api/v1/keeper/credit", post(credit))
}

async fn agreement(State(api): State<Arc<Api>>, ApiPath(id): ApiPath<B256>) -> ApiResult<Json<Agreement>> {
    Ok(Json(api.keeper.agreement(id).await?))
}

#[instrument(skip_all, fields(agreement_id = %id))]
async fn lock_payment(
    State(api): State<Arc<Api>>,
    ApiPath(id): ApiPath<B256>,
    SignedJson(who, Empty {}): SignedJson<Empty>,
) -> ApiResult<Json<Agreement>> {
    Ok(Json(api.agreements.lock_payment(who, id).await?))
}

#[instrument(skip_all, fields(agreement_id = %id))]
async fn refund(
    State(api): State<Arc<Api>>,
    ApiPath(id): ApiPath<B256>,
    SignedJson(who, Empty {}): SignedJson<Empty>,
) -> ApiResult<Json<RefundView>> {
    Ok(Json(RefundView { refunded: api.agreements.refund(who, id).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    agreement: Option<B256>,
    limit: Option<u32>,
    /// Long polling: when nothing matches yet, wait up to this long for something that does.
    #[serde(default)]
    wait_ms: u64,
    /// Long polling for these events (comma-separated names): wait until one of them is
    /// among the events after `after`, not just any event. (A page already full of other
    /// events is answered at once, so that the caller moves on.)
    wait_for: Option<String>,
}

/// The event names of a `waitFor` list; `None` when there is none.
fn wanted(list: Option<&str>) -> ApiResult<Option<Vec<EventName>>> {
    let Some(list) = list else { return Ok(None) };
    list.split(',')
        .map(|name| {
            name.parse::<EventName>().map_err(|_| {
                let known: Vec<&str> = EventName::ALL.iter().map(|n| n.as_str()).collect();
                ApiError::BadRequest(format!("waitFor: `{name}` is not an event (events: {})", known.join(", ")))
            })
        })
        .collect::<ApiResult<Vec<_>>>()
        .map(Some)
}

/// The longest `waitMs` honoured.
const MAX_EVENTS_WAIT: Duration = Duration::from_secs(30);

async fn events(State(api): State<Arc<Api>>, ApiQuery(q): ApiQuery<EventsQuery>) -> ApiResult<Json<EventsView>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let wanted = wanted(q.wait_for.as_deref())?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms).min(MAX_EVENTS_WAIT);
    // Listening before reading, so an event committed after the read is still heard of.
    let mut news = api.keeper.subscribe();
    loop {
        let events = api.keeper.events_after(q.after, q.agreement, limit).await?;
        let enough = match &wanted {
            None => !events.is_empty(),
            Some(names) => events.len() >= limit as usize || events.iter().any(|e| names.contains(&e.name())),
        };
        if enough {
            return Ok(Json(EventsView { events }));
        }
        // Wait for an event this query has not read; others' events cost nothing but a
        // comparison. When the wait ends, the answer is what was read (possibly nothing).
        let read = events.last().map_or(q.after, |e| e.id);
        loop {
            match tokio::time::timeout_at(deadline, news.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return Ok(Json(EventsView { events })),
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Ok(note))
                    if note.id > read
                        && q.agreement.is_none_or(|a| a == note.agreement)
                        && wanted.as_ref().is_none_or(|names| names.contains(&note.name)) =>
                {
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

async fn balance(State(api): State<Arc<Api>>, ApiPath(address): ApiPath<Address>) -> ApiResult<Json<BalanceView>> {
    Ok(Json(BalanceView { address, balance: api.keeper.balance(address).await? }))
}

#[instrument(skip_all)]
async fn faucet(
    State(api): State<Arc<Api>>,
    SignedJson(who, Empty {}): SignedJson<Empty>,
) -> ApiResult<Json<BalanceView>> {
    let Some(amount) = api.faucet else {
        return Err(ApiError::Forbidden("this provider has no faucet (it is for development: --dev-faucet)".into()));
    };
    Ok(Json(BalanceView { address: who, balance: api.keeper.credit(who, amount).await? }))
}

#[instrument(skip_all)]
async fn credit(
    State(api): State<Arc<Api>>,
    SignedJson(who, req): SignedJson<CreditRequest>,
) -> ApiResult<Json<BalanceView>> {
    if !api.operators.contains(who) {
        return Err(ApiError::Forbidden(format!("{who} is not an operator of this provider")));
    }
    let balance = api.keeper.credit(req.address, req.amount).await?;
    tracing::info!(operator = %who, account = %req.address, amount = %req.amount, "credited");
    Ok(Json(BalanceView { address: req.address, balance }))
}
