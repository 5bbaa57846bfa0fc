//! The worker's side: `tidepool job-worker` (a hidden subcommand) runs [`main`], and a worker
//! forked by a template ([`crate::template`]) the same code. It waits for one job on stdin (an
//! idle prespawned worker waits here), confines itself to the job's
//! paths, runs the job in the runtime, reports its stages and progress, writes the logs into
//! the job's directory and its result on stdout, and exits. One job per process: nothing a
//! job leaves in memory outlives it.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tidepool_runtime::files::FileTree;
use tidepool_runtime::{
    Algorithm, Environment, GuestEvent, InputSpec, JobEvent, JobSpec, Runtime, RuntimeConfig, Stage,
};

use crate::confine::confine;
use crate::protocol::{FailureKind, FromWorker, JobDone, JobRequest, ToWorker, WireStage};
use crate::template::Prepared;

/// The most bytes a worker takes for an algorithm (the daemon's own bound is lower).
const MAX_MODULE: u64 = 1 << 32;

/// Runs one job read from stdin. Exit status: 0 a result was written (done or failed); 3 no
/// job came; 4 the worker could not confine itself or talk.
pub fn main() -> i32 {
    serve(None)
}

/// [`main`], in a started worker (`prepared` is `None`) or one forked from a template, which
/// made the runtime before the job existed.
pub(crate) fn serve(prepared: Option<&Prepared>) -> i32 {
    let mut lines = BufReader::new(std::io::stdin());
    let mut first = String::new();
    match lines.read_line(&mut first) {
        Ok(0) | Err(_) => return 3,
        Ok(_) => {}
    }
    let job = match serde_json::from_str::<ToWorker>(&first) {
        Ok(ToWorker::Job(job)) => job,
        Ok(ToWorker::Stop) => return 3,
        Err(e) => {
            eprintln!("tidepool job-worker: unreadable job: {e}");
            return 4;
        }
    };
    // The algorithm's bytes follow the line (only read: nothing parses them before the worker
    // is confined).
    let mut module = Vec::new();
    if job.module_len > MAX_MODULE
        || lines.by_ref().take(job.module_len).read_to_end(&mut module).map_or(true, |n| n as u64 != job.module_len)
    {
        eprintln!("tidepool job-worker: the module did not follow the job");
        return 4;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let confined = match confine(&job.policy) {
        Ok(c) => c,
        Err(e) => {
            let _ = send(&out, &FromWorker::Failed { kind: FailureKind::Host, message: format!("{e}") });
            return 4;
        }
    };
    if send(&out, &FromWorker::Confined(confined)).is_err() {
        return 4;
    }
    // Stop requests arrive while the job runs.
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                // The daemon went away: stop.
                Ok(0) | Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {
                    if matches!(serde_json::from_str(&line), Ok(ToWorker::Stop)) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let result = run(&job, module, prepared, cancel, out.clone());
    if send(&out, &result).is_err() { 4 } else { 0 }
}

fn run(
    job: &JobRequest,
    bytes: Vec<u8>,
    prepared: Option<&Prepared>,
    cancel: Arc<AtomicBool>,
    out: Arc<Mutex<std::io::Stdout>>,
) -> FromWorker {
    let failed = |kind, message: String| FromWorker::Failed { kind, message };
    let own;
    let runtime = match prepared.filter(|p| p.cache_dir == job.cache_dir) {
        Some(prepared) => &prepared.runtime,
        None => {
            own = Runtime::new(RuntimeConfig {
                cache_dir: job.cache_dir.clone(),
                max_instances: 1,
                ..Default::default()
            });
            &own
        }
    };
    let inputs = job
        .inputs
        .iter()
        .map(|i| InputSpec { manifest: i.manifest.clone().map(Arc::new), ..InputSpec::new(&i.name, &i.dir) })
        .collect();
    let algorithm = match &job.environment {
        None => Algorithm::new(job.name.clone(), bytes),
        Some(dir) => match environment_algorithm(dir, &job.name, &bytes) {
            Ok(algorithm) => algorithm,
            Err(e) => {
                let kind = if e.is_client_error() { FailureKind::Client } else { FailureKind::Host };
                return failed(kind, e.to_string());
            }
        },
    };
    let mut spec = JobSpec::new(algorithm, inputs, &job.output_dir);
    spec.args = job.args.clone();
    spec.limits = job.limits.clone();
    spec.cancel = Some(cancel);
    spec.events = Some(Arc::new(move |event| {
        let message = match event {
            JobEvent::Stage(s) => FromWorker::Stage(match s {
                Stage::ConfiguringVolumes => WireStage::ConfiguringVolumes,
                Stage::Provisioning => WireStage::Provisioning,
                Stage::Running => WireStage::Running,
                Stage::PublishingResults => WireStage::PublishingResults,
            }),
            JobEvent::Guest(GuestEvent::Progress { done, total, message }) => {
                FromWorker::Progress { done, total, message }
            }
            JobEvent::Guest(GuestEvent::Metric { .. }) => return,
        };
        let _ = send(&out, &message);
    }));
    match runtime.run(&spec) {
        Ok(r) => {
            // An empty log is no file (the parent reads a missing one as empty).
            for (name, bytes) in [("stdout.log", &r.stdout), ("stderr.log", &r.stderr)] {
                if bytes.is_empty() {
                    continue;
                }
                if let Err(e) = std::fs::write(job.logs_dir.join(name), bytes) {
                    return failed(FailureKind::Host, format!("writing {name}: {e}"));
                }
            }
            FromWorker::Done(Box::new(JobDone {
                receipt: r.receipt,
                outputs: r.outputs,
                wall_time_ms: u64::try_from(r.wall_time.as_millis()).unwrap_or(u64::MAX),
                compile_cached: r.compile_cached,
            }))
        }
        Err(e) => {
            let kind = match e {
                tidepool_runtime::Error::InvalidInput { .. } => FailureKind::InvalidInput,
                ref e if e.is_client_error() => FailureKind::Client,
                _ => FailureKind::Host,
            };
            failed(kind, e.to_string())
        }
    }
}

/// An environment algorithm: the environment loaded from `dir` (its module checked against its
/// pin), running the files of `archive`.
fn environment_algorithm(dir: &std::path::Path, name: &str, archive: &[u8]) -> tidepool_runtime::Result<Algorithm> {
    let environment = Arc::new(Environment::load(dir)?);
    let files = FileTree::from_archive(archive, archive.len() as u64)
        .map_err(|e| tidepool_runtime::Error::InvalidAlgorithm { reason: format!("the algorithm's files: {e}") })?;
    environment.algorithm(name, files)
}

fn send(out: &Mutex<std::io::Stdout>, message: &FromWorker) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let out = out.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = out.lock();
    out.write_all(&line)?;
    out.flush()
}
