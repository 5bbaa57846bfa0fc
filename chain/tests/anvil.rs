//! The contracts and the crate against a real chain: each test starts its own anvil, deploys
//! the contracts and drives agreements through them.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

use std::collections::BTreeSet;

use alloy::primitives::{B256, Bytes, U256, keccak256};
use alloy::sol_types::SolStruct;
use tidepool_chain::anvil::{Anvil, dev_key};
use tidepool_chain::bindings::EscrowReward;
use tidepool_chain::bindings::{AgreementStore, eip712};
use tidepool_chain::receipt::{self, Receipt};
use tidepool_chain::template::{self, CONDITIONS, ComputeTerms};
use tidepool_chain::{
    Agent, AgreementEvent, AgreementState, Chain, ChainConfig, ChainError, Contracts, EventReader, ReceiptCheck,
};

const PRICE_PER_FUEL: u64 = 3;
const MAX_FUEL: u64 = 1_000_000;
const CONSUMER_FUNDS: u64 = 10_000_000;
/// The asset the agreements are about, and its two datasets.
const DID: B256 = B256::repeat_byte(0xd1);
const BOOKS: B256 = B256::repeat_byte(0x22);
const WEATHER: B256 = B256::repeat_byte(0x88);
const ALGORITHM: B256 = B256::repeat_byte(0x11);

struct Fixture {
    chain: Chain,
    provider: Agent,
    consumer: Agent,
    /// Last, so that it drops (and is killed) after the clients.
    _anvil: Anvil,
}

async fn fixture() -> Fixture {
    let anvil = Anvil::spawn().await.expect("start anvil (run scripts/setup.sh first)");
    let (contracts, _) =
        tidepool_chain::deploy(anvil.endpoint(), dev_key(0).unwrap(), ChainConfig::default()).await.expect("deploy");
    let chain = Chain::connect(anvil.endpoint(), contracts, ChainConfig::default()).await.expect("connect");
    let deployer = chain.agent(dev_key(0).unwrap());
    let provider = chain.agent(dev_key(1).unwrap());
    let consumer = chain.agent(dev_key(2).unwrap());
    deployer.mint(consumer.address(), U256::from(CONSUMER_FUNDS)).await.expect("mint");
    let checksum = template::dataset_checksum([("weather", WEATHER), ("books", BOOKS)]);
    provider.register_attribute(DID, checksum, "http://provider.test/ddo".into()).await.expect("register the asset");
    Fixture { chain, provider, consumer, _anvil: anvil }
}

fn terms(f: &Fixture) -> ComputeTerms {
    ComputeTerms {
        did: DID,
        provider: f.provider.address(),
        consumer: f.consumer.address(),
        price_per_fuel: U256::from(PRICE_PER_FUEL),
        max_fuel: MAX_FUEL,
    }
}

fn max_amount() -> U256 {
    U256::from(PRICE_PER_FUEL * MAX_FUEL)
}

/// The consumer signs an agreement and the provider initializes it.
async fn initialize(f: &Fixture, id: B256, timeouts: [u64; 5]) -> tidepool_chain::TxOutcome {
    let agreement = template::service_agreement(f.chain.contracts(), id, &terms(f), timeouts).unwrap();
    let signature = f.consumer.sign_service_agreement(&agreement).await.unwrap();
    f.provider.initialize_agreement(DID, f.consumer.address(), &agreement, signature).await.expect("initialize")
}

/// Initialized, paid, uploaded and granted.
async fn granted(f: &Fixture, id: B256) {
    initialize(f, id, [3600, 3600, 3600, 86_400, 0]).await;
    f.consumer.lock_payment(id, f.provider.address(), max_amount()).await.expect("lock");
    let signature = f.consumer.sign_algorithm(id, ALGORITHM).await.unwrap();
    f.provider.fulfill_upload(id, ALGORITHM, signature).await.expect("upload");
    f.provider.grant_compute(id, f.consumer.address()).await.expect("grant");
}

