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
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::abi::{errno, filetype};
use super::mem::Errno;

/// Longest name of one directory entry, in bytes.
pub(crate) const NAME_MAX: usize = 255;
/// Longest path a guest may pass to a path function, in bytes.
pub(crate) const PATH_MAX: usize = 4096;
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

/// A regular file.
pub(crate) struct File {
    pub ino: u64,
    pub mount: Mount,
    times: Cell<Times>,
    size: Cell<u64>,
    nlink: Cell<u64>,
    backing: Backing,
    /// The host handle shared by every guest descriptor open on this file, while any is open.
    host: RefCell<Weak<std::fs::File>>,
}

/// Where a file's bytes live.
enum Backing {
    /// In host memory (the algorithm module itself).
    Memory(Arc<[u8]>),
    /// A file of a staged input dataset, opened read-only when the guest opens it.
    Input { dir: Rc<cap_std::fs::Dir>, path: PathBuf },
    /// A file the guest created, stored as a blob in the scratch directory.
    Blob { store: Rc<BlobStore>, id: u64 },
}

impl File {
    fn stat(&self) -> Stat {
        Stat {
            dev: self.mount as u64,
            ino: self.ino,
            filetype: filetype::REGULAR_FILE,
            nlink: self.nlink.get(),
            size: self.size.get(),
            times: self.times.get(),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.get()
    }

    /// The host handle for this file's contents, opened on first use (`None` for in-memory
    /// files).
    fn host(&self) -> Result<Option<Rc<std::fs::File>>, Fault> {
        if let Some(h) = self.host.borrow().upgrade() {
            return Ok(Some(h));
        }
        let file = match &self.backing {
            Backing::Memory(_) => return Ok(None),
            Backing::Input { dir, path } => dir
                .open(path)
                // The dataset changed under us, or the host cannot read it: the guest sees EIO.
                .map_err(|_| Fault::Errno(errno::IO))?,
            Backing::Blob { store, id } => {
                let mut opts = cap_std::fs::OpenOptions::new();
                opts.read(true).write(true);
                store.dir.open_with(blob_name(*id), &opts).map_err(|e| Fault::Host("opening an output blob", e))?
            }
        };
        let file = Rc::new(file.into_std());
        *self.host.borrow_mut() = Rc::downgrade(&file);
        Ok(Some(file))
    }

    /// Reads into `buf` at `offset`; returns how many bytes were read (0 at end of file).
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Fault> {
        if let Backing::Memory(bytes) = &self.backing {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            return Ok(n);
        }
        // Never read past the size the tree records, so a host file growing under a running
        // job cannot change what the guest sees.
        let size = self.size.get();
        if offset >= size {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(size - offset).unwrap_or(usize::MAX));
        let Some(host) = self.host()? else { return Ok(0) };
        let mut done = 0;
        while done < want {
            match std::os::unix::fs::FileExt::read_at(&*host, &mut buf[done..want], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Fault::Errno(errno::IO)),
            }
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset`, growing the file as needed. The caller has charged
    /// the quota for the growth (see [`Vfs::reserve_growth`]).
    pub(crate) fn write_at(&self, data: &[u8], offset: u64) -> Result<(), Fault> {
        let Backing::Blob { .. } = &self.backing else { return Err(Fault::Errno(errno::NOTCAPABLE)) };
        let end = offset.checked_add(data.len() as u64).ok_or(errno::FBIG)?;
        let host = self.host()?.ok_or(Fault::Errno(errno::NOTCAPABLE))?;
        std::os::unix::fs::FileExt::write_all_at(&*host, data, offset)
            .map_err(|e| Fault::Host("writing an output file", e))?;
        if end > self.size.get() {
            self.size.set(end);
        }
        Ok(())
    }

    /// Sets the file's size (truncating or extending with zeros). The caller has charged
    /// the quota for any growth.
    pub(crate) fn set_size(&self, size: u64) -> Result<(), Fault> {
        let Backing::Blob { store, .. } = &self.backing else { return Err(Fault::Errno(errno::NOTCAPABLE)) };
        let host = self.host()?.ok_or(Fault::Errno(errno::NOTCAPABLE))?;
        host.set_len(size).map_err(|e| Fault::Host("resizing an output file", e))?;
        let old = self.size.replace(size);
        if size < old {
            store.bytes.set(store.bytes.get() - (old - size));
        }
        Ok(())
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Backing::Blob { store, id } = &self.backing {
            store.bytes.set(store.bytes.get().saturating_sub(self.size.get()));
            if !store.materialized.get() {
                // The last link and the last descriptor are gone: free the host space now.
                let _ = store.dir.remove_file(blob_name(*id));
            }
        }
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

/// The scratch directory holding the contents of files the guest creates, and the quota
/// they count against.
pub(crate) struct BlobStore {
    dir: cap_std::fs::Dir,
    next_id: Cell<u64>,
    bytes: Cell<u64>,
    entries: Cell<u64>,
    max_bytes: u64,
    max_entries: u64,
    materialized: Cell<bool>,
}

fn blob_name(id: u64) -> String {
    format!("blob-{id}")
}

/// Output usage (bytes and entries held).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutputUsage {
    pub bytes: u64,
    pub entries: u64,
}

/// The result of resolving a path.
pub(crate) enum Lookup {
    /// The path names an existing node. `link` is the directory and name it is reached by,
    /// absent when the last component was `.` or `..` (or the path named the start itself).
    Found { node: Node, link: Option<(DirRef, String)>, must_be_dir: bool },
    /// Everything but the last component exists; the last does not.
    Missing { parent: DirRef, name: String, must_be_dir: bool },
}

/// The whole guest-visible filesystem of one job.
pub(crate) struct Vfs {
    next_ino: Cell<u64>,
    blobs: Option<Rc<BlobStore>>,
}

impl Vfs {
    /// A filesystem whose output files live in `scratch`, bounded by the given quota.
    pub(crate) fn new(scratch: cap_std::fs::Dir, max_bytes: u64, max_entries: u64) -> Self {
        Self {
            next_ino: Cell::new(1),
            blobs: Some(Rc::new(BlobStore {
                dir: scratch,
                next_id: Cell::new(1),
                bytes: Cell::new(0),
                entries: Cell::new(0),
                max_bytes,
                max_entries,
                materialized: Cell::new(false),
            })),
        }
    }

    /// A filesystem with no writable mount (unit tests, and outputs-free views).
    #[cfg(test)]
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

    // ---- building the read-only mounts (staging) ----------------------------------------

    /// Adds a directory `name` under `parent` while staging.
    pub(crate) fn stage_dir(&self, parent: &DirRef, name: &str) -> DirRef {
        let d = self.new_dir(parent.mount, Rc::downgrade(parent));
        parent.entries.borrow_mut().insert(name.to_string(), Node::Dir(d.clone()));
        d
    }

    /// Adds an input file, read from `path` under `dir` when opened.
    pub(crate) fn stage_input_file(
        &self,
        parent: &DirRef,
        name: &str,
        size: u64,
        dir: Rc<cap_std::fs::Dir>,
        path: PathBuf,
    ) {
        let f = File {
            ino: self.ino(),
            mount: parent.mount,
            times: Cell::new(Times::INITIAL),
            size: Cell::new(size),
            nlink: Cell::new(1),
            backing: Backing::Input { dir, path },
            host: RefCell::new(Weak::new()),
        };
        parent.entries.borrow_mut().insert(name.to_string(), Node::File(Rc::new(f)));
    }

    /// Adds a file whose bytes are held in memory.
    pub(crate) fn stage_memory_file(&self, parent: &DirRef, name: &str, bytes: Arc<[u8]>) {
        let f = File {
            ino: self.ino(),
            mount: parent.mount,
            times: Cell::new(Times::INITIAL),
            size: Cell::new(bytes.len() as u64),
            nlink: Cell::new(1),
            backing: Backing::Memory(bytes),
            host: RefCell::new(Weak::new()),
        };
        parent.entries.borrow_mut().insert(name.to_string(), Node::File(Rc::new(f)));
    }

    fn new_symlink(&self, mount: Mount, target: &str) -> Symlink {
        Symlink {
            ino: self.ino(),
            mount,
            target: target.to_string(),
            times: Cell::new(Times::INITIAL),
            nlink: Cell::new(1),
        }
    }

    /// Adds a symlink while staging.
    pub(crate) fn stage_symlink(&self, parent: &DirRef, name: &str, target: &str) {
        let l = self.new_symlink(parent.mount, target);
        parent.entries.borrow_mut().insert(name.to_string(), Node::Symlink(Rc::new(l)));
    }

    // ---- path resolution ----------------------------------------------------------------

    /// Resolves `path` relative to `start`. Intermediate symlinks are always followed; the
    /// last component's only when `follow` is set or the path ends with `/`.
    pub(crate) fn lookup(&self, start: &DirRef, path: &str, follow: bool) -> Result<Lookup, Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.len() > PATH_MAX {
            return Err(errno::NAMETOOLONG);
        }
        if path.contains('\0') {
            return Err(errno::INVAL);
        }
        if path.starts_with('/') {
            return Err(errno::NOTCAPABLE);
        }
        // Components still to walk, last first, so symlink targets can be pushed in front.
        let mut rest: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(String::from).collect();
        let mut must_be_dir = path.ends_with('/');
        let mut stack: Vec<DirRef> = vec![start.clone()];
        let mut links = 0;
        loop {
            let Some(comp) = rest.pop() else {
                // Only reachable when the path is made of `/` alone, refused above, or when a
                // symlink target had no components: it names the directory it sits in.
                let top = stack.last().cloned().ok_or(errno::NOENT)?;
                return Ok(Lookup::Found { node: Node::Dir(top), link: None, must_be_dir });
            };
            let last = rest.is_empty();
            let cur = stack.last().cloned().ok_or(errno::NOENT)?;
            if cur.removed.get() {
                return Err(errno::NOENT);
            }
            match comp.as_str() {
                "." => {
                    if last {
                        return Ok(Lookup::Found { node: Node::Dir(cur), link: None, must_be_dir });
                    }
                }
                ".." => {
                    if stack.len() == 1 {
                        return Err(errno::NOTCAPABLE);
                    }
                    stack.pop();
                    if last {
                        let top = stack.last().cloned().ok_or(errno::NOENT)?;
                        return Ok(Lookup::Found { node: Node::Dir(top), link: None, must_be_dir });
                    }
                }
                name => {
                    if name.len() > NAME_MAX {
                        return Err(errno::NAMETOOLONG);
                    }
                    match cur.get(name) {
                        None if last => {
                            return Ok(Lookup::Missing { parent: cur, name: comp, must_be_dir });
                        }
                        None => return Err(errno::NOENT),
                        Some(Node::Dir(d)) => {
                            if last {
                                return Ok(Lookup::Found { node: Node::Dir(d), link: Some((cur, comp)), must_be_dir });
                            }
                            stack.push(d);
                        }
                        Some(Node::File(f)) => {
                            if last && !must_be_dir {
                                return Ok(Lookup::Found { node: Node::File(f), link: Some((cur, comp)), must_be_dir });
                            }
                            return Err(errno::NOTDIR);
                        }
                        Some(Node::Symlink(l)) => {
                            if last && !follow && !must_be_dir {
                                return Ok(Lookup::Found {
                                    node: Node::Symlink(l),
                                    link: Some((cur, comp)),
                                    must_be_dir,
                                });
                            }
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(errno::LOOP);
                            }
                            if l.target.starts_with('/') {
                                // Absolute targets would leave the sandbox: never followed.
                                return Err(errno::NOTCAPABLE);
                            }
                            if l.target.is_empty() {
                                return Err(errno::NOENT);
                            }
                            if last && l.target.ends_with('/') {
                                must_be_dir = true;
                            }
                            let expanded: Vec<String> =
                                l.target.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
                            if expanded.is_empty() {
                                return Err(errno::NOENT);
                            }
                            rest.extend(expanded.into_iter().rev());
                        }
                    }
                }
            }
        }
    }

    // ---- mutations (outputs only; rights are checked by the caller) --------------------

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
        if let Err(e) = store.dir.open_with(blob_name(id), &opts) {
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
        if parent.removed.get() {
            return Err(Fault::Errno(errno::NOENT));
        }
        Self::reserve_entry(store)?;
        let d = self.new_dir(parent.mount, Rc::downgrade(parent));
        parent.entries.borrow_mut().insert(name.to_string(), Node::Dir(d));
        Ok(())
    }

    /// Creates a symlink `name` in `parent` pointing at `target`. Only relative targets that
    /// stay inside the output mount are accepted, so a materialized output tree never holds
    /// a link that leads out of it.
    pub(crate) fn create_symlink(&self, parent: &DirRef, name: &str, target: &str) -> Result<(), Fault> {
        let store = self.store_for(parent)?;
        Self::check_name(name)?;
        if target.is_empty() {
            return Err(Fault::Errno(errno::NOENT));
        }
        if target.len() > PATH_MAX || target.contains('\0') {
            return Err(Fault::Errno(errno::INVAL));
        }
        if target.starts_with('/') {
            return Err(Fault::Errno(errno::NOTCAPABLE));
        }
        // Depth of `parent` below the mount root, then walk the target lexically.
        let mut depth = 0usize;
        let mut cur = parent.parent.borrow().upgrade();
        while let Some(d) = cur {
            depth += 1;
            cur = d.parent.borrow().upgrade();
        }
        for comp in target.split('/') {
            match comp {
                "" | "." => {}
                ".." => depth = depth.checked_sub(1).ok_or(Fault::Errno(errno::NOTCAPABLE))?,
                _ => depth += 1,
            }
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

    // ---- the end of the job ---------------------------------------------------------------

    /// Writes the output tree rooted at `root` into `dest` (an empty directory): directories
    /// are created, blobs are moved into place (a second link to the same file becomes a host
    /// hard link), symlinks are created as they are. Blobs of files the guest unlinked but
    /// kept open are dropped with the tree.
    pub(crate) fn materialize(&self, root: &DirRef, dest: &cap_std::fs::Dir) -> io::Result<()> {
        let Some(store) = &self.blobs else { return Ok(()) };
        store.materialized.set(true);
        let mut placed: HashMap<u64, PathBuf> = HashMap::new();
        materialize_dir(store, root, dest, Path::new(""), &mut placed)
    }
}

fn same_node(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Dir(a), Node::Dir(b)) => Rc::ptr_eq(a, b),
        (Node::File(a), Node::File(b)) => Rc::ptr_eq(a, b),
        (Node::Symlink(a), Node::Symlink(b)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

fn materialize_dir(
    store: &BlobStore,
    dir: &DirRef,
    dest: &cap_std::fs::Dir,
    prefix: &Path,
    placed: &mut HashMap<u64, PathBuf>,
) -> io::Result<()> {
    for (name, node) in dir.entries.borrow().iter() {
        let path = prefix.join(name);
        match node {
            Node::Dir(d) => {
                dest.create_dir(&path)?;
                materialize_dir(store, d, dest, &path, placed)?;
            }
            Node::File(f) => {
                let Backing::Blob { id, .. } = &f.backing else { continue };
                if let Some(first) = placed.get(&f.ino) {
                    dest.hard_link(first, dest, &path)?;
                } else {
                    // Close our handle first so the rename moves a quiescent file.
                    drop(f.host.borrow_mut().upgrade());
                    match store.dir.rename(blob_name(*id), dest, &path) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(18 /* EXDEV */) => {
                            copy_blob(store, *id, dest, &path)?;
                        }
                        Err(e) => return Err(e),
                    }
                    placed.insert(f.ino, path);
                }
            }
            Node::Symlink(l) => dest.symlink(&l.target, &path)?,
        }
    }
    Ok(())
}

fn copy_blob(store: &BlobStore, id: u64, dest: &cap_std::fs::Dir, path: &Path) -> io::Result<()> {
    let mut from = store.dir.open(blob_name(id))?;
    let mut to = dest.create(path)?;
    io::copy(&mut from, &mut to)?;
    store.dir.remove_file(blob_name(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> (tempfile::TempDir, Vfs, DirRef) {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let vfs = Vfs::new(scratch, 100, 10);
        let root = vfs.new_root(Mount::Outputs);
        (tmp, vfs, root)
    }

    fn found(l: Result<Lookup, Errno>) -> Node {
        match l {
            Ok(Lookup::Found { node, .. }) => node,
            Ok(Lookup::Missing { name, .. }) => panic!("expected a node, `{name}` is missing"),
            Err(e) => panic!("expected a node, got errno {e}"),
        }
    }

    #[test]
    fn lookups_never_climb_above_the_start_directory() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        let a = vfs.stage_dir(&root, "a");
        vfs.stage_dir(&a, "b");
        assert!(matches!(found(vfs.lookup(&root, "a/b/..", false)), Node::Dir(d) if Rc::ptr_eq(&d, &a)));
        assert_eq!(vfs.lookup(&root, "..", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "a/../..", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&a, "../a", false).err(), Some(errno::NOTCAPABLE), "the start dir is the sandbox");
        assert_eq!(vfs.lookup(&root, "/a", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "", false).err(), Some(errno::NOENT));
    }

    #[test]
    fn symlinks_are_followed_inside_and_refused_outside() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        let a = vfs.stage_dir(&root, "a");
        vfs.stage_memory_file(&a, "f", Arc::from(&b"hi"[..]));
        vfs.stage_symlink(&root, "inside", "a/f");
        vfs.stage_symlink(&root, "escape", "../etc/passwd");
        vfs.stage_symlink(&root, "absolute", "/etc/passwd");
        vfs.stage_symlink(&root, "loop", "loop");
        vfs.stage_symlink(&root, "dirlink", "a/");
        assert!(matches!(found(vfs.lookup(&root, "inside", true)), Node::File(_)));
        assert!(matches!(found(vfs.lookup(&root, "inside", false)), Node::Symlink(_)));
        assert!(matches!(found(vfs.lookup(&root, "dirlink/f", false)), Node::File(_)));
        assert!(matches!(found(vfs.lookup(&root, "dirlink/", false)), Node::Dir(_)), "trailing slash follows");
        assert_eq!(vfs.lookup(&root, "escape", true).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "absolute", true).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "loop", true).err(), Some(errno::LOOP));
        assert_eq!(vfs.lookup(&root, "inside/", false).err(), Some(errno::NOTDIR));
        assert_eq!(vfs.lookup(&root, "a/f/x", false).err(), Some(errno::NOTDIR));
        assert_eq!(vfs.lookup(&root, "nope/x", false).err(), Some(errno::NOENT));
    }

    #[test]
    fn listings_are_sorted_with_dots_first_and_stable_inodes() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        for name in ["zeta", "Alpha", "beta", "ä"] {
            vfs.stage_memory_file(&root, name, Arc::from(&b""[..]));
        }
        let listing = |from| {
            let mut out = Vec::new();
            root.visit(from, |n, i, _| {
                out.push((n.to_string(), i));
                true
            });
            out
        };
        let names: Vec<String> = listing(0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [".", "..", "Alpha", "beta", "zeta", "ä"]);
        let from_3: Vec<String> = listing(3).into_iter().map(|(n, _)| n).collect();
        assert_eq!(from_3, ["beta", "zeta", "ä"], "cookies index the sorted listing");
        let inos: Vec<u64> = listing(2).into_iter().map(|(_, i)| i).collect();
        // Created zeta, Alpha, beta, ä (inodes 2..=5); listed by name.
        assert_eq!(inos, [3, 4, 2, 5], "inodes follow creation order, not the host");
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
        vfs.create_symlink(&d, "ok", "../x").unwrap();
        assert!(matches!(vfs.create_symlink(&d, "no", "../../x"), Err(Fault::Errno(errno::NOTCAPABLE))));
        assert!(matches!(vfs.create_symlink(&d, "abs", "/etc"), Err(Fault::Errno(errno::NOTCAPABLE))));
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
