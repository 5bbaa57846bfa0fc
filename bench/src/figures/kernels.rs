//! The examples' compute kernels: wasm on the production engine (v2: NaN canonicalization,
//! fuel, the stack limit and the wall-clock stop all done by the module itself) against the
//! same Rust code built natively; fuel metering on against off; the wall-clock stop (the
//! module's interrupt check, and wasmtime's epochs it replaced) against none. Reported beside
//! them: the legacy engine of version-1 receipts (wasmtime fuel, Cranelift's eager
//! canonicalization), which shows what the admission pass saved, and the floor: the module
//! with no NaN canonicalization, no fuel and no wall-clock stop, an engine no job runs on, which
//! shows what Cranelift's code costs by itself (see the README's "Benchmarks" section).
//!
//! Both sides are the `kernels` program of `bench/kernels`: natively a subprocess, in wasm a
//! job through the runtime. Each run generates its input, then runs the kernel `reps` times;
//! the kernel's own time is `(t(reps) - t(0)) / reps`, so generation, process start and
//! instantiation cancel out.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tidepool_bench_kernels::KERNELS;
use tidepool_runtime::{Algorithm, JobSpec, Limits, Runtime, RuntimeConfig, Semantics};

use crate::env::{Ctx, progress};
use crate::timing::{Row, Target, median_of, millis};

/// One way of running the kernels program.
enum Side<'a> {
    Native(&'a std::path::Path),
    Wasm(&'a Runtime, &'a Algorithm, Semantics),
}

impl Side<'_> {
    /// Runs `kernel` `reps` times; returns the wall time and the printed checksum.
    fn run(&self, ctx: &Ctx, kernel: &str, reps: u32) -> Result<(Duration, String)> {
        let args = ["--kernel".to_string(), kernel.to_string(), "--reps".to_string(), reps.to_string()];
        match self {
            Side::Native(program) => {
                let start = Instant::now();
                let out = Command::new(program).args(&args).output()?;
                let elapsed = start.elapsed();
                ensure!(out.status.success(), "native kernels failed: {}", String::from_utf8_lossy(&out.stderr));
                Ok((elapsed, String::from_utf8_lossy(&out.stdout).trim().to_string()))
            }
            Side::Wasm(runtime, algorithm, semantics) => {
                let out = tempfile::tempdir_in(ctx.fast.path())?;
                let mut spec = JobSpec::new((*algorithm).clone(), Vec::new(), out.path().join("out"));
                spec.args = args.to_vec();
                spec.limits = Limits { fuel: u64::MAX / 2, timeout_ms: 600_000, ..Limits::default() };
                let start = Instant::now();
                let result = runtime.run_with(&spec, *semantics)?;
                let elapsed = start.elapsed();
                ensure!(
                    result.receipt.outcome.is_success(),
                    "the kernels job {}: {}",
                    result.receipt.outcome,
                    String::from_utf8_lossy(&result.stderr)
                );
                Ok((elapsed, String::from_utf8_lossy(&result.stdout).trim().to_string()))
            }
        }
    }
}

/// Per-repetition kernel time of each side, and the checksum each printed.
struct Measured {
    per_rep: Vec<Duration>,
    checksums: Vec<String>,
}