/// A version-2 runtime receipt of the agreements' job, with every field set.
fn runtime_receipt(fuel: u64) -> tidepool_runtime::Receipt {
    use tidepool_runtime::receipt::{EnvironmentInfo, InputRoot, RuntimeInfo};
    let root = |name: &str, root: B256| InputRoot { name: name.into(), root };
    tidepool_runtime::Receipt {
        version: receipt::VERSION,
        receipt_hash: B256::ZERO,
        environment: Some(EnvironmentInfo {
            name: "python-3.12".into(),
            module_hash: B256::repeat_byte(0x0e),
            argv: vec!["python".into(), "main.py".into()],
            env: vec!["TZ=UTC".into(), "LANG=C.UTF-8".into()],
            mounts: vec![root("/usr/lib/python", B256::repeat_byte(0x0f))],
        }),
        algorithm_hash: ALGORITHM,
        algorithm_name: "wordfreq".into(),
        args: vec!["--top".into(), "10".into()],
        inputs: vec![root("books", BOOKS), root("weather", WEATHER)],
        outputs_root: B256::repeat_byte(0x33),
        stdout_hash: B256::repeat_byte(0x44),
        stdout_len: 12,
        stderr_hash: B256::repeat_byte(0x55),
        stderr_len: 0,
        outcome: tidepool_runtime::Outcome::Exited { code: -7 },
        fuel_consumed: fuel,
        limits: tidepool_runtime::Limits { fuel: MAX_FUEL, ..Default::default() },
        runtime: RuntimeInfo {
            tidepool_version: "0.1.0".into(),
            wasmtime_version: "48.0.8".into(),
            engine_config_hash: B256::repeat_byte(0x66),
        },
        seed: B256::repeat_byte(0x77),
        deterministic: true,
        signatures: vec![],
        meta: None,
    }
    .seal()
}

/// The hashed fields of [`runtime_receipt`], as the escrow takes them.
fn sample_receipt(fuel: u64) -> Receipt {
    Receipt::from(&runtime_receipt(fuel))
}

#[tokio::test]
async fn deploys_registers_the_template_and_round_trips_the_contracts_file() {
    let f = fixture().await;
    let c = f.chain.contracts();
    let call = AgreementStore::templateConditionKeysCall { templateId: template::template_id() };
    let keys = f.chain.view(c.agreement_store, call).await.unwrap();
    assert_eq!(keys, template::condition_keys(c), "the store computes the keys the crate does");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), CONDITIONS.len(), "every key differs");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contracts.json");
    c.write(&path).unwrap();
    assert_eq!(&Contracts::read(&path).unwrap(), c);
    std::fs::write(&path, "{\"chainId\": 1}").unwrap();
    assert!(matches!(Contracts::read(&path), Err(ChainError::ContractsFile { .. })), "a bad file is an error");

    // A file for another chain is refused on connect.
    let other = Contracts { chain_id: 1, ..c.clone() };
    let endpoint = f._anvil.endpoint().to_string();
    assert!(matches!(
        Chain::connect(&endpoint, other, ChainConfig::default()).await,
        Err(ChainError::WrongChain { expected: 1, found: 31337 })
    ));
}

#[tokio::test]
async fn the_contracts_hash_signed_structs_with_the_crates_types() {
    let f = fixture().await;
    let c = f.chain.contracts();
    let typehash = f.chain.view(c.agreement_store, AgreementStore::SERVICE_AGREEMENT_TYPEHASHCall {}).await.unwrap();
    assert_eq!(typehash, keccak256(eip712::ServiceAgreement::eip712_encode_type().as_bytes()));
    let upload = tidepool_chain::bindings::ComputeUploadCondition::ALGORITHM_TYPEHASHCall {};
    let typehash = f.chain.view(c.compute_upload_condition, upload).await.unwrap();
    assert_eq!(typehash, keccak256(eip712::Algorithm::eip712_encode_type().as_bytes()));
    let separator = f.chain.view(c.agreement_store, AgreementStore::domainSeparatorCall {}).await.unwrap();
    assert_eq!(separator, f.chain.domain().separator());
}

