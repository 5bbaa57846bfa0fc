//! Building the read-only mounts before the guest starts: directories, input files read from
//! a dataset, files held in memory, and symlinks.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::{Backing, DirRef, File, Mount, Node, Symlink, Times, Vfs};

impl Vfs {
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

    pub(super) fn new_symlink(&self, mount: Mount, target: &str) -> Symlink {
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
}
