//! `tidepool run`: run an algorithm on local datasets, like a provider would.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::B256;
use anyhow::Context;
use tidepool_runtime::limits::format_bytes;
use tidepool_runtime::tree::EntryKind;
use tidepool_runtime::{Algorithm, Environments, JobResult, JobSpec, Limits, Runtime, RuntimeConfig};

use super::args::{InputArg, parse_count, parse_duration, parse_seed, parse_size};
use super::progress::Progress;

/// `tidepool run ALGORITHM --output DIR [--input NAME=DIR]... [-- ARGS...]`
#[derive(Debug, clap::Args)]
#[command(after_help = "The algorithm sees its datasets under /data/inputs/NAME, writes to /data/outputs, \
                        and gets ARGS after the inputs and outputs directories.\n\
                        A .py script or a directory with main.py runs in the Python environment \
                        (python-3.12), installed by scripts/setup.sh.\n\
                        Exit status: 0 the algorithm exited 0; 1 it ran and failed (exit code, trap or \
                        a limit); 2 it could not run.")]
pub struct RunArgs {
    /// The algorithm: a WebAssembly module built for wasm32-wasip1 (.wasm), a Python script
    /// (.py, run as main.py), or a directory holding main.py.
    pub algorithm: PathBuf,
    /// The environment that runs the algorithm (default: chosen by the file: .wasm runs as
    /// itself, .py and directories with main.py in python-3.12).
    #[arg(long = "env", value_name = "NAME")]
    pub environment: Option<String>,
    #[command(flatten)]
    pub environments: EnvironmentArgs,
    /// A dataset, mounted read-only at /data/inputs/NAME (repeatable).
    #[arg(long = "input", value_name = "NAME=DIR")]
    pub inputs: Vec<InputArg>,
    /// Where the outputs go. Created if missing; must be empty.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Write the receipt (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    /// Write the captured stdout and stderr here (stdout.log, stderr.log).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seed of the algorithm's random numbers, 64 hex digits (default: derived from the job).
    #[arg(long, value_parser = parse_seed, value_name = "HEX")]
    pub seed: Option<B256>,
    /// The name the algorithm runs under (a module's argv[0]; default: the file's stem, or the
    /// directory's name).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Print a JSON summary (receipt and outputs) on stdout instead of the algorithm's stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
    /// Arguments passed to the algorithm after its inputs and outputs directories.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// The limits a job runs under.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Fuel: instructions plus host-call charges.
    #[arg(long, value_parser = parse_count, default_value = "50_000_000_000")]
    pub fuel: u64,
    /// Linear memory.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "512MiB")]
    pub memory: u64,
    /// Wall-clock time.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "5m")]
    pub timeout: Duration,
    /// Bytes the algorithm may write under /data/outputs.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "1GiB")]
    pub output_quota: u64,
    /// Files and directories the algorithm may create under /data/outputs.
    #[arg(long, value_parser = parse_count, value_name = "N", default_value = "10000")]
    pub output_files: u64,
    /// Bytes of stdout kept.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "1MiB")]
    pub stdout_cap: u64,
    /// Bytes of stderr kept.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "1MiB")]
    pub stderr_cap: u64,
    /// Largest module accepted.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "64MiB")]
    pub max_module_size: u64,
    /// Native stack for wasm frames: the stack limit of version-1 receipts only.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", default_value = "512KiB")]
    pub max_stack: u64,
    /// The stack limit in wasm stack units (the same depth on every architecture).
    #[arg(long, value_parser = parse_count, value_name = "N", default_value = "262144")]
    pub max_stack_height: u64,
}

impl From<&LimitArgs> for Limits {
    fn from(a: &LimitArgs) -> Self {
        Limits {
            fuel: a.fuel,
            memory_bytes: a.memory,
            timeout_ms: u64::try_from(a.timeout.as_millis()).unwrap_or(u64::MAX),
            output_bytes: a.output_quota,
            output_files: a.output_files,
            stdout_bytes: a.stdout_cap,
            stderr_bytes: a.stderr_cap,
            module_bytes: a.max_module_size,
            max_wasm_stack: a.max_stack,
            max_stack_height: a.max_stack_height,
        }
    }
}

