//! The daemon's side of a worker (`Pool`, `Running::wait`): a worker still running at its
//! deadline is killed, one that dies or talks nonsense mid-job is reported crashed. The
//! workers here are shell scripts standing in for `tidepool job-worker`.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tidepool_sandbox::{Ended, JobRequest, Policy, Pool, WorkerCommand};

fn shell(script: &str) -> WorkerCommand {
    WorkerCommand { program: "/bin/sh".into(), args: vec!["-c".into(), script.into()], env: Vec::new() }
}

fn job() -> JobRequest {
    JobRequest {
        name: "job".into(),
        module_len: 0,
        environment: None,
        inputs: Vec::new(),
        output_dir: "/nonexistent/outputs".into(),
        logs_dir: "/nonexistent".into(),
        args: Vec::new(),
        limits: Default::default(),
        cache_dir: None,
        policy: Policy::default(),
    }
}

fn run(script: &str, deadline: Duration) -> Ended {
    let running = Pool::new(shell(script), 0).start(job(), b"").unwrap();
    running.wait(Instant::now() + deadline, &AtomicBool::new(false), |_| {})
}

#[test]
fn an_overdue_worker_is_killed() {
    let started = Instant::now();
    let ended = run("read job; exec sleep 300", Duration::from_millis(500));
    assert!(matches!(ended, Ended::Killed), "{ended:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "killed at its deadline, not when it ended");
}

#[test]
fn a_worker_killed_mid_job_is_reported_crashed() {
    let ended = run("read job; kill -9 $$", Duration::from_secs(60));
    let Ended::Crashed { detail } = ended else { panic!("{ended:?}") };
    assert!(detail.contains("signal: 9"), "{detail}");
}

#[test]
fn a_worker_that_breaks_the_protocol_is_reported_crashed() {
    let ended = run("read job; echo not-json; exec sleep 300", Duration::from_secs(60));
    let Ended::Crashed { detail } = ended else { panic!("{ended:?}") };
    assert!(detail.contains("unreadable"), "{detail}");
}
