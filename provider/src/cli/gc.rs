//! `tidepool gc`: removes the blobs no row of a stopped single-node provider names (see
//! `store::gc`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::args::parse_duration;
use crate::config::ProviderConfig;
use crate::store::blobs::Blobs;
use crate::store::lock::{self, DataDirLock};

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
    /// A cluster's bucket (refused: gc collects a single node's store).
    #[arg(long, env = "TIDEPOOL_BLOBS", value_name = "URL", hide = true)]
    pub blobs: Option<String>,
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
    if let Some(v) = args.blobs {
        config.blobs = Some(v);
    }
    let db_file = crate::provider::sqlite_file(&config);
    let (None, Some(db_file)) = (&config.blobs, db_file) else {
        bail!(
            "gc reclaims a single node's data directory; a cluster's blobs are in its shared bucket, \
             which gc does not collect"
        );
    };
    let data = &config.data_dir;
    if !data.join("blobs").is_dir() {
        bail!("{} holds no blob store (no blobs/ directory): is it a provider's data directory?", data.display());
    }
    let _lock = DataDirLock::acquire(data).context("locking the data directory (gc runs with the daemon stopped)")?;
    // The database the daemon last ran on, and no other: another one (an old file, a relative
    // path read from elsewhere) would name none of the newer blobs.
    let db_file = std::path::absolute(&db_file)?;
    match lock::recorded_database(data)? {
        Some(recorded) if recorded == db_file => {}
        Some(recorded) => bail!(
            "the daemon last ran on {} with the database {}, not {}: give gc the daemon's --database \
             (or its --config)",
            data.display(),
            recorded.display(),
            db_file.display()
        ),
        None => bail!(
            "{} has no record of its daemon's database ({}, written by tidepool serve at start): \
             start and stop the daemon once with this version, then run gc",
            data.display(),
            lock::DATABASE_RECORD
        ),
    }
    let _db_lock = crate::provider::lock_database(data, &db_file)?;
    let blobs = Blobs::open(data)?;
    let report =
        crate::store::gc::collect(&blobs, &db_file, args.min_age, args.dry_run, |step| eprintln!("{step}...")).await?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for (hash, size) in &report.removed {
        println!("{verb} {hash} ({size} bytes)");
    }
    for (hash, error) in &report.failed {
        eprintln!("could not remove {hash}: {error}");
    }
    if !args.dry_run {
        let cleared = blobs.clear_tmp(None)?;
        if cleared > 0 {
            println!("removed {cleared} temporary files a stopped daemon left");
        }
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
    if !report.failed.is_empty() {
        bail!("{} unnamed blobs could not be removed (above)", report.failed.len());
    }
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