/// Where compiled modules are cached.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// Compiled-module cache [default: $XDG_CACHE_HOME/tidepool or ~/.cache/tidepool].
    #[arg(long, env = "TIDEPOOL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache compiled modules on disk.
    #[arg(long)]
    pub no_cache: bool,
}

/// Where the environments (such as Python) are installed.
#[derive(Debug, clap::Args)]
pub struct EnvironmentArgs {
    /// The environments directory [default: $XDG_DATA_HOME/tidepool/environments or
    /// ~/.local/share/tidepool/environments, where scripts/setup.sh installs them].
    #[arg(long = "environments", env = "TIDEPOOL_ENVIRONMENTS_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl EnvironmentArgs {
    /// The directory: the flag, else `TIDEPOOL_ENVIRONMENTS_DIR`, else the default.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                .unwrap_or_else(|| PathBuf::from("."))
                .join("tidepool/environments")
        })
    }

    /// Sets the environments a provider node offers: the flag or variable, else the
    /// configuration file's, else the default directory.
    pub fn apply(&self, c: &mut crate::config::ProviderConfig) {
        if self.dir.is_some() || c.environments_dir.is_none() {
            c.environments_dir = Some(self.dir());
        }
    }

    pub fn load(&self) -> anyhow::Result<Environments> {
        let dir = self.dir();
        Environments::load(&dir).with_context(|| format!("reading the environments in {}", dir.display()))
    }
}

/// Reads the algorithm at `path`: a module, or files for `environment` (named, or chosen by the
/// file: a `.py` script, a directory with `main.py`). `max_bytes` bounds its size.
pub fn load_algorithm(
    path: &std::path::Path,
    environment: Option<&str>,
    environments: &EnvironmentArgs,
    max_bytes: u64,
) -> anyhow::Result<Algorithm> {
    let module = match environment {
        Some(name) => name == tidepool_runtime::receipt::EnvironmentInfo::MODULE,
        None => tidepool_runtime::environment::is_module(path),
    };
    if module {
        return Ok(Algorithm::from_file(path)?);
    }
    let envs = environments.load()?;
    let name = match environment {
        Some(name) => name.to_string(),
        None => envs.pick(path)?.context("a module was taken for an environment algorithm")?,
    };
    Ok(envs.get(&name)?.load_algorithm(path, max_bytes)?)
}

impl CacheArgs {
    pub fn runtime(&self) -> Runtime {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .map(|d| d.join("tidepool"))
            })
        };
        Runtime::new(RuntimeConfig { cache_dir, perf_map: crate::cli::perf_map(), ..RuntimeConfig::default() })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut algorithm =
        load_algorithm(&args.algorithm, args.environment.as_deref(), &args.environments, args.limits.max_module_size)?;
    if let Some(name) = &args.name {
        algorithm.name = name.clone();
    }
    let runtime = args.cache.runtime();
    let progress = Progress::new(!args.quiet && !args.json);
    let mut spec = JobSpec::new(algorithm, args.inputs.iter().cloned().map(Into::into).collect(), &args.output);
    spec.args = args.args.clone();
    spec.limits = Limits::from(&args.limits);
    spec.seed = args.seed;
    spec.events = Some(progress.sink());
    let result = runtime.run(&spec);
    let metrics = progress.finish();
    let result = result.context("the job could not run")?;

    if let Some(path) = &args.receipt {
        write_json(path, &result.receipt)?;
    }
    if let Some(dir) = &args.logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("stdout.log"), &result.stdout).context("writing stdout.log")?;
        std::fs::write(dir.join("stderr.log"), &result.stderr).context("writing stderr.log")?;
    }
    if args.json {
        let files: Vec<serde_json::Value> = result
            .outputs
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File { size, .. } => Some(serde_json::json!({ "path": e.path, "size": size })),
                _ => None,
            })
            .collect();
        let summary = serde_json::json!({ "receipt": result.receipt, "outputs": files, "metrics": metrics });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        echo_guest_output(&result)?;
        print_summary(&args, &result, &metrics);
    }
    Ok(if result.receipt.outcome.is_success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The algorithm's stdout goes to ours (so it can be piped); its stderr, minus the structured
/// event lines, to ours.
fn echo_guest_output(result: &JobResult) -> anyhow::Result<()> {
    std::io::stdout().write_all(&result.stdout)?;
    let mut err = std::io::stderr().lock();
    for line in result.stderr.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        if tidepool_runtime::GuestEvent::parse(bare).is_none()
            && !bare.starts_with(tidepool_runtime::job::EVENT_PREFIX.as_bytes())
        {
            err.write_all(line)?;
        }
    }
    Ok(())
}

