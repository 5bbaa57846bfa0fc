//! The connection a write turn's statements run on ([`WriteConn`]: what a
//! [`WriteTx`](super::writer::WriteTx) derefs to, and an sqlx executor).
//!
//! On SQLite the one writing connection is driven on the turn's own thread ([`RawConn`], which
//! says why); PostgreSQL's statements go over the network, and are awaited as usual. A SQLite
//! statement runs when the executor is called, to its end: a timeout or `select!` around it
//! does not cut it short.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, Describe, Either, Execute, Executor, Transaction};

use super::raw::RawConn;

/// The connection of one write turn: run statements on it with `query.execute(&mut *tx)`.
#[derive(Debug)]
pub enum WriteConn {
    /// SQLite's one writing connection, run synchronously.
    Sqlite(RawConn),
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
            WriteConn::Sqlite(conn) => all_of(run(conn, query, usize::MAX)),
            WriteConn::Postgres(tx) => tx.fetch_many(query),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            WriteConn::Sqlite(conn) => first_of(run(conn, query, 1)),
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
            WriteConn::Sqlite(_) => unsupported("preparing"),
            WriteConn::Postgres(tx) => tx.prepare_with(sql, parameters),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            WriteConn::Sqlite(_) => unsupported("describing"),
            WriteConn::Postgres(tx) => tx.describe(sql),
        }
    }
}

/// Runs `query` on a SQLite connection of the node's own; its result, and at most `rows` of its rows.
pub(super) fn run<'q>(
    conn: &mut RawConn,
    mut query: impl Execute<'q, Any>,
    rows: usize,
) -> Result<(AnyQueryResult, Vec<AnyRow>), sqlx::Error> {
    let args = query.take_arguments().map_err(sqlx::Error::Encode)?.map(|a| a.values.0).unwrap_or_default();
    let mut kept = Vec::new();
    let done = conn.run(query.sql(), args, query.persistent(), |row| {
        if kept.len() < rows {
            kept.push(row)
        }
    })?;
    Ok((done, kept))
}

/// What `fetch_many` hands back of a statement [`run`]: its rows, then its result.
pub(super) fn all_of<'e>(
    ran: Result<(AnyQueryResult, Vec<AnyRow>), sqlx::Error>,
) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>> {
    let all: Vec<_> = match ran {
        Ok((done, rows)) => rows.into_iter().map(Either::Right).chain([Either::Left(done)]).map(Ok).collect(),
        Err(e) => vec![Err(e)],
    };
    futures_util::stream::iter(all).boxed()
}

/// What `fetch_optional` hands back of a statement [`run`]: its first row.
pub(super) fn first_of<'e>(
    ran: Result<(AnyQueryResult, Vec<AnyRow>), sqlx::Error>,
) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>> {
    futures_util::future::ready(ran.map(|(_, rows)| rows.into_iter().next())).boxed()
}

/// The answer to what sqlx's executors also do but this provider never asks of SQLite.
pub(super) fn unsupported<'e, T: Send + 'e>(what: &str) -> BoxFuture<'e, Result<T, sqlx::Error>> {
    let e = sqlx::Error::Protocol(format!("{what} statements is not supported on SQLite here"));
    futures_util::future::ready(Err(e)).boxed()
}
