//! Where reads run ([`Reader`], what [`Db::pool`](super::Db::pool) hands out: an sqlx
//! executor).
//!
//! On SQLite a read is a short indexed lookup in a local file: it runs on the caller's thread,
//! on a connection of the node's own (`raw::RawConn`, which says why sqlx's hand-over to a thread
//! per connection is avoided), taken from the idle ones and put back when the statement ends,
//! so a connection is never held across an `await`. Each statement reads the last committed
//! state (WAL: readers never wait for the writer). As on the writing connection, a statement
//! runs when the executor is called, to its end. On PostgreSQL, reads go to sqlx's pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyPool, Describe, Either, Execute, Executor};

use super::conn::{all_of, first_of, run, unsupported};
use super::raw::RawConn;

/// Idle read connections kept at most (one is opened whenever none is idle; a node uses about
/// as many as threads that read at once).
const IDLE: usize = 16;

/// The reads of a [`Db`](super::Db): run statements with `query.fetch_all(db.pool())`.
#[derive(Clone, Debug)]
pub struct Reader(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Sqlite(Arc<Idle>),
    Postgres(AnyPool),
}

#[derive(Debug)]
struct Idle {
    path: PathBuf,
    busy: Duration,
    conns: Mutex<Vec<RawConn>>,
}

impl Reader {
    /// Reads of the SQLite file at `path` (which exists, with its schema).
    pub(super) fn sqlite(path: PathBuf, busy: Duration) -> Self {
        Self(Inner::Sqlite(Arc::new(Idle { path, busy, conns: Mutex::new(Vec::new()) })))
    }

    /// Reads through PostgreSQL's `pool`.
    pub(super) fn postgres(pool: AnyPool) -> Self {
        Self(Inner::Postgres(pool))
    }

    /// PostgreSQL's pool (none on SQLite).
    pub(super) fn pool(&self) -> Option<&AnyPool> {
        match &self.0 {
            Inner::Postgres(pool) => Some(pool),
            Inner::Sqlite(_) => None,
        }
    }
}

impl Idle {
    /// Runs `query` on an idle connection (or a new one), keeping at most `rows` rows.
    fn run<'q>(&self, query: impl Execute<'q, Any>, rows: usize) -> Result<(AnyQueryResult, Vec<AnyRow>), sqlx::Error> {
        let idle = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => RawConn::open_reader(&self.path, self.busy)?,
        };
        let result = run(&mut conn, query, rows);
        let mut conns = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if conns.len() < IDLE {
            conns.push(conn);
        }
        result
    }
}

impl<'p> Executor<'p> for &'p Reader {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0 {
            Inner::Sqlite(idle) => all_of(idle.run(query, usize::MAX)),
            Inner::Postgres(pool) => pool.fetch_many(query),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0 {
            Inner::Sqlite(idle) => first_of(idle.run(query, 1)),
            Inner::Postgres(pool) => pool.fetch_optional(query),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        match &self.0 {
            Inner::Sqlite(_) => unsupported("preparing"),
            Inner::Postgres(pool) => pool.prepare_with(sql, parameters),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        match &self.0 {
            Inner::Sqlite(_) => unsupported("describing"),
            Inner::Postgres(pool) => pool.describe(sql),
        }
    }
}
