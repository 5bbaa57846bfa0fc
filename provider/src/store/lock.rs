//! One daemon per data directory and per SQLite database: `flock`s held for as long as the
//! process runs.
//!
//! A single-node daemon owns everything under its data directory: at start it removes the blob
//! store's temporary files and every job's scratch space (what a killed daemon left), and it
//! takes back the jobs its database says were running. A second daemon started on the same
//! directory, or on the same database from another directory, would do all of that to the
//! first one's uploads and running jobs, and run those jobs a second time. So a single-node
//! daemon holds an exclusive lock on `<data>/tidepool.lock` (and on `<database>.lock` when its
//! SQLite file is elsewhere), and a second one refuses to start. Cluster nodes, which share
//! their state by design, hold a shared lock on their data directory: they may share one with
//! each other, not with a single-node daemon or with `tidepool gc` (which takes it exclusively).
//!
//! The kernel releases a lock when its holder ends, however it ends (a daemon killed with
//! `SIGKILL` leaves no stale lock behind), and the file is opened close-on-exec, so no process
//! the daemon starts holds it. An exclusive holder writes its process id into the file for the
//! refusal's message only; the lock, not the file's contents, decides.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "tidepool.lock";

/// The file in the data directory that names the SQLite database a single-node daemon last
/// opened (its absolute path), so that `tidepool gc` reads that one and no other.
pub const DATABASE_RECORD: &str = "tidepool.database";

/// Records `db_file` (absolute) as the database of `data_dir`'s daemon.
pub fn record_database(data_dir: &Path, db_file: &Path) -> io::Result<()> {
    let tmp = data_dir.join(format!("{DATABASE_RECORD}.tmp"));
    std::fs::write(&tmp, format!("{}\n", db_file.display()))?;
    std::fs::rename(&tmp, data_dir.join(DATABASE_RECORD))
}

/// The database `data_dir`'s daemon last opened, if one recorded it.
pub fn recorded_database(data_dir: &Path) -> io::Result<Option<PathBuf>> {
    match std::fs::read_to_string(data_dir.join(DATABASE_RECORD)) {
        Ok(text) => Ok(Some(PathBuf::from(text.trim_end_matches('\n')))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes `data_dir`'s lock (the directory must exist) exclusively, or says which process
    /// holds it.
    pub fn acquire(data_dir: &Path) -> io::Result<Self> {
        Self::take(data_dir.join(LOCK_FILE), &format!("the data directory {}", data_dir.display()), true)
    }

    /// Takes `data_dir`'s lock shared: cluster nodes, which may share a directory.
    pub fn share(data_dir: &Path) -> io::Result<Self> {
        Self::take(data_dir.join(LOCK_FILE), &format!("the data directory {}", data_dir.display()), false)
    }

    /// Takes the lock of the SQLite database `db_file` (`<db_file>.lock`) exclusively.
    pub fn acquire_database(db_file: &Path) -> io::Result<Self> {
        let mut lock = db_file.as_os_str().to_owned();
        lock.push(".lock");
        Self::take(PathBuf::from(lock), &format!("the database {}", db_file.display()), true)
    }

    fn take(path: PathBuf, subject: &str, exclusive: bool) -> io::Result<Self> {
        let mut file = File::options().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mode = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
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
                    "{subject} is in use by another tidepool process{holder}: one daemon per data \
                     directory and database (cluster nodes aside), and gc only while none runs; stop \
                     that one first, or give this one its own --data-dir"
                ),
            ));
        }
        if exclusive {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
        }
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
        assert_eq!(DataDirLock::share(dir.path()).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the first is dropped");
    }

    #[test]
    fn shared_holders_coexist_and_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DataDirLock::share(dir.path()).unwrap(), DataDirLock::share(dir.path()).unwrap());
        assert_eq!(DataDirLock::acquire(dir.path()).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(a);
        assert!(DataDirLock::acquire(dir.path()).is_err(), "one shared holder is enough");
        drop(b);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_database_elsewhere_has_its_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shared.db");
        let first = DataDirLock::acquire_database(&db).unwrap();
        assert_eq!(first.path(), dir.path().join("shared.db.lock"));
        let message = DataDirLock::acquire_database(&db).unwrap_err().to_string();
        assert!(message.contains(&format!("the database {} is in use", db.display())), "{message}");
    }
}
