//! `tidepool publish`: upload datasets (or an algorithm) and publish them as an asset.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use anyhow::{Context, Result, bail};

use super::args::{InputArg, parse_count, parse_duration, parse_size};
use super::client_args::ClientArgs;
use super::run::{EnvironmentArgs, load_algorithm};
use crate::protocol::api::{PublishRequest, ServiceLimits};
use crate::protocol::ddo::{AlgorithmPolicy, AssetKind};
use crate::protocol::template::ConditionName;
use tidepool_runtime::Limits;
use tidepool_runtime::files::FileKind;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The asset's name.
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// A dataset: mounted as /data/inputs/NAME in jobs (repeatable).
    #[arg(long = "dataset", value_name = "NAME=DIR")]
    pub datasets: Vec<InputArg>,
    /// Publish an algorithm instead of datasets: a module built for wasm32-wasip1, or a Python
    /// script or directory with main.py (see --env).
    #[arg(long, value_name = "FILE|DIR", conflicts_with = "datasets")]
    pub algorithm: Option<PathBuf>,
    /// The environment that runs --algorithm (default: chosen by the file, as for `tidepool run`).
    #[arg(long = "env", value_name = "NAME", requires = "algorithm")]
    pub environment: Option<String>,
    #[command(flatten)]
    pub environments: EnvironmentArgs,
    /// The dataset directories are on the provider's machine: it copies them (operators only).
    #[arg(long)]
    pub reference: bool,
    /// Token base units per unit of fuel.
    #[arg(long, value_name = "N")]
    pub price: Option<U256>,
    #[arg(long, value_parser = parse_count, value_name = "N")]
    pub max_fuel: Option<u64>,
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub memory: Option<u64>,
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub output_quota: Option<u64>,
    #[arg(long, value_parser = parse_count, value_name = "N")]
    pub output_files: Option<u64>,
    /// Only run algorithms with this BLAKE3 hash (repeatable).
    #[arg(long = "trust-hash", value_name = "HASH", conflicts_with = "trusted_publishers")]
    pub trusted_hashes: Vec<B256>,
    /// Only run algorithms published by this address (repeatable).
    #[arg(long = "trust-publisher", value_name = "ADDRESS")]
    pub trusted_publishers: Vec<Address>,
    /// A condition's timeout in seconds, e.g. releasePayment=600 (repeatable).
    #[arg(long = "condition-timeout", value_name = "CONDITION=SECONDS")]
    pub condition_timeouts: Vec<String>,
}

pub async fn run(args: PublishArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    let mut timeouts = BTreeMap::new();
    for t in &args.condition_timeouts {
        let (name, secs) = t.split_once('=').with_context(|| format!("expected CONDITION=SECONDS, got `{t}`"))?;
        let condition: ConditionName = name.parse()?;
        timeouts.insert(condition, secs.parse().with_context(|| format!("`{secs}` is not a number of seconds"))?);
    }
    let trusted = match (args.trusted_hashes.is_empty(), args.trusted_publishers.is_empty()) {
        (true, true) => None,
        (false, _) => Some(AlgorithmPolicy::Hashes { hashes: args.trusted_hashes.clone() }),
        (true, false) => Some(AlgorithmPolicy::Publishers { publishers: args.trusted_publishers.clone() }),
    };
    let mut req = PublishRequest {
        name: args.name.clone(),
        description: args.description.clone(),
        author: String::new(),
        license: String::new(),
        kind: if args.algorithm.is_some() { AssetKind::Algorithm } else { AssetKind::Dataset },
        price_per_fuel: args.price,
        limits: ServiceLimits {
            max_fuel: args.max_fuel,
            memory_bytes: args.memory,
            timeout_ms: args.timeout.map(|d| d.as_millis() as u64),
            output_bytes: args.output_quota,
            output_files: args.output_files,
        },
        trusted_algorithms: trusted,
        timeouts,
        environment: None,
    };
    let published = if let Some(path) = &args.algorithm {
        // Checked here, as `tidepool run` would, before anything is sent.
        let algorithm =
            load_algorithm(path, args.environment.as_deref(), &args.environments, Limits::DEFAULT_MODULE_BYTES)?;
        let session = client.create_session().await?;
        match (algorithm.environment(), algorithm.files()) {
            (Some(environment), Some(files)) => {
                // The files, as one dataset; a single script is uploaded as the entry file.
                for (relative, kind) in files.entries() {
                    if let FileKind::File(_) = kind {
                        let local = if path.is_dir() { path.join(relative) } else { path.clone() };
                        client.upload_file(&session, "algorithm", relative, &local).await?;
                    }
                }
                req.environment = Some(environment.name().to_string());
            }
            _ => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("algorithm.wasm");
                client.upload_file(&session, "algorithm", name, path).await?;
            }
        }
        client.publish(&session, &req).await?
    } else if args.datasets.is_empty() {
        bail!("give at least one --dataset NAME=DIR (or --algorithm FILE)");
    } else if args.reference {
        let session = client.create_session().await?;
        for d in &args.datasets {
            let dir = std::fs::canonicalize(&d.dir).unwrap_or_else(|_| d.dir.clone());
            client.reference(&session, &d.name, &dir).await?;
        }
        client.publish(&session, &req).await?
    } else {
        let dirs: Vec<(String, PathBuf)> = args.datasets.iter().map(|d| (d.name.clone(), d.dir.clone())).collect();
        client.publish_dirs(&dirs, &req).await?
    };
    println!("{}", published.did);
    for d in &published.ddo.metadata.datasets {
        eprintln!(
            "  dataset {}: {} files, {} (root {})",
            d.name,
            d.files,
            tidepool_runtime::limits::format_bytes(d.bytes),
            d.root
        );
    }
    Ok(ExitCode::SUCCESS)
}
