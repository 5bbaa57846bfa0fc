//! A real provider daemon (`tidepool serve`) in its own process, on a loopback port, with a
//! real SQLite file: started, killed with SIGKILL, restarted on the same data.
#![allow(dead_code, reason = "each test module uses its own subset")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use tidepool_provider::api::{PublishRequest, ServiceLimits};
use tidepool_provider::client::Client;
use tidepool_provider::ddo::{AssetKind, Did};

use crate::util::tidepool;

/// A running `tidepool serve`.
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    pub data: PathBuf,
    port: u16,
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// A free loopback port (bound and released: the daemon binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Daemon {
    /// Starts a daemon with a faucet on a fresh data directory; `args` are extra flags.
    pub fn start(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = Self {
            child: None,
            url: String::new(),
            data: tmp.path().join("data"),
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.join("daemon.log")).unwrap();
        let mut cmd = tidepool();
        cmd.args(["serve", "--dev-faucet", "--data-dir"])
            .arg(&self.data)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("starting tidepool serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the daemon did not start:\n{}", self.log()));
        assert!(line.contains("listening on"), "unexpected first line: {line}");
        self.url = format!("http://127.0.0.1:{}", self.port);
        self.child = Some(child);
    }

    /// SIGKILL: no cleanup, no flushing, as a crash or a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("daemon.log")).unwrap_or_default()
    }

    pub fn provider_key(&self) -> PrivateKeySigner {
        tidepool_provider::keys::load(&self.data.join("provider.key")).unwrap()
    }

    pub fn key_file(&self) -> PathBuf {
        self.data.join("provider.key")
    }

    pub async fn operator(&self) -> Client {
        Client::connect(&self.url, self.provider_key()).await.unwrap()
    }

    /// A new consumer with faucet tokens.
    pub async fn consumer(&self) -> Client {
        let c = Client::connect(&self.url, PrivateKeySigner::random()).await.unwrap();
        c.faucet().await.unwrap();
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What to publish.
pub fn request(name: &str) -> PublishRequest {
    PublishRequest {
        name: name.into(),
        description: String::new(),
        author: String::new(),
        license: String::new(),
        kind: AssetKind::Dataset,
        price_per_fuel: Some(U256::from(3)),
        limits: ServiceLimits { max_fuel: Some(10_000_000_000), ..ServiceLimits::default() },
        trusted_algorithms: None,
        timeouts: Default::default(),
    }
}

/// Publishes `datasets` as one asset, as the provider's operator.
pub async fn publish(d: &Daemon, datasets: &[(&str, &Path)], req: PublishRequest) -> Did {
    let datasets: Vec<(String, PathBuf)> = datasets.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
    d.operator().await.publish_dirs(&datasets, &req).await.unwrap().did
}

/// The faucet's gift (the provider's default).
pub fn faucet_amount() -> U256 {
    U256::from(10u64).pow(U256::from(18))
}
