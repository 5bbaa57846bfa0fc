//! Cluster mode (issue 11): real PostgreSQL, real SeaweedFS, real `tidepool serve` API nodes
//! and `tidepool worker` processes on loopback. The flow across two API nodes and two workers,
//! a worker killed or paused mid-job, the same signed request at both API nodes, an API node
//! killed mid-flow, PostgreSQL restarted under load.

use std::path::Path;
use std::time::Duration;

use alloy_primitives::{B256, U256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use tidepool_provider::client::Client;
use tidepool_provider::protocol::agreement::AgreementState;
use tidepool_provider::protocol::api::{ExecRequest, PublishRequest, ServiceLimits};
use tidepool_provider::protocol::ddo::Did;
use tidepool_provider::protocol::eip712;
use tidepool_provider::protocol::events::EventName;
use tidepool_provider::protocol::signing::{Envelope, sign_typed, unix_now};
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Limits, Runtime, RuntimeConfig};
use tidepool_test_artifacts::cluster::Cluster;
use tidepool_test_artifacts::daemon::Daemon;

use crate::daemon::{faucet_amount, initialize_signed, request};
use crate::provider_flow::{compute, wait_for_end, wait_for_event};
use crate::util::{cache_dir, dataset, module};

/// Lease of the tests' workers: short, so that a lost worker is replaced quickly.
const LEASE_SECS: u32 = 2;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tidepool"))
}

/// The tests' cluster: PostgreSQL, SeaweedFS, `api_nodes` API nodes and `workers` workers
/// running one job at a time, with a short lease.
fn start(api_nodes: usize, workers: usize) -> Cluster {
    let cache = cache_dir();
    Cluster::start(
        binary(),
        &[("TIDEPOOL_CACHE_DIR", &cache)],
        api_nodes,
        workers,
        LEASE_SECS,
        &["--max-concurrent-jobs", "1"],
    )
}

/// What the tests do with a cluster as its operator and its consumers.
trait Parties {
    async fn operator(&self) -> Client;
    async fn consumer(&self) -> Client;
    async fn publish(&self, datasets: &[(&str, &Path)], req: PublishRequest) -> Did;
}

impl Parties for Cluster {
    async fn operator(&self) -> Client {
        let key = tidepool_provider::keys::load(&self.api[0].key_file()).unwrap();
        Client::connect(&self.api[0].url, key).await.unwrap()
    }

    /// A consumer whose requests alternate between the API nodes, with faucet tokens.
    async fn consumer(&self) -> Client {
        let c = Client::connect_many(&self.urls(), PrivateKeySigner::random()).await.unwrap();
        c.faucet().await.unwrap();
        c
    }

    async fn publish(&self, datasets: &[(&str, &Path)], req: PublishRequest) -> Did {
        let datasets: Vec<(String, std::path::PathBuf)> =
            datasets.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
        self.operator().await.publish_dirs(&datasets, &req).await.unwrap().did
    }
}

/// Enough work for a job to be caught running (about two seconds of Mandelbrot).
const BIG: [&str; 6] = ["--width", "1000", "--height", "750", "--max-iter", "3000"];

/// A service whose fuel covers [`BIG`].
fn render_farm() -> PublishRequest {
    let mut req = request("render farm");
    req.limits = ServiceLimits { max_fuel: Some(40_000_000_000), ..ServiceLimits::default() };
    req
}

