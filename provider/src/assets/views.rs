//! Dataset views: a published dataset as a directory of hard links to its blobs
//! (`<views>/<did>/<dataset>/`), which jobs mount without copying or rehashing anything.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use tidepool_runtime::tree::{EntryKind, Tree};

use super::{AssetResult, Assets};
use crate::blocking::blocking;
use crate::protocol::ddo::Did;
use crate::store::blobs::Blobs;

impl Assets {
    /// The view of dataset `name` of `did`, built from its manifest if it is missing.
    pub(super) async fn build_view(&self, did: Did, name: &str, tree: Arc<Tree>) -> AssetResult<PathBuf> {
        let dir = self.config.views_dir.join(hex::encode(did.0)).join(name);
        let blobs = self.blobs.clone();
        Ok(blocking(move || build(&blobs, dir, &tree)).await?)
    }
}

/// Hard-links a dataset's blobs into `dir` (again, if it was removed).
fn build(blobs: &Blobs, dir: PathBuf, tree: &Tree) -> std::io::Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir);
    }
    // A staging directory of its own: two jobs (or a job and a publication) may build the
    // same view at once; the first to finish provides it.
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let staging = dir.with_extension(format!("building-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let cap = cap_std::fs::Dir::open_ambient_dir(&staging, ambient_authority())?;
    for e in &tree.entries {
        match &e.kind {
            EntryKind::Dir => cap.create_dir_all(&e.path)?,
            EntryKind::File { hash, .. } => blobs.link_into(hash, &cap, &e.path)?,
            EntryKind::Symlink { .. } => {}
        }
    }
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another build finished first (renaming onto a non-empty directory fails).
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
