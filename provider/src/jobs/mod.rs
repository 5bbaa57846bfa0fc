//! Jobs: one per agreement, queued in the database, started by a scheduler when due
//! (`notBefore`) and a worker slot is free, run in the runtime on a blocking thread, their
//! results moved into the blob store, their receipt signed, and their payment settled.
//!
//! Everything a job goes through is a row update, so a provider killed at any point resumes
//! on restart ([`recover`]): jobs caught mid-run go back to the queue and run again (the same
//! inputs give the same receipt), up to `max_job_attempts`; finished jobs whose payment was not
//! settled are settled. Settling is idempotent on the keeper's side.
//!
//! Status codes follow Ocean's compute statuses:
//!
//! | code | status |
//! |---|---|
//! | 1 | queued (also while waiting for `notBefore`) |
//! | 10 | configuring volumes |
//! | 20 | provisioning |
//! | 30 | data provisioning failed |
//! | 31 | algorithm provisioning failed |
//! | 40 | running |
//! | 60 | publishing results |
//! | 70 | finished (the algorithm exited 0) |
//! | 71 | algorithm failed (non-zero exit, trap, fuel, memory or time limit) |
//! | 72 | output quota exceeded |
//! | 80 | stopped on request |
//! | 81 | not started: the payment deadline had passed |
//! | 90 | error on the provider's side |

mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256};
use anyhow::{Context, Result};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tidepool_runtime::tree::{EntryKind, Tree};
use tidepool_runtime::{Algorithm, GuestEvent, JobEvent, JobSpec, Limits, Outcome, Receipt, Stage};
use tokio::sync::{Notify, Semaphore};

pub use status::JobStatus;

use crate::api::{JobView, ProgressView, ResultEntry, ResultKind, ResultsView};
use crate::auth::unix_now;
use crate::ddo::Did;
use crate::error::{ApiError, ApiResult};
use crate::keeper::{Agreement, AgreementState, KeeperError};
use crate::provider::Provider;
use crate::store::{addr, parse_addr, parse_b256};

/// In-memory state of running jobs: cancellation flags, the stage they are in, and the latest
/// guest progress. Stages after the claim live here only: the database says the job is active
/// (claimed), which is all a restart needs, and a job's stages cost no disk writes.
#[derive(Debug, Default)]
pub struct Jobs {
    wake: Notify,
    live: Mutex<HashMap<String, Live>>,
}

#[derive(Debug)]
struct Live {
    cancel: Arc<AtomicBool>,
    stage: Option<JobStatus>,
    progress: Option<ProgressView>,
}

impl Jobs {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A running job's stage and progress (taken before its row is read: a job that ends in
    /// between then shows its final row, never an older stage than it had shown).
    fn snapshot(&self, id: &str) -> (Option<JobStatus>, Option<ProgressView>) {
        self.live().get(id).map_or((None, None), |l| (l.stage, l.progress.clone()))
    }
}