#[tokio::test]
async fn a_full_agreement_pays_for_the_fuel_used_and_commits_the_receipt_hash() {
    let f = fixture().await;
    let (provider, consumer) = (f.provider.address(), f.consumer.address());
    let id = B256::repeat_byte(1);
    let mut gas: Vec<(&str, u64)> = Vec::new();

    let out = initialize(&f, id, [3600, 3600, 3600, 86_400, 0]).await;
    gas.push(("initializeAgreement", out.gas_used));
    assert!(!f.chain.check_permissions(id, consumer).await.unwrap(), "nothing is granted yet");

    let (approval, lock) = f.consumer.lock_payment(id, provider, max_amount()).await.unwrap();
    gas.push(("approve (consumer)", approval.expect("a first lock approves").gas_used));
    gas.push(("lockPayment (consumer)", lock.gas_used));
    assert_eq!(f.chain.balance(consumer).await.unwrap(), U256::from(CONSUMER_FUNDS) - max_amount());
    assert_eq!(f.chain.balance(f.chain.contracts().escrow_reward).await.unwrap(), max_amount(), "in escrow");

    let signature = f.consumer.sign_algorithm(id, ALGORITHM).await.unwrap();
    gas.push(("fulfillUpload", f.provider.fulfill_upload(id, ALGORITHM, signature).await.unwrap().gas_used));
    gas.push(("grantCompute", f.provider.grant_compute(id, consumer).await.unwrap().gas_used));
    assert!(f.chain.check_permissions(id, consumer).await.unwrap(), "granted");
    assert!(!f.chain.check_permissions(id, provider).await.unwrap(), "to the consumer only");

    let fuel = 123_456;
    let sealed = runtime_receipt(fuel);
    let receipt = Receipt::from(&sealed);
    let expected_hash = sealed.receipt_hash;
    assert_eq!(receipt::hash(&receipt), expected_hash);
    let (out, released) =
        f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, receipt.clone()).await.unwrap();
    gas.push(("releasePayment", out.gas_used));
    let paid = U256::from(fuel * PRICE_PER_FUEL);
    assert_eq!(released.receipt_hash, expected_hash, "the contract's receipt hash is the runtime's");
    assert_eq!((released.provider_amount, released.consumer_refund), (paid, max_amount() - paid));
    assert_eq!(f.chain.receipt_hash(id).await.unwrap(), Some(expected_hash), "committed on chain");
    assert_eq!(f.chain.balance(provider).await.unwrap(), paid, "the provider got the fuel it used");
    assert_eq!(f.chain.balance(consumer).await.unwrap(), U256::from(CONSUMER_FUNDS) - paid, "the rest came back");
    assert_eq!(f.chain.balance(f.chain.contracts().escrow_reward).await.unwrap(), U256::ZERO);
    assert!(!f.chain.check_permissions(id, consumer).await.unwrap(), "a released agreement grants nothing");

    let output = B256::repeat_byte(0x0d);
    gas.push((
        "publishOutput",
        f.provider.publish_output(id, output, "http://provider.test/out".into()).await.unwrap().gas_used,
    ));
    let record = f.chain.did(output).await.unwrap();
    assert_eq!(record.owner, consumer, "the consumer owns the outputs");
    assert_eq!(record.checksum, template::output_checksum(receipt.outputsRoot));
    assert!(matches!(
        f.provider.publish_output(id, output, String::new()).await,
        Err(ChainError::OutputAlreadyPublished { .. })
    ));

    let a = f.chain.agreement(id).await.unwrap();
    assert_eq!(a.state, AgreementState::Released);
    assert_eq!((a.consumer, a.provider, a.did), (consumer, provider, DID));
    assert_eq!(a.escrow, U256::ZERO);
    assert_eq!((a.algorithm_hash, a.receipt_hash, a.output_did), (Some(ALGORITHM), Some(expected_hash), Some(output)));
    let fulfilled: Vec<&str> =
        a.conditions.iter().filter(|c| c.fulfilled_at.is_some()).filter_map(|c| c.name).collect();
    assert_eq!(fulfilled, ["lockPayment", "uploadAlgorithm", "grantCompute", "releasePayment"]);
    assert_eq!(a.condition("grantCompute").unwrap().deadline, Some(a.created_at + 3600));
    assert_eq!(a.condition("refundPayment").unwrap().deadline, None);

    let events = EventReader::new(f.chain.clone(), f.chain.contracts().deployed_at_block, 0)
        .agreement_events(id, 0)
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(
        names,
        ["ExecuteAgreement", "PaymentLocked", "FulfillUpload", "ComputeGranted", "PaymentReleased", "OutputPublished"]
    );
    assert!(events.windows(2).all(|w| w[0].position < w[1].position), "oldest first");

    let total: u64 = gas.iter().map(|(_, g)| g).sum();
    println!("gas per step of one agreement:");
    for (step, used) in &gas {
        println!("  {step:<24} {used:>9}");
    }
    println!("  {:<24} {total:>9}", "total");
}

