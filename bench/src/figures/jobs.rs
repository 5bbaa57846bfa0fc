//! Trivial jobs: the per-job overhead of the runtime against a minimal embedding of the same
//! wasmtime, and jobs per second on all cores.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tidepool_runtime::{Algorithm, JobSpec, Runtime, RuntimeConfig};

use crate::baseline::StockP1;
use crate::env::{Ctx, describe_dir, progress};
use crate::timing::{Row, Target, median_f64, median_of, micros};

fn noop() -> Result<Algorithm> {
    Algorithm::from_file(&tidepool_test_artifacts::module("noop")).context("reading the noop module")
}

/// Runs one trivial job whose outputs go to `out`.
fn job(runtime: &Runtime, algorithm: &Algorithm, out: &Path) -> Result<()> {
    let result = runtime.run(&JobSpec::new(algorithm.clone(), Vec::new(), out))?;
    ensure!(result.receipt.outcome.is_success(), "the trivial job {}", result.receipt.outcome);
    Ok(())
}

/// Mean time per job over `batch` jobs of each kind, alternating which goes first, per round;
/// medians over the rounds.
fn overhead(dir: &Path, rounds: usize, batch: usize) -> Result<(Duration, Duration)> {
    let algorithm = noop()?;
    let stock = StockP1::new(algorithm.bytes()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let runtime = Runtime::new(RuntimeConfig::default());
    let stock_batch = || -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..batch {
            stock.run(None).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        }
        Ok(start.elapsed() / batch as u32)
    };
    let ours_batch = |round: usize| -> Result<Duration> {
        let round_dir = tempfile::Builder::new().prefix(&format!("round-{round}-")).tempdir_in(dir)?;
        let outs: Vec<_> = (0..batch).map(|i| round_dir.path().join(i.to_string())).collect();
        let start = Instant::now();
        for out in &outs {
            job(&runtime, &algorithm, out)?;
        }
        let per_job = start.elapsed() / batch as u32;
        drop(round_dir); // cleaning up is not part of a job
        Ok(per_job)
    };
    // Warm both up: compile, first instantiation, page cache.
    stock_batch()?;
    ours_batch(usize::MAX)?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            base.push(stock_batch()?);
            ours.push(ours_batch(round)?);
        } else {
            ours.push(ours_batch(round)?);
            base.push(stock_batch()?);
        }
    }
    Ok((median_of(&mut ours), median_of(&mut base)))
}

/// Per-job overhead with job directories on the fast filesystem (the target) and on the disk.
pub fn per_job_overhead(ctx: &Ctx) -> Result<Vec<Row>> {
    let (rounds, batch) = (ctx.runs(21, 5), ctx.runs(200, 50));
    let runs = format!("median of {rounds} rounds × {batch} jobs each");
    let mut rows = Vec::new();
    for (dir, judged) in [(ctx.fast.path(), true), (ctx.disk.path(), false)] {
        let place = describe_dir(dir);
        progress(&format!("per-job overhead, job directories in {place}"));
        let (ours, base) = overhead(dir, rounds, batch)?;
        let figure = format!(
            "per-job overhead of a trivial job through the runtime (stage, instantiate, run, hash, receipt), \
             output directories in {place}"
        );
        let target = if judged { Target::AtMost(1.2, "×") } else { Target::Reported };
        rows.push(Row::ratio(
            &figure,
            micros(ours),
            format!("{} (minimal wasmtime + wasmtime-wasi p1: instantiate, run `_start`)", micros(base)),
            ours.as_secs_f64() / base.as_secs_f64(),
            target,
            &runs,
        ));
    }
    Ok(rows)
}

/// Trivial jobs per second through the runtime API, one thread per core.
pub fn jobs_per_second(ctx: &Ctx) -> Result<Row> {
    progress("trivial jobs per second on all cores");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (reps, seconds) = (ctx.runs(3, 1), if ctx.quick { 0.5 } else { 2.0 });
    let algorithm = noop()?;
    let runtime = Runtime::new(RuntimeConfig::default());
    job(&runtime, &algorithm, &ctx.fast.path().join("jobs-warm-up"))?;
    let mut rates = Vec::new();
    for rep in 0..reps {
        let dir = tempfile::Builder::new().prefix(&format!("jobs-{rep}-")).tempdir_in(ctx.fast.path())?;
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let failed = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (runtime, algorithm, dir, done, stop) = (&runtime, &algorithm, dir.path(), &done, &stop);
                    s.spawn(move || -> Result<()> {
                        for i in 0.. {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            job(runtime, algorithm, &dir.join(format!("{t}-{i}")))?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
            workers.into_iter().map(|w| w.join().expect("a worker panicked")).find_map(Result::err)
        });
        let elapsed = start.elapsed();
        if let Some(e) = failed {
            return Err(e);
        }
        rates.push(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64());
    }
    let rate = median_f64(&mut rates);
    Ok(Row::absolute(
        &format!("trivial jobs per second through the runtime API, {threads} threads (all cores)"),
        format!("{rate:.0} jobs/s"),
        rate,
        Target::AtLeast(1000.0, "/s"),
        &format!("median of {reps} × {seconds} s"),
    ))
}
