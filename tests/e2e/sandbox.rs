//! Jobs in confined worker processes, `tidepool serve`'s default (issue 10, defence in depth):
//! a worker killed in the middle of its job is replaced and the job is run again; a job whose
//! worker dies on every attempt is quarantined, and the other jobs still run.

use std::time::Duration;

use tidepool_provider::protocol::api::ServiceLimits;

use crate::daemon::{Daemon, publish, request};
use crate::provider_flow::{compute, initialize_and_exec, toml_job_limits};
use crate::util::dataset;

/// The daemon's worker processes (`tidepool job-worker`), idle ones included.
fn workers(daemon_pid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    // The daemon's threads each have their own children list.
    for task in std::fs::read_dir(format!("/proc/{daemon_pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"job-worker"))
    });
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

    // Others are unaffected: the next job runs to the end in a fresh worker.
    let out = tempfile::tempdir().unwrap();
    let outcome = consumer
        .compute(&compute(did, "noop", &[], &out.path().join("r")), |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(outcome.receipt.outcome, tidepool_runtime::Outcome::Exited { code: 0 });
}
