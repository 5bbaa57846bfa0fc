//! One scenario suite, run against both keepers: the embedded keeper (the provider's own
//! ledger) and the EVM keeper (the agreement contracts on a real anvil chain this suite
//! starts). The same test code drives both; where the two differ by design (who locks the
//! payment, how time passes for a deadline) the [`Setup`] hides it. Chain-only checks (the
//! receipt hash the contract committed, a provider that restarts after missing events) are at
//! the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use tidepool_chain::anvil::{Anvil, dev_key};
use tidepool_chain::{Chain, Contracts};
use tidepool_provider::client::Client;
use tidepool_provider::protocol::agreement::AgreementState;
use tidepool_provider::protocol::api::ExecRequest;
use tidepool_provider::protocol::events::EventName;
use tidepool_provider::protocol::signing::unix_now;
use tidepool_provider::protocol::template::ConditionName;

use crate::daemon::{Daemon, faucet_amount, initialize_signed, publish, request};
use crate::provider_flow::{compute, wait_for_end, wait_for_event};
use crate::util::{cache_dir, dataset, module};

const BOOK: &str = "It was the best of times, it was the worst of times, it was the age of wisdom.";

/// Which keeper a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Embedded,
    Evm,
}

/// A local chain with the contracts deployed.
struct LocalChain {
    anvil: Anvil,
    contracts: Contracts,
    /// Holds the contracts file the daemon was given.
    _dir: tempfile::TempDir,
}

/// A provider daemon on one keeper, and what its consumers need.
struct Setup {
    kind: Kind,
    daemon: Daemon,
    chain: Option<LocalChain>,
    consumers: AtomicUsize,
}

impl Setup {
    /// Starts a provider on `kind` (the EVM keeper: on a new anvil, with the contracts
    /// deployed by the provider's key, anvil's development key 0).
    async fn start(kind: Kind, args: &[&str]) -> Self {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tidepool"));
        let envs = [("TIDEPOOL_CACHE_DIR", cache_dir())];
        let envs: Vec<(&str, &std::path::Path)> = envs.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let (daemon, chain) = match kind {
            Kind::Embedded => (Daemon::start(args), None),
            Kind::Evm => {
                let anvil = Anvil::spawn().await.expect("starting anvil (scripts/setup.sh installs it)");
                let (contracts, _) =
                    tidepool_chain::deploy(anvil.endpoint(), dev_key(0).unwrap(), Default::default()).await.unwrap();
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("contracts.json");
                contracts.write(&file).unwrap();
                let mut all: Vec<&str> = args.to_vec();
                all.extend(["--chain-rpc", anvil.endpoint(), "--contracts", file.to_str().unwrap()]);
                let daemon = Daemon(tidepool_test_artifacts::daemon::Daemon::start_with(binary, &envs, &all, |data| {
                    tidepool_provider::keys::save(&data.join("provider.key"), &dev_key(0).unwrap()).unwrap();
                }));
                (daemon, Some(LocalChain { anvil, contracts, _dir: dir }))
            }
        };
        Self { kind, daemon, chain, consumers: AtomicUsize::new(0) }
    }

    async fn chain(&self) -> Option<Chain> {
        let c = self.chain.as_ref()?;
        Some(Chain::connect(c.anvil.endpoint(), c.contracts.clone(), Default::default()).await.unwrap())
    }

    /// A new consumer with faucet tokens (and, on a chain, ether for its gas and its wallet).
    async fn consumer(&self) -> Client {
        let key = match self.kind {
            Kind::Embedded => PrivateKeySigner::random(),
            // Anvil's funded development keys, one per consumer (key 0 is the provider).
            Kind::Evm => dev_key(1 + self.consumers.fetch_add(1, Ordering::SeqCst)).unwrap(),
        };
        let client = Client::connect(&self.daemon.url, key).await.unwrap();
        let client = match &self.chain {
            Some(c) => client.with_wallet(c.anvil.endpoint(), c.contracts.clone()).await.unwrap(),
            None => client,
        };
        client.faucet().await.unwrap();
        client
    }

    async fn operator(&self) -> Client {
        self.daemon.operator().await
    }

    /// Lets `seconds` pass for the keeper's deadlines: wall time for the embedded keeper, the
    /// chain's clock for the contracts.
    async fn pass(&self, seconds: u64) {
        match self.chain().await {
            Some(chain) => Anvil::advance_time(&chain, seconds).await.unwrap(),
            None => tokio::time::sleep(Duration::from_secs(seconds)).await,
        }
    }
}

