//! SQLite's writing connection, driven on the thread that runs the turn ([`RawConn`]).
//!
//! sqlx runs each SQLite statement on a thread of the connection's own and hands the answer
//! back. That hand-over is two thread wake-ups per statement, and under load each wake-up waits
//! for a CPU: a statement that takes SQLite 5 µs took 70-190 µs, all the while holding the
//! one writing connection, so the connection, not the CPU, capped the provider's throughput.
//! This connection runs each statement where it is asked for, as a synchronous SQLite call
//! would. It speaks sqlx's `Any` types (the queries the rest of the provider writes once for
//! both engines), and hands back the rows sqlx's own SQLite driver would: a value is typed by
//! its storage class (INTEGER as `BigInt`, REAL as `Double`, TEXT, BLOB, NULL), parameters are
//! `$N`, and errors carry SQLite's extended code. Reads keep sqlx's pool.
//!
//! It is used by one turn at a time (the writer's mutex), and never from two threads at once.
//! A statement that finds the file locked by another process waits for it on that thread, up
//! to the busy timeout (only an operator's tool opening the same file does that).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use libsqlite3_sys as ffi;
use sqlx::any::{AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;

/// Prepared statements kept at most (past this, all are dropped and prepared again).
const CACHED: usize = 256;

/// One SQLite connection, used synchronously (see the module).
pub struct RawConn {
    db: *mut ffi::sqlite3,
    /// Prepared statements by SQL text (several for a text of several statements).
    cache: HashMap<Box<str>, Vec<Stmt>>,
}

// SAFETY: the connection is opened in multi-thread mode (`SQLITE_OPEN_NOMUTEX`), where a
// connection may move between threads as long as no two use it at once; `&mut self` on every
// use, behind the writer's mutex, ensures that.
unsafe impl Send for RawConn {}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConn").field("cached", &self.cache.len()).finish()
    }
}

