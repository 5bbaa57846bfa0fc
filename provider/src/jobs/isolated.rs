//! Running a job in a confined worker process (`tidepool_sandbox`), and checking what the
//! worker reports against the files it leaves: after the job starts, the worker runs
//! untrusted code, so its word is a stranger's. The daemon re-hashes the outputs and logs it
//! is about to keep and checks them, the module and the receipt's own hash against the
//! receipt; a worker that lies fails its job, and can lie about nothing but its own job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tidepool_runtime::tree::{self, Tree};
use tidepool_runtime::{GuestEvent, InputSpec, JobEvent, JobResult as RunResult, Limits, Stage};
use tidepool_sandbox::{Ended, JobRequest, Policy, Pool, Report, WireInput, WireStage};

use super::execute::Ran;
use super::live::LiveJobs;
use crate::config::SandboxConfig;
use crate::protocol::states::JobStatus;

/// What the isolated path needs besides the job.
#[derive(Debug)]
pub(super) struct Isolated {
    pub pool: Arc<Pool>,
    pub sandbox: SandboxConfig,
    /// The compile cache, which workers read (never write).
    pub cache_dir: Option<PathBuf>,
}

/// One job, ready for a worker.
pub(super) struct IsolatedJob {
    pub id: String,
    pub name: String,
    /// The module, or an environment algorithm's files as an archive.
    pub module: Arc<[u8]>,
    /// The receipt's `algorithm_hash`: the module's BLAKE3, or the files' tree root.
    pub module_hash: alloy_primitives::B256,
    /// The environment that runs the files, if the algorithm is not a module.
    pub environment: Option<Arc<tidepool_runtime::Environment>>,
    pub inputs: Vec<InputSpec>,
    /// The job's own directory (fresh, empty).
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub limits: Limits,
    pub cancel: Arc<AtomicBool>,
    pub live: Arc<LiveJobs>,
}

impl Isolated {
    /// Runs `job` in a worker, on the calling (blocking) thread.
    pub fn run(&self, job: IsolatedJob) -> Ran {
        match self.try_run(job) {
            Ok(ran) => ran,
            Err(e) => Ran::NotRun { status: JobStatus::Error, error: format!("starting the job's worker failed: {e}") },
        }
    }

    fn try_run(&self, job: IsolatedJob) -> std::io::Result<Ran> {
        let outputs = job.dir.join("outputs");
        let mut read_only: Vec<PathBuf> = job.inputs.iter().map(|i| i.dir.clone()).collect();
        read_only.extend(self.cache_dir.iter().filter(|d| d.is_dir()).cloned());
        if let Some(environment) = &job.environment {
            read_only.push(environment.dir().to_path_buf());
            // Its module may be a link to a file installed elsewhere.
            let module = std::fs::canonicalize(environment.module_path())?;
            read_only.extend(module.parent().filter(|d| !d.starts_with(environment.dir())).map(Path::to_path_buf));
        }
        let timeout = Duration::from_millis(job.limits.timeout_ms);
        let policy = Policy {
            read_only,
            read_write: vec![job.dir.clone()],
            address_space_bytes: self.sandbox.worker_address_space_bytes,
            file_size_bytes: job.limits.output_bytes.saturating_add(64 << 20),
            cpu_seconds: timeout.as_secs().saturating_mul(2).saturating_add(60),
            open_files: 4096,
        };
        let request = JobRequest {
            name: job.name.clone(),
            module_len: 0,
            environment: job.environment.as_ref().map(|e| e.dir().to_path_buf()),
            inputs: job
                .inputs
                .iter()
                .map(|i| WireInput {
                    name: i.name.clone(),
                    dir: i.dir.clone(),
                    manifest: i.manifest.as_deref().cloned(),
                })
                .collect(),
            output_dir: outputs.clone(),
            logs_dir: job.dir.clone(),
            args: job.args.clone(),
            limits: job.limits.clone(),
            cache_dir: self.cache_dir.clone(),
            policy,
        };
        let started = Instant::now();
        let running = self.pool.start(request, &job.module)?;
        tracing::debug!(job_id = %job.id, pid = running.pid(), "job handed to a worker");
        let deadline = started + timeout + Duration::from_secs(self.sandbox.kill_grace_secs);
        let (live, id) = (job.live.clone(), job.id.to_string());
        let ended = running.wait(deadline, &job.cancel, |report| match report {
            Report::Confined(c) => tracing::debug!(job_id = %id, landlock = %c.landlock, "worker confined"),
            Report::Stage(s) => live.record(
                &id,
                JobEvent::Stage(match s {
                    WireStage::ConfiguringVolumes => Stage::ConfiguringVolumes,
                    WireStage::Provisioning => Stage::Provisioning,
                    WireStage::Running => Stage::Running,
                    WireStage::PublishingResults => Stage::PublishingResults,
                }),
            ),
            Report::Progress { done, total, message } => {
                live.record(&id, JobEvent::Guest(GuestEvent::Progress { done, total, message }))
            }
        });
        Ok(match ended {
            Ended::Done(done) => match checked(*done, &job, &outputs) {
                Ok(result) => Ran::Finished(Box::new(result)),
                Err(why) => {
                    tracing::error!(job_id = %job.id, why, "a worker's result does not match its files");
                    Ran::NotRun { status: JobStatus::Error, error: format!("the job's worker misreported: {why}") }
                }
            },
            Ended::Failed { kind, message } => Ran::NotRun {
                status: match kind {
                    tidepool_sandbox::FailureKind::InvalidInput => JobStatus::DataProvisioningFailed,
                    tidepool_sandbox::FailureKind::Client => JobStatus::AlgorithmProvisioningFailed,
                    tidepool_sandbox::FailureKind::Host => JobStatus::Error,
                },
                error: message,
            },
            Ended::Killed => Ran::Killed { after: started.elapsed() },
            Ended::Crashed { detail } => Ran::Crashed(detail),
        })
    }
}

