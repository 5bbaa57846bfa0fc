//! `tidepool gc`: removes the blobs no row of a stopped single-node provider names (see
//! `store::gc`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::args::parse_duration;
use crate::config::ProviderConfig;
use crate::store::Db;
use crate::store::blobs::Blobs;
use crate::store::lock::DataDirLock;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// TOML configuration file (the daemon's: its data directory and database).
    #[arg(long, env = "TIDEPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The stopped daemon's data directory [default: ./tidepool-data].
    #[arg(long, env = "TIDEPOOL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Its SQLite database, if not DATA_DIR/tidepool.db.
    #[arg(long, env = "TIDEPOOL_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// Keep unnamed blobs younger than this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60m")]
    pub min_age: Duration,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: GcArgs) -> Result<ExitCode> {
    let mut config = ProviderConfig::read(args.config.as_deref())?;
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.database {
        config.database = Some(v);
    }
    if config.blobs.is_some() || config.database.as_deref().is_some_and(Db::is_shared_url) {
        bail!(
            "gc reclaims a single node's data directory; a cluster's blobs are in its shared bucket, \
             which gc does not collect"
        );
    }
    let data = &config.data_dir;
    if !data.join("blobs").is_dir() {
        bail!("{} holds no blob store (no blobs/ directory): is it a provider's data directory?", data.display());
    }
    let _lock = DataDirLock::acquire(data).context("locking the data directory (gc runs with the daemon stopped)")?;
    let db_file = match &config.database {
        Some(url) => PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url)),
        None => data.join("tidepool.db"),
    };
    let blobs = Blobs::open(data)?;
    let cleared = blobs.clear_tmp()?;
    if cleared > 0 {
        eprintln!("removed {cleared} temporary files left by a stopped daemon");
    }
    let report =
        crate::store::gc::collect(&blobs, &db_file, args.min_age, args.dry_run, |step| eprintln!("{step}...")).await?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for (hash, size) in &report.removed {
        println!("{verb} {hash} ({size} bytes)");
    }
    println!(
        "{} blobs: {} named by the database, {} unnamed but younger than {}, {verb} {} ({} bytes){}",
        report.blobs,
        report.named,
        report.young,
        humantime(args.min_age),
        report.removed.len(),
        report.removed_bytes(),
        if report.foreign > 0 { format!("; {} other files left alone", report.foreign) } else { String::new() },
    );
    Ok(ExitCode::SUCCESS)
}

/// `90s`, `60m`: as `--min-age` takes it.
fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}
