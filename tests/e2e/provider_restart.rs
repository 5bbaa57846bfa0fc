//! Kill the daemon with SIGKILL at any point and restart it: no agreement, payment or job is
//! lost or duplicated; interrupted jobs run again and, being deterministic, give the receipt
//! an uninterrupted run gives.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use alloy_primitives::{B256, U256};
use tidepool_provider::client::Client;
use tidepool_provider::protocol::agreement::AgreementState;
use tidepool_provider::protocol::api::{ExecRequest, ServiceLimits};
use tidepool_provider::protocol::events::EventName;
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Limits, Runtime, RuntimeConfig};

use crate::daemon::{Daemon, faucet_amount, initialize_signed, publish, request};
use crate::provider_flow::{wait_for_end, wait_for_event};
use crate::util::{dataset, module, s};

/// Enough work for the job to be caught running (about two seconds of Mandelbrot).
const ARGS: [&str; 6] = ["--width", "1000", "--height", "750", "--max-iter", "3000"];

async fn job_status(c: &Client, job: &str) -> Option<u32> {
    c.job(job).await.ok().map(|v| v.status.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_loses_and_duplicates_nothing() {
    let mut d = Daemon::start(&["--max-concurrent-jobs", "1"]);
    let data = dataset(&[("seed.txt", b"unused by mandelbrot")]);
    let mut req = request("render farm");
    req.limits = ServiceLimits { max_fuel: Some(40_000_000_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("seed", data.path())], req).await;
    let c = d.consumer().await;
    let ddo = c.ddo(did).await.unwrap();
    let service = ddo.compute_service("1").unwrap().clone();

    let agreement = B256::random();
    initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
    let module_bytes = std::fs::read(module("mandelbrot")).unwrap();
    c.upload_module(agreement, &module_bytes, "mandelbrot").await.unwrap();
    c.lock_payment(agreement).await.unwrap();

    // Kill 1: right after the payment is locked, before (or while) the grant is handled.
    d.kill();
    let locked = c.agreement(agreement).await;
    assert!(locked.is_err(), "the daemon is down");
    d.restart();
    wait_for_event(&c, agreement, EventName::ComputeGranted).await;

    let args: Vec<String> = ARGS.iter().map(|a| a.to_string()).collect();
    let job = c
        .exec(&ExecRequest {
            service_agreement_id: agreement,
            consumer_address: c.address(),
            not_before: None,
            args: args.clone(),
        })
        .await
        .unwrap()
        .job_id;
    for _ in 0..600 {
        if job_status(&c, &job).await == Some(40) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job_status(&c, &job).await, Some(40), "the job is running");

    // Kill 2: in the middle of the job.
    d.kill();
    d.restart();
    wait_for_event(&c, agreement, EventName::OutputPublished).await;

    // The job records its settlement just after the output is published on the keeper.
    let view = wait_for_end(&c, &job).await;
    assert_eq!((view.status.code(), view.payment.as_str()), (70, "released"), "{view:?}\n{}", d.log());
    assert_eq!(view.attempts, 2, "the interrupted run, then the one that finished");
    let events = c.events(0, Some(agreement)).await.unwrap();
    let count = |n: EventName| events.iter().filter(|e| e.name() == n).count();
    for name in [
        EventName::ExecuteAgreement,
        EventName::PaymentLocked,
        EventName::FulfillUpload,
        EventName::ComputeGranted,
        EventName::PaymentReleased,
        EventName::OutputPublished,
    ] {
        assert_eq!(count(name), 1, "{name} exactly once: {events:?}");
    }
    let a = c.agreement(agreement).await.unwrap();
    assert_eq!(a.state, AgreementState::Released);
    let receipt_hash = view.receipt_hash.unwrap();
    assert_eq!(a.receipt_hash, Some(receipt_hash));

    // The payment moved once: fuel × price to the provider, the rest back.
    let out = tempfile::tempdir().unwrap();
    let results = c.results(&job).await.unwrap();
    let receipt_index = results.results.iter().find(|r| r.name == "receipt.json").unwrap().index;
    c.download(&job, receipt_index, &out.path().join("receipt.json")).await.unwrap();
    let receipt: tidepool_runtime::Receipt =
        serde_json::from_slice(&std::fs::read(out.path().join("receipt.json")).unwrap()).unwrap();
    let fee = U256::from(receipt.fuel_consumed) * U256::from(3);
    let operator = d.operator().await;
    assert_eq!(operator.balance(operator.address()).await.unwrap(), fee);
    assert_eq!(c.balance(c.address()).await.unwrap(), faucet_amount() - fee);

    // The re-run gave exactly what an uninterrupted run gives.
    let env = &service.provider.environment;
    let limits = Limits {
        fuel: env.max_fuel,
        memory_bytes: env.memory_bytes,
        timeout_ms: env.timeout_ms,
        output_bytes: env.output_bytes,
        output_files: env.output_files,
        ..Limits::default()
    };
    let local_dir = tempfile::tempdir().unwrap();
    let mut spec = JobSpec::new(
        Algorithm::new("mandelbrot", module_bytes),
        vec![InputSpec::new("seed", data.path())],
        local_dir.path().join("out"),
    );
    spec.args = args;
    spec.limits = limits;
    let local =
        tokio::task::spawn_blocking(move || Runtime::new(RuntimeConfig::default()).run(&spec).unwrap()).await.unwrap();
    assert_eq!(local.receipt.receipt_hash, receipt_hash);
}

/// Jobs by status code, from the daemon's `/metrics`.
async fn jobs_by_status(url: &str) -> Option<Vec<(u32, u64)>> {
    let text = reqwest::get(format!("{url}/metrics")).await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("tidepool_jobs{"))
            .filter_map(|l| {
                let code = l.split("code=\"").nth(1)?.split('"').next()?.parse().ok()?;
                let n = l.rsplit(' ').next()?.parse().ok()?;
                Some((code, n))
            })
            .collect(),
    )
}

