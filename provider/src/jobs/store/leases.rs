//! The lease half of the `jobs` table (see [`super`]): claiming jobs, renewing and losing a
//! run's lease, re-queueing or failing jobs whose lease ran out. Every write here names the
//! lease it holds (owner and attempt) and changes nothing once the row holds another.

use super::{JobStore, Lease, active_codes};
use crate::jobs::error::JobResult;
use crate::protocol::signing::unix_now;
use crate::protocol::states::JobStatus;

impl JobStore {
    /// Claims queued jobs for running (one more attempt each), leased to `owner` until `until`
    /// (ms), in one transaction; for each of `ids`, `None` if it is no longer queued.
    pub async fn claim(&self, ids: &[String], owner: &str, until: i64) -> JobResult<Vec<Option<Lease>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.write().await?;
        let mut leases = Vec::with_capacity(ids.len());
        for id in ids {
            let attempt: Option<i64> = sqlx::query_scalar(
                "UPDATE jobs SET status = $1, attempts = attempts + 1, lease_owner = $2, lease_until = $3, \
                 updated_at = $4 WHERE id = $5 AND status = $6 RETURNING attempts",
            )
            .bind(i64::from(JobStatus::ConfiguringVolumes.code()))
            .bind(owner)
            .bind(until)
            .bind(unix_now() as i64)
            .bind(id)
            .bind(i64::from(JobStatus::Queued.code()))
            .fetch_optional(&mut *tx)
            .await?;
            leases.push(attempt.map(|attempt| Lease { owner: owner.to_string(), attempt }));
        }
        tx.commit().await?;
        Ok(leases)
    }

    /// Cluster mode: claims up to `limit` queued jobs due at `now` (oldest first) in one
    /// statement, skipping jobs other workers are claiming this instant.
    pub async fn claim_due(&self, now: u64, owner: &str, until: i64, limit: usize) -> JobResult<Vec<(String, Lease)>> {
        let claimed: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE jobs SET status = $1, attempts = attempts + 1, lease_owner = $2, lease_until = $3, \
             updated_at = $4 WHERE id IN (SELECT id FROM jobs WHERE status = $5 AND not_before <= $4 \
             ORDER BY not_before, created_at LIMIT $6 FOR UPDATE SKIP LOCKED) RETURNING id, attempts",
        )
        .bind(i64::from(JobStatus::ConfiguringVolumes.code()))
        .bind(owner)
        .bind(until)
        .bind(now as i64)
        .bind(i64::from(JobStatus::Queued.code()))
        .bind(limit as i64)
        .fetch_all(self.db.pool())
        .await?;
        Ok(claimed.into_iter().map(|(id, attempt)| (id, Lease { owner: owner.to_string(), attempt })).collect())
    }

    /// Extends a run's lease to `until` (ms). `None` if the run lost it (reaped, re-run
    /// elsewhere, ended); else whether a stop was asked for.
    pub async fn renew(&self, id: &str, lease: &Lease, until: i64) -> JobResult<Option<bool>> {
        let mut tx = self.db.write().await?;
        let stop: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND attempts = $4 \
             AND status IN {} RETURNING stop_requested",
            active_codes()
        ))
        .bind(until)
        .bind(id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stop.map(|s| s != 0))
    }

    /// Records the stage a held run reached (cluster mode: API nodes cannot see a worker's live
    /// state). Only while the run holds its lease and is active: never over a final status.
    pub async fn set_stage(&self, id: &str, lease: &Lease, stage: JobStatus) -> JobResult<()> {
        let mut tx = self.db.write().await?;
        sqlx::query(&format!(
            "UPDATE jobs SET status = $1, updated_at = $2 WHERE id = $3 AND lease_owner = $4 AND attempts = $5 \
             AND status IN {}",
            active_codes()
        ))
        .bind(i64::from(stage.code()))
        .bind(unix_now() as i64)
        .bind(id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cluster mode: puts active jobs whose lease ran out before `now_ms` back in the queue, or
    /// fails them once they had `max_attempts`; returns them with their new status.
    pub async fn reap(&self, now_ms: i64, max_attempts: u32) -> JobResult<Vec<(String, i64)>> {
        let mut tx = self.db.write().await?;
        let reaped: Vec<(String, i64)> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = CASE WHEN attempts >= $1 THEN $2 ELSE $3 END, \
             error = CASE WHEN attempts >= $1 THEN $4 ELSE error END, \
             lease_owner = NULL, lease_until = NULL, updated_at = $5 \
             WHERE status IN {} AND lease_until < $6 RETURNING id, status",
            active_codes()
        ))
        .bind(i64::from(max_attempts))
        .bind(i64::from(JobStatus::Error.code()))
        .bind(i64::from(JobStatus::Queued.code()))
        .bind(format!("its worker stopped renewing its lease {max_attempts} times; giving up"))
        .bind(unix_now() as i64)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if !reaped.is_empty() {
            self.db.notify("tidepool_jobs").await;
        }
        Ok(reaped)
    }

    /// Puts a job whose worker process died back in the queue, while `lease` still holds it.
    /// False if the lease was lost (nothing was written).
    pub async fn requeue(&self, id: &str, lease: &Lease) -> JobResult<bool> {
        let done = self
            .db
            .execute(
                sqlx::query(
                    "UPDATE jobs SET status = $1, updated_at = $2, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $3 AND lease_owner = $4 AND attempts = $5",
                )
                .bind(i64::from(JobStatus::Queued.code()))
                .bind(unix_now() as i64)
                .bind(id)
                .bind(&lease.owner)
                .bind(lease.attempt),
            )
            .await?;
        if done.rows_affected() == 1 {
            self.db.notify("tidepool_jobs").await;
        }
        Ok(done.rows_affected() == 1)
    }
}
