//! The measurement behind the runtime's WASI design (see `runtime/src/wasi/mod.rs`):
//! instantiation cost and sequential read throughput of
//!
//! * (a) Tidepool's own preview 1 over its virtual filesystem (full jobs through the runtime),
//! * stock wasmtime-wasi preview 1 (a minimal embedding),
//! * (b) the module as a component behind the preview 1 adapter, on wasmtime-wasi preview 2.
//!
//! `cargo run --release -p tidepool-bench --bin wasi-choice`

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use tidepool_bench::baseline::{Adapted, StockP1, componentize};
use tidepool_bench::timing::{median, mib_per_s, micros};
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Runtime, RuntimeConfig};

const IO_BYTES: usize = 64 << 20;

fn main() -> Result<()> {
    let noop = std::fs::read(tidepool_test_artifacts::module("noop"))?;
    let reader = std::fs::read(tidepool_test_artifacts::module("read_all"))?;
    let work = tempfile::tempdir()?;
    let inputs = work.path().join("inputs");
    std::fs::create_dir_all(inputs.join("data"))?;
    let data: Vec<u8> = (0..IO_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(inputs.join("data/data.bin"), &data)?;
    let manifest = Arc::new(tidepool_runtime::tree::scan(&inputs.join("data"))?);

    let runtime = Runtime::new(RuntimeConfig::default());
    let mut n = 0u32;
    let mut ours = |wasm: &[u8], with_input: bool| -> Result<Vec<u8>> {
        n += 1;
        let alg = Algorithm::new("guest", wasm.to_vec());
        let inputs = if with_input {
            vec![InputSpec { manifest: Some(manifest.clone()), ..InputSpec::new("data", inputs.join("data")) }]
        } else {
            vec![]
        };
        let spec = JobSpec::new(alg, inputs, work.path().join(format!("out-{n}")));
        let r = runtime.run(&spec).context("tidepool run")?;
        ensure!(r.receipt.outcome.is_success(), "guest failed: {}", r.receipt.outcome);
        Ok(r.stdout)
    };
    let stock_noop = StockP1::new(&noop).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let stock_read = StockP1::new(&reader).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let t = Instant::now();
    componentize(&noop).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let componentize_time = t.elapsed();
    let adapted_noop = Adapted::new(&noop).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let adapted_read = Adapted::new(&reader).map_err(|e| anyhow::anyhow!("{e:#}"))?;

    // Each must read every byte.
    let expect = format!("{IO_BYTES}\n").into_bytes();
    ensure!(ours(&reader, true)? == expect, "tidepool read the wrong amount");
    ensure!(
        stock_read.run(Some(&inputs)).map_err(|e| anyhow::anyhow!("{e:#}"))? == expect,
        "stock p1 read the wrong amount"
    );
    ensure!(
        adapted_read.run(Some(&inputs)).map_err(|e| anyhow::anyhow!("{e:#}"))? == expect,
        "adapter read the wrong amount"
    );

    let (runs, io_runs) = (101, 9);
    let a_inst = median(runs, || ours(&noop, false).expect("tidepool noop"));
    let noop_alg = Algorithm::new("guest", noop.clone());
    let limits = tidepool_runtime::Limits::default();
    let a_bare = median(runs, || runtime.bench_bare_run(&noop_alg, &limits).expect("tidepool bare"));
    let p1_inst = median(runs, || stock_noop.run(None).expect("p1 noop"));
    let b_inst = median(runs, || adapted_noop.run(None).expect("adapter noop"));
    let a_io = median(io_runs, || ours(&reader, true).expect("tidepool read"));
    let p1_io = median(io_runs, || stock_read.run(Some(&inputs)).expect("p1 read"));
    let b_io = median(io_runs, || adapted_read.run(Some(&inputs)).expect("adapter read"));

    println!("medians of {runs} runs (instantiate + run a no-op std module) and {io_runs} runs (read 64 MiB)\n");
    println!("| design | instantiate + run _start | read 64 MiB |");
    println!("|---|---|---|");
    println!("| (a) tidepool: own preview 1, bare instantiate + run | {} | |", micros(a_bare));
    println!(
        "| (a) tidepool: own preview 1, full job (stage, run, outputs, receipt) | {} | {} |",
        micros(a_inst),
        mib_per_s(IO_BYTES as u64, a_io)
    );
    println!(
        "| stock wasmtime-wasi preview 1, bare instantiate + run | {} | {} |",
        micros(p1_inst),
        mib_per_s(IO_BYTES as u64, p1_io)
    );
    println!(
        "| (b) preview 1 adapter + wasmtime-wasi preview 2, bare | {} | {} |",
        micros(b_inst),
        mib_per_s(IO_BYTES as u64, b_io)
    );
    println!("\n(b) also pays {} once per new algorithm to componentize it.", micros(componentize_time));
    Ok(())
}
