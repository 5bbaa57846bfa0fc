//! A worker template: one process, `tidepool job-template`, that has made the runtime's engine
//! and then forks one worker per job. A worker started from scratch spends most of its time on
//! what every job repeats (starting a 40 MB binary, asking the CPU what it is, making the
//! engine and reserving its pool); a forked one starts with all of that done. Each job still
//! runs in a process of its own, which confines itself before it reads its job, exactly as a
//! started worker does ([`crate::child`]): the template runs no job and reads no job's data,
//! and a fork has nothing in memory but what the template made before any job existed.
//!
//! The template is single-threaded (a fork copies only the calling thread): the engine starts
//! its ticker thread with its first job, which only a forked child runs.
//!
//! Protocol, over a Unix socket that is the template's stdin: the daemon sends one byte with
//! two descriptors, the new worker's stdin (read end) and stdout (write end); the template
//! forks and answers the child's process id (4 bytes, little-endian; an `errno`, negated,
//! when the fork failed) with a pidfd of the child and the read end of a pipe on which it
//! writes the child's wait status (4 bytes) once the child has ended and been reaped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use tidepool_runtime::{Limits, Runtime, RuntimeConfig};

use crate::fdpass;
use crate::parent::WorkerCommand;
use crate::process::Process;

/// What the template makes before it forks: the engine that jobs under `limits` run on.
#[derive(Clone, Debug)]
pub struct TemplateConfig {
    /// The compile cache (as in a job's request: a job naming another one gets a runtime of its
    /// own in its worker).
    pub cache_dir: Option<PathBuf>,
    /// The limits that choose the engine (its stack limit).
    pub limits: Limits,
}

/// What a forked worker finds made.
pub(crate) struct Prepared {
    pub runtime: Runtime,
    pub cache_dir: Option<PathBuf>,
}

/// Runs the template (`tidepool job-template`): its stdin is the control socket from the
/// daemon. Returns its exit status: 0 when the daemon went away, 4 when it could not serve.
pub fn main(config: TemplateConfig) -> i32 {
    // SAFETY: the daemon gives the template a Unix socket as its stdin; nothing else in this
    // process uses descriptor 0 (the template never reads `std::io::stdin`).
    let control = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(0) });
    let prepared = Prepared {
        runtime: Runtime::new(RuntimeConfig {
            cache_dir: config.cache_dir.clone(),
            max_instances: 1,
            ..Default::default()
        }),
        cache_dir: config.cache_dir,
    };
    if let Err(e) = prepared.runtime.prepare(&config.limits) {
        // Each worker then makes its own engine and reports what fails.
        eprintln!("tidepool job-template: making the engine failed: {e}");
    }
    let children = match ChildSignals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tidepool job-template: {e}");
            return 4;
        }
    };
    let mut statuses: HashMap<libc::pid_t, File> = HashMap::new();
    loop {
        let mut polled = [control.as_raw_fd(), children.fd.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two pollfds that live for the call.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("tidepool job-template: poll: {}", io::Error::last_os_error());
            return 4;
        }
        if polled[1].revents != 0 {
            children.drain();
            reap(&mut statuses);
        }
        if polled[0].revents != 0 {
            match fdpass::receive(&control, &mut [0u8; 1]) {
                Ok((0, _)) => return 0,
                Ok((_, fds)) => fork_worker(&control, fds, &prepared, &mut statuses),
                Err(e) => {
                    eprintln!("tidepool job-template: reading a request: {e}");
                    return 4;
                }
            }
        }
    }
}

