//! The writable side: files, directories and links the guest creates under `/data/outputs`,
//! their blobs in the scratch directory, the quota they count against, and materializing the
//! finished tree.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use alloy_primitives::B256;

use crate::tree::{Entry, EntryKind, Tree};

use super::super::abi::errno;
use super::{Backing, DirRef, Fault, File, MAX_DEPTH, Mount, NAME_MAX, Node, PATH_MAX, QuotaExceeded, Times, Vfs};

/// A scratch directory for blobs, created the first time the guest creates a file (a job that
/// writes no file touches no disk for it) and removed with everything in it when dropped.
pub(crate) struct Scratch {
    parent: PathBuf,
    dir: OnceCell<(tempfile::TempDir, cap_std::fs::Dir)>,
}

impl Scratch {
    /// A scratch directory to be made in `parent` (so that moving blobs into an output
    /// directory beside it is a hard link), else in the system's temporary directory.
    pub(crate) fn in_dir(parent: impl Into<PathBuf>) -> Self {
        Self { parent: parent.into(), dir: OnceCell::new() }
    }

    /// The directory, created on first use.
    pub(super) fn dir(&self) -> io::Result<&cap_std::fs::Dir> {
        if let Some((_, dir)) = self.dir.get() {
            return Ok(dir);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tidepool-scratch-")
            .tempdir_in(&self.parent)
            .or_else(|_| tempfile::Builder::new().prefix("tidepool-scratch-").tempdir())?;
        let dir = cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())?;
        Ok(&self.dir.get_or_init(|| (tmp, dir)).1)
    }

    /// The directory if it was ever needed.
    pub(super) fn existing(&self) -> Option<&cap_std::fs::Dir> {
        self.dir.get().map(|(_, dir)| dir)
    }
}

/// The scratch directory holding the contents of files the guest creates, and the quota
/// they count against.
pub(crate) struct BlobStore {
    pub(super) scratch: Scratch,
    pub(super) next_id: Cell<u64>,
    pub(super) bytes: Cell<u64>,
    pub(super) entries: Cell<u64>,
    pub(super) max_bytes: u64,
    pub(super) max_entries: u64,
    pub(super) materialized: Cell<bool>,
}

pub(super) fn blob_name(id: u64) -> String {
    format!("blob-{id}")
}

/// Output usage (bytes and entries held).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutputUsage {
    pub bytes: u64,
    pub entries: u64,
}

impl Vfs {
    fn store_for(&self, dir: &DirRef) -> Result<&Rc<BlobStore>, Fault> {
        match (&self.blobs, dir.mount) {
            (Some(store), Mount::Outputs) => Ok(store),
            _ => Err(Fault::Errno(errno::ROFS)),
        }
    }

    fn check_name(name: &str) -> Result<(), Fault> {
        if name.len() > NAME_MAX {
            return Err(Fault::Errno(errno::NAMETOOLONG));
        }
        Ok(())
    }

    fn reserve_entry(store: &BlobStore) -> Result<(), Fault> {
        if store.entries.get() >= store.max_entries {
            return Err(Fault::Quota(QuotaExceeded::Entries { limit: store.max_entries }));
        }
        store.entries.set(store.entries.get() + 1);
        Ok(())
    }

    fn release_entry(&self) {
        if let Some(store) = &self.blobs {
            store.entries.set(store.entries.get().saturating_sub(1));
        }
    }

    /// Charges the byte quota for `file` growing to `new_size` (no-op when it does not grow).
    pub(crate) fn reserve_growth(&self, file: &File, new_size: u64) -> Result<(), Fault> {
        let old = file.size.get();
        if new_size <= old {
            return Ok(());
        }
        let Backing::Blob { store, .. } = &file.backing else { return Err(Fault::Errno(errno::NOTCAPABLE)) };
        let growth = new_size - old;
        let total = store.bytes.get().checked_add(growth).ok_or(Fault::Errno(errno::FBIG))?;
        if total > store.max_bytes {
            return Err(Fault::Quota(QuotaExceeded::Bytes { limit: store.max_bytes }));
        }
        store.bytes.set(total);
        Ok(())
    }

