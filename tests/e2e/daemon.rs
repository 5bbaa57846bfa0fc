//! A real provider daemon (`tidepool serve`) in its own process, on a loopback port, with a
//! real SQLite file: started, killed with SIGKILL, restarted on the same data.
#![allow(dead_code, reason = "each test module uses its own subset")]

use std::path::{Path, PathBuf};

use alloy_primitives::{B256, U256};
use alloy_signer_local::PrivateKeySigner;
use tidepool_provider::client::{Client, ClientResult};
use tidepool_provider::protocol::agreement::Agreement;
use tidepool_provider::protocol::api::{InitializeRequest, PublishRequest, ServiceLimits};
use tidepool_provider::protocol::ddo::{AssetKind, Did};
use tidepool_provider::protocol::signing::{Envelope, sign_typed, unix_now};
use tidepool_provider::protocol::template::{self, Terms};

use crate::util::cache_dir;

/// A running `tidepool serve` (the binary under test), with clients for it.
pub struct Daemon(pub tidepool_test_artifacts::daemon::Daemon);

impl std::ops::Deref for Daemon {
    type Target = tidepool_test_artifacts::daemon::Daemon;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Daemon {
    /// Starts a daemon with a faucet on a fresh data directory; `args` are extra flags.
    pub fn start(args: &[&str]) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_tidepool"));
        Self(tidepool_test_artifacts::daemon::Daemon::start(binary, &[("TIDEPOOL_CACHE_DIR", &cache_dir())], args))
    }

    pub fn provider_key(&self) -> PrivateKeySigner {
        tidepool_provider::keys::load(&self.key_file()).unwrap()
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
        environment: None,
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

/// Initializes `agreement` on `did`'s service as `c`'s consumer, with the agreement signed by
/// `signer` (`c.signer()`, or another key to see it refused).
pub async fn initialize_signed(
    c: &Client,
    did: Did,
    agreement: B256,
    signer: &PrivateKeySigner,
) -> ClientResult<Agreement> {
    let ddo = c.ddo(did).await?;
    let service = ddo.compute_service("1").expect("the asset offers compute");
    let t = Terms::of(did, service, c.address());
    let signature =
        sign_typed(signer, &c.agreement_domain(), &template::agreement_struct(agreement, &service.conditions, &t));
    c.initialize(&InitializeRequest {
        did,
        service_agreement_id: agreement,
        service_definition_id: "1".into(),
        signature,
        consumer_address: c.address(),
    })
    .await
}

/// A signed `initialize` request for `agreement` on `did`, ready to send (and to send again):
/// its envelope and its body.
pub async fn signed_initialize(c: &Client, did: Did, agreement: B256) -> (Envelope, Vec<u8>) {
    let ddo = c.ddo(did).await.unwrap();
    let service = ddo.compute_service("1").expect("the asset offers compute");
    let t = Terms::of(did, service, c.address());
    let signature =
        sign_typed(c.signer(), &c.agreement_domain(), &template::agreement_struct(agreement, &service.conditions, &t));
    let body = serde_json::to_vec(&InitializeRequest {
        did,
        service_agreement_id: agreement,
        service_definition_id: "1".into(),
        signature,
        consumer_address: c.address(),
    })
    .unwrap();
    let nonce =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let path = "/api/v1/services/compute/initialize";
    (Envelope::sign(c.signer(), c.domain(), "POST", path, &body, nonce, unix_now() + 60), body)
}
