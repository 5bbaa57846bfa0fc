//! The whole agreement flow over HTTP against a real `tidepool serve` (embedded keeper,
//! durable SQLite on disk): latency of one consumer, throughput of sixteen, and the daemon's
//! peak memory while a hundred small jobs run at once; and the same flow with the agreement
//! on a local chain (anvil, the contracts deployed, consumers paying from their wallets).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, Result, anyhow, ensure};
use tidepool_provider::client::Client;
use tidepool_provider::client::flow::{AlgorithmChoice, ComputeRequest};
use tidepool_provider::protocol::api::{PublishRequest, ServiceLimits};
use tidepool_provider::protocol::ddo::{AssetKind, Did};
use tidepool_test_artifacts::daemon::Daemon;

use crate::env::{Ctx, describe_dir, progress};
use crate::timing::{Row, Target, median_f64, millis, percentile};

/// A daemon with one published dataset.
struct Provider {
    daemon: Daemon,
    did: Did,
}

async fn provider(ctx: &Ctx, args: &[&str], limits: ServiceLimits) -> Result<Provider> {
    let cache = ctx.disk.path().join("daemon-compile-cache");
    let daemon = Daemon::start(&ctx.native("tidepool")?, &daemon_env(&cache), args);
    publish(ctx, daemon, limits).await
}

/// The environment of the bench's daemons: the compile cache `cache`, no per-peer rate limit
/// or bound on a peer's requests in progress (every consumer of the bench is the same loopback peer, where a provider's real clients
/// are many), and room for sixteen consumers' uploads at once (the default, 8, answers the
/// ninth 503).
pub(crate) fn daemon_env(cache: &Path) -> [(&'static str, &Path); 4] {
    [
        ("TIDEPOOL_CACHE_DIR", cache),
        ("TIDEPOOL_RATE_LIMIT", Path::new("0")),
        ("TIDEPOOL_MAX_REQUESTS_PER_PEER", Path::new("0")),
        ("TIDEPOOL_MAX_CONCURRENT_UPLOADS", Path::new("64")),
    ]
}

/// Publishes the benchmark's dataset on `daemon`.
async fn publish(ctx: &Ctx, daemon: Daemon, limits: ServiceLimits) -> Result<Provider> {
    let did = publish_on(ctx, &daemon, limits).await?;
    Ok(Provider { daemon, did })
}

/// Publishes the benchmark's dataset on `daemon` (as its operator); its DID.
pub(crate) async fn publish_on(ctx: &Ctx, daemon: &Daemon, limits: ServiceLimits) -> Result<Did> {
    let key = tidepool_provider::keys::load(&daemon.key_file()).map_err(|e| anyhow!("{e}"))?;
    let operator = Client::connect(&daemon.url, key).await?;
    let data = tempfile::tempdir_in(ctx.fast.path())?;
    std::fs::write(data.path().join("dickens.txt"), "It was the best of times, it was the worst of times.\n")?;
    let request = PublishRequest {
        name: "bench".into(),
        description: String::new(),
        author: String::new(),
        license: String::new(),
        kind: AssetKind::Dataset,
        price_per_fuel: Some(U256::from(1)),
        limits,
        trusted_algorithms: None,
        timeouts: Default::default(),
        environment: None,
    };
    Ok(operator.publish_dirs(&[("books".to_string(), data.path().to_path_buf())], &request).await?.did)
}

async fn consumer(url: &str) -> Result<Client> {
    let c = Client::connect(url, PrivateKeySigner::random()).await?;
    c.faucet().await?;
    Ok(c)
}

/// One whole flow: initialize, upload, lock, grant, exec, run, release, download, check.
pub(crate) async fn flow(
    c: &Client,
    did: Did,
    module: &(Vec<u8>, String),
    args: &[String],
    out: &Path,
) -> Result<Duration> {
    let req = ComputeRequest {
        did,
        algorithm: AlgorithmChoice::Module(module.0.clone(), module.1.clone()),
        args: args.to_vec(),
        not_before: None,
        output_dir: out.to_path_buf(),
        wait: Duration::from_secs(300),
    };
    let start = Instant::now();
    let outcome = c.compute(&req, |_| {}).await?;
    let elapsed = start.elapsed();
    ensure!(outcome.receipt.outcome.is_success(), "the job {}", outcome.receipt.outcome);
    Ok(elapsed)
}

/// p50 and p99 of `n` flows run one after the other by `c`, after `warm_up` unmeasured ones.
pub(crate) async fn sequential(
    c: &Client,
    did: Did,
    module: &(Vec<u8>, String),
    outs: &Path,
    n: usize,
    warm_up: usize,
) -> Result<(Duration, Duration)> {
    let mut latencies = Vec::new();
    for i in 0..n + warm_up {
        let t = flow(c, did, module, &[], &outs.join(format!("seq-{i}"))).await?;
        if i >= warm_up {
            latencies.push(t);
        }
    }
    Ok((percentile(&mut latencies, 50.0), percentile(&mut latencies, 99.0)))
}

/// How long each client of [`concurrent`] goes on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Until {
    /// Until this many seconds have passed (the flow under way is finished).
    Seconds(f64),
    /// This many flows each.
    Flows(usize),
}