fn print_summary(args: &RunArgs, result: &JobResult, metrics: &[(String, f64)]) {
    let r = &result.receipt;
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("{k:<9} {v}\n"));
    line(&mut s, "outcome", r.outcome.to_string());
    if let Some(env) = r.environment.as_ref().filter(|e| e.name != tidepool_runtime::receipt::EnvironmentInfo::MODULE) {
        line(&mut s, "env", format!("{} (module {})", env.name, env.module_hash));
    }
    line(
        &mut s,
        "fuel",
        format!(
            "{} ({:.2}% of {})",
            group(r.fuel_consumed),
            100.0 * r.fuel_consumed as f64 / r.limits.fuel as f64,
            group(r.limits.fuel)
        ),
    );
    line(
        &mut s,
        "time",
        format!(
            "{:.2} s{}",
            result.wall_time.as_secs_f64(),
            if result.compile_cached { " (compiled module from cache)" } else { "" }
        ),
    );
    let files: Vec<(&str, u64)> = result
        .outputs
        .entries
        .iter()
        .filter_map(|e| if let EntryKind::File { size, .. } = e.kind { Some((e.path.as_str(), size)) } else { None })
        .collect();
    let total: u64 = files.iter().map(|f| f.1).sum();
    line(&mut s, "outputs", format!("{} files, {} in {}", files.len(), format_bytes(total), args.output.display()));
    for (path, size) in files.iter().take(10) {
        s.push_str(&format!("            {path}  {}\n", format_bytes(*size)));
    }
    if files.len() > 10 {
        s.push_str(&format!("            ... and {} more\n", files.len() - 10));
    }
    for (name, value) in metrics {
        line(&mut s, "metric", format!("{name} = {value}"));
    }
    for (stream, kept, total) in
        [("stdout", result.stdout.len() as u64, r.stdout_len), ("stderr", result.stderr.len() as u64, r.stderr_len)]
    {
        if total > kept {
            line(
                &mut s,
                stream,
                format!(
                    "{} written, first {} kept (raise --{stream}-cap to keep more)",
                    format_bytes(total),
                    format_bytes(kept)
                ),
            );
        }
    }
    let saved = args
        .receipt
        .as_ref()
        .map_or_else(|| " (save it with --receipt FILE)".to_string(), |p| format!(" -> {}", p.display()));
    line(&mut s, "receipt", format!("{}{saved}", r.receipt_hash));
    eprint!("{s}");
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `value` as pretty JSON, atomically (a reader never sees half a file).
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_runtime_defaults() {
        let cli = crate::cli::Cli::try_parse_from(["tidepool", "run", "a.wasm", "--output", "o"]).unwrap();
        let crate::cli::Command::Run(args) = cli.command else { panic!() };
        assert_eq!(Limits::from(&args.limits), Limits::default());
    }

    #[test]
    fn trailing_arguments_reach_the_algorithm() {
        let cli = crate::cli::Cli::try_parse_from(["tidepool", "run", "a.wasm", "--output", "o", "--", "--top", "5"])
            .unwrap();
        let crate::cli::Command::Run(args) = cli.command else { panic!() };
        assert_eq!(args.args, ["--top", "5"]);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
