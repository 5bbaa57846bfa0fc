//! `tidepool compute`: the whole consumer flow (initialize → upload → lock → wait for the grant
//! → exec → follow the job → download the outputs and the signed receipt → check them), and
//! the job and agreement commands around it: `status`, `stop`, `refund`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use anyhow::{Context, Result, bail};

use super::args::parse_duration;
use super::client_args::ClientArgs;
use super::run::{EnvironmentArgs, group, load_algorithm};
use crate::client::flow::{AlgorithmChoice, ComputeOutcome, ComputeRequest, Step};
use crate::protocol::ddo::Did;
use crate::protocol::states::JobStatus;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the algorithm exited 0; 1 it ran and failed; 2 the flow could not complete.")]
pub struct ComputeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The dataset asset to compute on.
    #[arg(long)]
    pub did: Did,
    /// Your algorithm: a module built for wasm32-wasip1, or a Python script or directory with
    /// main.py (see --env).
    #[arg(long, value_name = "FILE|DIR", required_unless_present = "algorithm_did")]
    pub algorithm: Option<PathBuf>,
    /// The environment that runs --algorithm (default: chosen by the file, as for `tidepool run`).
    #[arg(long = "env", value_name = "NAME", requires = "algorithm")]
    pub environment: Option<String>,
    #[command(flatten)]
    pub environments: EnvironmentArgs,
    /// A published algorithm instead.
    #[arg(long, value_name = "DID", conflicts_with = "algorithm")]
    pub algorithm_did: Option<Did>,
    /// Where the outputs, logs and receipt go (created; must be empty).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Do not start before: Unix seconds, or +DURATION from now (e.g. +2m).
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// How long to wait for the whole flow.
    #[arg(long, value_parser = parse_duration, default_value = "30m", value_name = "DURATION")]
    pub wait: Duration,
    /// Arguments for the algorithm.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

fn parse_time(s: &str) -> Result<u64> {
    match s.strip_prefix('+') {
        Some(d) => Ok(crate::protocol::signing::unix_now() + tidepool_runtime::limits::parse_duration(d)?.as_secs()),
        None => s.parse().with_context(|| format!("`{s}` is neither Unix seconds nor +DURATION")),
    }
}

/// An algorithm for an environment, packed for the provider: the environment's name, the name
/// it runs under, its files as a canonical file archive (`tidepool-files-v1`) and their tree
/// root, which is the `algorithmHash` the consumer signs and the receipt's `algorithm_hash`.
#[derive(Debug)]
pub struct EnvironmentUpload {
    pub environment: String,
    pub name: String,
    pub archive: Vec<u8>,
    pub algorithm_hash: B256,
}

/// What `--algorithm` is, read and checked before anything is signed or sent.
enum Prepared {
    Module(AlgorithmChoice),
    Environment(EnvironmentUpload),
}

fn prepare(args: &ComputeArgs, path: &std::path::Path) -> Result<Prepared> {
    let algorithm = load_algorithm(
        path,
        args.environment.as_deref(),
        &args.environments,
        tidepool_runtime::Limits::DEFAULT_MODULE_BYTES,
    )?;
    Ok(match (algorithm.environment(), algorithm.files()) {
        (Some(environment), Some(files)) => Prepared::Environment(EnvironmentUpload {
            environment: environment.name().to_string(),
            name: algorithm.name.clone(),
            archive: files.to_archive(),
            algorithm_hash: files.root(),
        }),
        _ => Prepared::Module(AlgorithmChoice::Module(algorithm.bytes().to_vec(), algorithm.name.clone())),
    })
}

