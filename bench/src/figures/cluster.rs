//! Cluster mode (issue 11) on loopback: a real PostgreSQL, a real SeaweedFS, API nodes and
//! workers as real processes. Jobs per second with one worker and with two on CPU-bound jobs;
//! the cost a cluster adds to one job against a single node; flows per second through two API
//! nodes against one; how long a killed worker's job waits, against the lease; and how many
//! database transactions one job costs, from which the README estimates how many workers one
//! PostgreSQL primary can feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, Result, ensure};
use tidepool_provider::client::Client;
use tidepool_provider::protocol::api::ServiceLimits;
use tidepool_provider::protocol::ddo::Did;
use tidepool_test_artifacts::cluster::Cluster;
use tidepool_test_artifacts::daemon::Daemon;

use super::http::{Until, concurrent, flow, publish_on, sequential};
use crate::env::{Ctx, progress};
use crate::timing::{Row, Target, median_f64, millis};

/// Unmeasured flows before the sequential ones.
const WARM_UP: usize = 5;

/// The workers' lease (seconds): what the recovery figure is compared with.
const LEASE_SECS: u32 = 3;

/// A CPU-bound job: Mandelbrot at this size takes about a second and a half of one core.
const CPU_BOUND: [&str; 6] = ["--width", "800", "--height", "600", "--max-iter", "2500"];

/// A job long enough to be killed mid-run (several seconds of one core).
const LONG: [&str; 6] = ["--width", "1000", "--height", "750", "--max-iter", "4000"];

/// The service's limits: fuel for the long job.
fn limits() -> ServiceLimits {
    ServiceLimits { max_fuel: Some(45_000_000_000), ..ServiceLimits::default() }
}

fn module(name: &str) -> Result<(Vec<u8>, String)> {
    Ok((std::fs::read(tidepool_test_artifacts::module(name))?, name.to_string()))
}

/// A consumer with faucet tokens whose requests go to `urls` in turn.
async fn consumer(urls: &[&str]) -> Result<Arc<Client>> {
    let c = Client::connect_many(urls, PrivateKeySigner::random()).await?;
    c.faucet().await?;
    Ok(Arc::new(c))
}

