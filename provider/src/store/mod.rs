//! Persistence: one SQLite database (through sqlx, schema in `provider/migrations/`) and a
//! content-addressed blob store on disk.
//!
//! The database runs in WAL mode with `synchronous=FULL`: a committed transaction survives a
//! power cut. Every state change is one transaction, begun `IMMEDIATE` so two writers never
//! deadlock on upgrading a read lock.

pub mod blobs;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(#[from] pub sqlx::Error);

/// The provider's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(sqlx::Error::from)?;
        Ok(Self { pool })
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction.
    pub async fn write(&self) -> Result<Transaction<'static, Sqlite>, DbError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Accepts `nonce` from `address` if it is greater than the last one accepted, atomically.
    /// Returns false for a replayed or out-of-order nonce.
    pub async fn accept_nonce(&self, address: Address, nonce: u64) -> Result<bool, DbError> {
        let nonce = i64::try_from(nonce).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "INSERT INTO nonces (address, nonce) VALUES (?1, ?2) \
             ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce WHERE nonces.nonce < excluded.nonce",
        )
        .bind(addr(address))
        .bind(nonce)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The stored form of an address: lowercase 0x-hex.
pub fn addr(a: Address) -> String {
    format!("{a:#x}")
}

/// Parses what [`addr`] stored.
pub fn parse_addr(s: &str) -> Result<Address, DbError> {
    Address::from_str(s).map_err(|e| DbError(sqlx::Error::Decode(Box::new(e))))
}

pub fn parse_b256(s: &str) -> Result<B256, DbError> {
    B256::from_str(s).map_err(|e| DbError(sqlx::Error::Decode(Box::new(e))))
}

pub fn parse_u256(s: &str) -> Result<U256, DbError> {
    U256::from_str_radix(s, 10).map_err(|e| DbError(sqlx::Error::Decode(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nonces_must_strictly_increase_per_address() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert!(db.accept_nonce(a, 5).await.unwrap());
        assert!(!db.accept_nonce(a, 5).await.unwrap(), "replay");
        assert!(!db.accept_nonce(a, 4).await.unwrap(), "older");
        assert!(db.accept_nonce(b, 1).await.unwrap(), "per address");
        assert!(db.accept_nonce(a, 6).await.unwrap());
        // Concurrent submissions of the same nonce: exactly one wins.
        let results = futures_util::future::join_all((0..8).map(|_| db.accept_nonce(b, 9))).await;
        assert_eq!(results.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    }

    #[tokio::test]
    async fn the_database_is_wal_and_fully_synchronous() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.pool()).await.unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }
}