/// `clients` each run flows of `module` with `args`, one after another, all clients at once;
/// every flow's time. Outputs go under `out/TAG-K-I`.
pub(crate) async fn concurrent(
    clients: &[Arc<Client>],
    did: Did,
    (module, args): (&(Vec<u8>, String), &[String]),
    until: Until,
    out: &Path,
    tag: &str,
) -> Result<Vec<Duration>> {
    let deadline = match until {
        Until::Seconds(s) => Some(Instant::now() + Duration::from_secs_f64(s)),
        Until::Flows(_) => None,
    };
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (c, module, args, dir) = (c.clone(), module.clone(), args.to_vec(), out.join(format!("{tag}-{k}")));
            tokio::spawn(async move {
                let mut times = Vec::new();
                while match (deadline, until) {
                    (Some(deadline), _) => Instant::now() < deadline,
                    (None, Until::Flows(n)) => times.len() < n,
                    (None, Until::Seconds(_)) => false,
                } {
                    times.push(flow(&c, did, &module, &args, &dir.join(times.len().to_string())).await?);
                }
                Ok::<_, anyhow::Error>(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn module(name: &str) -> Result<(Vec<u8>, String)> {
    Ok((std::fs::read(tidepool_test_artifacts::module(name))?, name.to_string()))
}

/// p50 and p99 of sequential flows, and flows per second with sixteen consumers.
pub async fn flows(ctx: &Ctx) -> Result<Vec<Row>> {
    let p = provider(ctx, &[], ServiceLimits::default()).await?;
    let place = describe_dir(&p.daemon.data);
    let noop = module("noop")?;
    let outs = tempfile::tempdir_in(ctx.fast.path())?;
    let (n, warm_up) = (ctx.runs(200, 20), 10);

    progress(&format!("{n} sequential agreement flows over HTTP"));
    let c = consumer(&p.daemon.url).await?;
    let (p50, p99) = sequential(&c, p.did, &noop, outs.path(), n, warm_up).await.map_err(|e| log(e, &p))?;

    progress(&format!("{n} sequential flows with jobs on the daemon's threads (no worker process)"));
    let threads = provider(ctx, &["--isolation", "in-process"], ServiceLimits::default()).await?;
    let c_threads = consumer(&threads.daemon.url).await?;
    let threads_outs = tempfile::tempdir_in(ctx.fast.path())?;
    let (threads_p50, _) = sequential(&c_threads, threads.did, &noop, threads_outs.path(), n, warm_up)
        .await
        .map_err(|e| log(e, &threads))?;
    drop(threads);

    let consumers = 16;
    let seconds = if ctx.quick { 2.0 } else { 10.0 };
    progress(&format!("agreement flows over HTTP with {consumers} concurrent consumers for {seconds} s"));
    let mut clients = Vec::new();
    for _ in 0..consumers {
        clients.push(Arc::new(consumer(&p.daemon.url).await?));
    }
    let reps = ctx.runs(3, 1);
    let mut rates = Vec::new();
    let mut loaded = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        let times =
            concurrent(&clients, p.did, (&noop, &[]), Until::Seconds(seconds), outs.path(), &format!("par-{rep}"))
                .await
                .map_err(|e| log(e, &p))?;
        let done = times.len();
        loaded.extend(times);
        rates.push(done as f64 / start.elapsed().as_secs_f64());
    }
    let rate = median_f64(&mut rates);
    let loaded_p50 = percentile(&mut loaded, 50.0);
    Ok(vec![
        Row::absolute(
            &format!(
                "full agreement flow over HTTP (initialize → upload → lock → grant → exec → receipt and outputs \
                 downloaded and checked), trivial module, embedded keeper, SQLite with synchronous=FULL in {place}: p50"
            ),
            format!("p50 {}, p99 {}", millis(p50), millis(p99)),
            p50.as_secs_f64() * 1e3,
            Target::AtMost(20.0, " ms p50"),
            &format!("{n} sequential flows after {warm_up} warm-up"),
        ),
        Row::ratio(
            "per-job cost of the second sandbox: the same flow's p50 with each job in a confined worker process \
             (Landlock, seccomp, rlimits; the default) against jobs on the daemon's threads",
            format!("{} (+{:.2} ms per job)", millis(p50), (p50.as_secs_f64() - threads_p50.as_secs_f64()) * 1e3),
            format!("{} in-process", millis(threads_p50)),
            p50.as_secs_f64() / threads_p50.as_secs_f64(),
            Target::Reported,
            &format!("{n} sequential flows after {warm_up} warm-up, each way"),
        ),
        Row::absolute(
            &format!("full flows per second with {consumers} concurrent consumers (same daemon and client)"),
            format!("{rate:.0} flows/s (p50 under load {})", millis(loaded_p50)),
            rate,
            Target::AtLeast(200.0, " flows/s"),
            &format!("median of {reps} × {seconds} s"),
        ),
    ])
}

/// The agreement on a local chain: p50 of sequential flows and flows per second with three
/// consumers (the funded development keys 1 to 3; key 0 is the provider's), each flow sending the
/// provider's and the consumer's transactions (create, lock, upload, grant, release, publish).
pub async fn chain_flows(ctx: &Ctx) -> Result<Vec<Row>> {
    use tidepool_chain::anvil::{Anvil, dev_key};
    let anvil = Anvil::spawn().await.context("starting anvil (scripts/setup.sh installs it)")?;
    let (contracts, _) = tidepool_chain::deploy(anvil.endpoint(), dev_key(0)?, Default::default()).await?;
    let file = ctx.disk.path().join("contracts.json");
    contracts.write(&file)?;
    let cache = ctx.disk.path().join("daemon-compile-cache");
    let args = ["--chain-rpc", anvil.endpoint(), "--contracts", file.to_str().context("a UTF-8 path")?];
    let daemon = Daemon::start_with(&ctx.native("tidepool")?, &daemon_env(&cache), &args, |data| {
        let _ = tidepool_provider::keys::save(&data.join("provider.key"), &dev_key(0).expect("anvil's key 0"));
    });
    let p = publish(ctx, daemon, ServiceLimits::default()).await?;
    let noop = module("noop")?;
    let outs = tempfile::tempdir_in(ctx.fast.path())?;
    let wallet = |k: usize| {
        let (url, rpc, contracts) = (p.daemon.url.clone(), anvil.endpoint().to_string(), contracts.clone());
        async move {
            let c = Client::connect(&url, dev_key(k)?).await?.with_wallet(&rpc, contracts).await?;
            c.faucet().await?;
            Ok::<_, anyhow::Error>(c)
        }
    };

    let (n, warm_up) = (ctx.runs(50, 10), 3);
    progress(&format!("{n} sequential agreement flows with the agreement on anvil"));
    let c = wallet(1).await?;
    let (p50, p99) = sequential(&c, p.did, &noop, outs.path(), n, warm_up).await.map_err(|e| log(e, &p))?;

    let consumers = tidepool_chain::anvil::DEV_KEYS.len() - 1;
    let seconds = if ctx.quick { 3.0 } else { 10.0 };
    progress(&format!("agreement flows on anvil with {consumers} concurrent consumers for {seconds} s"));
    let mut clients = Vec::new();
    for k in 1..=consumers {
        clients.push(Arc::new(wallet(k).await?));
    }
    let start = Instant::now();
    let done = concurrent(&clients, p.did, (&noop, &[]), Until::Seconds(seconds), outs.path(), "par")
        .await
        .map_err(|e| log(e, &p))?
        .len();
    let rate = done as f64 / start.elapsed().as_secs_f64();
    Ok(vec![
        Row::absolute(
            "full agreement flow with the agreement on a local chain (anvil, automine; the provider's and the \
             consumer's transactions, events read from logs), trivial module: p50",
            format!("p50 {}, p99 {}", millis(p50), millis(p99)),
            p50.as_secs_f64() * 1e3,
            Target::Reported,
            &format!("{n} sequential flows after {warm_up} warm-up"),
        ),
        Row::absolute(
            &format!("full flows per second on the local chain with {consumers} concurrent consumers"),
            format!("{rate:.1} flows/s"),
            rate,
            Target::Reported,
            &format!("one run of {seconds} s"),
        ),
    ])
}

/// Peak resident memory of the daemon while it runs `jobs` small jobs at once.
pub async fn memory(ctx: &Ctx) -> Result<Row> {
    let jobs = ctx.runs(100, 20);
    let (job_mib, limit_mib) = (8u64, 16u64);
    let concurrent = jobs.to_string();
    let limits = ServiceLimits { memory_bytes: Some(limit_mib << 20), ..ServiceLimits::default() };
    let p = provider(ctx, &["--max-concurrent-jobs", &concurrent], limits).await?;
    let pid = p.daemon.pid().context("the daemon is not running")?;
    let idle = status_kib(pid, "VmRSS")? * 1024;
    progress(&format!("peak daemon memory with {jobs} concurrent jobs holding {job_mib} MiB each"));
    let hold = module("hold")?;
    let outs = tempfile::tempdir_in(ctx.fast.path())?;
    let mut clients = Vec::new();
    for _ in 0..jobs {
        clients.push(Arc::new(consumer(&p.daemon.url).await?));
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            let (did, hold, dir) = (p.did, hold.clone(), outs.path().join(format!("mem-{k}")));
            tokio::spawn(async move { flow(&c, did, &hold, &[job_mib.to_string(), "3".into()], &dir).await })
        })
        .collect();
    for t in tasks {
        t.await?.map_err(|e| log(e, &p))?;
    }
    let elapsed = start.elapsed();
    let peak = status_kib(pid, "VmHWM")? * 1024;
    let bound = idle + jobs as u64 * (limit_mib << 20);
    Ok(Row::absolute(
        &format!(
            "peak memory of the daemon while running {jobs} concurrent small jobs (each touching {job_mib} MiB; \
             memory limit {limit_mib} MiB; max_concurrent_jobs {jobs})"
        ),
        format!(
            "{} peak RSS ({} idle; {jobs} flows in {:.1} s); bound: idle + jobs × limit = {}",
            crate::timing::mib(peak),
            crate::timing::mib(idle),
            elapsed.as_secs_f64(),
            crate::timing::mib(bound)
        ),
        peak as f64 / bound as f64,
        Target::AtMost(1.0, " of the bound"),
        "one run",
    ))
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Adds the daemon's log to a failure.
fn log(e: anyhow::Error, p: &Provider) -> anyhow::Error {
    let log = p.daemon.log();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    e.context(format!("daemon log (last lines):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")))
}
