//! A worker process, as the daemon holds it: started by the daemon (a [`Child`]), or forked
//! by a template ([`crate::template`]), whose child it is: then the daemon holds a pidfd to
//! signal it and a pipe on which the template writes its exit status once it has reaped it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::fdpass;

/// A worker process.
#[derive(Debug)]
pub(crate) enum Process {
    /// Started by the daemon.
    Started(Child),
    /// Forked by a template.
    Forked {
        pid: u32,
        /// Signals exactly this process, even once its number is reused.
        pidfd: OwnedFd,
        /// The template writes the raw wait status here (4 bytes) when the process has ended.
        status: File,
    },
}

impl Process {
    pub fn id(&self) -> u32 {
        match self {
            Process::Started(child) => child.id(),
            Process::Forked { pid, .. } => *pid,
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        match self {
            Process::Started(child) => matches!(child.try_wait(), Ok(None)),
            Process::Forked { status, .. } => !fdpass::readable(status.as_raw_fd(), 0).unwrap_or(true),
        }
    }

    /// Waits at most until `until` for it to end; whether it has.
    pub fn ended_by(&mut self, until: Instant) -> bool {
        if let Process::Forked { status, .. } = self {
            // Without polling: the pipe becomes readable when the template writes the status.
            let left = until.saturating_duration_since(Instant::now());
            return fdpass::readable(status.as_raw_fd(), i32::try_from(left.as_millis()).unwrap_or(i32::MAX))
                .unwrap_or(true);
        }
        while self.alive() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(1)));
        }
        true
    }

    /// Sends it `SIGKILL` (nothing if it has ended).
    pub fn kill(&mut self) {
        match self {
            Process::Started(child) => {
                let _ = child.kill();
            }
            Process::Forked { pidfd, .. } => {
                // SAFETY: pidfd_send_signal takes a descriptor this process owns and integers.
                unsafe {
                    libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32);
                }
            }
        }
    }

    /// Waits for it to end; how it ended, in words (`exit status: 3`, `signal: 9 (SIGKILL)`).
    pub fn wait(&mut self) -> String {
        match self {
            Process::Started(child) => child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            Process::Forked { status, .. } => {
                let mut raw = [0u8; 4];
                match status.read_exact(&mut raw) {
                    Ok(()) => ExitStatus::from_raw(i32::from_le_bytes(raw)).to_string(),
                    Err(e) => format!("unknown: its template went away ({e})"),
                }
            }
        }
    }
}
