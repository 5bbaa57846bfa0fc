//! The daemon's side: forking workers from a template ([`crate::template`]) or starting them
//! (a few kept started and idle, so a job does not wait for a process to start), giving each
//! one job, following its events, asking it to stop,
//! and killing it at the wall-clock limit or when it misbehaves.
//!
//! Workers start with an empty environment, their stdin and stdout piped to the daemon and
//! their stderr inherited (their log), and no other descriptor (Rust opens every descriptor
//! close-on-exec, and a worker closes whatever else it finds before it reads its job).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fdpass;
use crate::process::Process;
use crate::protocol::{FailureKind, FromWorker, JobDone, JobRequest, MAX_LINE, ToWorker};
use crate::template::Template;

/// How long a worker may take to read its job and module from its stdin (it reads them
/// before anything else) before it is killed.
const GIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a worker: a program and its arguments (`tidepool job-worker`).
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The worker's executable.
    pub program: PathBuf,
    /// Its arguments (`job-worker`).
    pub args: Vec<OsString>,
    /// Environment variables the worker gets (it gets no others).
    pub env: Vec<(OsString, OsString)>,
}

impl WorkerCommand {
    /// The command, as every worker (and template) is started: an empty environment but for
    /// `env`, in `/`, its stderr the daemon's (its log). The caller sets stdin and stdout.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stderr(Stdio::inherit());
        command
    }
}

/// Started workers, a few kept idle; or a template that forks one per job.
#[derive(Debug)]
pub struct Pool {
    command: WorkerCommand,
    prespawn: usize,
    idle: Mutex<Vec<Spawned>>,
    template: Option<Templated>,
}

/// A template and how to start it again (it is started on first use, and again after it
/// failed).
#[derive(Debug)]
struct Templated {
    command: WorkerCommand,
    current: Mutex<Option<Template>>,
}

#[derive(Debug)]
struct Spawned {
    process: Process,
    stdin: File,
    /// Taken by the reader thread once the worker has a job.
    stdout: Option<File>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.process.kill();
        self.process.wait();
    }
}

/// How a worker's job ended.
#[derive(Debug)]
pub enum Ended {
    /// The job ran (its receipt says how it ended).
    Done(Box<JobDone>),
    /// The job could not run.
    Failed {
        /// Which kind of failure, as the worker classified it.
        kind: FailureKind,
        /// The worker's error message.
        message: String,
    },
    /// Still running at the deadline: killed.
    Killed,
    /// The worker died or broke the protocol without a result.
    Crashed {
        /// What went wrong, for the log (exit status, or the protocol error).
        detail: String,
    },
}

/// What a running job reports.
#[derive(Debug)]
pub enum Report {
    /// The worker confined itself, as the kernel enforced it.
    Confined(crate::Confined),
    /// The job entered a stage.
    Stage(crate::protocol::WireStage),
    /// The guest reported progress.
    Progress {
        /// Units of work done so far.
        done: u64,
        /// Units of work in all, when the guest knows.
        total: Option<u64>,
        /// What the guest is doing, in its own words.
        message: Option<String>,
    },
}

impl Pool {
    /// A pool that starts workers with `command` and keeps up to `prespawn` of them started and
    /// idle, ready for a job.
    pub fn new(command: WorkerCommand, prespawn: usize) -> Arc<Self> {
        Arc::new(Self { command, prespawn, idle: Mutex::new(Vec::new()), template: None })
    }

    /// A pool that forks each worker from a template started with `template` (`tidepool
    /// job-template`), and starts one with `command` when the template cannot fork (it is
    /// started again for the next job).
    pub fn with_template(command: WorkerCommand, template: WorkerCommand) -> Arc<Self> {
        Arc::new(Self {
            command,
            prespawn: 0,
            idle: Mutex::new(Vec::new()),
            template: Some(Templated { command: template, current: Mutex::new(None) }),
        })
    }

