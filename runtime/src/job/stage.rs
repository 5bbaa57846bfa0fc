//! Staging: the output directory, the input datasets (scanned and hashed, or trusted from
//! their manifest) and an environment's files, added to the guest's filesystem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::InputSpec;
use crate::error::{Error, Result};
use crate::files::{FileKind, FileTree};
use crate::tree::{self, EntryKind, Tree};
use crate::wasi::vfs::{Scratch, Vfs};

/// Makes sure `dir` exists and is empty; never touches what is already in it.
pub(super) fn prepare_output(dir: &Path) -> Result<()> {
    let bad = |reason: String| Error::InvalidOutput { path: dir.to_path_buf(), reason };
    match std::fs::create_dir(dir) {
        // Made just now, so empty.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot be read: {e}")))?;
            if entries.next().is_some() {
                return Err(bad("is not empty; refusing to mix new outputs with existing files".into()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot be created: {e}")))
        }
        Err(e) => Err(bad(format!("cannot be created: {e}"))),
    }
}

/// Where output blobs go until the job ends: next to the output directory when possible (so
/// moving them into place is a hard link), created only if the guest writes a file.
pub(super) fn scratch_for(output: &Path) -> Scratch {
    Scratch::in_dir(output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// A staged input: its entries and an open handle on its directory.
pub(super) struct Staged {
    pub(super) name: String,
    pub(super) tree: Arc<Tree>,
    pub(super) dir: Rc<cap_std::fs::Dir>,
}

pub(super) fn stage_input(input: &InputSpec) -> Result<Staged> {
    let invalid = |reason: String| Error::InvalidInput { name: input.name.clone(), reason };
    let dir = cap_std::fs::Dir::open_ambient_dir(&input.dir, cap_std::ambient_authority())
        .map_err(|e| invalid(format!("cannot open {}: {e}", input.dir.display())))?;
    let tree = match &input.manifest {
        Some(tree) => tree.clone(),
        None => Arc::new(tree::scan_dir(&dir).map_err(|e| invalid(format!("{} ({})", e, input.dir.display())))?),
    };
    Ok(Staged { name: input.name.clone(), tree, dir: Rc::new(dir) })
}

/// Adds a staged dataset under `root` in the guest's tree.
pub(super) fn mount_input(vfs: &Vfs, root: &crate::wasi::vfs::DirRef, staged: &Staged) {
    let top = vfs.stage_dir(root, &staged.name);
    let mut dirs: HashMap<&str, crate::wasi::vfs::DirRef> = HashMap::new();
    for entry in &staged.tree.entries {
        let (parent, name) = match entry.path.rsplit_once('/') {
            Some((p, n)) => (dirs.get(p).cloned().unwrap_or_else(|| top.clone()), n),
            None => (top.clone(), entry.path.as_str()),
        };
        match &entry.kind {
            EntryKind::Dir => {
                let d = vfs.stage_dir(&parent, name);
                dirs.insert(&entry.path, d);
            }
            EntryKind::File { size, .. } => {
                vfs.stage_input_file(&parent, name, *size, staged.dir.clone(), PathBuf::from(&entry.path))
            }
            EntryKind::Symlink { target } => vfs.stage_symlink(&parent, name, target),
        }
    }
}

/// Adds an environment algorithm's files (or an environment's mount) under `root`.
pub(super) fn mount_files(vfs: &Vfs, root: &crate::wasi::vfs::DirRef, files: &FileTree) {
    let mut dirs: HashMap<&str, crate::wasi::vfs::DirRef> = HashMap::new();
    for (path, kind) in files.entries() {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (dirs.get(p).cloned().unwrap_or_else(|| root.clone()), n),
            None => (root.clone(), path),
        };
        match kind {
            FileKind::Dir => {
                let d = vfs.stage_dir(&parent, name);
                dirs.insert(path, d);
            }
            FileKind::File(contents) => vfs.stage_memory_file(&parent, name, contents.clone()),
            FileKind::Symlink(target) => vfs.stage_symlink(&parent, name, target),
        }
    }
}
