//! What a finished run leaves: its output files and logs moved into the blob store, the
//! receipt signed by the provider, and the list of downloadable results.

use std::path::Path;

use tidepool_runtime::tree::EntryKind;
use tidepool_runtime::{JobResult as RunResult, Outcome};

use super::store::{Finished, now_ms};
use super::{JobError, JobResult, Jobs, Lease};
use crate::blocking::blocking;
use crate::protocol::api::{ResultEntry, ResultKind};
use crate::protocol::signing::sign_receipt;
use crate::protocol::states::JobStatus;

impl Jobs {
    /// Stores a run's results: output files (from `dir/outputs`) and logs into the blob store,
    /// then the receipt (signed, if this node holds the provider's key; else it is signed at
    /// settlement) and the job's final status, if the run still holds `lease`.
    pub(super) async fn store_results(&self, id: &str, lease: &Lease, run: RunResult, dir: &Path) -> JobResult<()> {
        let mut receipt = run.receipt;
        if let Some(receipts) = &self.receipts {
            sign_receipt(&receipts.signer, &receipts.domain, &mut receipt);
        }
        let (blobs, out_dir, outputs) = (self.blobs.clone(), dir.join("outputs"), run.outputs.clone());
        let (stdout, stderr) = (run.stdout, run.stderr);
        let mut results = blocking(move || {
            let mut entries = Vec::new();
            for e in &outputs.entries {
                if let EntryKind::File { size, hash } = e.kind {
                    blobs.adopt(&out_dir.join(&e.path), &hash)?;
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
                let hash = blobs.put_bytes(bytes)?;
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
        .await?;
        let receipt_json = serde_json::to_string_pretty(&receipt)?;
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
        let finished = Finished {
            status,
            receipt_json: &receipt_json,
            receipt_hash: receipt.receipt_hash,
            fuel_consumed: receipt.fuel_consumed,
            outcome: &receipt.outcome,
            results: &results,
            outputs: &run.outputs,
        };
        // In cluster mode the lease must also still be running: a worker that was paused past it
        // may have been reaped without knowing.
        let expires_after = self.config.cluster.then(now_ms);
        if !self.store.finish(id, lease, expires_after, finished).await? {
            return Err(JobError::LeaseLost(id.to_string()));
        }
        self.metrics.duration.observe(run.wall_time.as_secs_f64());
        self.metrics.fuel.observe(receipt.fuel_consumed as f64);
        tracing::info!(
            job_id = %id, outcome = %receipt.outcome, fuel = receipt.fuel_consumed, receipt = %receipt.receipt_hash,
            "job ended"
        );
        Ok(())
    }
}
