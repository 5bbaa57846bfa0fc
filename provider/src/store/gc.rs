//! Reclaiming the blob store's space (`tidepool gc`): removing the blobs nothing names.
//!
//! A blob is stored before the row that names it is written (an upload's file, a job's
//! outputs), so a request that fails in between, or a daemon killed there, leaves a blob no
//! row names. Such blobs are found offline, with the daemon stopped (the command holds the
//! data directory's lock, [`super::lock`]), so no write is in flight, in the database the
//! daemon recorded there as its own.
//!
//! **What counts as named, conservatively.** Rows name blobs in many places: upload rows,
//! publish sessions, dataset manifests, job results and receipts, the last three inside JSON
//! documents. Rather than a list of those places, which a new column could silently outgrow,
//! the collector reads every column of every table as bytes (a BLOB also as its hex digits)
//! and keeps each stored blob whose hash appears anywhere in them as 64 hexadecimal digits
//! (with or without `0x`, any case, also inside a longer run of hex digits). A blob is removed
//! only when no value in the database contains its hash and it is older than the given age: a
//! hash that appears by coincidence keeps a blob, never the reverse.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use alloy_primitives::B256;
use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::blobs::{Blobs, StoredBlob};

/// Tables a provider's database always has: a database without them is not one (a wrong
/// path would otherwise name no blob, and every blob would go).
const EXPECTED_TABLES: &[&str] = &["assets", "asset_datasets", "upload_files", "uploads", "jobs"];

/// What a collection found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Blobs in the store.
    pub blobs: usize,
    /// Of those, named by the database.
    pub named: usize,
    /// Not named, but younger than the minimum age: kept.
    pub young: usize,
    /// Not named and old enough: removed (or, in a dry run, to be removed).
    pub removed: Vec<(B256, u64)>,
    /// Not named and old enough, but removing them failed (and why).
    pub failed: Vec<(B256, String)>,
    /// Files in the store's directory not named as blobs are: left alone.
    pub foreign: usize,
}

impl Report {
    /// Bytes of the removed blobs.
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|(_, size)| size).sum()
    }
}

/// Collects `blobs`' unnamed blobs older than `min_age`, naming by the SQLite database at
/// `db_file` (which must exist and be a provider's); removes them unless `dry_run`.
/// `progress` hears what each phase is doing.
pub async fn collect(
    blobs: &Blobs,
    db_file: &Path,
    min_age: Duration,
    dry_run: bool,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    anyhow::ensure!(db_file.is_file(), "no database at {}: nothing tells which blobs are in use", db_file.display());
    progress("listing the blob store");
    let (stored, foreign) = blobs.stored()?;
    let mut report = Report { blobs: stored.len(), foreign, ..Report::default() };
    let wanted: HashSet<B256> = stored.iter().map(|b| b.hash).collect();
    progress(&format!("reading {} for the {} blobs' hashes", db_file.display(), stored.len()));
    let named = named_in(db_file, &wanted).await?;
    report.named = named.len();
    let now = SystemTime::now();
    let unnamed: Vec<&StoredBlob> = stored.iter().filter(|b| !named.contains(&b.hash)).collect();
    for blob in unnamed {
        // A modification time in the future counts as young.
        if now.duration_since(blob.modified).unwrap_or_default() < min_age {
            report.young += 1;
            continue;
        }
        match if dry_run { Ok(()) } else { blobs.remove(&blob.hash) } {
            Ok(()) => report.removed.push((blob.hash, blob.size)),
            Err(e) => report.failed.push((blob.hash, e.to_string())),
        }
    }
    Ok(report)
}

/// The hashes of `wanted` that some value of the database at `db_file` contains.
async fn named_in(db_file: &Path, wanted: &HashSet<B256>) -> anyhow::Result<HashSet<B256>> {
    let mut conn = SqliteConnectOptions::new().filename(db_file).connect().await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .fetch_all(&mut conn)
            .await?;
    let missing: Vec<&str> = EXPECTED_TABLES.iter().copied().filter(|t| !tables.iter().any(|have| have == t)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} is not a provider's database (no table {}): nothing tells which blobs are in use",
        db_file.display(),
        missing.join(", ")
    );
    let mut named = HashSet::new();
    for table in &tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1)").bind(table).fetch_all(&mut conn).await?;
        for column in &columns {
            // Bytes, not strings: a value need not be UTF-8. A BLOB is read as itself and as
            // its hex digits, so a hash in it is found as text or as 32 raw bytes.
            let c = quoted(column);
            let select = format!(
                "SELECT CASE typeof({c}) WHEN 'blob' THEN CAST({c} || ' ' || hex({c}) AS BLOB) \
                 ELSE CAST({c} AS BLOB) END FROM {}",
                quoted(table)
            );
            let mut values = sqlx::query_scalar::<_, Option<Vec<u8>>>(&select).fetch(&mut conn);
            while let Some(value) = values.try_next().await? {
                if let Some(bytes) = value {
                    hashes_in(&bytes, |h| {
                        if wanted.contains(&h) {
                            named.insert(h);
                        }
                    });
                }
            }
        }
    }
    conn.close().await?;
    Ok(named)
}

/// An SQL identifier, quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Calls `found` with every 64-digit window of every run of hexadecimal digits in `bytes`.
fn hashes_in(bytes: &[u8], mut found: impl FnMut(B256)) {
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        for w in start..(i + 1).saturating_sub(64).max(start) {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&bytes[w..w + 64], &mut hash).is_ok() {
                found(B256::from(hash));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<B256> {
        let mut out = Vec::new();
        hashes_in(text.as_bytes(), |h| out.push(h));
        out
    }

    #[test]
    fn hashes_are_found_in_any_spelling_and_inside_longer_runs() {
        let h = B256::repeat_byte(0xab);
        let hex = hex::encode(h);
        assert_eq!(all(&format!("{{\"blob\":\"0x{hex}\"}}")), vec![h]);
        assert_eq!(all(&format!("path {} end", hex.to_uppercase())), vec![h]);
        assert_eq!(all(&hex), vec![h], "the whole value");
        // Inside a longer run (ABI-encoded words, a signature): every window is a candidate.
        let long = format!("00{hex}ff");
        let found = all(&long);
        assert_eq!(found.len(), 5);
        assert!(found.contains(&h));
        assert!(all(&hex[..63]).is_empty(), "63 digits are not a hash");
        assert!(all("").is_empty());
        let mut raw = b"\xff\xfe".to_vec();
        raw.extend_from_slice(hex.as_bytes());
        let mut in_bytes = Vec::new();
        hashes_in(&raw, |h| in_bytes.push(h));
        assert_eq!(in_bytes, vec![h], "bytes that are not UTF-8 around it");
    }
}
