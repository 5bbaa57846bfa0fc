//! What every figure needs: scratch directories (one on tmpfs when the machine has one), the
//! native programs built next to the benchmark, progress output, and a description of the
//! machine for the report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The benchmark's surroundings.
#[derive(Debug)]
pub struct Ctx {
    /// Fewer runs and smaller inputs (a smoke test of the benchmark itself).
    pub quick: bool,
    /// Job directories where filesystem costs are smallest (tmpfs when available).
    pub fast: tempfile::TempDir,
    /// Scratch space on the disk behind the system's temporary directory.
    pub disk: tempfile::TempDir,
    bin_dir: PathBuf,
}

impl Ctx {
    /// Makes the scratch directories (the fast one on `/dev/shm` when it can) and finds the
    /// native programs next to the benchmark's binary.
    pub fn new(quick: bool) -> Result<Self> {
        let shm = Path::new("/dev/shm");
        let fast = match tempfile::Builder::new().prefix("tidepool-bench-").tempdir_in(shm) {
            Ok(dir) => dir,
            Err(_) => tempfile::Builder::new().prefix("tidepool-bench-").tempdir()?,
        };
        let disk = tempfile::Builder::new().prefix("tidepool-bench-").tempdir()?;
        let exe = std::env::current_exe().context("locating the benchmark binary")?;
        let bin_dir = exe.parent().context("the benchmark binary has no directory")?.to_path_buf();
        Ok(Self { quick, fast, disk, bin_dir })
    }

    /// `full` runs, or `quick` ones with `--quick`.
    pub fn runs(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    /// A native program built next to this benchmark (by `scripts/bench.sh`).
    pub fn native(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.exists() {
            bail!(
                "{} is missing: build the native programs the benchmark compares against with\n  \
                 cargo build --release -p tidepool-provider -p tidepool-example-wordfreq -p tidepool-bench-kernels\n\
                 (scripts/bench.sh does this)",
                path.display()
            );
        }
        Ok(path)
    }
}

/// Prints what is being measured, on stderr.
pub fn progress(what: &str) {
    eprintln!("  measuring {what}...");
}

/// The filesystem type of the mount holding `path` (from `/proc/mounts`; "?" elsewhere).
pub fn fs_type(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return "?".into() };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".into(), |(_, kind)| kind)
}

/// `/dev/shm (tmpfs)`.
pub fn describe_dir(path: &Path) -> String {
    let shown = path.parent().unwrap_or(path);
    format!("{} ({})", shown.display(), fs_type(path))
}

/// CPU, cores, kernel and the allocator features in use, for the report's header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "?".into(), |k| k.trim().to_string());
    format!("{cpu}, {cores} cores available, Linux {kernel}; wasmtime {}", tidepool_runtime::engine::WASMTIME_VERSION)
}
