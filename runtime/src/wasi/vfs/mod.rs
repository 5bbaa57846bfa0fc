//! The guest's filesystem: a tree of names kept in host memory, with file contents in host files.
//!
//! # Why a filesystem view of our own
//!
//! Stock wasmtime-wasi passes directory listings, timestamps, inode numbers and sizes straight
//! from the host, so the same guest sees different things on different machines (wasmtime issue
//! #14251), and nothing bounds what it writes. Here every piece of metadata a guest can observe
//! is answered from this tree, never from the host:
//!
//! * listings are sorted by name (`BTreeMap`), with `.` and `..` first;
//! * inode numbers come from a per-job counter, assigned in a deterministic order (inputs in the
//!   sorted order of their staging walk, then in the order the guest creates things);
//! * every timestamp starts as the constant [`FILE_TIME_NS`] and changes only when the guest sets
//!   it (`*_set_times`, with `*_NOW` meaning the job's virtual clock); reads and writes do not
//!   touch timestamps; `nlink` is counted here; directory sizes are 0; devices are numbered per
//!   mount;
//! * names are UTF-8, at most [`NAME_MAX`] bytes, without NUL, whatever the host filesystem
//!   would accept; case is significant.
//!
//! Only file *contents* touch the host: input files are read through a capability handle
//! ([`cap_std`]) on the staged dataset directory, and every file the guest creates is an
//! anonymous "blob" file in a scratch directory. When the job ends the output tree is
//! [materialized](Vfs::materialize) into the output directory. The output quota (bytes and
//! entries) is enforced here, at the exact write that would cross it.
//!
//! Path resolution is ours too: a lookup starts at a directory descriptor and may never climb
//! above it (`..` at the top, absolute paths and absolute symlink targets are `ENOTCAPABLE`),
//! symlinks are followed at most [`MAX_SYMLINKS`] times, and no symlink is ever handed to the
//! host, so a link pointing outside a mount is never followed.
//!
//! Everything lives on the job's thread (`Rc`/`RefCell`); nothing here is shared across jobs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::{Rc, Weak};

use super::abi::filetype;
use super::mem::Errno;

mod file;
mod lookup;
mod output;
mod stage;

use file::Backing;
pub(crate) use file::File;
pub(crate) use lookup::Lookup;
use output::BlobStore;
#[cfg(test)]
pub(crate) use output::OutputUsage;
pub(crate) use output::Scratch;

/// Longest name of one directory entry, in bytes.
pub(crate) const NAME_MAX: usize = 255;
/// Longest path a guest may pass to a path function, in bytes.
pub(crate) const PATH_MAX: usize = 4096;
/// How deep directories may nest below a mount root (`ENAMETOOLONG` beyond). Bounds every walk
/// over the tree (materializing, hashing, dropping) whatever the guest builds.
pub(crate) const MAX_DEPTH: usize = 128;
/// How many symlinks one lookup may follow before failing with `ELOOP`.
pub(crate) const MAX_SYMLINKS: u32 = 40;
/// The timestamp (ns since the Unix epoch) of every file, directory and symlink:
/// 2025-01-01T00:00:00Z.
pub(crate) const FILE_TIME_NS: u64 = 1_735_689_600_000_000_000;

/// Which mount a node belongs to. Used for `st_dev` and for `EXDEV` on cross-mount links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mount {
    Algorithm = 1,
    Inputs = 2,
    Outputs = 3,
    /// An environment's own read-only mount (such as an SDK).
    Environment = 4,
}

/// Why an operation stopped, beyond an error number for the guest.
#[derive(Debug)]
pub(crate) enum Fault {
    /// Returned to the guest as the host function's result.
    Errno(Errno),
    /// The guest crossed the output quota; the job stops with outcome `output_quota`.
    Quota(QuotaExceeded),
    /// The host failed (disk full, I/O error on the scratch directory): the job is aborted
    /// with an error, because no receipt could honestly describe what happened.
    Host(&'static str, io::Error),
}

impl From<Errno> for Fault {
    fn from(e: Errno) -> Self {
        Fault::Errno(e)
    }
}

/// Which part of the output quota a write would have crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuotaExceeded {
    Bytes { limit: u64 },
    Entries { limit: u64 },
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaExceeded::Bytes { limit } => write!(f, "the guest tried to write more than {limit} bytes of output"),
            QuotaExceeded::Entries { limit } => {
                write!(f, "the guest tried to create more than {limit} output files and directories")
            }
        }
    }
}

pub(crate) type DirRef = Rc<Dir>;

/// A node of the tree.
#[derive(Clone)]
pub(crate) enum Node {
    Dir(Rc<Dir>),
    File(Rc<File>),
    Symlink(Rc<Symlink>),
}

impl Node {
    pub(crate) fn stat(&self) -> Stat {
        match self {
            Node::Dir(d) => d.stat(),
            Node::File(f) => f.stat(),
            Node::Symlink(l) => l.stat(),
        }
    }

    pub(crate) fn mount(&self) -> Mount {
        match self {
            Node::Dir(d) => d.mount,
            Node::File(f) => f.mount,
            Node::Symlink(l) => l.mount,
        }
    }

    fn times(&self) -> &Cell<Times> {
        match self {
            Node::Dir(d) => &d.times,
            Node::File(f) => &f.times,
            Node::Symlink(l) => &l.times,
        }
    }

    /// Sets the access and/or modification time; `None` leaves a time as it is.
    pub(crate) fn set_times(&self, atim: Option<u64>, mtim: Option<u64>) {
        let cell = self.times();
        let mut t = cell.get();
        if let Some(a) = atim {
            t.atim = a;
        }
        if let Some(m) = mtim {
            t.mtim = m;
        }
        cell.set(t);
    }
}

