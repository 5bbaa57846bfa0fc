//! The Python environment: compiling its 26 MB module cold, starting a Python job when the
//! compiled module is cached on disk (a provider's every job after its start-up), and the
//! Python word count in the sandbox against the same script run by the host's CPython.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tidepool_runtime::environment::{Environment, Environments};
use tidepool_runtime::{Algorithm, InputSpec, JobEvent, JobSpec, Limits, Runtime, RuntimeConfig, Stage};

use crate::env::{Ctx, progress};
use crate::timing::{Row, Target, median_of, mib, millis};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn environment() -> Result<Arc<Environment>> {
    let envs = Environments::load(&tidepool_test_artifacts::environments())?;
    Ok(envs.get("python-3.12")?)
}

/// Time to the `running` stage, and the whole job's time.
fn timed_job(runtime: &Runtime, spec: &mut JobSpec) -> Result<(Duration, Duration)> {
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = started.clone();
    spec.events = Some(Arc::new(move |e| {
        if e == JobEvent::Stage(Stage::Running) {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }));
    let asked = Instant::now();
    let result = runtime.run(spec)?;
    let total = asked.elapsed();
    ensure!(
        result.receipt.outcome.is_success(),
        "the Python job {}: {}",
        result.receipt.outcome,
        String::from_utf8_lossy(&result.stderr)
    );
    let started = started.lock().unwrap_or_else(|p| p.into_inner()).context("the job never reached `running`")?;
    Ok((started - asked, total))
}

/// The Python environment's figures: its module compiled cold, a Python job's start with the
/// module cached on disk, and the word count over `data` against the host's CPython.
pub fn python(ctx: &Ctx, data: &crate::figures::io::Dataset) -> Result<Vec<Row>> {
    let env = environment()?;
    let hello =
        env.algorithm("hello", tidepool_runtime::files::FileTree::single("main.py", &b"print('hello')\n"[..])?)?;
    let limits = Limits::default();

    progress("compiling the Python module cold");
    let cold_runs = ctx.runs(2, 1);
    let mut cold = Vec::new();
    for _ in 0..cold_runs {
        let runtime = Runtime::new(RuntimeConfig::default());
        let start = Instant::now();
        runtime.prepare_environment(&env, &limits)?;
        cold.push(start.elapsed());
    }

    progress("starting Python jobs with the compiled module cached on disk");
    let cache = ctx.disk.path().join("python-cache");
    Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..RuntimeConfig::default() })
        .prepare_environment(&env, &limits)?;
    let runs = ctx.runs(5, 2);
    let (mut start, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // A new runtime each time: what a provider restarting, or `tidepool run`, pays.
        let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..RuntimeConfig::default() });
        let out = tempfile::tempdir_in(ctx.fast.path())?;
        let mut spec = JobSpec::new(hello.clone(), Vec::new(), out.path().join("out"));
        let (s, w) = timed_job(&runtime, &mut spec)?;
        start.push(s);
        whole.push(w);
    }
    let (cold, start, whole) = (median_of(&mut cold), median_of(&mut start), median_of(&mut whole));

    progress(&format!("the Python word count over {} in the sandbox and with the host's python3", mib(data.bytes)));
    let script = workspace().join("examples/python/wordfreq");
    let algorithm: Algorithm = env.load_algorithm(&script, 1 << 20)?;
    let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() });
    let host_version = Command::new("python3").arg("--version").output().context("running python3 --version")?;
    let host_version = String::from_utf8_lossy(&host_version.stdout).trim().to_string();
    let manifest = Arc::new(tidepool_runtime::tree::scan(&data.books)?);
    let wc_runs = ctx.runs(3, 1);
    let (mut ours, mut host) = (Vec::new(), Vec::new());
    for _ in 0..wc_runs {
        let out = tempfile::tempdir_in(ctx.fast.path())?;
        let start = Instant::now();
        let status = Command::new("python3")
            .arg(script.join("main.py"))
            .arg(&data.inputs)
            .arg(out.path().join("host"))
            .env("PYTHONPATH", workspace().join("guest-sdk/python"))
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        host.push(start.elapsed());
        ensure!(status.success(), "the host's python3 failed on the word count: {status}");

        let mut input = InputSpec::new("books", &data.books);
        input.manifest = Some(manifest.clone());
        let spec = JobSpec::new(algorithm.clone(), vec![input], out.path().join("out"));
        let start = Instant::now();
        let result = runtime.run(&spec)?;
        ours.push(start.elapsed());
        ensure!(result.receipt.outcome.is_success(), "the Python word count {}", result.receipt.outcome);
        let same =
            std::fs::read(out.path().join("out/wordfreq.csv"))? == std::fs::read(out.path().join("host/wordfreq.csv"))?;
        ensure!(same, "the sandboxed and the host's word counts differ");
    }
    let (ours, host) = (median_of(&mut ours), median_of(&mut host));
    Ok(vec![
        Row::absolute(
            "Python environment: compiling its module (CPython 3.12, 26 MB) cold, once per provider start or cache",
            format!("{:.1} s", cold.as_secs_f64()),
            cold.as_secs_f64(),
            Target::Reported,
            &format!("median of {cold_runs} runs"),
        ),
        Row::ratio(
            "a Python job in a new runtime, module cached on disk: time to start the interpreter",
            millis(start),
            format!("{} cold compile", millis(cold)),
            cold.as_secs_f64() / start.as_secs_f64(),
            Target::AtLeast(50.0, "× faster"),
            &format!("median of {runs} runs"),
        ),
        Row::absolute(
            "the same job (`print('hello')`) from start to receipt, CPython start-up included",
            millis(whole),
            whole.as_secs_f64(),
            Target::Reported,
            &format!("median of {runs} runs"),
        ),
        Row::ratio(
            &format!(
                "Python word count over {}, in the sandbox, against the same script on the host's CPython",
                mib(data.bytes)
            ),
            millis(ours),
            format!("{} ({host_version})", millis(host)),
            ours.as_secs_f64() / host.as_secs_f64(),
            Target::Reported,
            &format!("median of {wc_runs} runs"),
        ),
    ])
}
