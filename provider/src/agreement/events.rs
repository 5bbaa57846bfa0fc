//! Event-action: the provider reacts to keeper events with the handlers the DDO's
//! `serviceAgreementContract.events` mapping names for `actorType: publisher` ([`Handler`]).
//!
//! The dispatcher reads the keeper's ordered event log after a cursor persisted in the database,
//! runs every handler subscribed to each event, then advances the cursor. After a restart it
//! resumes where it stopped; handlers are idempotent, so an event seen twice does no harm.
//! Business refusals (a deadline passed, already done) are final and logged; infrastructure
//! failures stop the dispatcher at that event and it retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use tokio::sync::broadcast::error::TryRecvError;
use tracing::instrument;

use crate::keeper::{Keeper, KeeperError};
use crate::protocol::events::{EventName, KeeperEvent};
use crate::protocol::handlers::{Actor, EVENT_HANDLERS, Handler};
use crate::protocol::template::ConditionName;
use crate::store::{Db, DbError};

/// Why handling an event failed (an infrastructure failure: the dispatcher retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The template maps an event of the provider's to a handler the provider does not run.
    #[error("the template maps {event} to `{handler}`, which the provider has no handler for")]
    NoHandler {
        /// The event.
        event: EventName,
        /// The handler the template names for it.
        handler: Handler,
    },
    /// The keeper failed.
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    /// The dispatcher's cursor could not be read or stored.
    #[error("the dispatcher's cursor cannot be kept")]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for DispatchError {
    fn from(e: sqlx::Error) -> Self {
        DispatchError::Db(DbError(e))
    }
}

/// The provider's reactions to keeper events (`actorType: publisher` in the DDO's mapping).
#[derive(Debug)]
pub struct Dispatcher {
    keeper: Arc<dyn Keeper>,
    /// Owns the table `handler_cursors`.
    db: Db,
    /// This provider: only its own agreements are acted on.
    provider: Address,
}

/// The handlers subscribed to each event, from the template's mapping; refuses a mapping
/// that names a handler the provider does not run.
fn subscriptions() -> Result<HashMap<EventName, Vec<Handler>>, DispatchError> {
    let mut subs: HashMap<EventName, Vec<Handler>> = HashMap::new();
    for (event, actor, handler) in EVENT_HANDLERS {
        if *actor != Actor::Publisher {
            continue;
        }
        if !Dispatcher::RUNS.contains(handler) {
            return Err(DispatchError::NoHandler { event: *event, handler: *handler });
        }
        subs.entry(*event).or_default().push(*handler);
    }
    Ok(subs)
}

const CURSOR: &str = "provider";

impl Dispatcher {
    /// The handlers the provider runs.
    const RUNS: &[Handler] = &[Handler::GrantCompute];

    /// The dispatcher of `provider`'s handlers on `keeper`'s events, its cursor kept in `db`. Starts nothing: see [`Dispatcher::start`].
    pub fn new(keeper: Arc<dyn Keeper>, db: Db, provider: Address) -> Self {
        Self { keeper, db, provider }
    }

    /// Runs `handler` on `event`.
    async fn handle(&self, handler: Handler, event: &KeeperEvent) -> Result<(), DispatchError> {
        match handler {
            Handler::GrantCompute => self.grant_compute(event).await,
            other => Err(DispatchError::NoHandler { event: event.name(), handler: other }),
        }
    }