/// What `filestat` reports, before it is laid out for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub times: Times,
}

/// A node's access, modification and status-change times, in ns since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Times {
    const INITIAL: Times = Times { atim: FILE_TIME_NS, mtim: FILE_TIME_NS, ctim: FILE_TIME_NS };
}

/// A directory.
pub(crate) struct Dir {
    pub ino: u64,
    pub mount: Mount,
    times: Cell<Times>,
    parent: RefCell<Weak<Dir>>,
    entries: RefCell<BTreeMap<String, Node>>,
    removed: Cell<bool>,
}

impl Dir {
    fn stat(&self) -> Stat {
        Stat {
            dev: self.mount as u64,
            ino: self.ino,
            filetype: filetype::DIRECTORY,
            nlink: 1,
            size: 0,
            times: self.times.get(),
        }
    }

    /// The entry named `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<Node> {
        self.entries.borrow().get(name).cloned()
    }

    /// Walks the listing `fd_readdir` returns: `.`, `..`, then the entries sorted by name,
    /// as `(name, inode, filetype)`, starting at position `from`, until `f` returns false.
    /// A removed directory lists nothing.
    pub(crate) fn visit(&self, from: u64, mut f: impl FnMut(&str, u64, u8) -> bool) {
        if self.removed.get() {
            return;
        }
        let parent_ino = self.parent.borrow().upgrade().map_or(self.ino, |p| p.ino);
        let dots = [(".", self.ino), ("..", parent_ino)];
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        for (name, ino) in dots.into_iter().skip(from) {
            if !f(name, ino, filetype::DIRECTORY) {
                return;
            }
        }
        for (name, node) in self.entries.borrow().iter().skip(from.saturating_sub(2)) {
            let s = node.stat();
            if !f(name, s.ino, s.filetype) {
                return;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// How many directories lie between this one and its mount root (0 for the root).
    pub(crate) fn depth(&self) -> usize {
        let mut depth = 0;
        let mut cur = self.parent.borrow().upgrade();
        while let Some(d) = cur {
            depth += 1;
            cur = d.parent.borrow().upgrade();
        }
        depth
    }

    /// How many levels of directories this one holds (0 when it has no subdirectories).
    pub(crate) fn height(&self) -> usize {
        let entries = self.entries.borrow();
        entries
            .values()
            .filter_map(|n| if let Node::Dir(d) = n { Some(1 + d.height()) } else { None })
            .max()
            .unwrap_or(0)
    }

    /// True if `self` is `other` or one of its ancestors.
    fn is_ancestor_of(self: &Rc<Self>, other: &Rc<Dir>) -> bool {
        let mut cur = Some(other.clone());
        while let Some(d) = cur {
            if Rc::ptr_eq(self, &d) {
                return true;
            }
            cur = d.parent.borrow().upgrade();
        }
        false
    }
}

/// A symbolic link.
pub(crate) struct Symlink {
    pub ino: u64,
    pub mount: Mount,
    pub target: String,
    times: Cell<Times>,
    nlink: Cell<u64>,
}

impl Symlink {
    fn stat(&self) -> Stat {
        Stat {
            dev: self.mount as u64,
            ino: self.ino,
            filetype: filetype::SYMBOLIC_LINK,
            nlink: self.nlink.get(),
            size: self.target.len() as u64,
            times: self.times.get(),
        }
    }
}

/// The whole guest-visible filesystem of one job.
pub(crate) struct Vfs {
    next_ino: Cell<u64>,
    blobs: Option<Rc<BlobStore>>,
}

impl Vfs {
    /// A filesystem whose output files live in `scratch`, bounded by the given quota.
    pub(crate) fn new(scratch: Scratch, max_bytes: u64, max_entries: u64) -> Self {
        Self {
            next_ino: Cell::new(1),
            blobs: Some(Rc::new(BlobStore {
                scratch,
                next_id: Cell::new(1),
                bytes: Cell::new(0),
                entries: Cell::new(0),
                max_bytes,
                max_entries,
                materialized: Cell::new(false),
            })),
        }
    }

    /// A filesystem with no writable mount.
    pub(crate) fn read_only() -> Self {
        Self { next_ino: Cell::new(1), blobs: None }
    }

    fn ino(&self) -> u64 {
        let n = self.next_ino.get();
        self.next_ino.set(n + 1);
        n
    }

    /// A new, empty mount root.
    pub(crate) fn new_root(&self, mount: Mount) -> DirRef {
        self.new_dir(mount, Weak::new())
    }

    fn new_dir(&self, mount: Mount, parent: Weak<Dir>) -> DirRef {
        Rc::new(Dir {
            ino: self.ino(),
            mount,
            times: Cell::new(Times::INITIAL),
            parent: RefCell::new(parent),
            entries: RefCell::new(BTreeMap::new()),
            removed: Cell::new(false),
        })
    }

    /// Current output usage.
    #[cfg(test)]
    pub(crate) fn output_usage(&self) -> OutputUsage {
        self.blobs
            .as_ref()
            .map_or_else(OutputUsage::default, |s| OutputUsage { bytes: s.bytes.get(), entries: s.entries.get() })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The node a lookup found; panics (naming what happened) otherwise.
    pub(crate) fn found(l: Result<Lookup, Errno>) -> Node {
        match l {
            Ok(Lookup::Found { node, .. }) => node,
            Ok(Lookup::Missing { name, .. }) => panic!("expected a node, `{name}` is missing"),
            Err(e) => panic!("expected a node, got errno {e}"),
        }
    }
}