/// A prepared statement and its columns' names (shared by the rows it returns).
struct Stmt {
    raw: *mut ffi::sqlite3_stmt,
    names: Arc<sqlx_core::HashMap<UStr, usize>>,
    columns: Vec<AnyColumn>,
    /// For each parameter, the index of its argument (`$N` is argument N - 1).
    params: Vec<usize>,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: `raw` was prepared on this connection and is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

/// An error SQLite returned (its extended result code and message).
#[derive(Debug)]
pub struct RawError {
    code: c_int,
    message: String,
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for RawError {}

impl DatabaseError for RawError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

impl RawConn {
    /// Opens the database file at `path` (which must exist: sqlx made it and its schema) with
    /// the provider's settings: WAL, `synchronous=FULL`, foreign keys, and `busy` to wait for
    /// a lock another process holds.
    pub fn open(path: &Path, busy: Duration) -> Result<Self, sqlx::Error> {
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| sqlx::Error::Configuration("the database path holds a NUL byte".into()))?;
        let mut db = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX | ffi::SQLITE_OPEN_EXRESCODE;
        // SAFETY: valid C string and out pointer; a handle is returned even on failure, and
        // is closed by `conn`'s drop.
        let rc = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, ptr::null()) };
        let mut conn = Self { db, cache: HashMap::new() };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        // SAFETY: an open handle.
        unsafe {
            ffi::sqlite3_extended_result_codes(db, 1);
            ffi::sqlite3_busy_timeout(db, c_int::try_from(busy.as_millis()).unwrap_or(c_int::MAX));
        }
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        Ok(conn)
    }

    /// [`open`](Self::open), for reading only (`query_only`: a write on it fails).
    pub fn open_reader(path: &Path, busy: Duration) -> Result<Self, sqlx::Error> {
        let mut conn = Self::open(path, busy)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        Ok(conn)
    }

    /// A connection that is closed: every statement on it fails. (A stand-in while the real
    /// one is lent to another thread.)
    pub fn closed() -> Self {
        Self { db: ptr::null_mut(), cache: HashMap::new() }
    }

    /// The last error on this connection, for a call that returned `rc`.
    fn error(&self, rc: c_int) -> sqlx::Error {
        // SAFETY: an open handle (or one sqlite3_open_v2 returned, which answers these too).
        let (code, message) = unsafe {
            let code = if self.db.is_null() { rc } else { ffi::sqlite3_extended_errcode(self.db) };
            let msg = if self.db.is_null() { ffi::sqlite3_errstr(rc) } else { ffi::sqlite3_errmsg(self.db) };
            (if code == 0 { rc } else { code }, CStr::from_ptr(msg).to_string_lossy().into_owned())
        };
        sqlx::Error::Database(Box::new(RawError { code, message }))
    }

    /// Runs statements without parameters or rows (pragmas).
    fn execute_batch(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.run(sql, Vec::new(), false, |_| {}).map(|_| ())
    }

    /// Runs `sql` (one or more statements) with `args` (`$N` is `args[N - 1]`), handing each
    /// row to `row`; returns the rows changed. With `keep`, its statements stay prepared.
    pub fn run(
        &mut self,
        sql: &str,
        args: Vec<AnyValueKind<'_>>,
        keep: bool,
        mut row: impl FnMut(AnyRow),
    ) -> Result<AnyQueryResult, sqlx::Error> {
        if self.db.is_null() {
            return Err(sqlx::Error::Protocol("the writing connection is closed".into()));
        }
        let stmts = match self.cache.remove(sql) {
            Some(stmts) => stmts,
            None => self.prepare(sql)?,
        };
        let mut done = AnyQueryResult { rows_affected: 0, last_insert_id: None };
        let mut result = Ok(());
        for stmt in &stmts {
            result = self.step_all(stmt, &args, &mut done, &mut row);
            // SAFETY: a statement of this connection; resetting also ends its read.
            unsafe {
                ffi::sqlite3_reset(stmt.raw);
                ffi::sqlite3_clear_bindings(stmt.raw);
            }
            if result.is_err() {
                break;
            }
        }
        if keep {
            if self.cache.len() >= CACHED {
                self.cache.clear();
            }
            self.cache.insert(sql.into(), stmts);
        }
        result.map(|()| done)
    }

    /// Prepares every statement of `sql`.
    fn prepare(&mut self, sql: &str) -> Result<Vec<Stmt>, sqlx::Error> {
        let mut stmts = Vec::new();
        let bytes = sql.as_bytes();
        let mut offset = 0;
        while offset < bytes.len() {
            let mut raw = ptr::null_mut();
            let mut tail: *const c_char = ptr::null();
            let rest = &bytes[offset..];
            // SAFETY: `rest` is valid for its length (which is passed, so no NUL is needed);
            // `tail` points into it.
            let rc = unsafe {
                ffi::sqlite3_prepare_v3(
                    self.db,
                    rest.as_ptr().cast(),
                    c_int::try_from(rest.len()).unwrap_or(c_int::MAX),
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut raw,
                    &mut tail,
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.error(rc));
            }
            let used = if tail.is_null() { rest.len() } else { tail as usize - rest.as_ptr() as usize };
            offset += used.max(1);
            if raw.is_null() {
                continue; // whitespace or a comment
            }
            stmts.push(Stmt::new(raw)?);
        }
        Ok(stmts)
    }

    fn step_all(
        &self,
        stmt: &Stmt,
        args: &[AnyValueKind<'_>],
        done: &mut AnyQueryResult,
        row: &mut impl FnMut(AnyRow),
    ) -> Result<(), sqlx::Error> {
        for (i, arg) in stmt.params.iter().enumerate() {
            // A parameter with no argument stays NULL, as with sqlx's driver (and SQLite).
            if let Some(value) = args.get(*arg) {
                self.bind(stmt.raw, c_int::try_from(i + 1).unwrap_or(c_int::MAX), value)?;
            }
        }
        loop {
            // SAFETY: a prepared statement of this connection, its parameters bound.
            match unsafe { ffi::sqlite3_step(stmt.raw) } {
                ffi::SQLITE_ROW => row(stmt.row()),
                ffi::SQLITE_DONE => {
                    // SAFETY: an open handle; these read the last statement's counters.
                    unsafe {
                        if ffi::sqlite3_stmt_readonly(stmt.raw) == 0 {
                            done.rows_affected += ffi::sqlite3_changes64(self.db) as u64;
                        }
                    }
                    return Ok(());
                }
                rc => return Err(self.error(rc)),
            }
        }
    }

    fn bind(&self, raw: *mut ffi::sqlite3_stmt, i: c_int, value: &AnyValueKind<'_>) -> Result<(), sqlx::Error> {
        // SAFETY: a statement of this connection; text and blobs are copied by SQLite
        // (SQLITE_TRANSIENT), so they need not outlive the call.
        let rc = unsafe {
            match value {
                AnyValueKind::Null(_) => ffi::sqlite3_bind_null(raw, i),
                AnyValueKind::Bool(b) => ffi::sqlite3_bind_int(raw, i, c_int::from(*b)),
                AnyValueKind::SmallInt(v) => ffi::sqlite3_bind_int(raw, i, c_int::from(*v)),
                AnyValueKind::Integer(v) => ffi::sqlite3_bind_int(raw, i, *v),
                AnyValueKind::BigInt(v) => ffi::sqlite3_bind_int64(raw, i, *v),
                AnyValueKind::Real(v) => ffi::sqlite3_bind_double(raw, i, f64::from(*v)),
                AnyValueKind::Double(v) => ffi::sqlite3_bind_double(raw, i, *v),
                AnyValueKind::Text(t) => ffi::sqlite3_bind_text64(
                    raw,
                    i,
                    t.as_ptr().cast(),
                    t.len() as u64,
                    ffi::SQLITE_TRANSIENT(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                AnyValueKind::Blob(b) => {
                    ffi::sqlite3_bind_blob64(raw, i, b.as_ptr().cast(), b.len() as u64, ffi::SQLITE_TRANSIENT())
                }
                other => return Err(sqlx::Error::Encode(format!("cannot bind {other:?} on SQLite").into())),
            }
        };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(self.error(rc)) }
    }
}

impl Stmt {
    fn new(raw: *mut ffi::sqlite3_stmt) -> Result<Self, sqlx::Error> {
        let stmt = |names, columns, params| Self { raw, names, columns, params };
        // SAFETY: a freshly prepared statement; the names SQLite returns live as long as it.
        unsafe {
            let mut params = Vec::new();
            for i in 1..=ffi::sqlite3_bind_parameter_count(raw) {
                let name = ffi::sqlite3_bind_parameter_name(raw, i);
                // An anonymous `?` is the i-th argument; `$N` and `?N` the N-th.
                let n = if name.is_null() {
                    Some(i as usize)
                } else {
                    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
                    match name.strip_prefix('$').or_else(|| name.strip_prefix('?')).and_then(|n| n.parse().ok()) {
                        Some(n) if n >= 1 => Some(n),
                        _ => {
                            // (The name is copied: it dies with the statement.)
                            drop(stmt(Arc::default(), Vec::new(), Vec::new()));
                            let e = format!("unsupported parameter `{name}` (use $N)");
                            return Err(sqlx::Error::Configuration(e.into()));
                        }
                    }
                };
                params.extend(n.map(|n| n - 1));
            }
            let mut names = sqlx_core::HashMap::new();
            let mut columns = Vec::new();
            for i in 0..ffi::sqlite3_column_count(raw) {
                let name = ffi::sqlite3_column_name(raw, i);
                if name.is_null() {
                    drop(stmt(Arc::default(), Vec::new(), Vec::new()));
                    return Err(sqlx::Error::Protocol("SQLite is out of memory".into()));
                }
                let name = UStr::new(&CStr::from_ptr(name).to_string_lossy());
                let ordinal = i as usize;
                names.insert(name.clone(), ordinal);
                columns.push(AnyColumn { ordinal, name, type_info: AnyTypeInfo { kind: AnyTypeInfoKind::Null } });
            }
            Ok(stmt(Arc::new(names), columns, params))
        }
    }

    /// The current row, each value typed by its storage class.
    fn row(&self) -> AnyRow {
        let mut values = Vec::with_capacity(self.columns.len());
        let mut columns = self.columns.clone();
        for (i, column) in columns.iter_mut().enumerate() {
            let i = i as c_int;
            // SAFETY: the statement is on a row; a text or blob pointer is read before the
            // next call on the column, and copied.
            let kind = unsafe {
                match ffi::sqlite3_column_type(self.raw, i) {
                    ffi::SQLITE_INTEGER => AnyValueKind::BigInt(ffi::sqlite3_column_int64(self.raw, i)),
                    ffi::SQLITE_FLOAT => AnyValueKind::Double(ffi::sqlite3_column_double(self.raw, i)),
                    // (A NULL pointer for a text or blob of this type: empty, or SQLite out of
                    // memory, which the next call reports.)
                    ffi::SQLITE_TEXT => {
                        let text = ffi::sqlite3_column_text(self.raw, i);
                        let len = ffi::sqlite3_column_bytes(self.raw, i) as usize;
                        let bytes = if text.is_null() { &[][..] } else { std::slice::from_raw_parts(text, len) };
                        AnyValueKind::Text(Cow::Owned(String::from_utf8_lossy(bytes).into_owned()))
                    }
                    ffi::SQLITE_BLOB => {
                        let blob = ffi::sqlite3_column_blob(self.raw, i);
                        let len = ffi::sqlite3_column_bytes(self.raw, i) as usize;
                        let bytes = if blob.is_null() { &[][..] } else { std::slice::from_raw_parts(blob.cast(), len) };
                        AnyValueKind::Blob(Cow::Owned(bytes.to_vec()))
                    }
                    _ => AnyValueKind::Null(AnyTypeInfoKind::Null),
                }
            };
            column.type_info = AnyTypeInfo {
                kind: match &kind {
                    AnyValueKind::BigInt(_) => AnyTypeInfoKind::BigInt,
                    AnyValueKind::Double(_) => AnyTypeInfoKind::Double,
                    AnyValueKind::Text(_) => AnyTypeInfoKind::Text,
                    AnyValueKind::Blob(_) => AnyTypeInfoKind::Blob,
                    _ => AnyTypeInfoKind::Null,
                },
            };
            values.push(AnyValue { kind });
        }
        AnyRow { column_names: self.names.clone(), columns, values }
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        self.cache.clear();
        // SAFETY: every statement is finalized (above); `close` also copes with a handle
        // that failed to open.
        unsafe { ffi::sqlite3_close(self.db) };
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    fn rows(conn: &mut RawConn, sql: &str, args: Vec<AnyValueKind<'static>>) -> (u64, Vec<AnyRow>) {
        let mut rows = Vec::new();
        let done = conn.run(sql, args, true, |r| rows.push(r)).unwrap();
        (done.rows_affected, rows)
    }

    #[tokio::test]
    async fn values_parameters_and_errors_are_those_of_sqlx() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.db");
        crate::store::Db::open(&path).await.unwrap(); // creates the file and schema
        let mut conn = RawConn::open(&path, Duration::from_millis(100)).unwrap();
        rows(&mut conn, "CREATE TABLE t (k TEXT PRIMARY KEY, i INTEGER, f REAL, b BLOB, n TEXT)", vec![]);
        // `$N` by number, whatever the order they appear in.
        let insert = "INSERT INTO t (i, k, f, b, n) VALUES ($2, $1, $3, $4, $5)";
        let args = |k: &'static str| {
            vec![
                AnyValueKind::Text(k.into()),
                AnyValueKind::BigInt(-7),
                AnyValueKind::Double(1.5),
                AnyValueKind::Blob(vec![0, 1, 2].into()),
                AnyValueKind::Null(AnyTypeInfoKind::Text),
            ]
        };
        assert_eq!(rows(&mut conn, insert, args("a")).0, 1);
        assert_eq!(rows(&mut conn, insert, args("b")).0, 1, "again, from the cache");
        let (_, found) = rows(&mut conn, "SELECT k, i, f, b, n FROM t ORDER BY k", vec![]);
        assert_eq!(found.len(), 2);
        let row = &found[0];
        assert_eq!(row.get::<String, _>("k"), "a");
        assert_eq!((row.get::<i64, _>("i"), row.get::<i32, _>(1)), (-7, -7));
        assert_eq!(row.get::<f64, _>("f"), 1.5);
        assert_eq!(row.get::<Vec<u8>, _>("b"), vec![0, 1, 2]);
        assert_eq!(row.get::<Option<String>, _>("n"), None);
        // Several statements in one text; a SELECT changes no rows.
        let (changed, _) = rows(&mut conn, "UPDATE t SET i = 1; UPDATE t SET i = 2 WHERE k = 'a'", vec![]);
        assert_eq!(changed, 3);
        assert_eq!(rows(&mut conn, "SELECT COUNT(*) FROM t", vec![]).0, 0);
        // Errors: a duplicate key is a unique violation with SQLite's extended code.
        let e = conn.run(insert, args("a"), true, |_| {}).unwrap_err();
        let sqlx::Error::Database(db) = &e else { panic!("{e:?}") };
        assert!(db.is_unique_violation(), "{db}");
        assert_eq!(db.code().as_deref(), Some("1555"), "SQLITE_CONSTRAINT_PRIMARYKEY");
        assert!(crate::store::DbError(e).is_unique_violation());
        // A parameter with no argument is NULL; an anonymous `?` is positional; a named one is
        // refused.
        let (_, got) = rows(&mut conn, "SELECT ? AS a, $3 AS c", vec![AnyValueKind::Text("x".into())]);
        assert_eq!((got[0].get::<String, _>("a"), got[0].get::<Option<String>, _>("c")), ("x".into(), None));
        let e = conn.run("SELECT :name", vec![], false, |_| {}).unwrap_err();
        assert!(e.to_string().contains("`:name`"), "{e}");
        // The statement that failed is usable again.
        assert_eq!(rows(&mut conn, insert, args("c")).0, 1);
    }
}