    /// Creates an empty regular file `name` in `parent`.
    pub(crate) fn create_file(&self, parent: &DirRef, name: &str) -> Result<Rc<File>, Fault> {
        let store = self.store_for(parent)?;
        Self::check_name(name)?;
        if parent.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        Self::reserve_entry(store)?;
        let id = store.next_id.get();
        store.next_id.set(id + 1);
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        if let Err(e) = store.scratch.dir().and_then(|dir| dir.open_with(blob_name(id), &opts)) {
            store.entries.set(store.entries.get() - 1);
            return Err(Fault::Host("creating an output blob", e));
        }
        let f = Rc::new(File {
            ino: self.ino(),
            mount: Mount::Outputs,
            times: Cell::new(Times::INITIAL),
            size: Cell::new(0),
            nlink: Cell::new(1),
            backing: Backing::Blob { store: store.clone(), id },
            host: RefCell::new(Weak::new()),
        });
        parent.entries.borrow_mut().insert(name.to_string(), Node::File(f.clone()));
        Ok(f)
    }

    /// Creates an empty directory `name` in `parent`.
    pub(crate) fn create_dir(&self, parent: &DirRef, name: &str) -> Result<(), Fault> {
        let store = self.store_for(parent)?;
        Self::check_name(name)?;
        if parent.depth() + 1 > MAX_DEPTH {
            return Err(Fault::Errno(errno::NAMETOOLONG));
        }
        if parent.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        Self::reserve_entry(store)?;
        let d = self.new_dir(parent.mount, Rc::downgrade(parent));
        parent.entries.borrow_mut().insert(name.to_string(), Node::Dir(d));
        Ok(())
    }

    /// Creates a symlink `name` in `parent` pointing at `target`. Only targets that point
    /// down are accepted (relative, no `..`): such a link resolves inside the directory that
    /// holds it wherever that is moved or linked to, so a materialized output tree never holds
    /// a link that leads out of it. (A climbing target checked against the link's depth when
    /// it is made could be moved up afterwards, or climb through another link.)
    pub(crate) fn create_symlink(&self, parent: &DirRef, name: &str, target: &str) -> Result<(), Fault> {
        let store = self.store_for(parent)?;
        Self::check_name(name)?;
        if target.is_empty() {
            return Err(Fault::Errno(errno::NOENT));
        }
        if target.len() > PATH_MAX || target.contains('\0') {
            return Err(Fault::Errno(errno::INVAL));
        }
        if !crate::tree::points_down(target) {
            return Err(Fault::Errno(errno::NOTCAPABLE));
        }
        if parent.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        Self::reserve_entry(store)?;
        let l = self.new_symlink(parent.mount, target);
        parent.entries.borrow_mut().insert(name.to_string(), Node::Symlink(Rc::new(l)));
        Ok(())
    }

    /// Adds a hard link `name` in `parent` to `node` (a file or a symlink; directories cannot
    /// be linked: `EPERM`).
    pub(crate) fn link(&self, node: &Node, parent: &DirRef, name: &str) -> Result<(), Fault> {
        let store = self.store_for(parent)?;
        Self::check_name(name)?;
        let nlink = match node {
            Node::Dir(_) => return Err(Fault::Errno(errno::PERM)),
            Node::File(f) => &f.nlink,
            Node::Symlink(l) => &l.nlink,
        };
        if node.mount() != parent.mount {
            return Err(Fault::Errno(errno::XDEV));
        }
        if parent.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        Self::reserve_entry(store)?;
        nlink.set(nlink.get() + 1);
        parent.entries.borrow_mut().insert(name.to_string(), node.clone());
        Ok(())
    }