/// Queues the job of an agreement. One job per agreement: a second is a conflict.
pub async fn enqueue(p: &Arc<Provider>, a: &Agreement, not_before: u64, args: Vec<String>) -> ApiResult<JobView> {
    let id = hex::encode(&B256::random()[..16]);
    let now = unix_now() as i64;
    let mut tx = p.db.write().await?;
    let existing: Option<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE agreement_id = ?1")
        .bind(a.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    if let Some(existing) = existing {
        return Err(ApiError::Conflict(format!("agreement {} already has job {existing}", a.id)));
    }
    sqlx::query(
        "INSERT INTO jobs (id, agreement_id, did, consumer, status, args, not_before, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )
    .bind(&id)
    .bind(a.id.to_string())
    .bind(a.did.to_string())
    .bind(addr(a.consumer))
    .bind(JobStatus::Queued.code())
    .bind(serde_json::to_string(&args).map_err(ApiError::internal)?)
    .bind(not_before as i64)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    p.jobs.wake.notify_one();
    tracing::info!(job = %id, agreement = %a.id, not_before, "job queued");
    load(p, &id).await
}

/// A job's row.
async fn row(p: &Provider, id: &str) -> ApiResult<SqliteRow> {
    sqlx::query("SELECT * FROM jobs WHERE id = ?1")
        .bind(id)
        .fetch_optional(p.db.pool())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// A job's row, if `signer` is its consumer.
async fn own_row(p: &Provider, id: &str, signer: Address) -> ApiResult<SqliteRow> {
    let r = row(p, id).await?;
    if parse_addr(&r.get::<String, _>("consumer"))? != signer {
        return Err(ApiError::Forbidden(format!("{signer} is not this job's consumer")));
    }
    Ok(r)
}

/// A job, as the API shows it.
async fn load(p: &Provider, id: &str) -> ApiResult<JobView> {
    let live = p.jobs.snapshot(id);
    view_of(id, &row(p, id).await?, live)
}

fn view_of(id: &str, r: &SqliteRow, live: (Option<JobStatus>, Option<ProgressView>)) -> ApiResult<JobView> {
    let mut status = JobStatus::from_code(r.get::<i64, _>("status") as u32);
    let receipt: Option<Receipt> = r.get::<Option<String>, _>("receipt").and_then(|j| serde_json::from_str(&j).ok());
    let (stage, progress) = live;
    if let (Some(stage), true) = (stage, status.is_active()) {
        status = stage;
    }
    Ok(JobView {
        job_id: id.to_string(),
        service_agreement_id: parse_b256(&r.get::<String, _>("agreement_id"))?,
        did: r.get::<String, _>("did").parse().map_err(ApiError::internal)?,
        status: status.code(),
        status_text: status.text().into(),
        created_at: r.get::<i64, _>("created_at") as u64,
        updated_at: r.get::<i64, _>("updated_at") as u64,
        not_before: r.get::<i64, _>("not_before") as u64,
        attempts: r.get::<i64, _>("attempts") as u32,
        progress,
        outcome: receipt.as_ref().map(|r| r.outcome.clone()),
        error: r.get("error"),
        receipt_hash: receipt.as_ref().map(|r| r.receipt_hash),
        output_did: r.get::<Option<String>, _>("output_did").and_then(|d| d.parse().ok()),
        payment: r.get("payment"),
    })
}

/// The job, if `signer` is its consumer.
pub async fn view(p: &Provider, id: &str, signer: Address) -> ApiResult<JobView> {
    let live = p.jobs.snapshot(id);
    view_of(id, &own_row(p, id, signer).await?, live)
}

/// The job's results, by index: output files (by path), the two logs, the receipt.
pub async fn results(p: &Provider, id: &str, signer: Address) -> ApiResult<ResultsView> {
    results_of(id, &own_row(p, id, signer).await?)
}

fn results_of(id: &str, r: &SqliteRow) -> ApiResult<ResultsView> {
    let parse = |col: &str| -> ApiResult<Option<serde_json::Value>> {
        r.get::<Option<String>, _>(col).map(|j| serde_json::from_str(&j).map_err(ApiError::internal)).transpose()
    };
    let results = match parse("results")? {
        Some(v) => serde_json::from_value(v).map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let outputs = parse("outputs")?.map(serde_json::from_value).transpose().map_err(ApiError::internal)?;
    Ok(ResultsView { job_id: id.to_string(), results, outputs })
}

/// What a result download reads from.
#[derive(Debug)]
pub enum ResultBody {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

/// Opens result `index` of a job for its consumer.
pub async fn open_result(p: &Provider, id: &str, signer: Address, index: u32) -> ApiResult<(ResultEntry, ResultBody)> {
    let r = own_row(p, id, signer).await?;
    let entry = results_of(id, &r)?
        .results
        .into_iter()
        .find(|r| r.index == index)
        .ok_or_else(|| ApiError::NotFound(format!("job {id} has no result {index}")))?;
    let body = match (entry.kind, entry.hash) {
        (ResultKind::Receipt, _) => {
            let json: Option<String> = r.get("receipt");
            ResultBody::Bytes(json.unwrap_or_default().into_bytes())
        }
        (_, Some(hash)) => ResultBody::File(p.blobs.open_blob(&hash)?),
        (_, None) => return Err(ApiError::Internal(format!("result {index} of job {id} has no content"))),
    };
    Ok((entry, body))
}

/// Stops a job: a running one at its next epoch tick (it ends with outcome `stopped`), a queued
/// one at once.
pub async fn stop(p: &Arc<Provider>, id: &str, signer: Address) -> ApiResult<JobView> {
    let job = view(p, id, signer).await?;
    let status = JobStatus::from_code(job.status);
    if status.is_terminal() {
        return Err(ApiError::Conflict(format!("job {id} has already ended ({})", status.text())));
    }
    if let Some(live) = p.jobs.live().get(id) {
        live.cancel.store(true, Ordering::Relaxed);
    }
    let stopped = p.db.execute(sqlx::query("UPDATE jobs SET status = ?1, error = 'stopped before it started', updated_at = ?2 WHERE id = ?3 AND status = ?4")
        .bind(JobStatus::Stopped.code())
        .bind(unix_now() as i64)
        .bind(id)
        .bind(JobStatus::Queued.code()))
        .await
        .map_err(ApiError::internal)?;
    if stopped.rows_affected() == 1 {
        // Never started: the whole escrow goes back to the consumer.
        settle(p, id).await.map_err(ApiError::internal)?;
    } else if let Some(live) = p.jobs.live().get(id) {
        // Claimed meanwhile: it is live from before its claim, so its flag is here now.
        live.cancel.store(true, Ordering::Relaxed);
    }
    load(p, id).await
}

async fn set_status(p: &Provider, id: &str, status: JobStatus) -> Result<()> {
    p.db.execute(
        sqlx::query("UPDATE jobs SET status = ?1, updated_at = ?2 WHERE id = ?3")
            .bind(status.code())
            .bind(unix_now() as i64)
            .bind(id),
    )
    .await?;
    Ok(())
}

async fn fail(p: &Provider, id: &str, status: JobStatus, error: &str) -> Result<()> {
    p.db.execute(
        sqlx::query("UPDATE jobs SET status = ?1, error = ?2, updated_at = ?3 WHERE id = ?4")
            .bind(status.code())
            .bind(error)
            .bind(unix_now() as i64)
            .bind(id),
    )
    .await?;
    tracing::warn!(job = %id, status = status.text(), error, "job failed");
    Ok(())
}

/// Puts jobs interrupted by a crash back in the queue (or fails them after too many attempts),
/// then settles what was left unsettled.
pub async fn recover(p: &Arc<Provider>) -> Result<()> {
    let active: Vec<u32> = JobStatus::ACTIVE.iter().map(|s| s.code()).collect();
    let rows = sqlx::query("SELECT id, attempts, status FROM jobs").fetch_all(p.db.pool()).await?;
    for r in rows {
        let (id, attempts, status): (String, i64, i64) = (r.get("id"), r.get("attempts"), r.get("status"));
        if !active.contains(&(status as u32)) {
            continue;
        }
        if attempts as u32 >= p.config.max_job_attempts {
            fail(p, &id, JobStatus::Error, &format!("interrupted {attempts} times by provider restarts; giving up"))
                .await?;
        } else {
            tracing::info!(job = %id, attempts, "re-queueing a job interrupted by a restart");
            set_status(p, &id, JobStatus::Queued).await?;
        }
    }
    settle_pending(p).await;
    Ok(())
}

/// Settles every ended job whose payment is still pending.
/// Ended jobs whose payment is not settled (through the `jobs_unsettled` index).
fn unsettled_query() -> String {
    let terminal: Vec<String> = JobStatus::TERMINAL.iter().map(|s| s.code().to_string()).collect();
    format!("SELECT id FROM jobs WHERE payment = 'pending' AND status IN ({})", terminal.join(","))
}

async fn settle_pending(p: &Arc<Provider>) {
    let ids: Vec<String> = match sqlx::query_scalar(&unsettled_query()).fetch_all(p.db.pool()).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "listing unsettled jobs");
            return;
        }
    };
    for id in ids {
        if let Err(e) = settle(p, &id).await {
            tracing::error!(job = %id, error = %format!("{e:#}"), "settling failed; will retry");
        }
    }
}

/// Starts the scheduler: it claims due jobs while worker slots are free.
pub fn spawn_scheduler(p: Arc<Provider>) {
    let slots = Arc::new(Semaphore::new(p.config.max_concurrent_jobs.max(1)));
    tokio::spawn(async move {
        let mut last_settle = std::time::Instant::now();
        loop {
            if let Err(e) = start_due(&p, &slots).await {
                tracing::error!(error = %format!("{e:#}"), "scheduling jobs");
            }
            if last_settle.elapsed() > Duration::from_secs(10) {
                settle_pending(&p).await;
                last_settle = std::time::Instant::now();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), p.jobs.wake.notified()).await;
        }
    });
}

async fn start_due(p: &Arc<Provider>, slots: &Arc<Semaphore>) -> Result<()> {
    let free = slots.available_permits();
    if free == 0 {
        return Ok(());
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = ?1 AND not_before <= ?2 ORDER BY not_before, created_at LIMIT ?3",
    )
    .bind(JobStatus::Queued.code())
    .bind(unix_now() as i64)
    .bind(free as i64)
    .fetch_all(p.db.pool())
    .await?;
    for id in ids {
        // The job is live from before its claim, so that a stop request that finds it claimed
        // always finds the flag to stop it with (see `stop`).
        let cancel = Arc::new(AtomicBool::new(false));
        p.jobs.live().insert(id.clone(), Live { cancel: cancel.clone(), stage: None, progress: None });
        let claimed = p.db.execute(sqlx::query(
            "UPDATE jobs SET status = ?1, attempts = attempts + 1, updated_at = ?2 WHERE id = ?3 AND status = ?4",
        )
        .bind(JobStatus::ConfiguringVolumes.code())
        .bind(unix_now() as i64)
        .bind(&id)
        .bind(JobStatus::Queued.code()))
        .await;
        if !matches!(&claimed, Ok(c) if c.rows_affected() == 1) {
            p.jobs.live().remove(&id);
            claimed?;
            continue;
        }
        let permit = slots.clone().acquire_owned().await?;
        let p = p.clone();
        tokio::spawn(async move {
            // In a task of its own, so that a panic in it still ends the job here (failed,
            // settled, no longer live) instead of leaving it active with no one running it.
            let run = tokio::spawn({
                let (p, id) = (p.clone(), id.clone());
                async move { execute(&p, &id, cancel).await }
            });
            let result = run.await.unwrap_or_else(|e| Err(anyhow::anyhow!("the job's task failed: {e}")));
            if let Err(e) = result {
                let message = format!("{e:#}");
                tracing::error!(job = %id, error = %message, "job error");
                let _ = fail(&p, &id, JobStatus::Error, "the provider failed while running the job").await;
            }
            p.jobs.live().remove(&id);
            drop(permit);
            if let Err(e) = settle(&p, &id).await {
                tracing::error!(job = %id, error = %format!("{e:#}"), "settling failed; will retry");
            }
            p.jobs.wake.notify_one();
        });
    }
    Ok(())
}

/// The limits of a job on a service: what the DDO's environment offers.
fn limits_of(p: &Provider, env: &crate::ddo::Environment) -> Limits {
    Limits {
        fuel: env.max_fuel,
        memory_bytes: env.memory_bytes,
        timeout_ms: env.timeout_ms,
        output_bytes: env.output_bytes,
        output_files: env.output_files,
        module_bytes: p.config.max_module_bytes,
        ..p.config.job_limits.clone()
    }
}

/// Runs one claimed job to the end and stores its results.
async fn execute(p: &Arc<Provider>, id: &str, cancel: Arc<AtomicBool>) -> Result<()> {
    let r = sqlx::query("SELECT agreement_id, args FROM jobs WHERE id = ?1").bind(id).fetch_one(p.db.pool()).await?;
    let agreement_id = parse_b256(&r.get::<String, _>("agreement_id"))?;
    let args: Vec<String> = serde_json::from_str(&r.get::<String, _>("args"))?;
    let a = p.keeper.agreement(agreement_id).await?;
    if let Some(deadline) = a.condition("releasePayment").and_then(|c| c.deadline)
        && unix_now() >= deadline
    {
        return fail(p, id, JobStatus::DeadlineMissed, "the payment deadline passed before the job could start").await;
    }
    if a.state != AgreementState::Active {
        return fail(p, id, JobStatus::DeadlineMissed, "the agreement was refunded before the job could start").await;
    }
    let ddo = crate::assets::ddo(p, a.did).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let service = ddo.compute_service("1").context("the asset has no Computing service")?;
    let limits = limits_of(p, &service.provider.environment);
    let inputs = crate::assets::inputs(p, a.did).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let upload = sqlx::query("SELECT algorithm_hash, name FROM uploads WHERE agreement_id = ?1")
        .bind(agreement_id.to_string())
        .fetch_one(p.db.pool())
        .await
        .context("the job has no uploaded algorithm")?;
    let algorithm_hash = parse_b256(&upload.get::<String, _>("algorithm_hash"))?;
    let algorithm = Algorithm::new(upload.get::<String, _>("name"), p.blobs.read(&algorithm_hash)?);

    if cancel.load(Ordering::Relaxed) {
        // Stopped between its claim and here: it never ran, and nothing is charged.
        return fail(p, id, JobStatus::Stopped, "stopped before it started").await;
    }
    let dir = p.config.data_dir.join("jobs").join(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut spec = JobSpec::new(algorithm, inputs, dir.join("outputs"));
    spec.args = args;
    spec.limits = limits;
    spec.cancel = Some(cancel);
    let (jobs, job_id) = (p.clone(), id.to_string());
    spec.events = Some(Arc::new(move |event| {
        let mut live = jobs.jobs.live();
        let Some(live) = live.get_mut(&job_id) else { return };
        match event {
            JobEvent::Stage(stage) => {
                live.stage = Some(match stage {
                    Stage::ConfiguringVolumes => JobStatus::ConfiguringVolumes,
                    Stage::Provisioning => JobStatus::Provisioning,
                    Stage::Running => JobStatus::Running,
                    Stage::PublishingResults => JobStatus::PublishingResults,
                })
            }
            JobEvent::Guest(GuestEvent::Progress { done, total, message }) => {
                live.progress = Some(ProgressView { done, total, message })
            }
            JobEvent::Guest(GuestEvent::Metric { .. }) => {}
        }
    }));
    let runtime = p.runtime.clone();
    let result = tokio::task::spawn_blocking(move || runtime.run(&spec)).await?;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let status = match e {
                tidepool_runtime::Error::InvalidInput { .. } => JobStatus::DataProvisioningFailed,
                ref e if e.is_client_error() => JobStatus::AlgorithmProvisioningFailed,
                _ => JobStatus::Error,
            };
            let _ = std::fs::remove_dir_all(&dir);
            return fail(p, id, status, &e.to_string()).await;
        }
    };

    // Results: output files and logs into the blob store, then the signed receipt.
    let mut receipt = result.receipt.clone();
    crate::auth::sign_receipt(&p.signer, &p.domain, &mut receipt);
    let outputs = result.outputs.clone();
    let (p2, out_dir) = (p.clone(), dir.join("outputs"));
    let (stdout, stderr) = (result.stdout, result.stderr);
    let entries = tokio::task::spawn_blocking(move || -> Result<Vec<ResultEntry>> {
        let mut entries = Vec::new();
        for e in &outputs.entries {
            if let EntryKind::File { size, hash } = e.kind {
                p2.blobs.adopt(&out_dir.join(&e.path), &hash)?;
                entries.push(ResultEntry {
                    index: entries.len() as u32,
                    kind: ResultKind::Output,
                    name: e.path.clone(),
                    size,
                    hash: Some(hash),
                });
            }
        }
        for (name, bytes) in [("stdout.log", &stdout), ("stderr.log", &stderr)] {
            let hash = p2.blobs.put_bytes(bytes)?;
            entries.push(ResultEntry {
                index: entries.len() as u32,
                kind: ResultKind::Log,
                name: name.into(),
                size: bytes.len() as u64,
                hash: Some(hash),
            });
        }
        Ok(entries)
    })
    .await??;
    let receipt_json = serde_json::to_string_pretty(&receipt)?;
    let mut results = entries;
    results.push(ResultEntry {
        index: results.len() as u32,
        kind: ResultKind::Receipt,
        name: "receipt.json".into(),
        size: receipt_json.len() as u64,
        hash: None,
    });
    let status = match &receipt.outcome {
        Outcome::Exited { code: 0 } => JobStatus::Finished,
        Outcome::OutputQuota => JobStatus::QuotaExceeded,
        Outcome::Stopped => JobStatus::Stopped,
        _ => JobStatus::AlgorithmFailed,
    };
    p.db.execute(sqlx::query("UPDATE jobs SET status = ?1, receipt = ?2, results = ?3, outputs = ?4, error = NULL, updated_at = ?5 WHERE id = ?6")
        .bind(status.code())
        .bind(&receipt_json)
        .bind(serde_json::to_string(&results)?)
        .bind(serde_json::to_string(&result.outputs)?)
        .bind(unix_now() as i64)
        .bind(id))
        .await?;
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(job = %id, outcome = %receipt.outcome, fuel = receipt.fuel_consumed, receipt = %receipt.receipt_hash, "job ended");
    Ok(())
}

