//! One daemon per data directory: an exclusive `flock` on `<data>/tidepool.lock`, held for as
//! long as the provider is open.
//!
//! A single-node daemon owns everything under its data directory: at start it removes the blob
//! store's temporary files and every job's scratch space (what a killed daemon left), and it
//! takes back the jobs the database says were running. A second daemon started on the same
//! directory would do all of that to the first one's uploads and running jobs, and run those
//! jobs a second time. So the second one refuses to start instead.
//!
//! The kernel releases the lock when its holder ends, however it ends (a daemon killed with
//! `SIGKILL` leaves no stale lock behind), and the file is opened close-on-exec, so no process
//! the daemon starts holds it. The holder's process id is written into the file for the
//! refusal's message only; the lock, not the file's contents, decides.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "tidepool.lock";

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist), or says which process holds it.
    pub fn acquire(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = File::options().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "the data directory {} is in use by another tidepool process{holder}: one daemon per \
                     data directory; stop that one first, or give this one its own --data-dir",
                    data_dir.display()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let refused = DataDirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AddrInUse);
        let message = refused.to_string();
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        assert_eq!(std::fs::read_to_string(first.path()).unwrap().trim(), std::process::id().to_string());
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the first is dropped");
    }
}