    /// A worker forked from the template (started first if it is not running).
    fn fork(templated: &Templated) -> std::io::Result<Spawned> {
        let mut current = templated.current.lock().unwrap_or_else(|p| p.into_inner());
        let template = match &mut *current {
            Some(t) => t,
            None => current.insert(Template::start(&templated.command)?),
        };
        match template.fork() {
            Ok((process, stdin, stdout)) => Ok(Spawned { process, stdin, stdout: Some(stdout) }),
            Err(e) => {
                // Killed and started again for the next job.
                *current = None;
                Err(e)
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Spawned> {
        let mut child = self.command.command().stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("a worker's pipes are missing"));
        };
        Ok(Spawned {
            process: Process::Started(child),
            stdin: File::from(OwnedFd::from(stdin)),
            stdout: Some(File::from(OwnedFd::from(stdout))),
        })
    }

    /// Keeps `prespawn` workers started and idle (on a thread of its own: starting one takes
    /// a few milliseconds).
    pub fn refill(self: &Arc<Self>) {
        let pool = self.clone();
        std::thread::spawn(move || {
            loop {
                let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
                if idle >= pool.prespawn {
                    return;
                }
                match pool.spawn() {
                    Ok(w) => pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "starting an idle worker failed");
                        return;
                    }
                }
            }
        });
    }

    /// Gives `job`, whose algorithm is `module` (a module, or an environment algorithm's files
    /// as an archive), to a worker (forked, or an idle one if there is one) and returns it
    /// running.
    pub fn start(self: &Arc<Self>, mut job: JobRequest, module: &[u8]) -> std::io::Result<Running> {
        job.module_len = module.len() as u64;
        let mut job = line(&ToWorker::Job(Box::new(job)))?;
        job.extend_from_slice(module);
        if let Some(templated) = &self.template {
            match Self::fork(templated).and_then(|w| w.given(&job)) {
                Ok(worker) => return Ok(Running::new(worker)),
                Err(e) => tracing::warn!(error = %e, "forking a worker from the template failed; starting one"),
            }
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // An idle worker may have died meanwhile (killed by an operator, out of memory).
        let worker = match idle.and_then(|mut w| if w.process.alive() { w.given(&job).ok() } else { None }) {
            Some(w) => w,
            None => self.spawn()?.given(&job)?,
        };
        self.refill();
        Ok(Running::new(worker))
    }
}

impl Spawned {
    /// The worker, once `job` (a [`line`] and the module after it) is written to its stdin;
    /// a worker that does not take it within [`GIVE_TIMEOUT`] is killed.
    fn given(self, job: &[u8]) -> std::io::Result<Self> {
        fdpass::write_within(&self.stdin, job, GIVE_TIMEOUT)?;
        Ok(self)
    }
}

/// `message` as one line of the protocol.
fn line(message: &ToWorker) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

fn write_line(stdin: &mut File, line: &[u8]) -> std::io::Result<()> {
    stdin.write_all(line)?;
    stdin.flush()
}

fn send(stdin: &mut File, message: &ToWorker) -> std::io::Result<()> {
    write_line(stdin, &line(message)?)
}

/// A worker running a job.
#[derive(Debug)]
pub struct Running {
    worker: Spawned,
    messages: Receiver<Result<FromWorker, String>>,
}

impl Running {
    fn new(mut worker: Spawned) -> Self {
        let (tx, rx) = sync_channel(256);
        let stdout = worker.stdout.take();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                // Bounded: a worker cannot make the daemon buffer without end.
                match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(n) if n > MAX_LINE => {
                        let _ = tx.send(Err(format!("a line of over {MAX_LINE} bytes")));
                        return;
                    }
                    Ok(_) => {
                        let parsed = serde_json::from_slice(&line).map_err(|e| format!("an unreadable message: {e}"));
                        let stop = parsed.is_err();
                        if tx.send(parsed).is_err() || stop {
                            return;
                        }
                    }
                }
            }
        });
        Self { worker, messages: rx }
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.worker.process.id()
    }

    /// Follows the job until it ends: reports go to `on_report`; `cancel` sends a stop
    /// request (once); at `deadline` the worker is killed. Blocks: call it off the async
    /// executor. When it returns, the worker has exited.
    pub fn wait(mut self, deadline: Instant, cancel: &AtomicBool, mut on_report: impl FnMut(Report)) -> Ended {
        let mut stop_sent = false;
        let ended = loop {
            if cancel.load(Ordering::Relaxed) && !stop_sent {
                stop_sent = true;
                let _ = send(&mut self.worker.stdin, &ToWorker::Stop);
            }
            let now = Instant::now();
            if now >= deadline {
                break Ended::Killed;
            }
            match self.messages.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                Ok(Ok(FromWorker::Confined(c))) => on_report(Report::Confined(c)),
                Ok(Ok(FromWorker::Stage(s))) => on_report(Report::Stage(s)),
                Ok(Ok(FromWorker::Progress { done, total, message })) => {
                    on_report(Report::Progress { done, total, message })
                }
                Ok(Ok(FromWorker::Done(done))) => break Ended::Done(done),
                Ok(Ok(FromWorker::Failed { kind, message })) => break Ended::Failed { kind, message },
                Ok(Err(detail)) => break Ended::Crashed { detail },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.worker.process.wait();
                    break Ended::Crashed { detail: format!("the worker exited without a result ({status})") };
                }
            }
        };
        match ended {
            // A finished worker exits by itself; one that lingers is killed all the same, so
            // that its files are no longer changing once the daemon reads them.
            Ended::Done(_) | Ended::Failed { .. } => {
                self.worker.process.ended_by(Instant::now() + Duration::from_secs(5));
                self.worker.process.kill();
                self.worker.process.wait();
            }
            _ => {
                self.worker.process.kill();
                self.worker.process.wait();
            }
        }
        ended
    }
}