    /// Removes the non-directory entry `name` from `parent`.
    pub(crate) fn unlink(&self, parent: &DirRef, name: &str) -> Result<(), Fault> {
        self.store_for(parent)?;
        let removed = parent.entries.borrow_mut().remove(name);
        match removed {
            Some(Node::File(f)) => {
                f.nlink.set(f.nlink.get().saturating_sub(1));
                self.release_entry();
                Ok(())
            }
            Some(Node::Symlink(l)) => {
                l.nlink.set(l.nlink.get().saturating_sub(1));
                self.release_entry();
                Ok(())
            }
            Some(other @ Node::Dir(_)) => {
                parent.entries.borrow_mut().insert(name.to_string(), other);
                Err(Fault::Errno(errno::ISDIR))
            }
            None => Err(Fault::Errno(errno::NOENT)),
        }
    }

    /// Removes the empty directory `name` from `parent`.
    pub(crate) fn remove_dir(&self, parent: &DirRef, name: &str) -> Result<(), Fault> {
        self.store_for(parent)?;
        let Some(node) = parent.get(name) else { return Err(Fault::Errno(errno::NOENT)) };
        let Node::Dir(d) = node else { return Err(Fault::Errno(errno::NOTDIR)) };
        if !d.is_empty() {
            return Err(Fault::Errno(errno::NOTEMPTY));
        }
        parent.entries.borrow_mut().remove(name);
        d.removed.set(true);
        self.release_entry();
        Ok(())
    }

    /// Renames `from_dir/from` to `to_dir/to`, POSIX `rename(2)` semantics.
    pub(crate) fn rename(&self, from_dir: &DirRef, from: &str, to_dir: &DirRef, to: &str) -> Result<(), Fault> {
        self.store_for(from_dir)?;
        self.store_for(to_dir)?;
        Self::check_name(to)?;
        let Some(src) = from_dir.get(from) else { return Err(Fault::Errno(errno::NOENT)) };
        if to_dir.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        let dst = to_dir.get(to);
        if let Some(dst) = &dst
            && same_node(&src, dst)
        {
            return Ok(());
        }
        match (&src, &dst) {
            (Node::Dir(s), dst) => {
                if s.is_ancestor_of(to_dir) {
                    return Err(Fault::Errno(errno::INVAL));
                }
                if to_dir.depth() + 1 + s.height() > MAX_DEPTH {
                    return Err(Fault::Errno(errno::NAMETOOLONG));
                }
                match dst {
                    Some(Node::Dir(d)) if !d.is_empty() => return Err(Fault::Errno(errno::NOTEMPTY)),
                    Some(Node::Dir(_)) | None => {}
                    Some(_) => return Err(Fault::Errno(errno::NOTDIR)),
                }
            }
            (_, Some(Node::Dir(_))) => return Err(Fault::Errno(errno::ISDIR)),
            _ => {}
        }
        from_dir.entries.borrow_mut().remove(from);
        let replaced = to_dir.entries.borrow_mut().insert(to.to_string(), src.clone());
        if let Node::Dir(s) = &src {
            *s.parent.borrow_mut() = Rc::downgrade(to_dir);
        }
        if let Some(old) = replaced {
            match old {
                Node::Dir(d) => d.removed.set(true),
                Node::File(f) => f.nlink.set(f.nlink.get().saturating_sub(1)),
                Node::Symlink(l) => l.nlink.set(l.nlink.get().saturating_sub(1)),
            }
            self.release_entry();
        }
        Ok(())
    }

    /// Writes the output tree rooted at `root` into `dest` (an empty directory): directories
    /// are created, every name of a file becomes a host hard link to its blob (a copy across
    /// filesystems), symlinks are created as they are. Each directory is written through its
    /// own handle, so no host path is longer than one name. The blobs themselves go with the
    /// scratch directory.
    pub(crate) fn materialize(&self, root: &DirRef, dest: &cap_std::fs::Dir) -> io::Result<()> {
        let Some(store) = &self.blobs else { return Ok(()) };
        store.materialized.set(true);
        materialize_dir(store.scratch.existing(), root, dest)
    }
}