#[tokio::test]
async fn the_escrow_refuses_a_receipt_that_is_not_the_agreements() {
    let f = fixture().await;
    let id = B256::repeat_byte(2);
    granted(&f, id).await;
    let release = |r: Receipt| f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, r);
    let refused = |e: Result<_, ChainError>| match e {
        Err(ChainError::ReceiptMismatch { reason, agreement }) if agreement == id => reason,
        other => panic!("expected a receipt mismatch, got {other:?}"),
    };

    let mut other_algorithm = sample_receipt(10);
    other_algorithm.algorithmHash = B256::repeat_byte(0x12);
    assert_eq!(refused(release(other_algorithm).await), ReceiptCheck::Algorithm);

    let mut other_input = sample_receipt(10);
    other_input.inputs[1].root = B256::repeat_byte(0x89);
    assert_eq!(refused(release(other_input).await), ReceiptCheck::Inputs);
    let mut missing_input = sample_receipt(10);
    missing_input.inputs.pop();
    assert_eq!(refused(release(missing_input).await), ReceiptCheck::Inputs);

    assert_eq!(refused(release(sample_receipt(MAX_FUEL + 1)).await), ReceiptCheck::Fuel);
    let mut old = sample_receipt(10);
    old.version = 1;
    assert_eq!(refused(release(old).await), ReceiptCheck::Version);

    // Terms other than the signed ones are refused before the receipt is looked at.
    assert!(matches!(
        f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL + 1, sample_receipt(10)).await,
        Err(ChainError::ValuesMismatch { .. })
    ));
    // Only the provider releases.
    assert!(matches!(
        f.consumer.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, sample_receipt(10)).await,
        Err(ChainError::NotParty { .. })
    ));
    // Nothing moved; the right receipt at the maximum fuel still goes through.
    assert_eq!(f.chain.agreement(id).await.unwrap().escrow, max_amount());
    let (_, released) = release(sample_receipt(MAX_FUEL)).await.unwrap();
    assert_eq!((released.provider_amount, released.consumer_refund), (max_amount(), U256::ZERO));
}