    /// `compute.grantCompute`: once the payment is locked and the algorithm uploaded, grant.
    #[instrument(skip_all, fields(agreement_id = %event.agreement_id))]
    async fn grant_compute(&self, event: &KeeperEvent) -> Result<(), DispatchError> {
        let a = match self.keeper.agreement(event.agreement_id).await {
            Ok(a) => a,
            Err(KeeperError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if a.provider != self.provider || a.is_fulfilled(ConditionName::GrantCompute) {
            return Ok(());
        }
        if !(a.is_fulfilled(ConditionName::LockPayment) && a.is_fulfilled(ConditionName::UploadAlgorithm)) {
            return Ok(()); // the other half will come with its own event
        }
        match self.keeper.grant_compute(a.id).await {
            Ok(()) => {
                tracing::info!("compute granted");
                Ok(())
            }
            Err(
                e @ (KeeperError::AlreadyFulfilled { .. }
                | KeeperError::TimedOut { .. }
                | KeeperError::Closed { .. }
                | KeeperError::DependencyUnfulfilled { .. }),
            ) => {
                tracing::warn!(error = %e, "not granting compute");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn cursor(&self) -> Result<u64, DispatchError> {
        let c: Option<i64> = sqlx::query_scalar("SELECT last_event FROM handler_cursors WHERE handler = $1")
            .bind(CURSOR)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(c.unwrap_or(0) as u64)
    }

    async fn save_cursor(&self, cursor: &mut Cursor, id: u64) -> Result<(), DispatchError> {
        self.db
            .execute(
                sqlx::query(
                    "INSERT INTO handler_cursors (handler, last_event) VALUES ($1, $2) \
                     ON CONFLICT (handler) DO UPDATE SET last_event = excluded.last_event",
                )
                .bind(CURSOR)
                .bind(id as i64),
            )
            .await?;
        *cursor = Cursor { after: id, saved: id };
        Ok(())
    }
}

/// How far the dispatcher has read the log: in memory, and as saved.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    after: u64,
    saved: u64,
}

impl Cursor {
    /// At most this many events are read again after a crash for want of a saved cursor.
    const MAX_UNSAVED: u64 = 1000;

    fn at(saved: u64) -> Self {
        Self { after: saved, saved }
    }

    /// Whether moving to `id` would leave too many events behind the saved cursor.
    fn unsaved(&self, id: u64) -> bool {
        id.saturating_sub(self.saved) >= Self::MAX_UNSAVED
    }
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

impl Dispatcher {
    /// Handles every event after the cursor; returns how many.
    async fn dispatch_pending(
        &self,
        subs: &HashMap<EventName, Vec<Handler>>,
        cursor: &mut Cursor,
        failing: &mut Failing,
    ) -> Result<usize, DispatchError> {
        const BATCH: u32 = 200;
        let mut handled = 0;
        loop {
            let events = self.keeper.events_after(cursor.after, None, BATCH).await?;
            let full = events.len() == BATCH as usize;
            if events.is_empty() {
                return Ok(handled);
            }
            // The cursor is saved once per batch: after a crash the handlers see the rest of
            // the batch again, which they tolerate (they are idempotent). A batch that ran no
            // handler moves the cursor in memory only: after a crash those events are read
            // again and, again, need nothing.
            let (mut last, mut ran) = (None, false);
            for event in events {
                for handler in subs.get(&event.name()).into_iter().flatten() {
                    tracing::debug!(event = %event.name(), id = event.id, %handler, "dispatching");
                    ran = true;
                    if let Err(e) = self.handle(*handler, &event).await {
                        if failing.give_up(event.id) {
                            tracing::error!(
                                event = %event.name(), id = event.id, %handler, error = %crate::error_chain(&e),
                                "giving up on this event after {MAX_ATTEMPTS} attempts"
                            );
                            continue;
                        }
                        if let Some(id) = last {
                            self.save_cursor(cursor, id).await?;
                        }
                        return Err(e);
                    }
                }
                last = Some(event.id);
                handled += 1;
            }
            if let Some(id) = last {
                if ran || cursor.unsaved(id) {
                    self.save_cursor(cursor, id).await?;
                } else {
                    cursor.after = id;
                }
            }
            if !full {
                return Ok(handled);
            }
        }
    }

    /// Runs the dispatcher in the background: at start, on every new event, and every few
    /// seconds. Fails at once if the template names a handler the provider does not run.
    pub fn start(self: Arc<Self>) -> Result<(), DispatchError> {
        let subs = subscriptions()?;
        let mut wake = self.keeper.subscribe();
        tokio::spawn(async move {
            // The persisted cursor is read once; from then on it is kept here (and saved).
            let mut cursor: Option<Cursor> = None;
            let mut failing = Failing::default();
            loop {
                let result = async {
                    let cursor = match &mut cursor {
                        Some(c) => c,
                        None => cursor.insert(Cursor::at(self.cursor().await?)),
                    };
                    self.dispatch_pending(&subs, cursor, &mut failing).await
                }
                .await;
                if let Err(e) = result {
                    tracing::error!(error = %crate::error_chain(&e), "event dispatch failed; retrying");
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
    fn the_cursor_is_saved_before_too_many_events_would_be_read_again() {
        let cursor = Cursor::at(10);
        assert!(!cursor.unsaved(10 + Cursor::MAX_UNSAVED - 1));
        assert!(cursor.unsaved(10 + Cursor::MAX_UNSAVED));
        assert!(!Cursor { after: 5000, saved: 4500 }.unsaved(5100), "counted from the saved cursor");
    }

    #[test]
    fn every_publisher_event_of_the_template_has_a_handler() {
        let subs = subscriptions().unwrap();
        assert_eq!(subs[&EventName::PaymentLocked][0], Handler::GrantCompute);
        assert_eq!(subs[&EventName::FulfillUpload][0], Handler::GrantCompute);
        assert!(!subs.contains_key(&EventName::ComputeGranted), "consumer events are not the provider's");
    }
}
