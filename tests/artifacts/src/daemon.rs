//! A real provider daemon (`tidepool serve`) in its own process, on a loopback port, with a
//! real SQLite file: started, killed with SIGKILL, restarted on the same data. Used by the
//! end-to-end tests and the benchmarks.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `tidepool serve` (or `tidepool worker`).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// `serve` or `worker`.
    command: &'static str,
    /// `http://127.0.0.1:PORT`, where `serve` listens (the same port across restarts).
    pub url: String,
    /// Its data directory (kept across restarts; `daemon.log` is there).
    pub data: PathBuf,
    port: u16,
    binary: PathBuf,
    envs: Vec<(OsString, OsString)>,
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

use crate::cluster::free_port;

impl Daemon {
    /// Starts `binary serve` with a faucet on a fresh data directory in the system's temporary
    /// directory; `envs` are set for it, `args` are extra flags.
    pub fn start(binary: &Path, envs: &[(&str, &Path)], args: &[&str]) -> Self {
        Self::start_as("serve", binary, envs, args, |_| {})
    }

    /// [`start`](Self::start), with `prepare` run on the fresh data directory first (to put a
    /// provider key there, say).
    pub fn start_with(binary: &Path, envs: &[(&str, &Path)], args: &[&str], prepare: impl FnOnce(&Path)) -> Self {
        Self::start_as("serve", binary, envs, args, prepare)
    }

    /// Starts `binary worker` (a cluster's worker node: `args` name the database and the blob
    /// store) on a fresh data directory.
    pub fn start_worker(binary: &Path, envs: &[(&str, &Path)], args: &[&str]) -> Self {
        Self::start_as("worker", binary, envs, args, |_| {})
    }

    fn start_as(
        command: &'static str,
        binary: &Path,
        envs: &[(&str, &Path)],
        args: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let tmp = tempfile::tempdir().expect("creating a temporary directory");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).expect("creating the data directory");
        prepare(&data);
        let mut d = Self {
            child: None,
            command,
            url: String::new(),
            data,
            port: free_port(),
            binary: binary.to_path_buf(),
            envs: envs.iter().map(|(k, v)| (k.into(), v.as_os_str().to_owned())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data).expect("creating the data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("daemon.log"))
            .expect("opening the daemon's log");
        let mut cmd = Command::new(&self.binary);
        if self.command == "serve" {
            cmd.args(["serve", "--dev-faucet", "--listen", &format!("127.0.0.1:{}", self.port)]);
        } else {
            cmd.arg(self.command);
        }
        // No environment unless a test offers one (a daemon would compile CPython at start),
        // and the compile cache every test shares.
        cmd.env("TIDEPOOL_ENVIRONMENTS_DIR", self.data.join("no-environments"))
            .env("TIDEPOOL_CACHE_DIR", crate::compile_cache());
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {} serve: {e}", self.binary.display()));
        let stdout = child.stdout.take().expect("the daemon's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the daemon did not start:\n{}", self.log()));
        assert!(line.contains("listening on") || line.contains("worker running"), "unexpected first line: {line}");
        self.url = format!("http://127.0.0.1:{}", self.port);
        self.child = Some(child);
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no cleanup, no flushing, as a crash or a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stops where it is (as a paused VM or a long GC pause would),
    /// until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`suspend`](Self::suspend).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill").arg(signal).arg(pid.to_string()).status();
            assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
        }
    }

    /// Kills the daemon and starts it again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What it has logged so far (`daemon.log`, across restarts), or empty.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("daemon.log")).unwrap_or_default()
    }

    /// The provider's key file (created by the daemon on first start).
    pub fn key_file(&self) -> PathBuf {
        self.data.join("provider.key")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