/// Releases the payment of an ended job (fuel used × price to the provider, the rest back to
/// the consumer, committing the receipt hash), then publishes its outputs as an asset of the
/// consumer. Idempotent: safe to call again after a crash.
pub async fn settle(p: &Arc<Provider>, id: &str) -> Result<()> {
    let r = sqlx::query("SELECT agreement_id, status, payment, receipt, outputs FROM jobs WHERE id = ?1")
        .bind(id)
        .fetch_one(p.db.pool())
        .await?;
    let status = JobStatus::from_code(r.get::<i64, _>("status") as u32);
    if r.get::<String, _>("payment") != "pending" || !status.is_terminal() {
        return Ok(());
    }
    let agreement_id = parse_b256(&r.get::<String, _>("agreement_id"))?;
    let receipt: Option<Receipt> =
        r.get::<Option<String>, _>("receipt").map(|j| serde_json::from_str(&j)).transpose()?;
    let (hash, fuel) = receipt.as_ref().map_or((B256::ZERO, 0), |r| (r.receipt_hash, r.fuel_consumed));
    let set_payment =
        |payment: &'static str, output: Option<Did>| async move {
            p.db.execute(sqlx::query(
            "UPDATE jobs SET payment = ?1, output_did = COALESCE(?2, output_did), updated_at = ?3 WHERE id = ?4",
        )
        .bind(payment)
        .bind(output.map(|d| d.to_string()))
        .bind(unix_now() as i64)
        .bind(id))
        .await
        };
    match p.keeper.release_payment(agreement_id, hash, fuel).await {
        Ok(payout) => {
            tracing::info!(job = %id, provider = %payout.provider_amount, refund = %payout.consumer_refund, "payment released")
        }
        Err(KeeperError::AlreadyFulfilled { .. } | KeeperError::Closed { state: AgreementState::Released }) => {}
        Err(KeeperError::Closed { state: AgreementState::Refunded }) => {
            set_payment("refunded", None).await?;
            return Ok(());
        }
        Err(
            e @ (KeeperError::TimedOut { .. } | KeeperError::DependencyUnfulfilled { .. } | KeeperError::Closed { .. }),
        ) => {
            tracing::warn!(job = %id, error = %e, "the payment cannot be released");
            set_payment("unpaid", None).await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let mut output = None;
    if let (Some(receipt), Some(outputs)) = (&receipt, r.get::<Option<String>, _>("outputs")) {
        let outputs: Tree = serde_json::from_str(&outputs)?;
        let a = p.keeper.agreement(agreement_id).await?;
        let did =
            crate::assets::publish_output(p, &a, id, receipt, &outputs).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        match p.keeper.publish_output(agreement_id, did).await {
            Ok(()) | Err(KeeperError::AlreadyFulfilled { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        output = Some(did);
    }
    set_payment("released", output).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_periodic_queries_use_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&tmp.path().join("t.db")).await.unwrap();
        let plan = crate::store::query_plan(&db, &super::unsettled_query()).await;
        assert!(plan.iter().any(|d| d.contains("jobs_unsettled")), "{plan:?}");
    }
}
