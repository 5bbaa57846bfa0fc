//! The `jobs` table (owned here): one row per agreement's job, read through typed rows.
//!
//! Every state a job goes through that a restart needs is a row update; the stages of a
//! running job live in memory only ([`super::live`]).
//!
//! **Leases.** Claiming a job records who runs it and until when (`lease_owner`,
//! `lease_until`, in Unix milliseconds) and counts an attempt; the owner and the attempt number
//! are the run's [`Lease`], its fencing token. A run renews its lease while it lasts, and
//! everything it writes about the job (its results, its failure) is written only if the row
//! still holds its lease: a worker that stopped (paused, cut off) past its lease and came back
//! finds its job reaped and re-run by someone else, and its late writes change nothing. In
//! cluster mode, workers claim with `FOR UPDATE SKIP LOCKED`, so they never wait for each
//! other's claims, and [`JobStore::reap`] re-queues jobs whose lease ran out.

mod leases;

use alloy_primitives::{Address, B256};
use tidepool_runtime::Outcome;
use tidepool_runtime::tree::Tree;

use super::error::{JobError, JobResult};
use crate::protocol::api::ResultEntry;
use crate::protocol::ddo::Did;
use crate::protocol::signing::unix_now;
use crate::protocol::states::{JobStatus, PaymentState};
use crate::store::{Db, JsonText as Json, Text};

/// A job as the API shows it (every column but the stored receipt and results).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    pub id: String,
    pub agreement_id: Text<B256>,
    pub did: Text<Did>,
    pub consumer: Text<Address>,
    status: i64,
    pub not_before: i64,
    pub attempts: i64,
    pub error: Option<String>,
    payment: String,
    pub output_did: Option<Text<Did>>,
    pub created_at: i64,
    pub updated_at: i64,
    pub receipt_hash: Option<Text<B256>>,
    pub outcome: Option<Json<Outcome>>,
}

const JOB_COLUMNS: &str = "id, agreement_id, did, consumer, status, not_before, attempts, error, payment, \
                           output_did, created_at, updated_at, receipt_hash, outcome";

fn status_of(code: i64) -> JobResult<JobStatus> {
    u32::try_from(code)
        .ok()
        .and_then(JobStatus::from_code)
        .ok_or_else(|| JobError::Corrupt(format!("unknown job status {code}")))
}

fn payment_of(text: &str) -> JobResult<PaymentState> {
    text.parse().map_err(|e: crate::protocol::named::UnknownName| JobError::Corrupt(e.to_string()))
}

impl JobRow {
    pub fn status(&self) -> JobResult<JobStatus> {
        status_of(self.status)
    }

    pub fn payment(&self) -> JobResult<PaymentState> {
        payment_of(&self.payment)
    }
}

/// What settling a job needs.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SettleRow {
    pub agreement_id: Text<B256>,
    status: i64,
    payment: String,
    pub receipt_hash: Option<Text<B256>>,
}

impl SettleRow {
    pub fn status(&self) -> JobResult<JobStatus> {
        status_of(self.status)
    }

    pub fn payment(&self) -> JobResult<PaymentState> {
        payment_of(&self.payment)
    }
}

/// What a finished job produced, as stored.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ResultsRow {
    pub consumer: Text<Address>,
    pub results: Option<Json<Vec<ResultEntry>>>,
    pub outputs: Option<Json<Tree>>,
    /// The signed receipt, as stored (JSON).
    pub receipt: Option<String>,
}

/// What running a job needs from its row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunRow {
    pub agreement_id: Text<B256>,
    pub args: Json<Vec<String>>,
    /// The consumer asked for a stop (on any node).
    pub stop_requested: i64,
}

/// A run's hold on its job: who claimed it, and which attempt this is (the fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The node that claimed the job ([`super::node_name`]).
    pub owner: String,
    /// Which run of the job this is (1 for the first).
    pub attempt: i64,
}

/// Unix milliseconds now.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `IN (...)` of the active statuses' codes.
fn active_codes() -> String {
    let codes: Vec<String> = JobStatus::ACTIVE.iter().map(|s| s.code().to_string()).collect();
    format!("({})", codes.join(","))
}

/// What a finished run stores.
#[derive(Debug)]
pub(super) struct Finished<'a> {
    pub status: JobStatus,
    pub receipt_json: &'a str,
    pub receipt_hash: B256,
    pub fuel_consumed: u64,
    pub outcome: &'a Outcome,
    pub results: &'a [ResultEntry],
    pub outputs: &'a Tree,
}