/// A bounded loop of SIGKILLs at random moments, of the daemon or of one of its job workers,
/// while four consumers run flows; then, after a last restart: every agreement is in a legal
/// state, tokens are conserved, no job is left running, nothing was paid or published twice.
/// (The seed is printed; `TIDEPOOL_KILL_SEED` replays a run.)
#[tokio::test(flavor = "multi_thread")]
async fn random_kills_of_the_daemon_and_its_workers_leave_every_agreement_legal() {
    let seed: u64 = std::env::var("TIDEPOOL_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("random kills: TIDEPOOL_KILL_SEED={seed}");
    let mut state = seed;
    let mut random = move |n: u64| {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut d = Daemon::start(&["--max-concurrent-jobs", "2"]);
    let data = dataset(&[("seed.txt", b"unused by mandelbrot")]);
    let mut req = request("render farm");
    req.limits = ServiceLimits { max_fuel: Some(40_000_000_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("seed", data.path())], req).await;
    let consumers = 4;
    let mut clients = Vec::new();
    for _ in 0..consumers {
        clients.push(std::sync::Arc::new(d.consumer().await));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runs: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let out = tempfile::tempdir().unwrap();
                let (mut ok, mut failed) = (0, 0);
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let args = ["--width", "400", "--height", "300", "--max-iter", "800"];
                    let req = crate::provider_flow::compute(did, "mandelbrot", &args, &out.path().join(i.to_string()));
                    match c.compute(&req, |_| {}).await {
                        Ok(o) if o.receipt.outcome.is_success() => ok += 1,
                        // A flow cut by a kill: the consumer moves on to a new agreement
                        // (after a pause: the daemon may be down).
                        _ => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let rounds = 8;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300 + random(1500))).await;
        let pid = d.pid().expect("the daemon runs");
        let workers = crate::sandbox::workers(pid);
        if random(2) == 0 || workers.is_empty() {
            d.kill();
            tokio::time::sleep(Duration::from_millis(random(500))).await;
            d.restart();
        } else {
            let victim = workers[random(workers.len() as u64) as usize];
            // SAFETY: a signal to a process this test's daemon started.
            unsafe { libc::kill(victim, libc::SIGKILL) };
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    d.kill();
    d.restart();
    let (mut ok, mut failed) = (0, 0);
    for run in runs {
        let (o, f) = run.await.unwrap();
        (ok, failed) = (ok + o, failed + f);
    }
    eprintln!("random kills: {ok} flows completed, {failed} cut");
    assert!(ok > 0, "some flow completed between the kills\n{}", d.log());

    // No job is left running: every job that was active ends.
    let mut active = Vec::new();
    for _ in 0..1200 {
        active = jobs_by_status(&d.url).await.unwrap_or_default();
        active.retain(|&(code, n)| n > 0 && [1, 10, 20, 40, 60].contains(&code));
        if active.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(active.is_empty(), "jobs still active (code, count): {active:?}\n{}", d.log());
    // Wait for settlement of finished jobs (the payment step follows the job).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let operator = d.operator().await;
    // Every event, page by page.
    let mut events = Vec::new();
    loop {
        let page = operator
            .events(events.last().map_or(0, |e: &tidepool_provider::protocol::events::KeeperEvent| e.id), None)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let mut agreements: Vec<B256> = events.iter().map(|e| e.agreement_id).collect();
    agreements.sort();
    agreements.dedup();
    let mut escrowed = U256::ZERO;
    for id in &agreements {
        let a = operator.agreement(*id).await.unwrap();
        let count = |n: EventName| events.iter().filter(|e| e.agreement_id == *id && e.name() == n).count();
        assert!(count(EventName::PaymentReleased) <= 1, "{id}: paid twice");
        assert!(count(EventName::OutputPublished) <= 1, "{id}: published twice");
        match a.state {
            AgreementState::Active => escrowed += a.escrow,
            // Settled: the escrow is empty and says where it went (the sums are checked below).
            AgreementState::Released => {
                assert_eq!(a.escrow, U256::ZERO, "{id}: released, yet still escrowed");
                assert!(a.provider_paid.is_some() && a.consumer_refunded.is_some(), "{id}: a release without a split");
                assert_eq!(count(EventName::PaymentReleased), 1, "{id}: released without its event");
            }
            AgreementState::Refunded => {
                assert_eq!(a.escrow, U256::ZERO, "{id}: refunded, yet still escrowed");
                assert!(a.consumer_refunded.is_some(), "{id}: a refund of nothing");
            }
        }
    }
    let mut total = operator.balance(operator.address()).await.unwrap() + escrowed;
    for c in &clients {
        total += c.balance(c.address()).await.unwrap();
    }
    assert_eq!(total, faucet_amount() * U256::from(consumers), "tokens are conserved");
}

/// A second daemon started on a data directory a running one owns refuses to start, naming
/// the holder, and touches none of what the first one has in flight; once the first is killed
/// (SIGKILL: no cleanup), a new one starts there and clears what the killed one left.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_data_directory_refuses_and_touches_nothing() {
    let mut d = Daemon::start(&[]);
    let first = d.consumer().await;
    // What a running daemon has in flight: an upload's temporary file, a job's scratch space.
    let upload = d.data.join("tmp").join("upload-in-flight");
    let scratch = d.data.join("jobs").join("job-in-flight");
    std::fs::write(&upload, b"half an upload").unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("out.txt"), b"half an output").unwrap();

    let holder = d.pid().expect("the first daemon runs");
    let expected = format!("is in use by another tidepool process (pid {holder})");
    // The data directory as given, and its SQLite file named as a database URL.
    let db_url = format!("sqlite://{}", d.data.join("tidepool.db").display());
    for extra in [vec![], vec!["--database", db_url.as_str()]] {
        let mut args = vec!["--data-dir", s(&d.data)];
        args.extend(extra);
        let stderr = refused_to_start(&args);
        assert!(stderr.contains(&expected), "{stderr}");
    }
    assert!(upload.exists() && scratch.join("out.txt").exists(), "the refused daemon removed the first's files");
    // The first one still serves, and still writes.
    let balance = first.balance(first.address()).await.unwrap();
    assert_eq!(balance, faucet_amount(), "the first daemon's state");
    d.consumer().await;

    // SIGKILL leaves no stale lock: the next daemon starts and clears the killed one's files.
    d.restart();
    assert!(!upload.exists() && !scratch.exists(), "a killed daemon's leftovers are cleared at start");
    d.consumer().await;
}

/// Two daemons with their own data directories on one SQLite database: the second refuses.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_database_refuses() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("shared.db");
    let url = format!("sqlite://{}", db.display());
    let first = Daemon::start(&["--database", &url]);
    first.consumer().await;
    let other = tempfile::tempdir().unwrap();
    let stderr = refused_to_start(&["--data-dir", s(other.path()), "--database", &url]);
    let holder = first.pid().expect("the first daemon runs");
    let expected = format!("the database {} is in use by another tidepool process (pid {holder})", db.display());
    assert!(stderr.contains(&expected), "{stderr}");
    first.consumer().await;
}

/// Starts `tidepool serve` on any port with `args`, expects it to exit with status 2 within a
/// minute (killing it otherwise), and returns what it printed on stderr.
fn refused_to_start(args: &[&str]) -> String {
    let mut cmd = crate::util::tidepool();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status = (0..600).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        child.try_wait().unwrap()
    });
    if status.is_none() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "a second daemon ({args:?}) started: {stderr}");
    stderr
}