#[tokio::test]
async fn a_forged_upload_signature_is_refused() {
    let f = fixture().await;
    let id = B256::repeat_byte(3);
    initialize(&f, id, [0; 5]).await;
    // Signed by the provider, not the consumer.
    let forged = f.provider.sign_algorithm(id, ALGORITHM).await.unwrap();
    assert!(matches!(f.provider.fulfill_upload(id, ALGORITHM, forged).await, Err(ChainError::InvalidSignature)));
    // The consumer's signature of another algorithm.
    let other = f.consumer.sign_algorithm(id, B256::repeat_byte(0x13)).await.unwrap();
    assert!(matches!(f.provider.fulfill_upload(id, ALGORITHM, other).await, Err(ChainError::InvalidSignature)));
    // The consumer's own signature, malleated to high s (EIP-2): refused too.
    let good = f.consumer.sign_algorithm(id, ALGORITHM).await.unwrap();
    let order = U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
    let s = U256::from_be_slice(&good[32..64]);
    let mut malleated = good.to_vec();
    malleated[32..64].copy_from_slice(&(order - s).to_be_bytes::<32>());
    malleated[64] = if good[64] == 27 { 28 } else { 27 };
    assert!(matches!(
        f.provider.fulfill_upload(id, ALGORITHM, Bytes::from(malleated)).await,
        Err(ChainError::InvalidSignature)
    ));
    assert!(matches!(
        f.provider.fulfill_upload(id, ALGORITHM, Bytes::from(vec![1; 64])).await,
        Err(ChainError::InvalidSignature)
    ));
    // Only the provider submits it.
    assert!(matches!(f.consumer.fulfill_upload(id, ALGORITHM, good.clone()).await, Err(ChainError::NotParty { .. })));
    f.provider.fulfill_upload(id, ALGORITHM, good).await.expect("the real signature");
    assert_eq!(f.chain.agreement(id).await.unwrap().algorithm_hash, Some(ALGORITHM));
}

#[tokio::test]
async fn agreements_are_refused_unless_signed_by_the_consumer_with_the_templates_keys_and_a_new_id() {
    let f = fixture().await;
    let id = B256::repeat_byte(4);
    initialize(&f, id, [0; 5]).await;
    let agreement = template::service_agreement(f.chain.contracts(), id, &terms(&f), [0; 5]).unwrap();
    let signature = f.consumer.sign_service_agreement(&agreement).await.unwrap();
    let again = f.provider.initialize_agreement(DID, f.consumer.address(), &agreement, signature.clone()).await;
    assert!(matches!(again, Err(ChainError::AlreadyExists { id: found }) if found == id), "{again:?}");

    let fresh = template::service_agreement(f.chain.contracts(), B256::repeat_byte(5), &terms(&f), [0; 5]).unwrap();
    // The signature of another agreement.
    let wrong = f.provider.initialize_agreement(DID, f.consumer.address(), &fresh, signature).await;
    assert!(matches!(wrong, Err(ChainError::InvalidSignature)), "{wrong:?}");
    // Keys other than the template's, even if signed.
    let mut tampered = fresh.clone();
    tampered.conditionKeys.swap(0, 1);
    let signature = f.consumer.sign_service_agreement(&tampered).await.unwrap();
    let wrong = f.provider.initialize_agreement(DID, f.consumer.address(), &tampered, signature).await;
    assert!(matches!(wrong, Err(ChainError::ConditionKeyMismatch { .. })), "{wrong:?}");
}

#[tokio::test]
async fn conditions_wait_for_their_dependencies() {
    let f = fixture().await;
    let id = B256::repeat_byte(6);
    initialize(&f, id, [0; 5]).await;
    let keys = template::condition_keys(f.chain.contracts());
    let grant = f.provider.grant_compute(id, f.consumer.address()).await;
    assert!(
        matches!(grant, Err(ChainError::DependencyUnfulfilled { dependency, .. }) if dependency == keys[template::LOCK_PAYMENT]),
        "{grant:?}"
    );
    f.consumer.lock_payment(id, f.provider.address(), max_amount()).await.unwrap();
    let release = f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, sample_receipt(1)).await;
    assert!(
        matches!(release, Err(ChainError::DependencyUnfulfilled { condition, dependency, .. })
            if condition == keys[template::RELEASE_PAYMENT] && dependency == keys[template::GRANT_COMPUTE]),
        "a release before the grant: {release:?}"
    );
    assert!(matches!(
        f.consumer.lock_payment(id, f.provider.address(), max_amount()).await,
        Err(ChainError::AlreadyFulfilled { .. })
    ));
    assert!(matches!(
        f.provider.grant_compute(B256::repeat_byte(0x77), f.consumer.address()).await,
        Err(ChainError::NotFound { .. })
    ));
}