/// The jobs table.
#[derive(Clone, Debug)]
pub(super) struct JobStore {
    db: Db,
}

impl JobStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database (for listening to other nodes).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a queued job for `agreement`; the id of the existing job if it has one.
    pub async fn insert(
        &self,
        id: &str,
        agreement: B256,
        did: Did,
        consumer: Address,
        not_before: u64,
        args: &[String],
    ) -> JobResult<Result<(), String>> {
        let now = unix_now() as i64;
        let mut tx = self.db.write().await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE agreement_id = $1")
            .bind(Text(agreement))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(existing) = existing {
            return Ok(Err(existing));
        }
        // (Another node may insert the agreement's job meanwhile: then this inserts nothing.)
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, agreement_id, did, consumer, status, args, not_before, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (agreement_id) DO NOTHING",
        )
        .bind(id)
        .bind(Text(agreement))
        .bind(Text(did))
        .bind(Text(consumer))
        .bind(i64::from(JobStatus::Queued.code()))
        .bind(Json(args))
        .bind(i64::try_from(not_before).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            drop(tx);
            let existing: String = sqlx::query_scalar("SELECT id FROM jobs WHERE agreement_id = $1")
                .bind(Text(agreement))
                .fetch_one(self.db.pool())
                .await?;
            return Ok(Err(existing));
        }
        tx.commit().await?;
        self.db.notify("tidepool_jobs").await;
        Ok(Ok(()))
    }

    /// A job's row, as the API shows it.
    pub async fn get(&self, id: &str) -> JobResult<JobRow> {
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// A finished job's results.
    pub async fn results(&self, id: &str) -> JobResult<ResultsRow> {
        sqlx::query_as("SELECT consumer, results, outputs, receipt FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// A finished job's signed receipt, as stored (JSON).
    pub async fn receipt(&self, id: &str) -> JobResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT receipt FROM jobs WHERE id = $1").bind(id).fetch_one(self.db.pool()).await?)
    }

    /// What running a claimed job needs.
    pub async fn run_row(&self, id: &str) -> JobResult<RunRow> {
        Ok(sqlx::query_as("SELECT agreement_id, args, stop_requested FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(self.db.pool())
            .await?)
    }

    /// What settling a job needs.
    pub async fn settle_row(&self, id: &str) -> JobResult<SettleRow> {
        Ok(sqlx::query_as("SELECT agreement_id, status, payment, receipt_hash FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(self.db.pool())
            .await?)
    }

    /// Moves a job to `status`.
    pub async fn set_status(&self, id: &str, status: JobStatus) -> JobResult<()> {
        self.db
            .execute(
                sqlx::query("UPDATE jobs SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(i64::from(status.code()))
                    .bind(unix_now() as i64)
                    .bind(id),
            )
            .await?;
        Ok(())
    }

    /// Ends a job in `status` with an error message: if `lease` is given, only while the row
    /// holds it. False if the lease was lost (nothing was written).
    pub async fn fail(&self, id: &str, lease: Option<&Lease>, status: JobStatus, error: &str) -> JobResult<bool> {
        let (owner, attempt) = lease.map_or((None, 0), |l| (Some(l.owner.as_str()), l.attempt));
        let done = self
            .db
            .execute(
                sqlx::query(
                    "UPDATE jobs SET status = $1, error = $2, updated_at = $3, lease_until = NULL \
                     WHERE id = $4 AND ($5 IS NULL OR (lease_owner = $5 AND attempts = $6))",
                )
                .bind(i64::from(status.code()))
                .bind(error)
                .bind(unix_now() as i64)
                .bind(id)
                .bind(owner)
                .bind(attempt),
            )
            .await?;
        if done.rows_affected() == 1 {
            self.db.notify("tidepool_jobs").await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Records that the consumer asked job `id` to stop, for whichever node runs it.
    pub async fn request_stop(&self, id: &str) -> JobResult<()> {
        self.db.execute(sqlx::query("UPDATE jobs SET stop_requested = 1 WHERE id = $1").bind(id)).await?;
        Ok(())
    }

    /// Stops a job that has not been claimed; true if it was still queued.
    pub async fn stop_queued(&self, id: &str) -> JobResult<bool> {
        let stopped = self
            .db
            .execute(
                sqlx::query(
                    "UPDATE jobs SET status = $1, error = 'stopped before it started', updated_at = $2 \
                     WHERE id = $3 AND status = $4",
                )
                .bind(i64::from(JobStatus::Stopped.code()))
                .bind(unix_now() as i64)
                .bind(id)
                .bind(i64::from(JobStatus::Queued.code())),
            )
            .await?;
        Ok(stopped.rows_affected() == 1)
    }

    /// Up to `limit` queued jobs due at `now`, oldest first.
    pub async fn due(&self, now: u64, limit: usize) -> JobResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = $1 AND not_before <= $2 ORDER BY not_before, created_at LIMIT $3",
        )
        .bind(i64::from(JobStatus::Queued.code()))
        .bind(now as i64)
        .bind(limit as i64)
        .fetch_all(self.db.pool())
        .await?)
    }

    /// Jobs a worker held when the provider stopped: `(id, attempts)`.
    pub async fn active(&self) -> JobResult<Vec<(String, u32)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as(&format!("SELECT id, attempts FROM jobs WHERE status IN {}", active_codes()))
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows.into_iter().map(|(id, attempts)| (id, attempts as u32)).collect())
    }

    /// How many jobs are in each status, and how many queued ones are due at `now`.
    pub async fn status_counts(&self, now: u64) -> JobResult<(Vec<(JobStatus, u64)>, u64)> {
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
            .fetch_all(self.db.pool())
            .await?;
        let counts = rows.into_iter().map(|(s, n)| Ok((status_of(s)?, n as u64))).collect::<JobResult<_>>()?;
        let due: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = $1 AND not_before <= $2")
            .bind(i64::from(JobStatus::Queued.code()))
            .bind(now as i64)
            .fetch_one(self.db.pool())
            .await?;
        Ok((counts, due as u64))
    }

    /// Ended jobs whose payment is not settled.
    pub async fn unsettled(&self) -> JobResult<Vec<String>> {
        Ok(sqlx::query_scalar(&unsettled_query()).fetch_all(self.db.pool()).await?)
    }

    /// Stores what a run produced, if the row still holds the run's lease (and, when
    /// `expires_after` is given, the lease lasts past it); false if not (nothing is written).
    pub async fn finish(
        &self,
        id: &str,
        lease: &Lease,
        expires_after: Option<i64>,
        done: Finished<'_>,
    ) -> JobResult<bool> {
        let finished = self
            .db
            .execute(
                sqlx::query(
                    "UPDATE jobs SET status = $1, receipt = $2, receipt_hash = $3, fuel_consumed = $4, outcome = $5, \
                     results = $6, outputs = $7, error = NULL, updated_at = $8, lease_until = NULL WHERE id = $9 \
                     AND lease_owner = $10 AND attempts = $11 AND lease_until >= $12",
                )
                .bind(i64::from(done.status.code()))
                .bind(done.receipt_json)
                .bind(Text(done.receipt_hash))
                .bind(i64::try_from(done.fuel_consumed).unwrap_or(i64::MAX))
                .bind(Json(done.outcome))
                .bind(Json(done.results))
                .bind(Json(done.outputs))
                .bind(unix_now() as i64)
                .bind(id)
                .bind(&lease.owner)
                .bind(lease.attempt)
                .bind(expires_after.unwrap_or(i64::MIN)),
            )
            .await?;
        if finished.rows_affected() == 1 {
            self.db.notify("tidepool_jobs").await;
        }
        Ok(finished.rows_affected() == 1)
    }

    /// Replaces a finished job's stored receipt (with the provider's signature added).
    pub async fn set_receipt(&self, id: &str, receipt_json: &str) -> JobResult<()> {
        self.db.execute(sqlx::query("UPDATE jobs SET receipt = $1 WHERE id = $2").bind(receipt_json).bind(id)).await?;
        Ok(())
    }

    /// Records how a job's payment was settled (and the outputs' asset, once published).
    pub async fn set_payment(&self, id: &str, payment: PaymentState, output: Option<Did>) -> JobResult<()> {
        self.db
            .execute(
                sqlx::query(
                    "UPDATE jobs SET payment = $1, output_did = COALESCE($2, output_did), updated_at = $3 \
                     WHERE id = $4",
                )
                .bind(payment.as_str())
                .bind(output.map(Text))
                .bind(unix_now() as i64)
                .bind(id),
            )
            .await?;
        Ok(())
    }
}

/// Ended jobs whose payment is not settled (through the `jobs_unsettled` index).
pub(super) fn unsettled_query() -> String {
    let terminal: Vec<String> = JobStatus::TERMINAL.iter().map(|s| s.code().to_string()).collect();
    format!("SELECT id FROM jobs WHERE payment = 'pending' AND status IN ({})", terminal.join(","))
}
