//! Request nonces: the last nonce accepted from each address (table `nonces`), so that a
//! signed request is accepted at most once.
//!
//! On PostgreSQL, shared by a cluster's nodes, each nonce is one atomic upsert. On SQLite this
//! node is the only one: nonces are accepted in memory (`Kept`) and written behind, into the
//! next write batch just before it commits. Every request signs a nonce, and most sign one
//! without changing anything else; a turn of the one writing connection each would be the
//! largest part of its load. Written behind, a nonce is as durable as it must be: a request's
//! own changes are committed after its nonce is accepted, so in the same commit or a later
//! one, and a power cut that loses the nonce loses them too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use futures_util::future::BoxFuture;

use super::writer::{WriteConn, Writer};
use super::{Db, DbError, Text};

/// Addresses whose last nonce is remembered at most, beyond those waiting to be written: past
/// this, the written ones are forgotten (and read again from the table when they sign again).
const REMEMBERED: usize = 1 << 16;

/// Rows written in one statement at most (two parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// The nonces of every address that has signed a request here.
#[derive(Clone, Debug)]
pub struct Nonces {
    db: Db,
}

impl Nonces {
    /// The nonces kept in `db` (table `nonces`).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Accepts `nonce` from `address` if it is greater than the last one accepted, atomically.
    /// Returns false for a replayed or out-of-order nonce, and for one over 2^63 - 1 (which
    /// the edge refuses first; it is never stored, so it cannot lock an address out).
    pub async fn accept(&self, address: Address, nonce: u64) -> Result<bool, DbError> {
        let Ok(nonce) = i64::try_from(nonce) else { return Ok(false) };
        match &self.db.writer {
            Some(writer) => self.accept_kept(writer, address, nonce).await,
            None => {
                let query = sqlx::query(
                    "INSERT INTO nonces (address, nonce) VALUES ($1, $2) \
                     ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce WHERE nonces.nonce < excluded.nonce",
                )
                .bind(Text(address))
                .bind(nonce);
                Ok(self.db.execute(query).await?.rows_affected() == 1)
            }
        }
    }

    /// SQLite: accepts in memory (reading the table for an address not remembered), and has
    /// the nonce written with the next batch, or on its own once a batch would be old.
    async fn accept_kept(&self, writer: &Arc<Writer>, address: Address, nonce: i64) -> Result<bool, DbError> {
        let kept = &writer.nonces;
        loop {
            let (remembered, epoch) = kept.lookup(address);
            let stored = match remembered {
                true => None,
                false => sqlx::query_scalar::<_, i64>("SELECT nonce FROM nonces WHERE address = $1")
                    .bind(Text(address))
                    .fetch_optional(self.db.pool())
                    .await
                    .map_err(DbError)?,
            };
            // (None: the address was forgotten meanwhile, and what was read may be stale.)
            if let Some((accepted, first_pending)) = kept.accept(address, epoch, stored, nonce) {
                if first_pending {
                    writer.commit_soon();
                }
                return Ok(accepted);
            }
        }
    }
}

/// SQLite's nonces in memory: the last accepted from each address remembered, and those not
/// written yet.
#[derive(Debug, Default)]
pub(super) struct Kept {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last nonce accepted from each remembered address: never less than the table's.
    last: HashMap<Address, i64>,
    /// Accepted and not yet written.
    pending: HashMap<Address, i64>,
    /// How many times written nonces were forgotten: a value read from the table before one
    /// of those times may be older than one forgotten since.
    forgotten: u64,
}

impl Kept {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic cannot leave the maps half changed: each change is one insert.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `address` is remembered (else its nonce must be read from the table), and the
    /// count of forgettings to hand to [`accept`](Self::accept) with what was read.
    fn lookup(&self, address: Address) -> (bool, u64) {
        let state = self.state();
        (state.last.contains_key(&address), state.forgotten)
    }

    /// Accepts `nonce` if greater than the last one from `address`: remembered, else `stored`
    /// in the table as read after [`lookup`](Self::lookup) returned `epoch`. Returns whether it
    /// was accepted, and whether it is the first one waiting to be written; or `None` when
    /// the address is not remembered and what was read may be stale (read again).
    fn accept(&self, address: Address, epoch: u64, stored: Option<i64>, nonce: i64) -> Option<(bool, bool)> {
        let mut state = self.state();
        if !state.last.contains_key(&address) && state.forgotten != epoch {
            return None;
        }
        // Remembered meanwhile (by another request from the same address): that is newer.
        let last = state.last.entry(address).or_insert(stored.unwrap_or(-1));
        if nonce <= *last {
            return Some((false, false));
        }
        *last = nonce;
        let first = state.pending.is_empty();
        state.pending.insert(address, nonce);
        Some((true, first))
    }