pub async fn run(args: ComputeArgs) -> Result<ExitCode> {
    let algorithm = match (&args.algorithm, args.algorithm_did) {
        (Some(path), _) => match prepare(&args, path)? {
            Prepared::Module(module) => module,
            Prepared::Environment(upload) => bail!(
                "{} is the algorithm `{}` for the `{}` environment ({} bytes packed, algorithm hash {}); this version of \
                 `tidepool compute` cannot submit it yet: providers accept WebAssembly modules only. Try it locally \
                 with `tidepool run {}`",
                path.display(),
                upload.name,
                upload.environment,
                upload.archive.len(),
                upload.algorithm_hash,
                path.display()
            ),
        },
        (None, Some(did)) => AlgorithmChoice::Published(did),
        (None, None) => bail!("give --algorithm FILE or --algorithm-did DID"),
    };
    let client = args.client.connect().await?;
    let req = ComputeRequest {
        did: args.did,
        algorithm,
        args: args.args.clone(),
        not_before: args.not_before.as_deref().map(parse_time).transpose()?,
        output_dir: args.output.clone(),
        wait: args.wait,
    };
    let mut display = FlowDisplay::new();
    let outcome = client.compute(&req, |step| display.show(step)).await;
    display.finish();
    let outcome = outcome?;
    print_outcome(&outcome, client.provider().address);
    Ok(if outcome.receipt.outcome.is_success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The flow's progress on stderr: a line per step, a progress bar while the job runs.
pub struct FlowDisplay {
    tty: bool,
    started: Instant,
    last_status: Option<JobStatus>,
    last_bar: Option<Instant>,
    drawn: bool,
}

impl FlowDisplay {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_status: None,
            last_bar: None,
            drawn: false,
        }
    }

    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.drawn {
            let _ = write!(err, "\r\x1b[2K");
            self.drawn = false;
        }
        let _ = writeln!(err, "[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    pub fn show(&mut self, step: &Step) {
        match step {
            Step::Initialized { agreement } => self.line(&format!("agreement {agreement} initialized")),
            Step::Event(e) => self.line(&format!("keeper event: {e}")),
            Step::AlgorithmUploaded { hash } => self.line(&format!("algorithm uploaded ({hash})")),
            Step::PaymentLocked { amount } => self.line(&format!("payment locked: {amount} tokens in escrow")),
            Step::JobQueued { job } => self.line(&format!("job {job} queued")),
            Step::Downloading { files } => self.line(&format!("downloading {files} results")),
            Step::Job(view) => {
                if self.last_status != Some(view.status) {
                    self.last_status = Some(view.status);
                    self.line(&format!("job {}: {}", view.job_id, view.status_text));
                }
                if let (Some(p), true) = (&view.progress, view.status == JobStatus::Running) {
                    let due = self
                        .last_bar
                        .is_none_or(|t| t.elapsed() >= if self.tty { Duration::ZERO } else { Duration::from_secs(2) });
                    if !due {
                        return;
                    }
                    self.last_bar = Some(Instant::now());
                    let msg = p.message.clone().unwrap_or_default();
                    let text = match p.total {
                        Some(t) if t > 0 => {
                            let frac = (p.done as f64 / t as f64).clamp(0.0, 1.0);
                            let filled = (frac * 30.0) as usize;
                            format!("[{}{}] {:>5.1}% {msg}", "#".repeat(filled), "-".repeat(30 - filled), frac * 100.0)
                        }
                        _ => format!("{} done {msg}", p.done),
                    };
                    if self.tty {
                        let text: String = text.chars().take(100).collect();
                        let _ = write!(std::io::stderr(), "\r\x1b[2K{text}");
                        self.drawn = true;
                    } else {
                        self.line(&text);
                    }
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Default for FlowDisplay {
    fn default() -> Self {
        Self::new()
    }
}

pub fn print_outcome(o: &ComputeOutcome, provider: alloy_primitives::Address) {
    let r = &o.receipt;
    let total: u64 = o.files.iter().map(|f| f.1).sum();
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<9} {v}\n"));
    line("outcome", r.outcome.to_string());
    line("job", format!("{} ({})", o.job.job_id, o.job.status_text));
    line(
        "receipt",
        format!("{} signed by the provider {provider}; signature, hash, outputs and logs checked", r.receipt_hash),
    );
    line("fuel", format!("{} of {}", group(r.fuel_consumed), group(r.limits.fuel)));
    line(
        "payment",
        format!("{} tokens to the provider, {} back to you", o.payout.provider_amount, o.payout.consumer_refund),
    );
    line(
        "outputs",
        format!(
            "{} files, {} in {}",
            o.files.len(),
            tidepool_runtime::limits::format_bytes(total),
            o.output_dir.join("outputs").display()
        ),
    );
    line("logs", format!("{}", o.output_dir.join("logs").display()));
    if let Some(did) = o.output_did {
        line("asset", format!("{did} (the outputs, owned by you)"));
    }
    eprint!("{s}");
    println!("{}", r.receipt_hash);
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job id.
    pub job: String,
}

pub async fn status(args: JobArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    println!("{}", serde_json::to_string_pretty(&client.job(&args.job).await?)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(args: JobArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    let view = client.stop(&args.job).await?;
    eprintln!("job {}: {}", view.job_id, view.status_text);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct RefundArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The agreement whose payment to take back.
    pub agreement: B256,
}

pub async fn refund(args: RefundArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    let amount = client.refund(args.agreement).await?;
    println!("{amount}");
    eprintln!("{amount} tokens refunded for agreement {}", args.agreement);
    Ok(ExitCode::SUCCESS)
}