#[tokio::test]
async fn refunds_need_a_missed_deadline() {
    let f = fixture().await;
    let consumer = f.consumer.address();
    let id = B256::repeat_byte(7);
    initialize(&f, id, [600, 600, 600, 3600, 0]).await;
    f.consumer.lock_payment(id, f.provider.address(), max_amount()).await.unwrap();
    assert!(
        matches!(f.consumer.refund_payment(id).await, Err(ChainError::NotRefundable { .. })),
        "before the deadline"
    );
    assert!(matches!(f.provider.refund_payment(id).await, Err(ChainError::NotParty { .. })), "the consumer's only");

    Anvil::advance_time(&f.chain, 601).await.unwrap();
    let signature = f.consumer.sign_algorithm(id, ALGORITHM).await.unwrap();
    assert!(matches!(f.provider.fulfill_upload(id, ALGORITHM, signature).await, Err(ChainError::TimedOut { .. })));
    let (_, amount) = f.consumer.refund_payment(id).await.expect("refund after the missed deadline");
    assert_eq!(amount, max_amount());
    assert_eq!(f.chain.balance(consumer).await.unwrap(), U256::from(CONSUMER_FUNDS), "all of it back");
    let a = f.chain.agreement(id).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Refunded, U256::ZERO));
    assert!(matches!(f.consumer.refund_payment(id).await, Err(ChainError::AgreementClosed { .. })));
    assert!(matches!(
        f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, sample_receipt(1)).await,
        Err(ChainError::AgreementClosed { .. })
    ));
}

#[tokio::test]
async fn a_reverted_transaction_does_not_wedge_the_next() {
    let f = fixture().await;
    let id = B256::repeat_byte(8);
    granted(&f, id).await;
    // A revert at estimation takes no nonce.
    for _ in 0..3 {
        assert!(f.provider.grant_compute(id, f.consumer.address()).await.is_err());
    }
    f.provider.register_attribute(B256::repeat_byte(0xa1), B256::ZERO, String::new()).await.expect("next one lands");

    // Two identical releases at once: both may pass estimation, one is mined first and the
    // other then reverts on chain; whichever path, exactly one succeeds, the other's reason
    // is decoded, and the key goes on working.
    let release = || f.provider.release_payment(id, U256::from(PRICE_PER_FUEL), MAX_FUEL, sample_receipt(5));
    let (a, b) = tokio::join!(release(), release());
    let (ok, err): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 1, "one release: {err:?}");
    assert!(
        matches!(err[0], Err(ChainError::AgreementClosed { .. } | ChainError::AlreadyFulfilled { .. })),
        "{:?}",
        err[0]
    );
    f.provider.register_attribute(B256::repeat_byte(0xa2), B256::ZERO, String::new()).await.expect("and the next");
}

