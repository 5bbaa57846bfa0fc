//! Request nonces: the last nonce accepted from each address (table `nonces`), so that a
//! signed request is accepted at most once.

use alloy_primitives::Address;

use super::{Db, DbError, Text};

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
        let query = sqlx::query(
            "INSERT INTO nonces (address, nonce) VALUES ($1, $2) \
             ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce WHERE nonces.nonce < excluded.nonce",
        )
        .bind(Text(address))
        .bind(nonce);
        // Not waited on to be durable: a request's own changes come after its nonce, in the
        // same batch or a later one, so a power cut that loses the nonce loses them too, and a
        // replayed read after it only reads again.
        Ok(self.db.execute_lazily(query).await?.rows_affected() == 1)
    }
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
}
