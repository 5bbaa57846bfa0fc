//! `tidepool-bench [--quick] [--out FILE] [--only NAME]...`: measures every figure against its
//! baseline in the same run and prints a table (figure, value, baseline, ratio, target, runs,
//! pass/fail), also written to `FILE` (default `target/bench/results.md`). Exits 1 when a
//! judged figure misses its target. Run it through `scripts/bench.sh`, which builds the native
//! programs it compares against.
//!
//! Figure groups (`--only`): `jobs`, `kernels`, `io`, `compile`, `python`, `http`, `load`, `cluster`, `chain`, `memory`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tidepool_bench::env::{Ctx, machine};
use tidepool_bench::figures::{cluster, compile, http, io, jobs, kernels, load, python};
use tidepool_bench::timing::{Row, table};

const GROUPS: &[&str] = &["jobs", "kernels", "io", "compile", "python", "http", "load", "cluster", "chain", "memory"];

struct Args {
    quick: bool,
    out: PathBuf,
    only: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args { quick: false, out: PathBuf::from("target/bench/results.md"), only: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().context("--out needs a file")?.into(),
            "--only" => {
                let group = it.next().context("--only needs a group")?;
                if !GROUPS.contains(&group.as_str()) {
                    bail!("unknown group `{group}`; groups: {}", GROUPS.join(", "));
                }
                a.only.push(group);
            }
            "-h" | "--help" => {
                println!(
                    "usage: tidepool-bench [--quick] [--out FILE] [--only GROUP]...\ngroups: {}",
                    GROUPS.join(", ")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let args = args()?;
    let ctx = Ctx::new(args.quick)?;
    let wanted = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    eprintln!("tidepool-bench{}: {}", if args.quick { " (quick)" } else { "" }, machine());
    if wanted("jobs") {
        rows.extend(jobs::per_job_overhead(&ctx)?);
        rows.push(jobs::jobs_per_second(&ctx)?);
    }
    if wanted("kernels") {
        rows.extend(kernels::kernels(&ctx)?);
    }
    if wanted("io") {
        let (files, size) = if args.quick { (4, 4 << 20) } else { (16, 16 << 20) };
        eprintln!("  generating a {} MiB text dataset...", (files * size) >> 20);
        let data = io::dataset(ctx.disk.path(), files, size)?;
        rows.extend(io::wordfreq(&ctx, &data)?);
        rows.push(io::hashing(&ctx, &data)?);
    }
    if wanted("compile") {
        rows.extend(compile::compile_cache(&ctx)?);
    }
    if wanted("python") {
        let (files, size) = if args.quick { (1, 1 << 20) } else { (4, 2 << 20) };
        let data = io::dataset(&ctx.disk.path().join("python"), files, size)?;
        rows.extend(python::python(&ctx, &data)?);
    }
    if ["http", "load", "cluster", "chain", "memory"].iter().any(|g| wanted(g)) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        if wanted("http") {
            rows.extend(rt.block_on(http::flows(&ctx))?);
        }
        if wanted("load") {
            rows.push(rt.block_on(load::load(&ctx))?);
        }
        if wanted("cluster") {
            rows.extend(rt.block_on(cluster::cluster(&ctx))?);
        }
        if wanted("chain") {
            rows.extend(rt.block_on(http::chain_flows(&ctx))?);
        }
        if wanted("memory") {
            rows.push(rt.block_on(http::memory(&ctx))?);
        }
    }
    let report = format!(
        "# Tidepool benchmark\n\n{}\n\nTotal time {:.0} s{}.\n\n{}",
        machine(),
        started.elapsed().as_secs_f64(),
        if args.quick { " (quick mode: fewer runs, smaller inputs; not the figures of record)" } else { "" },
        table(&rows)
    );
    println!("{report}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &report).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("written to {}", args.out.display());
    Ok(rows.iter().all(|r| r.pass != Some(false)))
}
