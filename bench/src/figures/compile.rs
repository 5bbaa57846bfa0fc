//! Starting a module whose compiled code is cached against compiling it first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tidepool_runtime::{Algorithm, InputSpec, JobEvent, JobSpec, Runtime, RuntimeConfig, Stage};

use crate::env::{Ctx, progress};
use crate::timing::{Row, Target, median_of, micros, millis};

/// Time from asking for the job to the guest starting (the `running` stage).
fn start_time(ctx: &Ctx, runtime: &Runtime, algorithm: &Algorithm, data: &std::path::Path) -> Result<Duration> {
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let out = tempfile::tempdir_in(ctx.fast.path())?;
    let mut spec = JobSpec::new(algorithm.clone(), vec![InputSpec::new("weather", data)], out.path().join("out"));
    let seen = started.clone();
    spec.events = Some(Arc::new(move |e| {
        if e == JobEvent::Stage(Stage::Running) {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }));
    let asked = Instant::now();
    let result = runtime.run(&spec)?;
    ensure!(result.receipt.outcome.is_success(), "the csv-stats job {}", result.receipt.outcome);
    let started = started.lock().unwrap_or_else(|p| p.into_inner()).context("the job never reached `running`")?;
    Ok(started - asked)
}

/// Time to start a module (csv-stats) when its compiled code is cached in memory, and when it
/// is cached on disk for a new runtime, against compiling it.
pub fn compile_cache(ctx: &Ctx) -> Result<Vec<Row>> {
    progress("starting a module cold (compiling) and cached");
    let algorithm = Algorithm::from_file(&tidepool_test_artifacts::module("csv-stats"))?;
    let noop = Algorithm::from_file(&tidepool_test_artifacts::module("noop"))?;
    let data = ctx.fast.path().join("compile-data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("cities.csv"), "city,temp\nOslo,3.5\nLima,19\n")?;
    let fresh = |cache_dir: Option<std::path::PathBuf>| -> Result<Runtime> {
        let runtime = Runtime::new(RuntimeConfig { cache_dir, ..RuntimeConfig::default() });
        // The engine is made once per process: not part of a module's start.
        start_time(ctx, &runtime, &noop, &data)?;
        Ok(runtime)
    };
    let (cold_runs, warm_runs) = (ctx.runs(5, 1), ctx.runs(21, 3));
    let mut cold = Vec::new();
    for _ in 0..cold_runs {
        cold.push(start_time(ctx, &fresh(None)?, &algorithm, &data)?);
    }
    let runtime = fresh(None)?;
    start_time(ctx, &runtime, &algorithm, &data)?;
    let mut warm = (0..warm_runs).map(|_| start_time(ctx, &runtime, &algorithm, &data)).collect::<Result<Vec<_>>>()?;
    let cache = ctx.disk.path().join("compile-cache");
    start_time(ctx, &fresh(Some(cache.clone()))?, &algorithm, &data)?;
    let mut disk = Vec::new();
    for _ in 0..cold_runs {
        disk.push(start_time(ctx, &fresh(Some(cache.clone()))?, &algorithm, &data)?);
    }
    let (cold, warm, disk) = (median_of(&mut cold), median_of(&mut warm), median_of(&mut disk));
    let size = algorithm.bytes().len() / 1024;
    Ok(vec![
        Row::ratio(
            &format!("second run of a module ({size} KiB, csv-stats), compiled code cached in memory: time to start"),
            micros(warm),
            format!("{} (first run: compile)", millis(cold)),
            cold.as_secs_f64() / warm.as_secs_f64(),
            Target::AtLeast(50.0, "× faster"),
            &format!("median of {warm_runs} (cached) and {cold_runs} (cold) runs"),
        ),
        Row::ratio(
            "first run of a module in a new process, compiled code cached on disk: time to start",
            micros(disk),
            format!("{} (first run: compile)", millis(cold)),
            cold.as_secs_f64() / disk.as_secs_f64(),
            Target::Reported,
            &format!("median of {cold_runs} runs"),
        ),
    ])
}
