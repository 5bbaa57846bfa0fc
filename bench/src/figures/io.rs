//! Input-heavy work: the word-frequency example over 256 MiB against its native build, and
//! hashing a dataset into its tree root against BLAKE3 over the same bytes in memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Limits, Runtime, RuntimeConfig};

use crate::env::{Ctx, describe_dir, progress};
use crate::timing::{Row, Target, median_of, mib, mib_per_s};

/// A generated text dataset on disk: `<root>/inputs/books/part-NN.txt`.
#[derive(Debug)]
pub struct Dataset {
    /// `<root>/inputs`: the inputs directory a job gets.
    pub inputs: PathBuf,
    /// `<root>/inputs/books`: the one dataset.
    pub books: PathBuf,
    /// Bytes of text in all.
    pub bytes: u64,
}

/// Writes `files` files of `file_size` bytes of text under `dir`.
pub fn dataset(dir: &Path, files: usize, file_size: usize) -> Result<Dataset> {
    let inputs = dir.join("inputs");
    let books = inputs.join("books");
    std::fs::create_dir_all(&books)?;
    for i in 0..files {
        let text = tidepool_bench_kernels::generate_text(i as u64 + 1, file_size);
        std::fs::write(books.join(format!("part-{i:02}.txt")), text)?;
    }
    Ok(Dataset { inputs, books, bytes: (files * file_size) as u64 })
}

/// The word-frequency example over the dataset: the wasm job against the native program, and
/// the same job with the engine's checks off (the floor: what the pass's checks cost here).
pub fn wordfreq(ctx: &Ctx, data: &Dataset) -> Result<Vec<Row>> {
    progress(&format!("wordfreq over {} natively, through the runtime, and with no checks", mib(data.bytes)));
    let native = ctx.native("wordfreq")?;
    let algorithm = Algorithm::from_file(&tidepool_test_artifacts::module("wordfreq"))?;
    let runtime = Runtime::new(RuntimeConfig::default());
    // No job runs so: no fuel, no NaN canonicalization, no wall-clock stop (the stack limit,
    // part of the semantics, stays).
    let floor = Runtime::new(RuntimeConfig {
        nan_canonicalization: false,
        fuel_metering: false,
        interrupt_check: false,
        ..RuntimeConfig::default()
    });
    // Published datasets are hashed once, when published: jobs trust that manifest.
    let manifest = Arc::new(tidepool_runtime::tree::scan(&data.books)?);
    // Five: on a shared VM three runs' median moved this figure by a tenth between runs.
    let runs = ctx.runs(5, 1);
    let (mut ours, mut base, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut same = true;
    for run in 0..=runs {
        let out = tempfile::tempdir_in(ctx.fast.path())?;
        std::fs::create_dir(out.path().join("native"))?;
        let start = Instant::now();
        let status = Command::new(&native)
            .arg(&data.inputs)
            .arg(out.path().join("native"))
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .and_then(|s| if s.success() { Ok(()) } else { Err(std::io::Error::other(format!("{s}"))) });
        let native_time = start.elapsed();
        status.context("running the native wordfreq")?;
        let base_csv = std::fs::read(out.path().join("native/wordfreq.csv"))?;

        let mut job = |runtime: &Runtime, dir: &str| -> Result<Duration> {
            let mut spec = JobSpec::new(
                algorithm.clone(),
                vec![InputSpec { manifest: Some(manifest.clone()), ..InputSpec::new("books", &data.books) }],
                out.path().join(dir),
            );
            spec.limits = Limits { fuel: u64::MAX / 2, timeout_ms: 600_000, ..Limits::default() };
            let start = Instant::now();
            let result = runtime.run(&spec)?;
            let time = start.elapsed();
            ensure!(result.receipt.outcome.is_success(), "the wordfreq job {}", result.receipt.outcome);
            same &= std::fs::read(out.path().join(dir).join("wordfreq.csv"))? == base_csv;
            Ok(time)
        };
        let wasm_time = job(&runtime, "wasm")?;
        let floor_time = job(&floor, "floor")?;
        if run > 0 {
            // Run 0 warms up (compile, page cache).
            base.push(native_time);
            ours.push(wasm_time);
            bare.push(floor_time);
        }
    }
    let (ours, base, bare) = (median_of(&mut ours), median_of(&mut base), median_of(&mut bare));
    let throughput = |d: Duration| data.bytes as f64 / d.as_secs_f64();
    let native_text = format!("{} (native build of the same code)", mib_per_s(data.bytes, base));
    let row = Row::ratio(
        &format!(
            "word frequency over {} of input (dataset manifest known, as for published datasets)",
            mib(data.bytes)
        ),
        mib_per_s(data.bytes, ours),
        native_text.clone(),
        throughput(ours) / throughput(base),
        Target::AtLeast(0.7, "× throughput"),
        &format!("median of {runs} runs"),
    );
    let floor_row = Row::ratio(
        &format!(
            "the same with no fuel, no NaN canonicalization and no wall-clock stop (the floor: no job runs so), {}",
            mib(data.bytes)
        ),
        mib_per_s(data.bytes, bare),
        native_text,
        throughput(bare) / throughput(base),
        Target::Reported,
        &format!("median of {runs} runs, each run beside one of each above"),
    );
    Ok(if same { vec![row, floor_row] } else { vec![row.fail_because("the builds counted differently"), floor_row] })
}

/// Hashing a dataset into its tree root against BLAKE3 over the same bytes held in memory.
pub fn hashing(ctx: &Ctx, data: &Dataset) -> Result<Row> {
    progress(&format!("tree roots of {} against BLAKE3 in memory", mib(data.bytes)));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&data.books)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    let contents: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let runs = ctx.runs(5, 1);
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut roots = (Default::default(), Default::default());
    for run in 0..=runs {
        let start = Instant::now();
        let tree = tidepool_runtime::tree::scan(&data.books)?;
        let tree_time = start.elapsed();
        let start = Instant::now();
        let hashes: Vec<blake3::Hash> = contents.iter().map(|c| blake3::hash(c)).collect();
        let memory_time = start.elapsed();
        if run > 0 {
            ours.push(tree_time);
            base.push(memory_time);
        }
        roots = (tree, hashes);
    }
    let (tree, hashes) = roots;
    let same = tree.entries.iter().zip(&hashes).all(
        |(e, h)| matches!(e.kind, tidepool_runtime::tree::EntryKind::File { hash, .. } if hash.0 == *h.as_bytes()),
    ) && tree.entries.len() == hashes.len();
    let (ours, base) = (median_of(&mut ours), median_of(&mut base));
    let row = Row::ratio(
        &format!(
            "hashing a dataset into its BLAKE3 tree root (as inputs and outputs are), {} in {}, page cache warm",
            mib(data.bytes),
            describe_dir(&data.books)
        ),
        mib_per_s(data.bytes, ours),
        format!("{} (BLAKE3 over the same bytes in memory, one thread)", mib_per_s(data.bytes, base)),
        base.as_secs_f64() / ours.as_secs_f64(),
        Target::AtLeast(0.9, "× throughput"),
        &format!("median of {runs} runs"),
    );
    Ok(if same { row } else { row.fail_because("the file hashes differ") })
}