    /// Whether some nonce waits to be written.
    pub(super) fn pending(&self) -> bool {
        !self.state().pending.is_empty()
    }

    /// Takes the nonces waiting to be written, for the batch about to commit.
    pub(super) fn take(&self) -> Vec<(Address, i64)> {
        self.state().pending.drain().collect()
    }

    /// After the commit of a batch that carried `taken`: if it failed, they wait for the next
    /// one (a request that failed with it has still used its nonce); if it succeeded, every
    /// remembered nonce not waiting is in the table, and may be forgotten.
    pub(super) fn committed(&self, taken: Vec<(Address, i64)>, ok: bool) {
        let mut state = self.state();
        if !ok {
            for (address, nonce) in taken {
                let pending = state.pending.entry(address).or_insert(nonce);
                *pending = (*pending).max(nonce);
            }
        } else if state.last.len() > REMEMBERED + state.pending.len() {
            let State { last, pending, forgotten } = &mut *state;
            last.retain(|address, _| pending.contains_key(address));
            *forgotten += 1;
        }
    }
}

/// Writes `rows` (nonces taken from [`Kept`]) on the writing connection, inside the batch.
pub(super) fn write<'c>(conn: &'c mut WriteConn, rows: &'c [(Address, i64)]) -> BoxFuture<'c, Result<(), DbError>> {
    Box::pin(async move {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
            let sql = format!(
                "INSERT INTO nonces (address, nonce) VALUES {} \
                 ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce WHERE nonces.nonce < excluded.nonce",
                values.join(", ")
            );
            // Not kept prepared: there is a text for every number of rows.
            let mut query = sqlx::query(&sql).persistent(false);
            for (address, nonce) in chunk {
                query = query.bind(Text(*address)).bind(*nonce);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nonces_must_strictly_increase_per_address() {
        let tmp = tempfile::tempdir().unwrap();
        let nonces = Nonces::new(Db::open(&tmp.path().join("t.db")).await.unwrap());
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert!(nonces.accept(a, 5).await.unwrap());
        assert!(!nonces.accept(a, 5).await.unwrap(), "replay");
        assert!(!nonces.accept(a, 4).await.unwrap(), "older");
        assert!(nonces.accept(b, 1).await.unwrap(), "per address");
        assert!(nonces.accept(a, 6).await.unwrap());
        assert!(!nonces.accept(a, 1 << 63).await.unwrap(), "out of range, and not stored");
        assert!(nonces.accept(a, 7).await.unwrap(), "the address is not locked out");
        // Concurrent submissions of the same nonce: exactly one wins.
        let results = futures_util::future::join_all((0..8).map(|_| nonces.accept(b, 9))).await;
        assert_eq!(results.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    }

    #[test]
    fn forgotten_nonces_are_only_written_ones_and_a_failed_commit_keeps_them_waiting() {
        let kept = Kept::default();
        let address = |i: usize| Address::left_padding_from(&i.to_be_bytes());
        for i in 0..=REMEMBERED {
            assert_eq!(kept.accept(address(i), 0, None, 1), Some((true, i == 0)));
        }
        let taken = kept.take();
        assert!(!kept.pending());
        // The commit failed: they wait again, and nothing is forgotten.
        kept.committed(taken, false);
        let taken = kept.take();
        assert_eq!(taken.len(), REMEMBERED + 1);
        // One more arrives while the batch commits; the commit succeeds: only that one is
        // still remembered (the rest are in the table).
        assert_eq!(kept.lookup(address(usize::MAX)), (false, 0));
        assert_eq!(kept.accept(address(usize::MAX), 0, None, 3), Some((true, true)));
        kept.committed(taken, true);
        assert_eq!(kept.lookup(address(0)), (false, 1), "forgotten once written");
        assert_eq!(kept.lookup(address(usize::MAX)), (true, 1), "still waiting to be written");
        // What was read from the table before the forgetting may be stale: read again.
        assert_eq!(kept.accept(address(0), 0, None, 1), None);
        // A forgotten address is judged by its stored nonce.
        assert_eq!(kept.accept(address(0), 1, Some(1), 1), Some((false, false)), "replay of a stored nonce");
        assert_eq!(kept.accept(address(0), 1, Some(1), 2), Some((true, false)));
    }
}
