//! Jobs in confined worker processes, `tidepool serve`'s default (issue 10, defence in depth):
//! a worker killed in the middle of its job is replaced and the job is run again; a job whose
//! worker dies on every attempt is quarantined, and the other jobs still run; a worker stuck
//! where the engine cannot interrupt it (a host call that never returns) is ended at the
//! job's wall-clock limit; modules too big to compile are refused while other jobs run.

use std::time::Duration;

use alloy_primitives::keccak256;
use tidepool_provider::protocol::api::ServiceLimits;
use tidepool_provider::protocol::ddo::Did;
use tidepool_provider::protocol::eip712;
use tidepool_provider::protocol::signing::{Envelope, sign_typed, unix_now};

use crate::daemon::{Daemon, publish, request};
use crate::provider_flow::{compute, initialize_and_exec, toml_job_limits, wait_for_end, wait_until_running};
use crate::util::dataset;

/// A trivial job runs to the end on `d` (in a fresh worker).
async fn a_trivial_job_runs(d: &Daemon, consumer: &tidepool_provider::client::Client, did: Did) {
    let out = tempfile::tempdir().unwrap();
    let outcome = consumer
        .compute(&compute(did, "noop", &[], &out.path().join("r")), |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(outcome.receipt.outcome, tidepool_runtime::Outcome::Exited { code: 0 });
}

/// The daemon's worker processes, idle ones included: those it started (`tidepool
/// job-worker`) and those its template (`tidepool job-template`) forked.
pub(crate) fn workers(daemon_pid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for child in children(daemon_pid as i32) {
        if runs(child, b"job-worker") {
            pids.push(child);
        } else if runs(child, b"job-template") {
            pids.extend(children(child));
        }
    }
    pids
}

/// The daemon's worker templates.
fn templates(daemon_pid: u32) -> Vec<i32> {
    children(daemon_pid as i32).into_iter().filter(|&pid| runs(pid, b"job-template")).collect()
}

/// Whether process `pid` was started with `command` among its arguments.
fn runs(pid: i32, command: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == command))
}

/// A process's children (each of its threads has its own list).
fn children(pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_worker_keeps_dying_is_quarantined_and_others_still_run() {
    let cfg = tempfile::tempdir().unwrap();
    let config = cfg.path().join("provider.toml");
    let limits = tidepool_runtime::Limits { fuel: 10_000_000_000_000, timeout_ms: 120_000, ..Default::default() };
    let toml = format!("max_job_attempts = 2\n[sandbox]\nprespawn = 0\n{}", toml_job_limits(&limits));
    std::fs::write(&config, toml).unwrap();
    let d = Daemon::start(&["--max-concurrent-jobs", "1", "--config", config.to_str().unwrap()]);
    let pid = d.pid().expect("the daemon runs");
    let data = dataset(&[("x.txt", b"x")]);
    let mut slow = request("slow service");
    slow.limits =
        ServiceLimits { timeout_ms: Some(120_000), max_fuel: Some(10_000_000_000_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("x", data.path())], slow).await;
    let consumer = d.consumer().await;
    let (_, job) = initialize_and_exec(&consumer, did, "misbehave", &["spin"], None).await;

    // Each attempt: the job runs in a worker, which is killed (as a guest that crashed its
    // process would be); the job is queued again, then quarantined after the second attempt.
    // (No idle workers: every worker process is the job's.)
    let mut killed = Vec::new();
    for attempt in 1..=2 {
        let mut pids = Vec::new();
        for _ in 0..600 {
            pids = workers(pid);
            pids.retain(|p| !killed.contains(p));
            if !pids.is_empty() && consumer.job(&job).await.unwrap().status.code() == 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!pids.is_empty(), "attempt {attempt}: the job never ran in a worker process\n{}", d.log());
        for &worker in &pids {
            // SAFETY: a signal to a process this test's daemon started.
            unsafe { libc::kill(worker, libc::SIGKILL) };
        }
        killed.extend(pids);
    }
    let mut status = 0;
    for _ in 0..400 {
        status = consumer.job(&job).await.unwrap().status.code();
        if status == 91 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 91, "quarantined after its worker died twice\n{}", d.log());
    // How the worker died reaches the job's record (from its template, which reaped it).
    let error = consumer.job(&job).await.unwrap().error.unwrap_or_default();
    assert!(error.contains("signal: 9"), "{error}");

    // Others are unaffected: the next job runs to the end in a fresh worker.
    a_trivial_job_runs(&d, &consumer, did).await;
}

/// Workers are forked from a template; a template killed (by an operator, by the OOM killer)
/// costs no job: the next job's worker is started from scratch and the template is started
/// again for the one after.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_still_run_when_the_worker_template_is_killed() {
    let d = Daemon::start(&["--max-concurrent-jobs", "1"]);
    let pid = d.pid().expect("the daemon runs");
    let data = dataset(&[("x.txt", b"x")]);
    let did = publish(&d, &[("x", data.path())], request("service")).await;
    let consumer = d.consumer().await;
    a_trivial_job_runs(&d, &consumer, did).await;
    let first = templates(pid);
    assert_eq!(first.len(), 1, "one template forked the job's worker\n{}", d.log());
    assert!(!d.log().contains("from the template failed"), "{}", d.log());
    // SAFETY: a signal to a process this test's daemon started.
    unsafe { libc::kill(first[0], libc::SIGKILL) };
    a_trivial_job_runs(&d, &consumer, did).await;
    a_trivial_job_runs(&d, &consumer, did).await;
    let second = templates(pid);
    assert!(second.len() == 1 && second != first, "a new template: {first:?} then {second:?}\n{}", d.log());
    assert!(d.log().contains("forking a worker from the template failed"), "{}", d.log());
}

