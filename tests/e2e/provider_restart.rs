//! Kill the daemon with SIGKILL at any point and restart it: no agreement, payment or job is
//! lost or duplicated; interrupted jobs run again and, being deterministic, give the receipt
//! an uninterrupted run gives.

use std::time::Duration;

use alloy_primitives::{B256, U256};
use tidepool_provider::client::Client;
use tidepool_provider::protocol::agreement::AgreementState;
use tidepool_provider::protocol::api::{ExecRequest, ServiceLimits};
use tidepool_provider::protocol::events::EventName;
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Limits, Runtime, RuntimeConfig};

use crate::daemon::{Daemon, faucet_amount, initialize_signed, publish, request};
use crate::provider_flow::wait_for_event;
use crate::util::{dataset, module};

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

    let view = c.job(&job).await.unwrap();
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