/// The flow by hand up to exec, each request to the next API node.
async fn exec_job(c: &Client, did: Did, guest: &str, args: &[&str]) -> (B256, String) {
    let agreement = B256::random();
    initialize_signed(c, did, agreement, c.signer()).await.unwrap();
    c.upload_module(agreement, &std::fs::read(module(guest)).unwrap(), guest).await.unwrap();
    c.lock_payment(agreement).await.unwrap();
    wait_for_event(c, agreement, EventName::ComputeGranted).await;
    let exec = ExecRequest {
        service_agreement_id: agreement,
        consumer_address: c.address(),
        not_before: None,
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    (agreement, c.exec(&exec).await.unwrap().job_id)
}

/// Waits until job `job` runs (status 40) and returns the worker running it.
async fn running_on(cluster: &Cluster, c: &Client, job: &str) -> usize {
    for _ in 0..1200 {
        if c.job(job).await.unwrap().status.code() == 40
            && let Some(w) = cluster.runner_of(job)
        {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} never ran{}", cluster.logs());
}

/// Counts each lifecycle event of an agreement.
async fn event_counts(c: &Client, agreement: B256) -> Vec<(EventName, usize)> {
    let events = c.events(0, Some(agreement)).await.unwrap();
    [EventName::PaymentReleased, EventName::OutputPublished]
        .into_iter()
        .map(|n| (n, events.iter().filter(|e| e.name() == n).count()))
        .collect()
}

/// The receipt hash of [`BIG`] on `data`, run locally as an auditor would.
async fn local_receipt_hash(did: Did, c: &Client, data: &Path) -> B256 {
    let ddo = c.ddo(did).await.unwrap();
    let env = ddo.compute_service("1").unwrap().provider.environment.clone();
    let limits = Limits {
        fuel: env.max_fuel,
        memory_bytes: env.memory_bytes,
        timeout_ms: env.timeout_ms,
        output_bytes: env.output_bytes,
        output_files: env.output_files,
        ..Limits::default()
    };
    let out = tempfile::tempdir().unwrap();
    let mut spec = JobSpec::new(
        Algorithm::new("mandelbrot", std::fs::read(module("mandelbrot")).unwrap()),
        vec![InputSpec::new("seed", data)],
        out.path().join("out"),
    );
    spec.args = BIG.iter().map(|a| a.to_string()).collect();
    spec.limits = limits;
    let run = tokio::task::spawn_blocking(move || Runtime::new(RuntimeConfig::default()).run(&spec).unwrap());
    run.await.unwrap().receipt.receipt_hash
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flow_runs_across_two_api_nodes_and_two_workers() {
    let cluster = start(2, 2);
    let books = dataset(&[("dickens.txt", b"It was the best of times, it was the worst of times; the end.\n")]);
    let weather = dataset(&[("cities.csv", b"city,temp,rain\nOslo,3.5,1\nLima,19,\nCairo,24.5,0\n")]);
    let did =
        cluster.publish(&[("books", books.path()), ("weather", weather.path())], request("books and weather")).await;
    let cases: [(&str, &[&str], &str, &str); 3] = [
        ("wordfreq", &["--top", "1"], "wordfreq.csv", "word,count\nthe,3\n"),
        ("csv-stats", &[], "stats.csv", "weather,cities.csv,temp,3,0,"),
        ("mandelbrot", &["--width", "32", "--height", "16"], "mandelbrot.pgm", "P5\n32 16\n255\n"),
    ];
    // The three consumers at once: both workers get work.
    let runs = cases.map(|(guest, args, file, expected)| {
        let cluster = &cluster;
        async move {
            let consumer = cluster.consumer().await;
            let out = tempfile::tempdir().unwrap();
            let outcome = consumer
                .compute(&compute(did, guest, args, &out.path().join("r")), |_| {})
                .await
                .unwrap_or_else(|e| panic!("{guest}: {e}{}", cluster.logs()));
            assert!(outcome.receipt.outcome.is_success(), "{guest}: {}", outcome.receipt.outcome);
            let content = std::fs::read_to_string(out.path().join("r/outputs").join(file)).unwrap_or_default();
            assert!(content.contains(expected) || file.ends_with(".pgm"), "{guest}: {file} lacks {expected:?}");
            let paid = U256::from(outcome.receipt.fuel_consumed) * U256::from(3);
            assert_eq!(outcome.payout.provider_amount, paid, "{guest}: fuel used × price to the provider");
            assert_eq!(consumer.balance(consumer.address()).await.unwrap(), faucet_amount() - paid);
            let a = consumer.agreement(outcome.agreement).await.unwrap();
            assert_eq!((a.state, a.receipt_hash), (AgreementState::Released, Some(outcome.receipt.receipt_hash)));
            let output = consumer.ddo(outcome.output_did.unwrap()).await.unwrap();
            assert_eq!(output.metadata.datasets[0].root, outcome.receipt.outputs_root);
            paid
        }
    });
    let paid: Vec<U256> = futures_util::future::join_all(runs).await;
    let operator = cluster.operator().await;
    let total = paid.iter().fold(U256::ZERO, |a, b| a + b);
    assert_eq!(operator.balance(operator.address()).await.unwrap(), total, "paid once per job");
    // The API nodes ran no job; the workers ran them all.
    let ran = |d: &Daemon| d.log().matches("job ended").count();
    assert_eq!(cluster.api.iter().map(ran).sum::<usize>(), 0, "{}", cluster.logs());
    assert_eq!(cluster.workers.iter().map(ran).sum::<usize>(), 3, "{}", cluster.logs());
    // Nodes hold their data directories shared: gc, which would take one for itself, is refused.
    for node in cluster.api.iter().chain(&cluster.workers) {
        let gc = crate::util::tp(&["gc", "--data-dir", crate::util::s(&node.data)]);
        gc.expect_code(2);
        assert!(gc.stderr().contains("is in use by another tidepool process"), "{}", gc.stderr());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_is_replaced_after_its_lease_and_the_receipt_is_the_same() {
    let mut cluster = start(1, 2);
    let data = dataset(&[("seed.txt", b"unused by mandelbrot")]);
    let did = cluster.publish(&[("seed", data.path())], render_farm()).await;
    let c = cluster.consumer().await;
    let (agreement, job) = exec_job(&c, did, "mandelbrot", &BIG).await;
    let victim = running_on(&cluster, &c, &job).await;
    cluster.workers[victim].kill();
    wait_for_event(&c, agreement, EventName::OutputPublished).await;
    let view = wait_for_end(&c, &job).await;
    assert_eq!((view.status.code(), view.payment.as_str()), (70, "released"), "{view:?}{}", cluster.logs());
    assert_eq!(view.attempts, 2, "the killed run, then the one on the other worker");
    assert_eq!(view.receipt_hash, Some(local_receipt_hash(did, &c, data.path()).await), "the same receipt");
    assert_eq!(event_counts(&c, agreement).await, [(EventName::PaymentReleased, 1), (EventName::OutputPublished, 1)]);
    let fee = U256::from(
        cluster.pg.psql(&format!("SELECT fuel_consumed FROM jobs WHERE id = '{job}'")).parse::<u64>().unwrap(),
    ) * U256::from(3);
    let operator = cluster.operator().await;
    assert_eq!(operator.balance(operator.address()).await.unwrap(), fee, "paid once");
    assert_eq!(c.balance(c.address()).await.unwrap(), faucet_amount() - fee);
    let outputs = cluster.pg.psql("SELECT COUNT(*) FROM assets WHERE kind = 'output'");
    assert_eq!(outputs, "1", "the outputs were published once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_paused_past_its_lease_commits_nothing_when_it_wakes() {
    let cluster = start(1, 2);
    let data = dataset(&[("seed.txt", b"unused by mandelbrot")]);
    let did = cluster.publish(&[("seed", data.path())], render_farm()).await;
    let c = cluster.consumer().await;
    let (agreement, job) = exec_job(&c, did, "mandelbrot", &BIG).await;
    let paused = running_on(&cluster, &c, &job).await;
    cluster.workers[paused].suspend();
    // The other worker takes the job over once the lease runs out, and finishes it.
    let view = wait_for_end(&c, &job).await;
    let settled =
        cluster.pg.psql(&format!("SELECT status, attempts, receipt_hash, lease_owner FROM jobs WHERE id = '{job}'"));
    assert_eq!((view.status.code(), view.attempts), (70, 2), "{view:?}{}", cluster.logs());
    cluster.workers[paused].resume();
    // The paused run wakes, finds its lease gone, and its results are refused.
    for _ in 0..1200 {
        if cluster.workers[paused].log().contains("the lease was lost") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = cluster.workers[paused].log();
    assert!(log.contains("the lease was lost"), "the woken worker did not notice:{}", cluster.logs());
    // Let its run end (its commit comes, and is refused), then nothing changed.
    for _ in 0..600 {
        if cluster.workers[paused].log().contains("results are discarded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after =
        cluster.pg.psql(&format!("SELECT status, attempts, receipt_hash, lease_owner FROM jobs WHERE id = '{job}'"));
    assert_eq!(after, settled, "the late run changed the job");
    assert_eq!(event_counts(&c, agreement).await, [(EventName::PaymentReleased, 1), (EventName::OutputPublished, 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_signed_request_to_both_api_nodes_succeeds_once() {
    let cluster = start(2, 0);
    let operator = cluster.operator().await;
    let signer = PrivateKeySigner::random();
    let http = reqwest::Client::new();
    for round in 0..5u64 {
        let body = b"{}".to_vec();
        let path = "/api/v1/keeper/faucet";
        let nonce = unix_now() * 1000 + round;
        let expiry = unix_now() + 60;
        let request =
            eip712::Request { method: "POST".into(), path: path.into(), contentHash: keccak256(&body), nonce, expiry };
        let envelope = Envelope {
            address: signer.address(),
            nonce,
            expiry,
            content_hash: Some(keccak256(&body)),
            signature: sign_typed(&signer, operator.domain(), &request),
        };
        let send = |base: &str| {
            let mut b =
                http.post(format!("{base}{path}")).header("content-type", "application/json").body(body.clone());
            for (name, value) in envelope.headers() {
                b = b.header(name, value);
            }
            b.send()
        };
        let (a, b) = tokio::join!(send(&cluster.api[0].url), send(&cluster.api[1].url));
        let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: one success, one replay");
    }
    assert_eq!(
        operator.balance(signer.address()).await.unwrap(),
        faucet_amount() * U256::from(5),
        "credited once per round"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_node_killed_mid_flow_leaves_the_consumer_on_the_other() {
    let mut cluster = start(2, 1);
    let books = dataset(&[("dickens.txt", b"It was the best of times, it was the worst of times.\n")]);
    let did = cluster.publish(&[("books", books.path())], request("books")).await;
    let c = cluster.consumer().await;
    let agreement = B256::random();
    initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
    c.upload_module(agreement, &std::fs::read(module("wordfreq")).unwrap(), "wordfreq").await.unwrap();
    // The first API node goes away; every later request of the flow lands on the second.
    cluster.api[0].kill();
    c.lock_payment(agreement).await.unwrap();
    wait_for_event(&c, agreement, EventName::ComputeGranted).await;
    let exec =
        ExecRequest { service_agreement_id: agreement, consumer_address: c.address(), not_before: None, args: vec![] };
    let job = c.exec(&exec).await.unwrap().job_id;
    let view = wait_for_end(&c, &job).await;
    assert_eq!((view.status.code(), view.payment.as_str()), (70, "released"), "{view:?}{}", cluster.logs());
    let out = tempfile::tempdir().unwrap();
    let results = c.results(&job).await.unwrap();
    let csv = results.results.iter().find(|r| r.name == "wordfreq.csv").unwrap().index;
    c.download(&job, csv, &out.path().join("wordfreq.csv")).await.unwrap();
    assert!(std::fs::read_to_string(out.path().join("wordfreq.csv")).unwrap().contains("times,2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_restarted_under_load_answers_503_then_recovers_losing_nothing() {
    let cluster = start(1, 1);
    let books = dataset(&[("dickens.txt", b"It was the best of times, it was the worst of times.\n")]);
    let did = cluster.publish(&[("books", books.path())], request("books")).await;
    // The load comes from a consumer of its own: one signer's requests sent concurrently can
    // arrive out of nonce order, and the later-numbered one makes the other a replay.
    let c = cluster.consumer().await;
    let loader = std::sync::Arc::new(cluster.consumer().await);
    // Load: faucet requests in a loop, each counted when the provider says it was done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (c, stop) = (loader.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut unavailable, mut other) = (0u64, 0u64, Vec::new());
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.faucet().await {
                    Ok(_) => ok += 1,
                    Err(e) if e.status() == Some(503) => unavailable += 1,
                    Err(e) => other.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, unavailable, other)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.pg.start_again();
    // Once the database answers again, a whole flow goes through.
    let mut back = false;
    for _ in 0..600 {
        if c.balance(c.address()).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the API node did not recover{}", cluster.logs());
    let out = tempfile::tempdir().unwrap();
    let outcome = c
        .compute(&compute(did, "wordfreq", &[], &out.path().join("r")), |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}{}", cluster.logs()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, unavailable, other) = load.await.unwrap();
    assert!(outcome.receipt.outcome.is_success());
    assert!(other.is_empty(), "requests failed otherwise than with 503: {other:?}");
    assert!(unavailable > 0, "no request met the stopped database");
    assert!(ok > 0);
    // Every faucet request answered 200 was kept (one whose answer was lost with the database
    // may have been kept too, never more): one gift each, plus the first.
    let balance = loader.balance(loader.address()).await.unwrap();
    assert!(balance >= faucet_amount() * U256::from(ok + 1), "a credit answered 200 was lost");
    assert!(balance <= faucet_amount() * U256::from(ok + 1 + unavailable), "credits appeared from nowhere");
}