#[tokio::test]
async fn many_concurrent_transactions_from_one_key_all_land() {
    let f = fixture().await;
    let n = 40u8;
    let sends = (0..n).map(|i| {
        let agent = f.provider.clone();
        async move { agent.register_attribute(B256::repeat_byte(0xb0 ^ i), B256::repeat_byte(i), format!("u{i}")).await }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    for (i, o) in outcomes.iter().enumerate() {
        assert!(o.is_ok(), "transaction {i}: {o:?}");
    }
    let hashes: BTreeSet<B256> = outcomes.iter().map(|o| o.as_ref().unwrap().tx_hash).collect();
    assert_eq!(hashes.len(), usize::from(n));
    for i in 0..n {
        let record = f.chain.did(B256::repeat_byte(0xb0 ^ i)).await.unwrap();
        assert_eq!((record.owner, record.checksum), (f.provider.address(), B256::repeat_byte(i)));
    }
}

#[tokio::test]
async fn a_reader_restarted_from_its_cursor_sees_what_it_missed() {
    let f = fixture().await;
    let start = f.chain.contracts().deployed_at_block;
    let mut reader = EventReader::new(f.chain.clone(), start, 0);
    let first = B256::repeat_byte(9);
    initialize(&f, first, [0; 5]).await;
    let seen = reader.poll().await.unwrap();
    assert_eq!(
        seen.iter().map(|e| (e.agreement_id, e.event.name())).collect::<Vec<_>>(),
        [(first, "ExecuteAgreement")]
    );
    let saved = reader.cursor();
    drop(reader);

    // While no reader runs: another agreement, and the first one's payment.
    let second = B256::repeat_byte(10);
    initialize(&f, second, [0; 5]).await;
    f.consumer.lock_payment(first, f.provider.address(), max_amount()).await.unwrap();

    let mut restarted = EventReader::new(f.chain.clone(), saved, 0).with_max_range(2);
    let missed = restarted.poll().await.unwrap();
    let summary: Vec<(B256, &str)> = missed.iter().map(|e| (e.agreement_id, e.event.name())).collect();
    assert_eq!(summary, [(second, "ExecuteAgreement"), (first, "PaymentLocked")], "exactly what was missed");
    assert!(matches!(missed[1].event, AgreementEvent::PaymentLocked { amount } if amount == max_amount()));
    assert!(restarted.poll().await.unwrap().is_empty(), "nothing twice");

    // With a confirmation depth, an event shows only once buried deep enough.
    let mut confirmed = EventReader::new(f.chain.clone(), restarted.cursor(), 2);
    f.provider.grant_compute(first, f.consumer.address()).await.unwrap_err(); // not uploaded: no event
    let signature = f.consumer.sign_algorithm(first, ALGORITHM).await.unwrap();
    f.provider.fulfill_upload(first, ALGORITHM, signature).await.unwrap();
    assert!(confirmed.poll().await.unwrap().is_empty(), "not yet two blocks deep");
    Anvil::advance_time(&f.chain, 1).await.unwrap();
    Anvil::advance_time(&f.chain, 1).await.unwrap();
    let names: Vec<&str> = confirmed.poll().await.unwrap().iter().map(|e| e.event.name()).collect();
    assert_eq!(names, ["FulfillUpload"]);

    // The broadcasting poller delivers the same events.
    let subscription = EventReader::new(f.chain.clone(), start, 0).spawn(std::time::Duration::from_millis(20));
    let mut events = subscription.subscribe();
    let mut names = Vec::new();
    while names.len() < 4 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv()).await.unwrap().unwrap();
        names.push(e.event.name());
    }
    assert_eq!(names, ["ExecuteAgreement", "ExecuteAgreement", "PaymentLocked", "FulfillUpload"]);
}

#[tokio::test]
async fn the_contract_hashes_receipts_as_the_runtime_does() {
    use tidepool_runtime::Outcome;
    use tidepool_runtime::receipt::{EnvironmentInfo, InputRoot};
    let f = fixture().await;
    let base = runtime_receipt(42);
    let mut receipts = vec![base.clone()];
    let mut r = base.clone();
    r.environment = Some(EnvironmentInfo::module("wordfreq"));
    r.args = vec![];
    r.inputs = vec![];
    r.outcome = Outcome::Trap { message: "wasm trap: integer divide by zero".into() };
    receipts.push(r);
    for outcome in [
        Outcome::Exited { code: i32::MIN },
        Outcome::Exited { code: i32::MAX },
        Outcome::OutOfFuel,
        Outcome::Timeout,
        Outcome::Stopped,
    ] {
        let mut r = base.clone();
        r.outcome = outcome;
        r.deterministic = r.outcome.is_deterministic();
        receipts.push(r);
    }
    let mut r = base.clone();
    r.args = vec!["".into(), "ünïcode ✓".into(), "x".repeat(300)];
    r.inputs.extend((0..5).map(|i| InputRoot { name: format!("set-{i}"), root: B256::repeat_byte(i) }));
    r.limits.fuel = u64::MAX;
    r.fuel_consumed = u64::MAX;
    receipts.push(r);
    for r in receipts {
        let r = r.seal();
        let call = EscrowReward::hashReceiptCall { receipt: Receipt::from(&r) };
        let on_chain = f.chain.view(f.chain.contracts().escrow_reward, call).await.unwrap();
        assert_eq!(on_chain, r.compute_hash(), "{:?}", r.outcome);
    }
}
