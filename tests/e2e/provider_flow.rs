//! The agreement flow against a real daemon over loopback HTTP, with a real SQLite file.

use std::path::Path;
use std::time::Duration;

use alloy_primitives::{B256, U256};
use tidepool_provider::client::Client;
use tidepool_provider::client::flow::{AlgorithmChoice, ComputeOutcome, ComputeRequest, Step};
use tidepool_provider::protocol::agreement::AgreementState;
use tidepool_provider::protocol::api::{ExecRequest, ResultKind, ServiceLimits};
use tidepool_provider::protocol::ddo::{AssetKind, Did};
use tidepool_provider::protocol::events::EventName;
use tidepool_provider::protocol::signing::unix_now;
use tidepool_provider::protocol::template::ConditionName;
use tidepool_runtime::{Algorithm, InputSpec, Runtime, RuntimeConfig, VerifyRequest};

use crate::daemon::{Daemon, faucet_amount, initialize_signed, publish, request};
use crate::util::{dataset, module};

const BOOK: &str = "It was the best of times, it was the worst of times; the end.\n";
const CSV: &str = "city,temp,rain\nOslo,3.5,1\nLima,19,\nCairo,24.5,0\n";

pub fn compute(did: Did, guest: &str, args: &[&str], out: &Path) -> ComputeRequest {
    ComputeRequest {
        did,
        algorithm: AlgorithmChoice::Module(std::fs::read(module(guest)).unwrap(), guest.to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
        not_before: None,
        output_dir: out.to_path_buf(),
        wait: Duration::from_secs(180),
    }
}

/// Runs the flow, checking the payment split on both balances.
async fn run_and_check_split(d: &Daemon, consumer: &Client, req: &ComputeRequest) -> ComputeOutcome {
    let provider = consumer.provider().address;
    let (p0, c0) = (consumer.balance(provider).await.unwrap(), consumer.balance(consumer.address()).await.unwrap());
    let outcome = consumer.compute(req, |_| {}).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let paid = U256::from(outcome.receipt.fuel_consumed) * U256::from(3);
    assert_eq!(outcome.payout.provider_amount, paid, "fuel used × price to the provider");
    assert_eq!(consumer.balance(provider).await.unwrap() - p0, paid);
    assert_eq!(c0 - consumer.balance(consumer.address()).await.unwrap(), paid, "the rest of the escrow came back");
    let a = consumer.agreement(outcome.agreement).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Released, U256::ZERO));
    assert_eq!(a.receipt_hash, Some(outcome.receipt.receipt_hash), "the receipt hash is committed on release");
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn each_example_runs_through_the_flow_with_the_payment_split() {
    let d = Daemon::start(&[]);
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let weather = dataset(&[("cities.csv", CSV.as_bytes())]);
    let did = publish(&d, &[("books", books.path()), ("weather", weather.path())], request("books and weather")).await;
    let cases: [(&str, &[&str], &str, &str); 3] = [
        ("wordfreq", &["--top", "1"], "wordfreq.csv", "word,count\nthe,3\n"),
        ("csv-stats", &[], "stats.csv", "weather,cities.csv,temp,3,0,"),
        ("mandelbrot", &["--width", "32", "--height", "16"], "mandelbrot.pgm", "P5\n32 16\n255\n"),
    ];
    for (guest, args, file, expected) in cases {
        let consumer = d.consumer().await;
        let out = tempfile::tempdir().unwrap();
        let outcome = run_and_check_split(&d, &consumer, &compute(did, guest, args, &out.path().join("r"))).await;
        assert!(outcome.receipt.outcome.is_success(), "{guest}: {}", outcome.receipt.outcome);
        let content =
            String::from_utf8_lossy(&std::fs::read(out.path().join("r/outputs").join(file)).unwrap()).into_owned();
        assert!(content.contains(expected), "{guest}: {file} lacks {expected:?}:\n{content}");
        // Both datasets were mounted, and the receipt names them.
        let names: Vec<&str> = outcome.receipt.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["books", "weather"]);
        assert_eq!(outcome.receipt.inputs[0].root, tidepool_runtime::tree::scan(books.path()).unwrap().root());
        // The outputs became an asset of the consumer.
        let output = consumer.ddo(outcome.output_did.unwrap()).await.unwrap();
        assert_eq!(output.metadata.kind, AssetKind::Output);
        assert_eq!(output.owner(), Some(consumer.address()));
        assert_eq!(output.metadata.datasets[0].root, outcome.receipt.outputs_root);
        // The results came with the job and the receipt inline: the receipt file written from
        // it is the very file the provider serves, and the job is the one that ended.
        let results = consumer.results(&outcome.job.job_id).await.unwrap();
        assert_eq!(results.receipt.as_ref(), Some(&outcome.receipt));
        assert_eq!(
            results.job.as_ref().map(|j| (&j.job_id, j.status)),
            Some((&outcome.job.job_id, outcome.job.status))
        );
        assert_eq!(outcome.job.output_did, outcome.output_did, "the job shows its output asset");
        let index = results.results.iter().find(|r| r.kind == ResultKind::Receipt).unwrap().index;
        let served = out.path().join("served-receipt.json");
        consumer.download(&outcome.job.job_id, index, &served).await.unwrap();
        assert_eq!(std::fs::read(&served).unwrap(), std::fs::read(out.path().join("r/receipt.json")).unwrap());
        // An auditor holding the same inputs re-executes the receipt.
        let receipt = outcome.receipt.clone();
        let inputs = vec![InputSpec::new("books", books.path()), InputSpec::new("weather", weather.path())];
        let algorithm = Algorithm::from_file(&module(guest)).unwrap();
        let report = tokio::task::spawn_blocking(move || {
            Runtime::new(RuntimeConfig::default())
                .verify(&VerifyRequest { receipt, algorithm, inputs, claimed_outputs: None })
                .unwrap()
        })
        .await
        .unwrap();
        assert!(report.verified(), "{guest}: {:?}", report.mismatches);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_datasets_are_mounted_side_by_side() {
    let d = Daemon::start(&[]);
    let sets: Vec<tempfile::TempDir> =
        ["a", "b", "c"].iter().map(|n| dataset(&[(&format!("{n}.txt"), n.as_bytes())])).collect();
    let named: Vec<(&str, &Path)> = ["gamma", "alpha", "beta"].into_iter().zip(sets.iter().map(|t| t.path())).collect();
    let did = publish(&d, &named, request("three datasets")).await;
    let consumer = d.consumer().await;
    let out = tempfile::tempdir().unwrap();
    let outcome = run_and_check_split(&d, &consumer, &compute(did, "observe", &[], &out.path().join("r"))).await;
    let names: Vec<&str> = outcome.receipt.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "sorted by name");
    let stdout = std::fs::read_to_string(out.path().join("r/logs/stdout.log")).unwrap();
    for path in ["/data/inputs/alpha/b.txt", "/data/inputs/beta/c.txt", "/data/inputs/gamma/a.txt"] {
        assert!(stdout.contains(&format!("entry {path} ")), "the guest did not see {path}:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_execution_waits_for_not_before() {
    let d = Daemon::start(&[]);
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&d, &[("books", books.path())], request("books")).await;
    let consumer = d.consumer().await;
    let out = tempfile::tempdir().unwrap();
    let not_before = unix_now() + 3;
    let mut req = compute(did, "wordfreq", &[], &out.path().join("r"));
    req.not_before = Some(not_before);
    let mut seen = Vec::new();
    let outcome = consumer
        .compute(&req, |s| {
            if let Step::Job(v) = s {
                seen.push((unix_now(), v.status.code(), v.not_before));
            }
        })
        .await
        .unwrap();
    assert!(outcome.receipt.outcome.is_success());
    assert!(seen.iter().all(|(_, _, nb)| *nb == not_before), "the job records notBefore");
    assert!(seen.iter().any(|(_, status, _)| *status == 1), "the job was seen waiting in the queue");
    for (when, status, _) in &seen {
        if *when < not_before {
            assert_eq!(*status, 1, "the job left the queue before notBefore");
        }
    }
    assert!(outcome.job.updated_at >= not_before);
}

/// A provider configuration file setting the job limits.
pub fn toml_job_limits(l: &tidepool_runtime::Limits) -> String {
    format!(
        "[job_limits]\nfuel = {}\nmemory_bytes = {}\ntimeout_ms = {}\noutput_bytes = {}\noutput_files = {}\n\
         stdout_bytes = {}\nstderr_bytes = {}\nmodule_bytes = {}\nmax_wasm_stack = {}\n",
        l.fuel,
        l.memory_bytes,
        l.timeout_ms,
        l.output_bytes,
        l.output_files,
        l.stdout_bytes,
        l.stderr_bytes,
        l.module_bytes,
        l.max_wasm_stack
    )
}

/// Drives the flow by hand up to exec.
pub async fn initialize_and_exec(
    consumer: &Client,
    did: Did,
    guest: &str,
    args: &[&str],
    not_before: Option<u64>,
) -> (B256, String) {
    let agreement = initialize(consumer, did).await;
    consumer.upload_module(agreement, &std::fs::read(module(guest)).unwrap(), guest).await.unwrap();
    consumer.lock_payment(agreement).await.unwrap();
    wait_for_event(consumer, agreement, EventName::ComputeGranted).await;
    let exec = ExecRequest {
        service_agreement_id: agreement,
        consumer_address: consumer.address(),
        not_before,
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    (agreement, consumer.exec(&exec).await.unwrap().job_id)
}

/// Signs and initializes an agreement on `did`'s service.
async fn initialize(consumer: &Client, did: Did) -> B256 {
    let agreement = B256::random();
    initialize_signed(consumer, did, agreement, consumer.signer()).await.unwrap();
    agreement
}

pub async fn wait_for_event(c: &Client, agreement: B256, name: EventName) {
    for _ in 0..600 {
        if c.events(0, Some(agreement)).await.unwrap().iter().any(|e| e.name() == name) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {name} event for {agreement}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_is_refunded_when_the_provider_misses_its_deadline() {
    // One worker slot, taken by a slow job: the next job cannot start before its deadline. The
    // slow job is bounded by its 6 s timeout, not by fuel (the ceiling is raised for it).
    let cfg = tempfile::tempdir().unwrap();
    let config = cfg.path().join("provider.toml");
    let limits = tidepool_runtime::Limits { fuel: 10_000_000_000_000, ..tidepool_runtime::Limits::default() };
    std::fs::write(&config, toml_job_limits(&limits)).unwrap();
    let d = Daemon::start(&["--max-concurrent-jobs", "1", "--config", config.to_str().unwrap()]);
    let data = dataset(&[("x.txt", b"x")]);
    let mut slow = request("slow service");
    slow.limits = ServiceLimits { timeout_ms: Some(6_000), max_fuel: Some(limits.fuel), ..ServiceLimits::default() };
    let hog_did = publish(&d, &[("x", data.path())], slow).await;
    let mut tight = request("tight deadline");
    tight.limits = ServiceLimits { timeout_ms: Some(1_000), ..ServiceLimits::default() };
    tight.timeouts.insert(ConditionName::ReleasePayment, 4);
    let did = publish(&d, &[("x", data.path())], tight).await;

    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let url = d.url.clone();
    let hog = tokio::spawn(async move {
        let c = Client::connect(&url, alloy_signer_local::PrivateKeySigner::random()).await.unwrap();
        c.faucet().await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut running = Some(running_tx);
        c.compute(&compute(hog_did, "misbehave", &["spin"], &out.path().join("r")), |s| {
            if let Step::Job(v) = s
                && v.status.code() == 40
                && let Some(tx) = running.take()
            {
                let _ = tx.send(());
            }
        })
        .await
    });
    running_rx.await.expect("the slow job runs");

    let consumer = d.consumer().await;
    let (agreement, job) = initialize_and_exec(&consumer, did, "wordfreq", &[], None).await;
    let refused = consumer.refund(agreement).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "no refund before the deadline: {refused}");
    let deadline = consumer
        .agreement(agreement)
        .await
        .unwrap()
        .condition(ConditionName::ReleasePayment)
        .unwrap()
        .deadline
        .unwrap();
    while unix_now() <= deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let escrow = consumer.agreement(agreement).await.unwrap().escrow;
    assert!(escrow > U256::ZERO);
    assert_eq!(consumer.refund(agreement).await.unwrap(), escrow);
    assert_eq!(consumer.balance(consumer.address()).await.unwrap(), faucet_amount(), "everything came back");
    let a = consumer.agreement(agreement).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Refunded, U256::ZERO));

    // The slow job ends (timed out), and then the late one is not run.
    let hog_outcome = hog.await.unwrap().unwrap();
    assert_eq!(hog_outcome.receipt.outcome, tidepool_runtime::Outcome::Timeout);
    for _ in 0..300 {
        let v = consumer.job(&job).await.unwrap();
        if v.status.code() == 81 {
            assert_eq!(v.payment.as_str(), "refunded");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(consumer.job(&job).await.unwrap().status.code(), 81, "not started: deadline passed");
    let events = consumer.events(0, Some(agreement)).await.unwrap();
    assert!(events.iter().any(|e| e.name() == EventName::PaymentRefund));
    assert!(!events.iter().any(|e| e.name() == EventName::PaymentReleased), "the provider was not paid");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_agreements_do_not_interfere() {
    let d = Daemon::start(&["--max-concurrent-jobs", "2"]);
    let books = dataset(&[("dickens.txt", BOOK.as_bytes()), ("more.txt", b"times times best worst age")]);
    let did = publish(&d, &[("books", books.path())], request("books")).await;
    let n = 8;
    let runs = (1..=n).map(|top| {
        let url = d.url.clone();
        tokio::spawn(async move {
            let c = Client::connect(&url, alloy_signer_local::PrivateKeySigner::random()).await.unwrap();
            c.faucet().await.unwrap();
            let out = tempfile::tempdir().unwrap();
            let top_s = top.to_string();
            let outcome =
                c.compute(&compute(did, "wordfreq", &["--top", &top_s], &out.path().join("r")), |_| {}).await.unwrap();
            let csv = std::fs::read_to_string(out.path().join("r/outputs/wordfreq.csv")).unwrap();
            let left = c.balance(c.address()).await.unwrap();
            (top, outcome, csv.lines().count(), left)
        })
    });
    let results = futures_util::future::join_all(runs).await;
    let mut paid = U256::ZERO;
    let mut hashes = std::collections::BTreeSet::new();
    for r in results {
        let (top, outcome, lines, left) = r.unwrap();
        assert!(outcome.receipt.outcome.is_success());
        assert_eq!(lines, top + 1, "each job ran with its own arguments");
        let fee = U256::from(outcome.receipt.fuel_consumed) * U256::from(3);
        assert_eq!(left, faucet_amount() - fee, "each consumer paid for its own fuel");
        paid += fee;
        hashes.insert(outcome.receipt.receipt_hash);
    }
    assert_eq!(hashes.len(), n);
    let operator = d.operator().await;
    assert_eq!(operator.balance(operator.address()).await.unwrap(), paid, "the provider was paid once per job");
}

/// Polls a job until it runs (status 40), for at most 30 s (a job that never gets there is for
/// the caller's assertions to catch).
pub async fn wait_until_running(c: &Client, job: &str) {
    for _ in 0..1200 {
        if c.job(job).await.unwrap().status.code() == 40 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls a job until it ends and its payment is settled.
pub async fn wait_for_end(c: &Client, job: &str) -> tidepool_provider::protocol::api::JobView {
    for _ in 0..1200 {
        let v = c.job(job).await.unwrap();
        if v.status.is_terminal() && v.payment.as_str() != "pending" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not end");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_credit_accounts_and_publish_files_already_on_the_provider() {
    let d = Daemon::start(&[]);
    let operator = d.operator().await;
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let session = operator.create_session().await.unwrap();
    let files = operator.reference(&session, "books", books.path()).await.unwrap();
    assert_eq!(files.len(), 1);
    let did = operator.publish(&session, &request("referenced books")).await.unwrap().did;

    let consumer = Client::connect(&d.url, alloy_signer_local::PrivateKeySigner::random()).await.unwrap();
    let amount = U256::from(10u64).pow(U256::from(12));
    assert_eq!(operator.credit(consumer.address(), amount).await.unwrap(), amount);
    let refused = consumer.credit(consumer.address(), amount).await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "only operators credit");
    let their_session = consumer.create_session().await.unwrap();
    assert_eq!(consumer.reference(&their_session, "x", books.path()).await.unwrap_err().status(), Some(403));

    let out = tempfile::tempdir().unwrap();
    let outcome =
        consumer.compute(&compute(did, "wordfreq", &["--top", "1"], &out.path().join("r")), |_| {}).await.unwrap();
    assert!(outcome.receipt.outcome.is_success());
    assert_eq!(outcome.receipt.inputs[0].root, tidepool_runtime::tree::scan(books.path()).unwrap().root());
    let fee = U256::from(outcome.receipt.fuel_consumed) * U256::from(3);
    assert_eq!(consumer.balance(consumer.address()).await.unwrap(), amount - fee);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_stop_running_and_queued_jobs() {
    let d = Daemon::start(&[]);
    let data = dataset(&[("x.txt", b"x")]);
    let mut req = request("render farm");
    req.limits = ServiceLimits { max_fuel: Some(40_000_000_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("x", data.path())], req).await;
    let consumer = d.consumer().await;

    // A running job stops with outcome `stopped`; the provider is paid for the fuel used.
    let big = ["--width", "1000", "--height", "750", "--max-iter", "3000"];
    let (agreement, job) = initialize_and_exec(&consumer, did, "mandelbrot", &big, None).await;
    wait_until_running(&consumer, &job).await;
    consumer.stop(&job).await.unwrap();
    let v = wait_for_end(&consumer, &job).await;
    assert_eq!((v.status.code(), v.outcome.clone()), (80, Some(tidepool_runtime::Outcome::Stopped)), "{v:?}");
    let a = consumer.agreement(agreement).await.unwrap();
    assert_eq!(a.state, AgreementState::Released);
    assert!(a.provider_paid.unwrap() > U256::ZERO, "the fuel used before the stop is paid for");
    assert_eq!(consumer.stop(&job).await.unwrap_err().status(), Some(409), "it has ended already");

    // A queued job stops at once; the whole escrow comes back.
    let before = consumer.balance(consumer.address()).await.unwrap();
    let (agreement, job) = initialize_and_exec(&consumer, did, "wordfreq", &[], Some(unix_now() + 600)).await;
    let stopped = consumer.stop(&job).await.unwrap();
    assert_eq!(stopped.status.code(), 80);
    let v = wait_for_end(&consumer, &job).await;
    assert_eq!(v.payment.as_str(), "released");
    assert_eq!(consumer.agreement(agreement).await.unwrap().provider_paid, Some(U256::ZERO));
    assert_eq!(consumer.balance(consumer.address()).await.unwrap(), before, "nothing was spent");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_queries_can_wait_for_the_next_event() {
    let d = Daemon::start(&[]);
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&d, &[("books", books.path())], request("books")).await;
    let consumer = std::sync::Arc::new(d.consumer().await);
    let latest = consumer.events(0, None).await.unwrap().last().map_or(0, |e| e.id);
    // Nothing new: the wait ends, empty.
    assert!(consumer.wait_for_events(latest, None, Duration::from_millis(200), &[]).await.unwrap().is_empty());
    // A waiting query is answered with the event that arrives while it waits.
    let waiter = {
        let c = consumer.clone();
        tokio::spawn(async move { c.wait_for_events(latest, None, Duration::from_secs(30), &[]).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "answered before any event");
    let agreement = initialize(&consumer, did).await;
    let events = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the query waits for its whole 30 s instead of answering when the event arrives")
        .unwrap();
    assert_eq!((events[0].name(), events[0].agreement_id), (EventName::ExecuteAgreement, agreement));

    // Waiting for named events: the upload's event alone does not answer; the grant does, and
    // the answer has every event since.
    let after = events[0].id;
    let waiter = {
        let c = consumer.clone();
        tokio::spawn(async move {
            c.wait_for_events(after, Some(agreement), Duration::from_secs(30), &[EventName::ComputeGranted])
                .await
                .unwrap()
        })
    };
    consumer.upload_module(agreement, &std::fs::read(module("noop")).unwrap(), "noop").await.unwrap();
    wait_for_event(&consumer, agreement, EventName::FulfillUpload).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "answered by an event it did not wait for");
    consumer.lock_payment(agreement).await.unwrap();
    let events =
        tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("not answered by the grant").unwrap();
    let names: Vec<EventName> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, [EventName::FulfillUpload, EventName::PaymentLocked, EventName::ComputeGranted]);
}