fn measure(ctx: &Ctx, sides: &[Side<'_>], kernel: &str, reps: u32, runs: usize) -> Result<Measured> {
    let mut full = vec![Vec::new(); sides.len()];
    let mut empty = vec![Vec::new(); sides.len()];
    let mut checksums = vec![String::new(); sides.len()];
    for side in sides {
        side.run(ctx, kernel, 1)?; // warm up: compile, page cache
    }
    for _ in 0..runs {
        for (i, side) in sides.iter().enumerate() {
            let (t, sum) = side.run(ctx, kernel, reps)?;
            full[i].push(t);
            checksums[i] = sum;
            empty[i].push(side.run(ctx, kernel, 0)?.0);
        }
    }
    let per_rep =
        (0..sides.len()).map(|i| median_of(&mut full[i]).saturating_sub(median_of(&mut empty[i])) / reps).collect();
    Ok(Measured { per_rep, checksums })
}

/// What each kernel may cost in wasm against native (issue 13): float work has no excuse left.
fn target(kernel: &str) -> f64 {
    if kernel == "mandelbrot" { 1.3 } else { 1.6 }
}

/// Each kernel in wasm on the production engine against its native build, and the costs of
/// fuel metering, of the wall-clock stop (the module's interrupt check, and wasmtime's epochs
/// it replaced) and of the legacy engine.
pub fn kernels(ctx: &Ctx) -> Result<Vec<Row>> {
    let native = ctx.native("kernels")?;
    let algorithm =
        Algorithm::from_file(&tidepool_test_artifacts::module("kernels")).context("reading kernels.wasm")?;
    let production = Runtime::new(RuntimeConfig::default());
    let no_fuel = Runtime::new(RuntimeConfig { fuel_metering: false, ..RuntimeConfig::default() });
    let no_stop = Runtime::new(RuntimeConfig { interrupt_check: false, ..RuntimeConfig::default() });
    let epochs_instead =
        Runtime::new(RuntimeConfig { interrupt_check: false, epoch_interruption: true, ..RuntimeConfig::default() });
    let floor = Runtime::new(RuntimeConfig {
        nan_canonicalization: false,
        fuel_metering: false,
        interrupt_check: false,
        ..RuntimeConfig::default()
    });
    let sides = [
        Side::Native(&native),
        Side::Wasm(&production, &algorithm, Semantics::V2),
        Side::Wasm(&no_fuel, &algorithm, Semantics::V2),
        Side::Wasm(&no_stop, &algorithm, Semantics::V2),
        Side::Wasm(&production, &algorithm, Semantics::Legacy),
        Side::Wasm(&epochs_instead, &algorithm, Semantics::V2),
        Side::Wasm(&floor, &algorithm, Semantics::V2),
    ];
    let (reps, runs) = (ctx.runs(4, 1) as u32, ctx.runs(5, 1));
    let runs_text = format!("median of {runs} runs × {reps} repetitions, minus input generation");
    let (mut speed, mut metering, mut stops, mut epochs, mut legacy, mut floors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for kernel in KERNELS {
        progress(&format!(
            "the {kernel} kernel natively, in wasm, without fuel, without a wall-clock stop, on the legacy engine, \
             with epochs, and with no check at all"
        ));
        let m = measure(ctx, &sides, kernel, reps, runs)?;
        let [native_t, wasm_t, free_t, no_stop_t, legacy_t, epochs_t, floor_t] =
            [m.per_rep[0], m.per_rep[1], m.per_rep[2], m.per_rep[3], m.per_rep[4], m.per_rep[5], m.per_rep[6]];
        let same = m.checksums.iter().all(|c| *c == m.checksums[0]);
        let mut row = Row::ratio(
            &format!("{kernel} kernel, wasm (v2 engine: pass-made NaN canonicalization, fuel and stack limit)"),
            millis(wasm_t),
            format!("{} (the same Rust code built natively)", millis(native_t)),
            wasm_t.as_secs_f64() / native_t.as_secs_f64(),
            Target::AtMost(target(kernel), "×"),
            &runs_text,
        );
        if !same {
            row = row.fail_because(&format!("results differ: {}", m.checksums.join(" / ")));
        }
        speed.push(row);
        metering.push(Row::ratio(
            &format!("fuel metering on, {kernel} kernel"),
            millis(wasm_t),
            format!("{} (the same run with fuel off)", millis(free_t)),
            wasm_t.as_secs_f64() / free_t.as_secs_f64(),
            Target::AtMost(1.3, "×"),
            &runs_text,
        ));
        // A wall-clock stop's cost: the run with it (`t`) against the run with none.
        let stop_cost = |how: &str, t: Duration| {
            Row::ratio(
                &format!("the wall-clock stop by {how}, {kernel} kernel"),
                millis(t),
                format!("{} (the same run with no wall-clock stop)", millis(no_stop_t)),
                t.as_secs_f64() / no_stop_t.as_secs_f64(),
                Target::Reported,
                &runs_text,
            )
        };
        stops.push(stop_cost("the module's interrupt check (the default)", wasm_t));
        epochs.push(stop_cost("wasmtime's epochs instead (what the check replaced)", epochs_t));
        legacy.push(Row::ratio(
            &format!(
                "{kernel} kernel on the legacy engine (version-1 receipts: eager canonicalization, wasmtime fuel)"
            ),
            millis(legacy_t),
            format!("{} (the same Rust code built natively)", millis(native_t)),
            legacy_t.as_secs_f64() / native_t.as_secs_f64(),
            Target::Reported,
            &runs_text,
        ));
        floors.push(Row::ratio(
            &format!(
                "{kernel} kernel with no NaN canonicalization, fuel or wall-clock stop (no job runs so: the floor, \
                 Cranelift's code by itself)"
            ),
            millis(floor_t),
            format!("{} (the same Rust code built natively)", millis(native_t)),
            floor_t.as_secs_f64() / native_t.as_secs_f64(),
            Target::Reported,
            &runs_text,
        ));
    }
    speed.extend(metering);
    speed.extend(stops);
    speed.extend(epochs);
    speed.extend(legacy);
    speed.extend(floors);
    Ok(speed)
}
