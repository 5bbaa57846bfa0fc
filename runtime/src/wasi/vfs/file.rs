//! Regular files: where their bytes live (memory, an input dataset, an output blob), reading
//! and writing them, and freeing a blob's host space when its last link and descriptor go.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::output::{BlobStore, blob_name};
use super::{Fault, Mount, Stat, Times};
use crate::wasi::abi::{errno, filetype};

/// A regular file.
pub(crate) struct File {
    pub ino: u64,
    pub mount: Mount,
    pub(super) times: Cell<Times>,
    pub(super) size: Cell<u64>,
    pub(super) nlink: Cell<u64>,
    pub(super) backing: Backing,
    /// The host handle shared by every guest descriptor open on this file, while any is open.
    pub(super) host: RefCell<Weak<std::fs::File>>,
}

/// Where a file's bytes live.
pub(super) enum Backing {
    /// In host memory (the algorithm module itself).
    Memory(Arc<[u8]>),
    /// A file of a staged input dataset, opened read-only when the guest opens it.
    Input { dir: Rc<cap_std::fs::Dir>, path: PathBuf },
    /// A file the guest created, stored as a blob in the scratch directory.
    Blob { store: Rc<BlobStore>, id: u64 },
}

impl File {
    pub(super) fn stat(&self) -> Stat {
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
                let dir = store.scratch.existing().ok_or(Fault::Errno(errno::IO))?;
                dir.open_with(blob_name(*id), &opts).map_err(|e| Fault::Host("opening an output blob", e))?
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
            if let (false, Some(dir)) = (store.materialized.get(), store.scratch.existing()) {
                // The last link and the last descriptor are gone: free the host space now.
                let _ = dir.remove_file(blob_name(*id));
            }
        }
    }
}