impl Vfs {
    /// The output tree rooted at `root` as [`tree::scan_dir`](crate::tree::scan_dir) would
    /// find it once materialized, with each file hashed from its blob (once, however many
    /// names it has): no directory is read back, and a job that wrote nothing costs nothing.
    pub(crate) fn output_tree(&self, root: &DirRef) -> io::Result<Tree> {
        let mut entries = Vec::new();
        if let Some(store) = &self.blobs {
            let mut hashed = HashMap::new();
            tree_entries(store.scratch.existing(), root, "", &mut hashed, &mut entries)?;
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Tree { entries })
    }
}

/// Recursion is bounded by [`MAX_DEPTH`].
fn tree_entries(
    blobs: Option<&cap_std::fs::Dir>,
    dir: &DirRef,
    prefix: &str,
    hashed: &mut HashMap<u64, (u64, B256)>,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    for (name, node) in dir.entries.borrow().iter() {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let kind = match node {
            Node::Dir(d) => {
                tree_entries(blobs, d, &path, hashed, out)?;
                EntryKind::Dir
            }
            Node::File(f) => {
                let Backing::Blob { id, .. } = &f.backing else { continue };
                let (size, hash) = match hashed.get(id) {
                    Some(known) => *known,
                    None => {
                        let blobs = blobs.ok_or_else(|| io::Error::other("an output file has no scratch directory"))?;
                        let known = crate::tree::hash_file(blobs.open(blob_name(*id))?.into_std())?;
                        *hashed.entry(*id).or_insert(known)
                    }
                };
                EntryKind::File { size, hash }
            }
            Node::Symlink(l) => EntryKind::Symlink { target: l.target.clone() },
        };
        out.push(Entry { path, kind });
    }
    Ok(())
}

