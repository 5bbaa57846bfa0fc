//! The end of a flow: a job's results downloaded and checked against its receipt, and the
//! receipt against the keeper and the provider's signature.

use std::path::{Path, PathBuf};

use alloy_primitives::B256;
use tidepool_runtime::Receipt;
use tidepool_runtime::tree::{EntryKind, Tree};

use super::flow::Step;
use super::{Client, ClientError, ClientResult};
use crate::protocol::api::{JobView, ResultKind};
use crate::protocol::ddo::ComputeService;
use crate::protocol::events::PaymentReleased;
use crate::protocol::names::check_path;
use crate::protocol::signing::verify_receipt_signature;

impl Client {
    /// Downloads every result of a job into `dir` (`outputs/`, `logs/`, `receipt.json`), and
    /// rebuilds the outputs tree exactly (directories and symlinks included). Also returns the
    /// job as the provider showed it with the results, if it did.
    pub(super) async fn fetch_results(
        &self,
        job: &str,
        dir: &Path,
        progress: &mut impl FnMut(&Step),
    ) -> ClientResult<(Receipt, Vec<(String, u64)>, Option<JobView>)> {
        let results = self.results(job).await?;
        progress(&Step::Downloading { files: results.results.len() });
        let outputs_dir = dir.join("outputs");
        std::fs::create_dir_all(&outputs_dir)?;
        if let Some(tree) = &results.outputs {
            recreate_tree_shape(&outputs_dir, tree)?;
        }
        let mut files = Vec::new();
        let mut receipt = None;
        // An empty file has nothing to download: it is made here (and checked like the rest).
        let empty = tidepool_runtime::tree::blake3_b256(b"");
        for r in &results.results {
            let dest = match r.kind {
                ResultKind::Output => safe_join(&outputs_dir, &r.name)?,
                ResultKind::Log => safe_join(&dir.join("logs"), &r.name)?,
                ResultKind::Receipt => dir.join("receipt.json"),
            };
            if r.kind != ResultKind::Receipt && r.size == 0 && r.hash == Some(empty) {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&dest)?;
                if r.kind == ResultKind::Output {
                    files.push((r.name.clone(), 0));
                }
                continue;
            }
            match r.kind {
                ResultKind::Output => {
                    files.push((r.name.clone(), self.download(job, r.index, &dest).await?));
                }
                ResultKind::Log => {
                    self.download(job, r.index, &dest).await?;
                }
                ResultKind::Receipt => {
                    // The receipt came inline: its file is its pretty-printed JSON, unless
                    // that is not the file listed (then it is downloaded).
                    let inline = results
                        .receipt
                        .as_ref()
                        .map(serde_json::to_string_pretty)
                        .transpose()
                        .map_err(|e| ClientError::Protocol(format!("receipt: {e}")))?;
                    let listed = |json: &String| {
                        json.len() as u64 == r.size
                            && r.hash == Some(tidepool_runtime::tree::blake3_b256(json.as_bytes()))
                    };
                    match inline.filter(listed) {
                        Some(json) => std::fs::write(&dest, json)?,
                        None => {
                            self.download(job, r.index, &dest).await?;
                        }
                    }
                    let text = std::fs::read_to_string(&dest)?;
                    receipt = Some(
                        serde_json::from_str::<Receipt>(&text)
                            .map_err(|e| ClientError::Protocol(format!("receipt: {e}")))?,
                    );
                }
            }
        }
        let receipt = receipt.ok_or_else(|| ClientError::Flow(format!("job {job} has no receipt")))?;
        // The downloaded outputs must be exactly what the receipt commits to.
        let local = tidepool_runtime::tree::scan(&outputs_dir).map_err(|e| ClientError::Flow(e.to_string()))?;
        if local.root() != receipt.outputs_root {
            return Err(ClientError::Flow(format!(
                "the downloaded outputs (root {}) are not the ones the receipt commits to ({})",
                local.root(),
                receipt.outputs_root
            )));
        }
        for (name, want) in [("stdout.log", receipt.stdout_hash), ("stderr.log", receipt.stderr_hash)] {
            let got = tidepool_runtime::tree::blake3_b256(&std::fs::read(dir.join("logs").join(name))?);
            if got != want {
                return Err(ClientError::Flow(format!("the downloaded {name} does not match the receipt")));
            }
        }
        Ok((receipt, files, results.job))
    }
}

/// The receipt is consistent, signed by the provider for this chain, committed on the keeper,
/// and about the algorithm we uploaded.
pub(super) fn check_receipt(
    client: &Client,
    receipt: &Receipt,
    released: &PaymentReleased,
    algorithm_hash: Option<B256>,
    service: &ComputeService,
) -> ClientResult<()> {
    if !receipt.hash_is_consistent() {
        return Err(ClientError::Flow("the receipt's hash does not match its fields".into()));
    }
    verify_receipt_signature(receipt, service.provider.address, client.domain())
        .map_err(|e| ClientError::Flow(format!("the receipt's provider signature does not verify: {e}")))?;
    if released.receiptHash != receipt.receipt_hash {
        return Err(ClientError::Flow("the keeper committed another receipt hash than the one downloaded".into()));
    }
    if algorithm_hash.is_some_and(|h| h != receipt.algorithm_hash) {
        return Err(ClientError::Flow("the receipt is about another algorithm than the one uploaded".into()));
    }
    Ok(())
}

pub(super) fn prepare_output_dir(dir: &Path) -> ClientResult<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(ClientError::Flow(format!(
            "{} is not empty; refusing to mix results with existing files",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// `base/relative`, refusing anything that would leave `base`.
fn safe_join(base: &Path, relative: &str) -> ClientResult<PathBuf> {
    check_path(relative).map_err(|e| ClientError::Protocol(format!("the provider sent a bad result path: {e}")))?;
    Ok(base.join(relative))
}

/// Creates the directories and symlinks of an outputs tree. Symlinks must point down (as the
/// runtime makes guests' links): one that could lead out of the outputs is refused.
fn recreate_tree_shape(base: &Path, tree: &Tree) -> ClientResult<()> {
    for e in &tree.entries {
        match &e.kind {
            EntryKind::Dir => std::fs::create_dir_all(safe_join(base, &e.path)?)?,
            EntryKind::Symlink { target } => {
                let link = safe_join(base, &e.path)?;
                if !tidepool_runtime::tree::points_down(target) {
                    return Err(ClientError::Protocol(format!("the outputs hold a symlink leaving them: {}", e.path)));
                }
                std::os::unix::fs::symlink(target, link)?;
            }
            EntryKind::File { .. } => {}
        }
    }
    Ok(())
}