/// Forks a worker on the descriptors of a request and answers it.
fn fork_worker(
    control: &UnixStream,
    fds: Vec<OwnedFd>,
    prepared: &Prepared,
    statuses: &mut HashMap<libc::pid_t, File>,
) {
    let answer = |code: i32, fds: &[RawFd]| {
        if let Err(e) = fdpass::send(control, &code.to_le_bytes(), fds) {
            eprintln!("tidepool job-template: answering a request: {e}");
        }
    };
    // A failure is answered as its `errno`, negated.
    let failed = |e: io::Error| answer(-e.raw_os_error().unwrap_or(libc::EIO), &[]);
    let Ok([stdin, stdout]) = <[OwnedFd; 2]>::try_from(fds) else {
        return failed(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let (status_read, status_write) = match fdpass::pipe() {
        Ok(ends) => ends,
        Err(e) => return failed(e),
    };
    // SAFETY: this process has one thread (see the module), so the child is a whole copy of it.
    match unsafe { libc::fork() } {
        -1 => failed(io::Error::last_os_error()),
        0 => worker(stdin, stdout, prepared),
        pid => {
            drop((stdin, stdout));
            // The child cannot have been reaped yet (only this thread reaps), so its pidfd is its own.
            // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
            if pidfd < 0 {
                // Read before `kill` can overwrite it.
                let error = io::Error::last_os_error();
                // SAFETY: kill takes integers; the child is not reaped yet, so `pid` is still it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                statuses.insert(pid, File::from(status_write));
                return failed(error);
            }
            // SAFETY: just opened, owned by nothing else.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
            statuses.insert(pid, File::from(status_write));
            answer(pid, &[pidfd.as_raw_fd(), status_read.as_raw_fd()]);
        }
    }
}

/// The forked child: stdin and stdout become the job's pipes, every other descriptor is
/// closed, and it serves its one job like a started worker, then exits.
fn worker(stdin: OwnedFd, stdout: OwnedFd, prepared: &Prepared) -> ! {
    // SAFETY: dup2 and close_range take integers. The Rust handles of the descriptors closed
    // here (the control socket, the signalfd, other workers' status pipes) are never used or
    // dropped in this process again: it exits below without returning or unwinding.
    let ready = unsafe {
        libc::dup2(stdin.as_raw_fd(), 0) == 0
            && libc::dup2(stdout.as_raw_fd(), 1) == 1
            && libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0
            && ChildSignals::unblock()
    };
    std::mem::forget((stdin, stdout));
    let code = if ready {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::child::serve(Some(prepared)))).unwrap_or(101)
    } else {
        4
    };
    let _ = io::stdout().flush();
    // SAFETY: ends this process without running the template's exit handlers twice.
    unsafe { libc::_exit(code) }
}

/// Reaps every ended child and writes its status to its pipe.
fn reap(statuses: &mut HashMap<libc::pid_t, File>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(mut pipe) = statuses.remove(&pid) {
            // The daemon may have stopped listening: nothing to do then.
            let _ = pipe.write_all(&status.to_le_bytes());
        }
    }
}

/// `SIGCHLD`, blocked and read from a signalfd: the template's loop polls it beside its socket.
struct ChildSignals {
    fd: OwnedFd,
}

impl ChildSignals {
    fn mask() -> libc::sigset_t {
        // SAFETY: sigemptyset and sigaddset initialise the set they are given.
        unsafe {
            let mut set = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            set
        }
    }

    fn new() -> io::Result<Self> {
        let set = Self::mask();
        // SAFETY: sigprocmask and signalfd read one initialised set.
        unsafe {
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self { fd: OwnedFd::from_raw_fd(fd) })
        }
    }

    /// Unblocks `SIGCHLD` again (in a forked worker); true when it did.
    fn unblock() -> bool {
        let set = Self::mask();
        // SAFETY: reads one initialised set.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) == 0 }
    }

    /// Reads the pending signals (their contents do not matter: every ended child is reaped).
    fn drain(&self) {
        let mut buf = [0u8; 128 * 8];
        // SAFETY: reads into a buffer that lives for the call; the descriptor is non-blocking.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// The daemon's handle on a template it started.
#[derive(Debug)]
pub(crate) struct Template {
    child: Child,
    control: UnixStream,
}

/// How long the daemon waits for a template to answer before it gives up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

impl Template {
    /// Starts a template with `command` (`tidepool job-template ...`).
    pub fn start(command: &WorkerCommand) -> io::Result<Self> {
        let (control, theirs) = UnixStream::pair()?;
        let child = command.command().stdin(Stdio::from(OwnedFd::from(theirs))).stdout(Stdio::null()).spawn()?;
        control.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        control.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Self { child, control })
    }

    /// Forks a worker: its process, and the daemon's ends of its stdin and stdout.
    pub fn fork(&mut self) -> io::Result<(Process, File, File)> {
        let (stdin_read, stdin_write) = fdpass::pipe()?;
        let (stdout_read, stdout_write) = fdpass::pipe()?;
        fdpass::send(&self.control, b"f", &[stdin_read.as_raw_fd(), stdout_write.as_raw_fd()])?;
        drop((stdin_read, stdout_write));
        let mut pid = [0u8; 4];
        let (n, fds) = fdpass::receive(&self.control, &mut pid)?;
        let pid = i32::from_le_bytes(pid);
        match (n, <[OwnedFd; 2]>::try_from(fds)) {
            (0, _) => Err(io::Error::other(format!("the worker template exited ({})", self.status()))),
            (4, Ok([pidfd, status])) if pid > 0 => Ok((
                Process::Forked { pid: pid.unsigned_abs(), pidfd, status: File::from(status) },
                File::from(stdin_write),
                File::from(stdout_read),
            )),
            (4, _) if pid < 0 => Err(io::Error::from_raw_os_error(-pid)),
            _ => Err(io::Error::other("the worker template answered out of protocol")),
        }
    }

    fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "still running".into(),
        }
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
