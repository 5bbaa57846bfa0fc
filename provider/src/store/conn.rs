//! The connection a write turn's statements run on ([`WriteConn`]: what a
//! [`WriteTx`](super::writer::WriteTx) derefs to, and an sqlx executor).
//!
//! sqlx runs each SQLite statement on its connection's own thread and hands the result back to
//! the task. Under load that task then waits in the runtime's queue behind every other task
//! (HTTP requests, signature checks) before it runs its next statement, all the while holding
//! the one writing connection: most of a turn was spent so. So on SQLite's writing connection
//! a statement is waited for on the spot: the thread that runs the turn parks until the
//! connection's thread answers, and goes on at once. A turn is a handful of statements of tens
//! of microseconds; the thread is held about as long as a synchronous SQLite call would hold
//! it. PostgreSQL's statements go over the network, and are awaited as usual.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyConnection, Execute, Executor, Transaction};
use sqlx::{Describe, Either};

/// The connection of one write turn: run statements on it with `query.execute(&mut *tx)`.
#[derive(Debug)]
pub enum WriteConn {
    /// SQLite's one writing connection: each statement is run to its end before the turn goes
    /// on (see the module).
    Sqlite(AnyConnection),
    /// A PostgreSQL transaction of the pool.
    Postgres(Transaction<'static, Any>),
}

impl<'c> Executor<'c> for &'c mut WriteConn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            WriteConn::Sqlite(conn) => {
                let all: Vec<_> = futures_executor::block_on(conn.fetch_many(query).collect());
                futures_util::stream::iter(all).boxed()
            }
            WriteConn::Postgres(tx) => tx.fetch_many(query),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            WriteConn::Sqlite(conn) => {
                let row = futures_executor::block_on(conn.fetch_optional(query));
                futures_util::future::ready(row).boxed()
            }
            WriteConn::Postgres(tx) => tx.fetch_optional(query),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            WriteConn::Sqlite(conn) => conn.prepare_with(sql, parameters),
            WriteConn::Postgres(tx) => tx.prepare_with(sql, parameters),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            WriteConn::Sqlite(conn) => conn.describe(sql),
            WriteConn::Postgres(tx) => tx.describe(sql),
        }
    }
}