/// Waits until job `job` runs (status 40) in a worker process; the worker's pid (the daemon
/// must keep no idle worker: `prespawn = 0`, and run one job at a time).
async fn running_worker(d: &Daemon, consumer: &tidepool_provider::client::Client, job: &str) -> i32 {
    let pid = d.pid().expect("the daemon runs");
    for _ in 0..1200 {
        let pids = workers(pid);
        if pids.len() == 1 && consumer.job(job).await.unwrap().status.code() == 40 {
            return pids[0];
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} never ran in a worker process\n{}", d.log());
}

/// A worker stopped in the middle of its job (SIGSTOP: as stuck as a guest in a host call
/// that never returns, where the engine's own interruption cannot reach it) is killed at the
/// job's wall-clock limit plus the grace; the job ends as a timeout and the consumer is
/// refunded. The next job runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stuck_in_its_job_is_ended_at_the_wall_clock_limit() {
    let cfg = tempfile::tempdir().unwrap();
    let config = cfg.path().join("provider.toml");
    std::fs::write(&config, "[sandbox]\nprespawn = 0\nkill_grace_secs = 1\n").unwrap();
    let d = Daemon::start(&["--max-concurrent-jobs", "1", "--config", config.to_str().unwrap()]);
    let data = dataset(&[("x.txt", b"x")]);
    let mut quick = request("three-second service");
    quick.limits = ServiceLimits { timeout_ms: Some(3_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("x", data.path())], quick).await;
    let consumer = d.consumer().await;
    let before = consumer.balance(consumer.address()).await.unwrap();
    let (_, job) = initialize_and_exec(&consumer, did, "misbehave", &["spin"], None).await;
    let worker = running_worker(&d, &consumer, &job).await;
    // SAFETY: a signal to a process this test's daemon started.
    unsafe { libc::kill(worker, libc::SIGSTOP) };
    let view = wait_for_end(&consumer, &job).await;
    assert_eq!(view.status.code(), 71, "algorithm failed: {view:?}\n{}", d.log());
    assert!(view.error.as_deref().is_some_and(|e| e.contains("timeout")), "{view:?}");
    // Settled with nothing owed (no receipt): all of the escrow goes back.
    assert_eq!(view.payment.as_str(), "released", "{view:?}");
    assert_eq!(consumer.balance(consumer.address()).await.unwrap(), before, "the whole payment came back");
    assert!(
        std::fs::metadata(format!("/proc/{worker}")).is_err()
            || std::fs::read_to_string(format!("/proc/{worker}/stat")).is_ok_and(|s| s.contains(") Z ")),
        "the stuck worker was killed"
    );
    a_trivial_job_runs(&d, &consumer, did).await;
}

/// While a job runs, a 100 MB module is refused before its body is read (413) and a module of
/// a million functions (5 MB, minutes of compiling) is refused from its function count (422);
/// the daemon keeps answering and the running job ends as it would have.
#[tokio::test(flavor = "multi_thread")]
async fn huge_modules_are_refused_while_other_jobs_run() {
    let d = Daemon::start(&["--max-concurrent-jobs", "1"]);
    let data = dataset(&[("seed.txt", b"unused by mandelbrot")]);
    let mut farm = request("render farm");
    farm.limits = ServiceLimits { max_fuel: Some(40_000_000_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("seed", data.path())], farm).await;
    let renderer = d.consumer().await;
    let args = ["--width", "1000", "--height", "750", "--max-iter", "3000"];
    let (_, job) = initialize_and_exec(&renderer, did, "mandelbrot", &args, None).await;
    wait_until_running(&renderer, &job).await;

    let attacker = d.consumer().await;
    let agreement = alloy_primitives::B256::random();
    crate::daemon::initialize_signed(&attacker, did, agreement, attacker.signer()).await.unwrap();
    // The head of a signed 100 MB upload: answered before a byte of the body is sent.
    let huge = vec![0u8; 100 << 20];
    let checksum = sign_typed(
        attacker.signer(),
        &attacker.agreement_domain(),
        &eip712::Algorithm { serviceAgreementId: agreement, algorithmHash: tidepool_runtime::tree::blake3_b256(&huge) },
    );
    let path = format!(
        "/api/v1/services/compute/upload?serviceAgreementId={agreement}&signedChecksum={checksum}&algorithmName=huge"
    );
    let (nonce, expiry, content) = (unix_now() * 1000, unix_now() + 60, keccak256(&huge));
    let signed = eip712::Request { method: "POST".into(), path: path.clone(), contentHash: content, nonce, expiry };
    let envelope = Envelope {
        address: attacker.address(),
        nonce,
        expiry,
        content_hash: Some(content),
        signature: sign_typed(attacker.signer(), attacker.domain(), &signed),
    };
    let answer = tokio::task::spawn_blocking({
        let url = d.url.clone();
        move || {
            use std::io::{Read, Write};
            let host = url.strip_prefix("http://").unwrap();
            let mut socket = std::net::TcpStream::connect(host).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut head = format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n",
                huge.len()
            );
            for (name, value) in envelope.headers() {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).unwrap();
            let mut answer = vec![0u8; 4096];
            let n = socket.read(&mut answer).unwrap_or(0);
            String::from_utf8_lossy(&answer[..n]).into_owned()
        }
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let many = tidepool_test_artifacts::module_with_functions(1_000_000);
    let err = attacker.upload_module(agreement, &many, "many").await.expect_err("a million functions");
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(err.to_string().contains("functions"), "{err}");

    let view = wait_for_end(&renderer, &job).await;
    assert_eq!((view.status.code(), view.payment.as_str()), (70, "released"), "{view:?}\n{}", d.log());
    assert_eq!(view.attempts, 1, "the running job was not disturbed");
}
