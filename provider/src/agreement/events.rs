//! Event-action: the provider reacts to keeper events through handlers registered by name, as
//! the DDO's `serviceAgreementContract.events` mapping says (`actorType: publisher`).
//!
//! The dispatcher reads the keeper's ordered event log after a cursor persisted in the database,
//! runs every handler subscribed to each event, then advances the cursor. After a restart it
//! resumes where it stopped; handlers are idempotent, so an event seen twice does no harm.
//! Business refusals (a deadline passed, already done) are final and logged; infrastructure
//! failures stop the dispatcher at that event and it retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::future::BoxFuture;
use tokio::sync::broadcast::error::TryRecvError;

use super::template::{Actor, EVENT_HANDLERS};
use crate::keeper::{EventName, KeeperError, KeeperEvent};
use crate::provider::Provider;

/// A handler: what the provider does when an event arrives.
pub type Handler = fn(Arc<Provider>, KeeperEvent) -> BoxFuture<'static, Result<()>>;

/// The provider's handlers, by `module.function`.
pub fn registry() -> HashMap<&'static str, Handler> {
    let mut r: HashMap<&'static str, Handler> = HashMap::new();
    r.insert("compute.grantCompute", |p, e| Box::pin(grant_compute(p, e)));
    r
}

/// `compute.grantCompute`: once the payment is locked and the algorithm uploaded, grant.
async fn grant_compute(p: Arc<Provider>, event: KeeperEvent) -> Result<()> {
    let a = match p.keeper.agreement(event.agreement_id).await {
        Ok(a) => a,
        Err(KeeperError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if a.provider != p.address() || a.is_fulfilled("grantCompute") {
        return Ok(());
    }
    if !(a.is_fulfilled("lockPayment") && a.is_fulfilled("uploadAlgorithm")) {
        return Ok(()); // the other half will come with its own event
    }
    match p.keeper.grant_compute(a.id).await {
        Ok(()) => {
            tracing::info!(agreement = %a.id, "compute granted");
            Ok(())
        }
        Err(
            e @ (KeeperError::AlreadyFulfilled { .. }
            | KeeperError::TimedOut { .. }
            | KeeperError::Closed { .. }
            | KeeperError::DependencyUnfulfilled { .. }),
        ) => {
            tracing::warn!(agreement = %a.id, error = %e, "not granting compute");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The handlers subscribed to each event, from the template's mapping.
fn subscriptions() -> Result<HashMap<EventName, Vec<(&'static str, Handler)>>> {
    let registry = registry();
    let mut subs: HashMap<EventName, Vec<(&'static str, Handler)>> = HashMap::new();
    for (event, actor, module, function) in EVENT_HANDLERS {
        if *actor != Actor::Publisher {
            continue;
        }
        let key = format!("{module}.{function}");
        let Some((name, handler)) = registry.get_key_value(key.as_str()) else {
            bail!("the template maps {event} to `{key}`, which the provider has no handler for");
        };
        subs.entry(*event).or_default().push((name, *handler));
    }
    Ok(subs)
}

const CURSOR: &str = "provider";

async fn cursor(p: &Provider) -> Result<u64> {
    let c: Option<i64> = sqlx::query_scalar("SELECT last_event FROM handler_cursors WHERE handler = ?1")
        .bind(CURSOR)
        .fetch_optional(p.db.pool())
        .await?;
    Ok(c.unwrap_or(0) as u64)
}

async fn save_cursor(p: &Provider, id: u64) -> Result<()> {
    p.db.execute(
        sqlx::query(
            "INSERT INTO handler_cursors (handler, last_event) VALUES (?1, ?2) \
         ON CONFLICT (handler) DO UPDATE SET last_event = excluded.last_event",
        )
        .bind(CURSOR)
        .bind(id as i64),
    )
    .await?;
    Ok(())
}

/// Times one event's handler is tried before the dispatcher gives up on it, so that one
/// broken event does not hold back every later one. (What it would have done, a consumer can
/// undo: an agreement whose compute is never granted is refunded after its deadline.)
const MAX_ATTEMPTS: u32 = 5;

/// The event whose handler failed last, and how many times in a row.
#[derive(Debug, Default)]
struct Failing {
    event: u64,
    times: u32,
}

impl Failing {
    /// Counts a failure of `event`'s handler; true once it is time to give up on it.
    fn give_up(&mut self, event: u64) -> bool {
        if self.event != event {
            *self = Failing { event, times: 0 };
        }
        self.times += 1;
        self.times >= MAX_ATTEMPTS
    }
}

/// Handles every event after `*after` (the persisted cursor, kept in memory by the caller);
/// returns how many.
async fn dispatch_pending(p: &Arc<Provider>, after: &mut u64, failing: &mut Failing) -> Result<usize> {
    const BATCH: u32 = 200;
    let subs = subscriptions()?;
    let mut handled = 0;
    loop {
        let events = p.keeper.events_after(*after, None, BATCH).await?;
        let full = events.len() == BATCH as usize;
        if events.is_empty() {
            return Ok(handled);
        }
        // The cursor is saved once per batch: after a crash the handlers see the rest of the
        // batch again, which they tolerate (they are idempotent).
        let mut last = None;
        for event in events {
            for (name, handler) in subs.get(&event.name).into_iter().flatten() {
                tracing::debug!(event = %event.name, id = event.id, handler = name, "dispatching");
                if let Err(e) = handler(p.clone(), event.clone()).await {
                    if failing.give_up(event.id) {
                        tracing::error!(
                            event = %event.name, id = event.id, handler = name, error = %format!("{e:#}"),
                            "giving up on this event after {MAX_ATTEMPTS} attempts"
                        );
                        continue;
                    }
                    if let Some(id) = last {
                        save_cursor(p, id).await?;
                        *after = id;
                    }
                    return Err(e);
                }
            }
            last = Some(event.id);
            handled += 1;
        }
        if let Some(id) = last {
            save_cursor(p, id).await?;
            *after = id;
        }
        if !full {
            return Ok(handled);
        }
    }
}

/// Runs the dispatcher in the background: at start, on every new event, and every few seconds.
pub fn spawn_dispatcher(p: Arc<Provider>) -> Result<()> {
    subscriptions()?; // fail at start, not later, if a handler is missing
    let mut wake = p.keeper.subscribe();
    tokio::spawn(async move {
        // The persisted cursor is read once; from then on it is kept here (and saved).
        let mut after: Option<u64> = None;
        let mut failing = Failing::default();
        loop {
            let result = async {
                let after = match &mut after {
                    Some(a) => a,
                    None => after.insert(cursor(&p).await?),
                };
                dispatch_pending(&p, after, &mut failing).await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(error = %format!("{e:#}"), "event dispatch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Any news (or news missed while lagging) means: read the log again.
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.recv()).await;
            while !matches!(wake.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_event_is_given_up_on_after_its_attempts_and_others_start_afresh() {
        let mut failing = Failing::default();
        for _ in 1..MAX_ATTEMPTS {
            assert!(!failing.give_up(7));
        }
        assert!(failing.give_up(7));
        assert!(!failing.give_up(8), "another event starts its own count");
    }

    #[test]
    fn every_publisher_event_of_the_template_has_a_handler() {
        let subs = subscriptions().unwrap();
        assert_eq!(subs[&EventName::PaymentLocked][0].0, "compute.grantCompute");
        assert_eq!(subs[&EventName::FulfillUpload][0].0, "compute.grantCompute");
        assert!(!subs.contains_key(&EventName::ComputeGranted), "consumer events are not the provider's");
    }
}