/// The full flow for an example, with the payment split checked on the keeper's balances (on
/// a chain: the token's), and on a chain, the receipt hash the escrow committed.
async fn full_flow_with_the_payment_split(kind: Kind) {
    let s = Setup::start(kind, &[]).await;
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&s.daemon, &[("books", books.path())], request("books")).await;
    let consumer = s.consumer().await;
    let provider = s.daemon.provider_key().address();
    let (provider_before, consumer_before) =
        (consumer.balance(provider).await.unwrap(), consumer.balance(consumer.address()).await.unwrap());
    assert_eq!(consumer_before, faucet_amount(), "the faucet's tokens");
    let out = tempfile::tempdir().unwrap();
    let outcome = consumer.compute(&compute(did, "wordfreq", &["--top", "3"], &out.path().join("r")), |_| {}).await;
    let outcome = outcome.unwrap_or_else(|e| panic!("{kind:?}: {e}\n{}", s.daemon.log()));
    assert!(outcome.receipt.outcome.is_success(), "{:?}", outcome.receipt.outcome);
    // `request` prices a unit of fuel at 3 tokens.
    let fuel = U256::from(outcome.receipt.fuel_consumed) * U256::from(3);
    assert_eq!(outcome.payout.provider_amount, fuel, "the price of each unit of fuel used");
    let (provider_after, consumer_after) =
        (consumer.balance(provider).await.unwrap(), consumer.balance(consumer.address()).await.unwrap());
    assert_eq!(provider_after - provider_before, fuel, "{kind:?}: the provider is paid for the fuel used");
    assert_eq!(consumer_before - consumer_after, fuel, "{kind:?}: the consumer pays for the fuel used, no more");
    let a = consumer.agreement(outcome.agreement).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Released, U256::ZERO));
    assert_eq!(a.receipt_hash, Some(outcome.receipt.receipt_hash), "the keeper holds the receipt's hash");
    if let Some(chain) = s.chain().await {
        let committed = chain.receipt_hash(outcome.agreement).await.unwrap();
        assert_eq!(committed, Some(outcome.receipt.receipt_hash), "the contract committed the signed receipt's hash");
        assert!(outcome.output_did.is_some(), "the outputs are registered for the consumer");
    }
}

/// Several datasets, mounted side by side, registered together.
async fn several_datasets(kind: Kind) {
    let s = Setup::start(kind, &[]).await;
    let a = dataset(&[("one.txt", b"alpha beta")]);
    let b = dataset(&[("two.txt", b"gamma delta")]);
    let did = publish(&s.daemon, &[("first", a.path()), ("second", b.path())], request("two")).await;
    let consumer = s.consumer().await;
    let out = tempfile::tempdir().unwrap();
    let outcome = consumer.compute(&compute(did, "wordfreq", &[], &out.path().join("r")), |_| {}).await.unwrap();
    let names: Vec<&str> = outcome.receipt.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["first", "second"], "{kind:?}");
}

/// A job deferred with `notBefore` starts no earlier.
async fn deferred_execution(kind: Kind) {
    let s = Setup::start(kind, &[]).await;
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&s.daemon, &[("books", books.path())], request("books")).await;
    let consumer = s.consumer().await;
    let out = tempfile::tempdir().unwrap();
    let mut req = compute(did, "wordfreq", &[], &out.path().join("r"));
    let not_before = unix_now() + 3;
    req.not_before = Some(not_before);
    let outcome = consumer.compute(&req, |_| {}).await.unwrap();
    assert!(outcome.receipt.outcome.is_success());
    assert!(outcome.job.updated_at >= not_before, "{kind:?}: the job ended before notBefore");
    assert!(outcome.job.not_before >= not_before, "{kind:?}: the job records notBefore");
}

