//! Every bad input gets its status and a JSON error; replays and altered requests are refused;
//! algorithm policies hold.

use alloy_primitives::B256;
use alloy_signer_local::PrivateKeySigner;
use tidepool_provider::client::{Client, ClientError};
use tidepool_provider::protocol::api::ExecRequest;
use tidepool_provider::protocol::ddo::{AlgorithmPolicy, AssetKind, Did};
use tidepool_provider::protocol::events::EventName;
use tidepool_provider::protocol::signing::{Envelope, unix_now};
use tidepool_provider::protocol::template::ConditionName;

use crate::daemon::{Daemon, initialize_signed, publish, request};
use crate::provider_flow::wait_for_event;
use crate::util::{dataset, module};

#[track_caller]
fn expect(r: Result<impl std::fmt::Debug, ClientError>, status: u16, code: &str) {
    match r {
        Err(ClientError::Api { status: s, code: c, message }) => {
            assert_eq!((s, c.as_str()), (status, code), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// A raw request signed by `key`, to send things the client would never send. (A fresh key:
/// a client's own nonces are milliseconds since the epoch.)
async fn raw(
    key: &PrivateKeySigner,
    c: &Client,
    url: &str,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: u64,
) -> (u16, serde_json::Value) {
    let env = Envelope::sign(key, c.domain(), method, path, body, nonce, unix_now() + 60);
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), format!("{url}{path}")).body(body.to_vec());
    for (k, v) in env.headers() {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_class_has_its_status() {
    let cfg = tempfile::tempdir().unwrap();
    let config = cfg.path().join("provider.toml");
    std::fs::write(&config, "max_module_bytes = 300000\n").unwrap();
    let d = Daemon::start(&["--config", config.to_str().unwrap()]);
    let data = dataset(&[("a.txt", b"some words")]);
    let did = publish(&d, &[("a", data.path())], request("data")).await;
    let consumer = d.consumer().await;
    let wordfreq = std::fs::read(module("wordfreq")).unwrap();

    // 400: malformed.
    let key = PrivateKeySigner::random();
    let (status, body) =
        raw(&key, &consumer, &d.url, "POST", "/api/v1/services/compute/initialize", b"{\"did\": 42}", 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let r = reqwest::get(format!("{}/api/v1/assets/did:op:nothex", d.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // 401: unsigned, signed by someone else, or an agreement signature of another key.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/services/compute/initialize", d.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    expect(initialize_signed(&consumer, did, B256::random(), &PrivateKeySigner::random()).await, 401, "bad_signature");

    // 404: unknown asset, job, route.
    expect(consumer.ddo(Did(B256::repeat_byte(1))).await, 404, "not_found");
    expect(consumer.job("nope").await, 404, "not_found");
    let r = reqwest::get(format!("{}/api/v2/anything", d.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // 409: a reused agreement id.
    let agreement = B256::random();
    initialize_signed(&consumer, did, agreement, consumer.signer()).await.unwrap();
    expect(initialize_signed(&consumer, did, agreement, consumer.signer()).await, 409, "conflict");

    // 403: exec before the grant; publishing a dataset without being an operator.
    let exec = ExecRequest {
        service_agreement_id: agreement,
        consumer_address: consumer.address(),
        not_before: None,
        args: vec![],
    };
    expect(consumer.exec(&exec).await, 403, "forbidden");
    let session = consumer.create_session().await.unwrap();
    consumer.upload_file(&session, "a", "a.txt", &data.path().join("a.txt")).await.unwrap();
    let mut not_mine = request("not an operator's");
    not_mine.kind = AssetKind::Dataset;
    expect(consumer.publish(&session, &not_mine).await, 403, "forbidden");
    // 400: a condition timeout no keeper can add to a date (refused when published, not at
    // every consumer's initialize).
    let mut forever = request("never times out");
    forever.timeouts.insert(ConditionName::LockPayment, u64::MAX);
    expect(
        d.operator().await.publish_dirs(&[("a".into(), data.path().to_path_buf())], &forever).await,
        400,
        "bad_request",
    );

    // 413: a module over the provider's size limit. 422: not a module; a forbidden import.
    expect(consumer.upload_module(agreement, &vec![0u8; 400_000], "big").await, 413, "too_large");
    // Far over it: the 413 still reaches a client that is sending, not a broken pipe (the
    // server reads and drops the rest of the body before it closes).
    expect(consumer.upload_module(agreement, &vec![0u8; 64 << 20], "bigger").await, 413, "too_large");
    expect(consumer.upload_module(agreement, b"not wasm at all", "junk").await, 422, "unprocessable");
    let forbidden = wat::parse_str(
        r#"(module (import "env" "net_connect" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let err = consumer.upload_module(agreement, &forbidden, "sneaky").await.unwrap_err();
    assert!(err.to_string().contains("env::net_connect"), "{err}");
    expect(Err::<(), _>(err), 422, "unprocessable");

    // 402: locking without the funds.
    let poor = Client::connect(&d.url, PrivateKeySigner::random()).await.unwrap();
    let poor_agreement = B256::random();
    initialize_signed(&poor, did, poor_agreement, poor.signer()).await.unwrap();
    expect(poor.lock_payment(poor_agreement).await, 402, "insufficient_balance");

    // A granted agreement: exec twice is a conflict, someone else's job is forbidden, and a
    // start after the payment deadline is refused.
    consumer.upload_module(agreement, &wordfreq, "wordfreq").await.unwrap();
    consumer.lock_payment(agreement).await.unwrap();
    expect(consumer.lock_payment(agreement).await, 409, "conflict");
    wait_for_event(&consumer, agreement, EventName::ComputeGranted).await;
    let late = ExecRequest { not_before: Some(unix_now() + 10 * 86_400), ..exec.clone() };
    expect(consumer.exec(&late).await, 422, "unprocessable");
    let job = consumer.exec(&exec).await.unwrap();
    expect(consumer.exec(&exec).await, 409, "conflict");
    expect(poor.job(&job.job_id).await, 403, "forbidden");
    expect(poor.results(&job.job_id).await, 403, "forbidden");
    expect(consumer.refund(agreement).await, 409, "conflict");
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_or_altered_requests_are_refused() {
    let d = Daemon::start(&[]);
    let c = d.consumer().await;
    let key = PrivateKeySigner::random();
    let (s1, _) = raw(&key, &c, &d.url, "POST", "/api/v1/uploads", b"{}", 10).await;
    assert_eq!(s1, 201);
    let (s2, body) = raw(&key, &c, &d.url, "POST", "/api/v1/uploads", b"{}", 10).await;
    assert_eq!((s2, body["error"]["code"].as_str()), (409, Some("replay")), "the same request twice");
    let (s3, _) = raw(&key, &c, &d.url, "POST", "/api/v1/uploads", b"{}", 9).await;
    assert_eq!(s3, 409, "an older nonce");
    let (s4, _) = raw(&key, &c, &d.url, "POST", "/api/v1/uploads", b"{}", 11).await;
    assert_eq!(s4, 201, "the next nonce is fine");
    // Captured headers on another body.
    let env = Envelope::sign(&key, c.domain(), "POST", "/api/v1/uploads", b"{}", 20, unix_now() + 60);
    let mut req = reqwest::Client::new().post(format!("{}/api/v1/uploads", d.url)).body("{\"evil\": true}");
    for (k, v) in env.headers() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 401);
    // Captured headers on another path.
    let mut req = reqwest::Client::new().post(format!("{}/api/v1/keeper/faucet", d.url)).body("{}");
    for (k, v) in env.headers() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 401);
}

/// Publishes an example as an algorithm asset, as `who`.
async fn publish_algorithm(who: &Client, name: &str) -> Did {
    let req = tidepool_provider::protocol::api::PublishRequest { kind: AssetKind::Algorithm, ..request(name) };
    let session = who.create_session().await.unwrap();
    who.upload_file(&session, "algorithm", &format!("{name}.wasm"), &module(name)).await.unwrap();
    who.publish(&session, &req).await.unwrap().did
}

#[tokio::test(flavor = "multi_thread")]
async fn algorithm_policies_are_enforced() {
    let d = Daemon::start(&[]);
    let data = dataset(&[("a.txt", b"alpha beta")]);
    let wordfreq = std::fs::read(module("wordfreq")).unwrap();
    let mandelbrot = std::fs::read(module("mandelbrot")).unwrap();

    // Only listed hashes.
    let mut by_hash = request("hash-listed");
    by_hash.trusted_algorithms =
        Some(AlgorithmPolicy::Hashes { hashes: vec![tidepool_runtime::tree::blake3_b256(&wordfreq)] });
    let did = publish(&d, &[("a", data.path())], by_hash).await;
    let c = d.consumer().await;
    let agreement = B256::random();
    initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
    let refused = c.upload_module(agreement, &mandelbrot, "mandelbrot").await.unwrap_err();
    assert!(refused.to_string().contains("policy"), "{refused}");
    expect(Err::<(), _>(refused), 422, "unprocessable");
    c.upload_module(agreement, &wordfreq, "wordfreq").await.unwrap();

    // Only algorithms published by trusted publishers.
    let trusted = Client::connect(&d.url, PrivateKeySigner::random()).await.unwrap();
    let stranger = Client::connect(&d.url, PrivateKeySigner::random()).await.unwrap();
    let good = publish_algorithm(&trusted, "wordfreq").await;
    let bad = publish_algorithm(&stranger, "mandelbrot").await;
    let mut by_publisher = request("publisher-listed");
    by_publisher.trusted_algorithms = Some(AlgorithmPolicy::Publishers { publishers: vec![trusted.address()] });
    let did = publish(&d, &[("a", data.path())], by_publisher).await;
    let hash_of = |bytes: &[u8]| tidepool_runtime::tree::blake3_b256(bytes);
    for (alg, accepted) in [(bad, false), (good, true)] {
        let agreement = B256::random();
        initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
        let bytes = if accepted { &wordfreq } else { &mandelbrot };
        let r = c.upload_published(agreement, alg, hash_of(bytes)).await;
        if accepted {
            assert_eq!(r.unwrap().algorithm_hash, hash_of(&wordfreq));
        } else {
            expect(r, 422, "unprocessable");
            expect(c.upload_module(agreement, &wordfreq, "wordfreq").await, 422, "unprocessable");
        }
    }
}