/// Checks a worker's result against the module, the logs and outputs on disk, and the
/// receipt's own hash; returns it as the runtime's result.
fn checked(done: tidepool_sandbox::JobDone, job: &IsolatedJob, outputs: &Path) -> Result<RunResult, String> {
    let receipt = done.receipt;
    if receipt.algorithm_hash != job.module_hash {
        return Err(format!("a receipt of module {}, not {}", receipt.algorithm_hash, job.module_hash));
    }
    let environment = job.environment.as_ref().map(|e| e.info());
    if environment.is_some_and(|info| receipt.environment.as_ref() != Some(info)) {
        return Err("a receipt of another environment".into());
    }
    if receipt.clone().seal().receipt_hash != receipt.receipt_hash {
        return Err("a receipt whose hash is not its fields'".into());
    }
    if receipt.limits != job.limits {
        return Err("a receipt of other limits than the job's".into());
    }
    // The worker's files are read as what they claim to be and no more: it may have run
    // hostile code, and it could leave a link (to `/dev/zero`, to an input's view, whose files
    // storing the outputs would then move away) or a FIFO where a log or the outputs go.
    let log = |name: &str, cap: u64, hash, len: u64| -> Result<Vec<u8>, String> {
        let path = job.dir.join(name);
        let bytes = match std::fs::symlink_metadata(&path) {
            // The worker writes no file for an empty log.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{name}: {e}")),
            Ok(meta) if !meta.is_file() => return Err(format!("{name} is not a plain file")),
            Ok(_) => {
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| {
                        std::io::Read::read_to_end(&mut std::io::Read::take(f, cap.saturating_add(1)), &mut bytes)
                    })
                    .map_err(|e| format!("{name}: {e}"))?;
                bytes
            }
        };
        if bytes.len() as u64 > cap || bytes.len() as u64 > len || tree::blake3_b256(&bytes) != hash {
            return Err(format!("{name} is not the log the receipt hashes"));
        }
        Ok(bytes)
    };
    let stdout = log("stdout.log", job.limits.stdout_bytes, receipt.stdout_hash, receipt.stdout_len)?;
    let stderr = log("stderr.log", job.limits.stderr_bytes, receipt.stderr_hash, receipt.stderr_len)?;
    let on_disk = match std::fs::symlink_metadata(outputs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tree::default(),
        Err(e) => return Err(format!("the outputs: {e}")),
        Ok(meta) if !meta.is_dir() => return Err("the outputs are not a plain directory".into()),
        Ok(_) => tree::scan(outputs).map_err(|e| format!("scanning the outputs: {e}"))?,
    };
    if on_disk != done.outputs || on_disk.root() != receipt.outputs_root {
        return Err("outputs on disk that are not the ones the receipt hashes".into());
    }
    Ok(RunResult {
        receipt,
        stdout,
        stderr,
        outputs: on_disk,
        wall_time: Duration::from_millis(done.wall_time_ms),
        compile_cached: done.compile_cached,
    })
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;
    use tidepool_runtime::receipt::{EnvironmentInfo, Outcome, Receipt, RuntimeInfo};

    use super::*;

    /// A job dir with what an honest worker leaves (a stdout log, one output file) and the
    /// worker's report of it.
    fn honest() -> (tempfile::TempDir, IsolatedJob, tidepool_sandbox::JobDone) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        std::fs::create_dir_all(dir.join("outputs")).unwrap();
        std::fs::write(dir.join("stdout.log"), "counted\n").unwrap();
        std::fs::write(dir.join("outputs/result.csv"), "word,count\n").unwrap();
        let outputs = tree::scan(&dir.join("outputs")).unwrap();
        let job = IsolatedJob {
            id: "job".into(),
            name: "wordfreq".into(),
            module: Arc::from(&b"\0asm"[..]),
            module_hash: B256::repeat_byte(1),
            environment: None,
            inputs: Vec::new(),
            dir,
            args: Vec::new(),
            limits: Limits::default(),
            cancel: Arc::default(),
            live: Arc::default(),
        };
        let receipt = Receipt {
            version: tidepool_runtime::receipt::RECEIPT_VERSION,
            receipt_hash: B256::ZERO,
            environment: Some(EnvironmentInfo::module("wordfreq")),
            algorithm_hash: job.module_hash,
            algorithm_name: "wordfreq".into(),
            args: Vec::new(),
            inputs: Vec::new(),
            outputs_root: outputs.root(),
            stdout_hash: tree::blake3_b256(b"counted\n"),
            stdout_len: 8,
            stderr_hash: tree::blake3_b256(b""),
            stderr_len: 0,
            outcome: Outcome::Exited { code: 0 },
            fuel_consumed: 1000,
            limits: job.limits.clone(),
            runtime: RuntimeInfo {
                tidepool_version: "test".into(),
                wasmtime_version: "test".into(),
                engine_config_hash: B256::ZERO,
            },
            seed: B256::ZERO,
            deterministic: true,
            signatures: Vec::new(),
            meta: None,
        }
        .seal();
        let done = tidepool_sandbox::JobDone { receipt, outputs, wall_time_ms: 1, compile_cached: false };
        (tmp, job, done)
    }

    fn check(job: &IsolatedJob, done: &tidepool_sandbox::JobDone) -> Result<RunResult, String> {
        checked(done.clone(), job, &job.dir.join("outputs"))
    }

    #[test]
    fn an_honest_workers_files_are_taken() {
        let (_tmp, job, done) = honest();
        let result = check(&job, &done).unwrap();
        assert_eq!((result.stdout.as_slice(), result.stderr.len()), (&b"counted\n"[..], 0));
        assert_eq!(result.outputs, done.outputs);
    }

    #[test]
    fn logs_and_outputs_that_are_links_are_refused_even_to_the_right_content() {
        // A log that is a link to a file with the very bytes the receipt hashes.
        let (tmp, job, done) = honest();
        let elsewhere = tmp.path().join("elsewhere.log");
        std::fs::rename(job.dir.join("stdout.log"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, job.dir.join("stdout.log")).unwrap();
        assert_eq!(check(&job, &done).unwrap_err(), "stdout.log is not a plain file");

        // The outputs directory as a link to a directory with the very files hashed.
        let (tmp, job, done) = honest();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::rename(job.dir.join("outputs"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, job.dir.join("outputs")).unwrap();
        assert_eq!(check(&job, &done).unwrap_err(), "the outputs are not a plain directory");

        // A FIFO where a log goes: refused, not read (which would block).
        let (_tmp, job, done) = honest();
        std::fs::remove_file(job.dir.join("stdout.log")).unwrap();
        let fifo = std::ffi::CString::new(job.dir.join("stdout.log").into_os_string().into_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(check(&job, &done).unwrap_err(), "stdout.log is not a plain file");
    }

    #[test]
    fn a_log_past_its_cap_or_a_receipt_of_other_limits_is_refused() {
        // A log longer than the job's cap, with a receipt that hashes it all.
        let (_tmp, mut job, mut done) = honest();
        job.limits.stdout_bytes = 4;
        done.receipt.limits = job.limits.clone();
        done.receipt = done.receipt.clone().seal();
        assert_eq!(check(&job, &done).unwrap_err(), "stdout.log is not the log the receipt hashes");

        // Other limits than the job's (more fuel, say), honestly hashed.
        let (_tmp, job, mut done) = honest();
        done.receipt.limits.fuel += 1;
        done.receipt = done.receipt.clone().seal();
        assert_eq!(check(&job, &done).unwrap_err(), "a receipt of other limits than the job's");

        // Outputs changed after the report.
        let (_tmp, job, done) = honest();
        std::fs::write(job.dir.join("outputs/planted"), "x").unwrap();
        assert_eq!(check(&job, &done).unwrap_err(), "outputs on disk that are not the ones the receipt hashes");
    }
}