/// A provider that never delivers: after the payment deadline the consumer takes everything
/// back (through the provider's keeper, or with its own transaction on a chain).
async fn refund_after_a_missed_deadline(kind: Kind) {
    let s = Setup::start(kind, &[]).await;
    let data = dataset(&[("x.txt", b"x")]);
    let mut tight = request("tight deadline");
    tight.timeouts.insert(ConditionName::ReleasePayment, 4);
    let did = publish(&s.daemon, &[("x", data.path())], tight).await;
    let consumer = s.consumer().await;
    // Paid and granted, but the job is never asked for: nothing can be released in time.
    let agreement = B256::random();
    initialize_signed(&consumer, did, agreement, consumer.signer()).await.unwrap();
    consumer.upload_module(agreement, &std::fs::read(module("wordfreq")).unwrap(), "wordfreq").await.unwrap();
    consumer.lock_payment(agreement).await.unwrap();
    wait_for_event(&consumer, agreement, EventName::ComputeGranted).await;
    let refused = consumer.refund(agreement).await.unwrap_err();
    let said = tidepool_provider::error_chain(&refused);
    assert!(said.to_lowercase().contains("deadline") || refused.status() == Some(409), "{kind:?}: {said}");
    s.pass(6).await;
    let escrow = consumer.agreement(agreement).await.unwrap().escrow;
    assert!(escrow > U256::ZERO, "{kind:?}");
    assert_eq!(consumer.refund(agreement).await.unwrap(), escrow, "{kind:?}");
    assert_eq!(consumer.balance(consumer.address()).await.unwrap(), faucet_amount(), "{kind:?}: everything came back");
    let a = consumer.agreement(agreement).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Refunded, U256::ZERO), "{kind:?}");
    wait_for_event(&consumer, agreement, EventName::PaymentRefund).await;
}

/// The same signed request twice: the second is a replay, and the agreement exists once.
async fn a_replayed_request_is_refused(kind: Kind) {
    let s = Setup::start(kind, &[]).await;
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&s.daemon, &[("books", books.path())], request("books")).await;
    let consumer = s.consumer().await;
    let agreement = B256::random();
    let (request, body) = crate::daemon::signed_initialize(&consumer, did, agreement).await;
    let send = || {
        let http = reqwest::Client::new();
        let mut req = http.post(format!("{}/api/v1/services/compute/initialize", s.daemon.url)).body(body.clone());
        for (k, v) in request.headers() {
            req = req.header(k, v);
        }
        req.header("content-type", "application/json").send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 201, "{kind:?}: the first is accepted");
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409, "{kind:?}: the replay is refused");
    let events = consumer.events(0, Some(agreement)).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.name() == EventName::ExecuteAgreement).count(), 1, "{kind:?}");
}

macro_rules! on_both_keepers {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Kind::Embedded).await
                }
            )*
        }
        mod evm {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Kind::Evm).await
                }
            )*
        }
    };
}

on_both_keepers!(
    full_flow_with_the_payment_split,
    several_datasets,
    deferred_execution,
    refund_after_a_missed_deadline,
    a_replayed_request_is_refused,
);

/// A provider killed mid-flow misses an event on chain (the consumer locks the payment while
/// it is down); restarted, it reads the chain from its saved cursor and grants compute.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_provider_picks_up_the_events_it_missed() {
    let mut s = Setup::start(Kind::Evm, &[]).await;
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let did = publish(&s.daemon, &[("books", books.path())], request("books")).await;
    let consumer = s.consumer().await;
    let agreement = B256::random();
    initialize_signed(&consumer, did, agreement, consumer.signer()).await.unwrap();
    consumer.upload_module(agreement, &std::fs::read(module("wordfreq")).unwrap(), "wordfreq").await.unwrap();
    wait_for_event(&consumer, agreement, EventName::FulfillUpload).await;
    let amount = consumer_lock_amount(&s, did).await;
    s.daemon.kill();
    // The provider is down: the consumer locks on chain, from its own wallet.
    let chain = s.chain().await.unwrap();
    let provider: Address = s.daemon.provider_key().address();
    chain.agent(dev_key(1).unwrap()).lock_payment(agreement, provider, amount).await.unwrap();
    assert!(!chain.agreement(agreement).await.unwrap().is_fulfilled("grantCompute"), "nobody granted yet");
    s.daemon.restart();
    let consumer = Client::connect(&s.daemon.url, dev_key(1).unwrap()).await.unwrap();
    wait_for_event(&consumer, agreement, EventName::ComputeGranted).await;
    let exec = ExecRequest {
        service_agreement_id: agreement,
        consumer_address: consumer.address(),
        not_before: None,
        args: vec![],
    };
    let job = consumer.exec(&exec).await.unwrap().job_id;
    let view = wait_for_end(&consumer, &job).await;
    assert_eq!((view.status.code(), view.payment.as_str()), (70, "released"), "{view:?}\n{}", s.daemon.log());
}

/// What a consumer locks on `did`'s service: the price of its maximum fuel.
async fn consumer_lock_amount(s: &Setup, did: tidepool_provider::protocol::ddo::Did) -> U256 {
    let ddo = s.operator().await.ddo(did).await.unwrap();
    let service = ddo.compute_service("1").unwrap();
    service.price_per_fuel * U256::from(service.provider.environment.max_fuel)
}