fn same_node(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Dir(a), Node::Dir(b)) => Rc::ptr_eq(a, b),
        (Node::File(a), Node::File(b)) => Rc::ptr_eq(a, b),
        (Node::Symlink(a), Node::Symlink(b)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

/// Recursion is bounded by [`MAX_DEPTH`].
fn materialize_dir(blobs: Option<&cap_std::fs::Dir>, dir: &DirRef, dest: &cap_std::fs::Dir) -> io::Result<()> {
    for (name, node) in dir.entries.borrow().iter() {
        match node {
            Node::Dir(d) => {
                dest.create_dir(name)?;
                materialize_dir(blobs, d, &dest.open_dir(name)?)?;
            }
            Node::File(f) => {
                let Backing::Blob { id, .. } = &f.backing else { continue };
                // A file exists only once its blob was created in the scratch directory.
                let blobs = blobs.ok_or_else(|| io::Error::other("an output file has no scratch directory"))?;
                match blobs.hard_link(blob_name(*id), dest, name) {
                    Ok(()) => {}
                    // Another filesystem, or the blob has as many links as the filesystem
                    // allows (a guest can hard-link one file 65,000 times on ext4): copy.
                    Err(e) if matches!(e.raw_os_error(), Some(18 /* EXDEV */ | 31 /* EMLINK */)) => {
                        let mut from = blobs.open(blob_name(*id))?;
                        io::copy(&mut from, &mut dest.create(name)?)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Node::Symlink(l) => dest.symlink(&l.target, name)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasi::vfs::tests::found;

    fn outputs() -> (tempfile::TempDir, Vfs, DirRef) {
        let tmp = tempfile::tempdir().unwrap();
        let vfs = Vfs::new(Scratch::in_dir(tmp.path()), 100, 10);
        let root = vfs.new_root(Mount::Outputs);
        (tmp, vfs, root)
    }

    #[test]
    fn output_quota_is_enforced_at_the_crossing_write() {
        let (_tmp, vfs, root) = outputs();
        let f = vfs.create_file(&root, "f").unwrap();
        vfs.reserve_growth(&f, 60).unwrap();
        f.write_at(&[1; 60], 0).unwrap();
        assert!(matches!(vfs.reserve_growth(&f, 101), Err(Fault::Quota(QuotaExceeded::Bytes { limit: 100 }))));
        vfs.reserve_growth(&f, 100).expect("exactly at the quota is allowed");
        f.write_at(&[2; 40], 60).unwrap();
        assert_eq!(vfs.output_usage(), OutputUsage { bytes: 100, entries: 1 });
        f.set_size(10).unwrap();
        assert_eq!(vfs.output_usage().bytes, 10, "truncation gives bytes back");
        vfs.unlink(&root, "f").unwrap();
        drop(f);
        assert_eq!(vfs.output_usage(), OutputUsage { bytes: 0, entries: 0 }, "the last reference frees the blob");
    }

    #[test]
    fn entry_quota_counts_files_dirs_and_links() {
        let (_tmp, vfs, root) = outputs();
        for i in 0..10 {
            vfs.create_dir(&root, &format!("d{i}")).unwrap();
        }
        assert!(matches!(
            vfs.create_file(&root, "one-too-many"),
            Err(Fault::Quota(QuotaExceeded::Entries { limit: 10 }))
        ));
        vfs.remove_dir(&root, "d0").unwrap();
        vfs.create_file(&root, "fits-again").unwrap();
    }

    #[test]
    fn rename_follows_posix_rules() {
        let (_tmp, vfs, root) = outputs();
        vfs.create_dir(&root, "d").unwrap();
        vfs.create_file(&root, "f").unwrap();
        let Node::Dir(d) = root.get("d").unwrap() else { panic!() };
        vfs.create_dir(&d, "sub").unwrap();
        assert!(matches!(vfs.rename(&root, "f", &root, "d"), Err(Fault::Errno(errno::ISDIR))));
        assert!(matches!(vfs.rename(&root, "d", &root, "f"), Err(Fault::Errno(errno::NOTDIR))));
        let Node::Dir(sub) = d.get("sub").unwrap() else { panic!() };
        assert!(matches!(vfs.rename(&root, "d", &sub, "x"), Err(Fault::Errno(errno::INVAL))), "into itself");
        vfs.create_dir(&root, "e").unwrap();
        assert!(matches!(vfs.rename(&root, "e", &root, "d"), Err(Fault::Errno(errno::NOTEMPTY))));
        vfs.rename(&root, "d", &root, "e2").unwrap();
        assert!(matches!(found(vfs.lookup(&root, "e2/sub/..", false)), Node::Dir(x) if Rc::ptr_eq(&x, &d)));
        vfs.rename(&root, "f", &root, "g").unwrap();
        assert!(root.get("f").is_none() && root.get("g").is_some());
    }

    #[test]
    fn symlinks_created_by_the_guest_must_stay_inside_outputs() {
        let (_tmp, vfs, root) = outputs();
        vfs.create_dir(&root, "d").unwrap();
        let Node::Dir(d) = root.get("d").unwrap() else { panic!() };
        vfs.create_symlink(&d, "ok", "x/./y").unwrap();
        for climbing in ["../x", "../../x", "x/../..", "..", "/etc"] {
            assert!(
                matches!(vfs.create_symlink(&d, "no", climbing), Err(Fault::Errno(errno::NOTCAPABLE))),
                "{climbing}"
            );
        }
    }

    #[test]
    fn materialize_writes_the_tree_and_hard_links() {
        let (tmp, vfs, root) = outputs();
        let f = vfs.create_file(&root, "a.txt").unwrap();
        vfs.reserve_growth(&f, 5).unwrap();
        f.write_at(b"hello", 0).unwrap();
        vfs.create_dir(&root, "sub").unwrap();
        let Node::Dir(sub) = root.get("sub").unwrap() else { panic!() };
        vfs.link(&Node::File(f.clone()), &sub, "again.txt").unwrap();
        vfs.create_dir(&sub, "empty").unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let dest = cap_std::fs::Dir::open_ambient_dir(&out, cap_std::ambient_authority()).unwrap();
        vfs.materialize(&root, &dest).unwrap();
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(out.join("sub/again.txt")).unwrap(), b"hello");
        assert!(out.join("sub/empty").is_dir());
    }
}