/// Jobs per second of `clients` running `per_client` flows of `module` with `args` each, all
/// at once.
async fn batch(
    clients: &[Arc<Client>],
    did: Did,
    module: &(Vec<u8>, String),
    args: &[&str],
    per_client: usize,
    out: &std::path::Path,
    tag: &str,
) -> Result<f64> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let start = Instant::now();
    let done = concurrent(clients, did, (module, &args), Until::Flows(per_client), out, tag).await?.len();
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Flows per second of `clients` running trivial flows for `seconds`.
async fn rate(
    clients: &[Arc<Client>],
    did: Did,
    noop: &(Vec<u8>, String),
    seconds: f64,
    out: &std::path::Path,
    tag: &str,
) -> Result<f64> {
    let start = Instant::now();
    let done = concurrent(clients, did, (noop, &[]), Until::Seconds(seconds), out, tag).await?.len();
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Committed transactions of the cluster's database so far.
fn commits(cluster: &Cluster) -> Result<u64> {
    let n = cluster.pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
    n.parse().with_context(|| format!("xact_commit: {n:?}"))
}

/// Every figure of the group.
pub async fn cluster(ctx: &Ctx) -> Result<Vec<Row>> {
    let binary = ctx.native("tidepool")?;
    let cache = ctx.disk.path().join("daemon-compile-cache");
    let envs = super::http::daemon_env(&cache);
    let outs = tempfile::tempdir_in(ctx.fast.path())?;
    let (mandelbrot, noop) = (module("mandelbrot")?, module("noop")?);
    let mut rows = Vec::new();

    // A single node, the baseline of the per-job cost.
    let single = Daemon::start(&binary, &envs, &[]);
    let did = publish_on(ctx, &single, limits()).await?;
    let n = ctx.runs(100, 10);
    progress(&format!("{n} sequential trivial flows on a single node, then on a cluster"));
    let c = consumer(&[&single.url]).await?;
    let single_p50 = sequential(&c, did, &noop, &outs.path().join("single"), n, WARM_UP).await?.0;
    drop(single);

    // One API node, one worker (one job at a time on each worker, two cores: the CPU-bound
    // figure measures placement, not a worker's own parallelism).
    let worker_args = ["--max-concurrent-jobs", "1"];
    let mut cluster = Cluster::start(&binary, &envs, 1, 1, LEASE_SECS, &worker_args);
    let log = |e: anyhow::Error, cluster: &Cluster| e.context(format!("cluster logs:{}", tail(&cluster.logs())));
    let did = publish_on(ctx, &cluster.api[0], limits()).await?;
    let first = cluster.api[0].url.clone();
    let one = [first.as_str()];
    let c = consumer(&one).await?;
    let before = commits(&cluster)?;
    let cluster_p50 =
        sequential(&c, did, &noop, &outs.path().join("cluster"), n, WARM_UP).await.map_err(|e| log(e, &cluster))?.0;
    let per_flow = (commits(&cluster)? - before) as f64 / (n + WARM_UP) as f64;
    rows.push(Row::ratio(
        "full trivial flow in a cluster (1 API node, 1 worker, PostgreSQL, SeaweedFS; the job queued, claimed, \
         its inputs staged and outputs stored through S3): p50",
        millis(cluster_p50),
        format!("{} single node (SQLite, local blobs)", millis(single_p50)),
        cluster_p50.as_secs_f64() / single_p50.as_secs_f64(),
        Target::Reported,
        &format!("{n} sequential flows each, after {WARM_UP} warm-up"),
    ));

    let jobs = ctx.runs(4, 1);
    let consumers = 4;
    progress(&format!("CPU-bound jobs per second with 1 worker, then 2 ({consumers} consumers × {jobs} jobs)"));
    let mut clients = Vec::new();
    for _ in 0..consumers {
        clients.push(consumer(&one).await?);
    }
    // Warm-up: the module compiled on the worker.
    batch(&clients[..1], did, &mandelbrot, &CPU_BOUND, 1, outs.path(), "warm1").await.map_err(|e| log(e, &cluster))?;
    let one_worker =
        batch(&clients, did, &mandelbrot, &CPU_BOUND, jobs, outs.path(), "w1").await.map_err(|e| log(e, &cluster))?;
    cluster.add_worker();
    batch(&clients[..2], did, &mandelbrot, &CPU_BOUND, 1, outs.path(), "warm2").await.map_err(|e| log(e, &cluster))?;
    let two_workers =
        batch(&clients, did, &mandelbrot, &CPU_BOUND, jobs, outs.path(), "w2").await.map_err(|e| log(e, &cluster))?;
    rows.push(Row::ratio(
        "CPU-bound jobs per second with 2 workers (Mandelbrot 800×600, 2,500 iterations; one job at a time per \
         worker)",
        format!("{two_workers:.2} jobs/s"),
        format!("{one_worker:.2} jobs/s with 1 worker"),
        two_workers / one_worker,
        Target::AtLeast(1.8, "×"),
        &format!("{} jobs from {consumers} consumers at once, each way", consumers * jobs),
    ));

    let seconds = if ctx.quick { 2.0 } else { 10.0 };
    let many = 16;
    progress(&format!("trivial flows per second through 1 API node, then 2 ({many} consumers, {seconds} s each)"));
    let mut clients = Vec::new();
    for _ in 0..many {
        clients.push(consumer(&one).await?);
    }
    let before = commits(&cluster)?;
    let through_one = rate(&clients, did, &noop, seconds, outs.path(), "api1").await.map_err(|e| log(e, &cluster))?;
    let commits_per_sec = (commits(&cluster)? - before) as f64 / seconds;
    cluster.add_api_node();
    let urls: Vec<String> = cluster.urls().iter().map(|u| u.to_string()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut clients = Vec::new();
    for _ in 0..many {
        clients.push(consumer(&urls).await?);
    }
    let through_two = rate(&clients, did, &noop, seconds, outs.path(), "api2").await.map_err(|e| log(e, &cluster))?;
    rows.push(Row::ratio(
        &format!("trivial flows per second through 2 API nodes (2 workers, {many} consumers alternating nodes)"),
        format!("{through_two:.0} flows/s"),
        format!("{through_one:.0} flows/s through 1 API node"),
        through_two / through_one,
        Target::Reported,
        &format!("one run of {seconds} s each"),
    ));
    rows.push(Row::absolute(
        "PostgreSQL load of the cluster's trivial flows: transactions per flow, and committed per second at the \
         1-API-node rate (the whole flow: agreement, events, nonces, job claim and commit)",
        format!("{per_flow:.0} transactions per flow; {commits_per_sec:.0}/s at {through_one:.0} flows/s"),
        per_flow,
        Target::Reported,
        &format!("xact_commit of pg_stat_database, over {n} sequential flows and {seconds} s of load"),
    ));

    progress(&format!("recovery after a worker is killed mid-job (lease {LEASE_SECS} s)"));
    let recoveries = ctx.runs(3, 1);
    let mut waits = Vec::new();
    for r in 0..recoveries {
        let wait = recovery(&mut cluster, &urls, did, &mandelbrot, &outs.path().join(format!("kill-{r}")))
            .await
            .map_err(|e| log(e, &cluster))?;
        waits.push(wait.as_secs_f64());
    }
    let wait = median_f64(&mut waits);
    rows.push(Row::ratio(
        "recovery after a worker is SIGKILLed mid-job: from the kill to the job running on another worker",
        format!("{wait:.2} s"),
        format!("{LEASE_SECS} s lease"),
        wait / f64::from(LEASE_SECS),
        Target::Reported,
        &format!("median of {recoveries} kills"),
    ));
    Ok(rows)
}

/// Starts a long job, kills the worker running it, and times until another worker holds
/// it; then waits for the job to succeed and starts a replacement worker.
async fn recovery(
    cluster: &mut Cluster,
    urls: &[&str],
    did: Did,
    module: &(Vec<u8>, String),
    out: &std::path::Path,
) -> Result<Duration> {
    let c = consumer(urls).await?;
    let (c2, module, out) = (c.clone(), module.clone(), out.to_path_buf());
    let args: Vec<String> = LONG.iter().map(|a| a.to_string()).collect();
    let run = tokio::spawn(async move { flow(&c2, did, &module, &args, &out).await });
    let (job, victim) = loop {
        let row =
            cluster.pg.psql("SELECT id FROM jobs WHERE status = 40 AND attempts = 1 ORDER BY created_at DESC LIMIT 1");
        if !row.is_empty()
            && let Some(w) = cluster.runner_of(&row)
        {
            break (row, w);
        }
        ensure!(!run.is_finished(), "the long job ended before it could be caught running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.workers[victim].kill();
    let killed = Instant::now();
    loop {
        let row = cluster.pg.psql(&format!("SELECT status, attempts FROM jobs WHERE id = '{job}'"));
        if row.starts_with("40|") && !row.ends_with("|1") {
            break;
        }
        ensure!(killed.elapsed() < Duration::from_secs(120), "job {job} was never re-run: {row}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wait = killed.elapsed();
    run.await??;
    cluster.workers.remove(victim);
    cluster.add_worker();
    Ok(wait)
}

/// The last lines of every node's log.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().rev().take(40).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
