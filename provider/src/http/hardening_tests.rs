//! Attacks on the router, driven in-process with `oneshot`: each test is named after the case
//! it shows refused (issue 10). The connection-level limits (timeouts, caps) are tested over
//! real sockets in `tests/e2e/hardening.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::B256;
use alloy_signer_local::PrivateKeySigner;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use futures_util::stream;
use tower::ServiceExt;

use super::router;
use crate::config::ProviderConfig;
use crate::protocol::signing::{Envelope, unix_now};
use crate::provider::Provider;

async fn provider_with(config: impl FnOnce(&mut ProviderConfig)) -> (tempfile::TempDir, Arc<Provider>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ProviderConfig {
        data_dir: tmp.path().join("data"),
        dev_faucet: true,
        sandbox: crate::config::SandboxConfig::in_process(),
        ..ProviderConfig::default()
    };
    config(&mut c);
    let p = Provider::open(c).await.unwrap();
    (tmp, p)
}

async fn provider() -> (tempfile::TempDir, Arc<Provider>) {
    provider_with(|_| {}).await
}

async fn call(p: &Arc<Provider>, req: Request<Body>) -> (StatusCode, Option<String>, serde_json::Value) {
    let resp = router(p.api()).oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, content_type, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn with_envelope(mut req: axum::http::request::Builder, env: &Envelope) -> axum::http::request::Builder {
    for (k, v) in env.headers() {
        req = req.header(k, v);
    }
    req
}

fn signed(p: &Provider, key: &PrivateKeySigner, method: &str, path: &str, body: &[u8], nonce: u64) -> Request<Body> {
    let env = Envelope::sign(key, p.domain(), method, path, body, nonce, unix_now() + 60);
    with_envelope(Request::builder().method(method).uri(path), &env).body(Body::from(body.to_vec())).unwrap()
}

/// A body that records whether anyone read it, and yields `chunk` forever.
fn watched_body(polled: Arc<AtomicBool>, chunk: usize) -> Body {
    Body::from_stream(stream::repeat_with(move || {
        polled.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(vec![0u8; chunk]))
    }))
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test]
async fn framework_errors_405_414_431_have_the_json_error_format() {
    let (_t, p) = provider().await;
    let (status, ct, body) = call(&p, Request::delete("/api/v1/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
    assert_eq!(ct.as_deref(), Some("application/json"));
    let long = format!("/api/v1/assets/{}", "a".repeat(20_000));
    let (status, ct, body) = call(&p, Request::get(long).body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::URI_TOO_LONG, Some("uri_too_long")));
    assert_eq!(ct.as_deref(), Some("application/json"));
    let mut req = Request::get("/api/v1/health");
    for i in 0..200 {
        req = req.header(format!("x-filler-{i}"), "y".repeat(100));
    }
    let (status, ct, body) = call(&p, req.body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Some("headers_too_large"))
    );
    assert_eq!(ct.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_the_body_is_read() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let polled = Arc::new(AtomicBool::new(false));
    // A JSON endpoint promising 200 MB.
    let env = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 1, unix_now() + 60);
    let req = with_envelope(Request::post("/api/v1/uploads"), &env)
        .header("content-length", 200_000_000)
        .body(watched_body(polled.clone(), 1 << 16))
        .unwrap();
    let (status, _, body) = call(&p, req).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")));
    assert!(!polled.load(Ordering::SeqCst), "the body was read before the 413");
    // A module upload promising more than the module limit.
    let checksum = crate::protocol::signing::sign_typed(
        &key,
        p.domain(),
        &crate::protocol::eip712::Algorithm { serviceAgreementId: B256::ZERO, algorithmHash: B256::ZERO },
    );
    let path = format!("/api/v1/services/compute/upload?serviceAgreementId={}&signedChecksum={checksum}", B256::ZERO);
    let env = Envelope::sign_hash(&key, p.domain(), "POST", &path, B256::ZERO, 2, unix_now() + 60);
    let req = with_envelope(Request::post(&path), &env)
        .header("content-length", 200_000_000)
        .body(watched_body(polled.clone(), 1 << 16))
        .unwrap();
    let (status, _, _) = call(&p, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!polled.load(Ordering::SeqCst), "the module body was read before the 413");
}

#[tokio::test]
async fn unauthenticated_uploads_write_nothing_to_disk() {
    let (_t, p) = provider().await;
    let owner = PrivateKeySigner::random();
    let (status, _, session) = call(&p, signed(&p, &owner, "POST", "/api/v1/uploads", b"{}", 1)).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/api/v1/uploads/{}/files/d/big.bin", session["id"].as_str().unwrap());
    let tmp = p.config().data_dir.join("tmp");
    let polled = Arc::new(AtomicBool::new(false));
    // Signed by someone else while claiming to be the owner: refused before the body.
    let mallory = PrivateKeySigner::random();
    let mut env = Envelope::sign_hash(&mallory, p.domain(), "PUT", &path, B256::repeat_byte(1), 2, unix_now() + 60);
    env.address = owner.address();
    let req = with_envelope(Request::put(&path), &env).body(watched_body(polled.clone(), 1 << 20)).unwrap();
    let (status, _, body) = call(&p, req).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_signature")));
    assert!(!polled.load(Ordering::SeqCst), "a byte of the body was accepted before the signature was checked");
    // No content hash header: the signature cannot be checked before the body, so refused.
    let mut env = Envelope::sign(&owner, p.domain(), "PUT", &path, b"data", 3, unix_now() + 60);
    env.content_hash = None;
    let req = with_envelope(Request::put(&path), &env).body(watched_body(polled.clone(), 1 << 20)).unwrap();
    let (status, _, _) = call(&p, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!polled.load(Ordering::SeqCst));
    // The owner's signature over one hash, and another body: refused, nothing kept.
    let env = Envelope::sign(&owner, p.domain(), "PUT", &path, b"the signed body", 4, unix_now() + 60);
    let req = with_envelope(Request::put(&path), &env).body(Body::from("another body")).unwrap();
    let (status, _, _) = call(&p, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(files_in(&tmp), 0, "a refused body left a file behind");
    // The real thing is accepted.
    let (status, _, file) = call(&p, signed(&p, &owner, "PUT", &path, b"the signed body", 5)).await;
    assert_eq!((status, file["size"].as_u64()), (StatusCode::OK, Some(15)), "{file}");
    assert_eq!(files_in(&tmp), 0);
}

#[tokio::test]
async fn concurrent_uploads_from_one_address_are_bounded() {
    let (_t, p) = provider_with(|c| c.http.max_uploads_per_address = 1).await;
    let owner = PrivateKeySigner::random();
    let (_, _, session) = call(&p, signed(&p, &owner, "POST", "/api/v1/uploads", b"{}", 1)).await;
    let path = format!("/api/v1/uploads/{}/files/d/slow.bin", session["id"].as_str().unwrap());
    // An upload whose body never ends holds the address's only slot.
    let env = Envelope::sign_hash(&owner, p.domain(), "PUT", &path, B256::repeat_byte(7), 2, unix_now() + 60);
    let pending = with_envelope(Request::put(&path), &env)
        .body(Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>()))
        .unwrap();
    let api = p.api();
    let slow = tokio::spawn(async move { router(api).oneshot(pending).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, _, body) = call(&p, signed(&p, &owner, "PUT", &path, b"x", 3)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_requests")));
    slow.abort();
}

#[tokio::test]
async fn nonces_at_or_above_2_pow_63_are_refused_and_lock_no_one_out() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    for nonce in [1u64 << 63, u64::MAX] {
        let (status, _, body) = call(&p, signed(&p, &key, "POST", "/api/v1/uploads", b"{}", nonce)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    }
    let (status, _, _) = call(&p, signed(&p, &key, "POST", "/api/v1/uploads", b"{}", 5)).await;
    assert_eq!(status, StatusCode::CREATED, "the address can still sign requests");
}

#[tokio::test]
async fn parameterless_bodies_must_be_an_empty_object() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    for (i, path) in ["/api/v1/uploads", "/api/v1/keeper/faucet"].into_iter().enumerate() {
        let nonce = 10 * i as u64;
        let (status, _, _) = call(&p, signed(&p, &key, "POST", path, b"[null,null]", nonce + 1)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} accepted [null,null]");
        let (status, _, _) = call(&p, signed(&p, &key, "POST", path, b"{\"x\":1}", nonce + 2)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} accepted an unknown field");
        let (status, _, _) = call(&p, signed(&p, &key, "POST", path, b"{}", nonce + 3)).await;
        assert!(status.is_success(), "{path}: {status}");
    }
}

#[tokio::test]
async fn json_nested_100k_deep_is_a_400() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, body) =
        call(&p, signed(&p, &key, "POST", "/api/v1/services/compute/initialize", deep.as_bytes(), 1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let (status, _, _) = call(&p, signed(&p, &key, "POST", "/api/v1/services/compute/exec", deep.as_bytes(), 2)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_signed_request_sent_100_times_at_once_succeeds_exactly_once() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let env = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 42, unix_now() + 60);
    let sends = (0..100).map(|_| {
        let (api, env) = (p.api(), env.clone());
        tokio::spawn(async move {
            let req = with_envelope(Request::post("/api/v1/uploads"), &env).body(Body::from("{}")).unwrap();
            router(api).oneshot(req).await.unwrap().status()
        })
    });
    let mut statuses = Vec::new();
    for s in sends.collect::<Vec<_>>() {
        statuses.push(s.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let replays = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, replays), (1, 99), "{statuses:?}");
}

#[tokio::test]
async fn malleated_wrong_chain_wrong_provider_expired_and_altered_requests_are_refused() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let send = |env: Envelope, body: &'static str| {
        let p = p.clone();
        async move {
            let req = with_envelope(Request::post("/api/v1/uploads"), &env).body(Body::from(body)).unwrap();
            call(&p, req).await.0
        }
    };
    let now = unix_now();
    let good = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 1, now + 60);
    // High s: the same signature's twin.
    let order = alloy_primitives::U256::from_be_bytes(alloy_primitives::hex!(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
    ));
    let sig = good.signature;
    let twin = alloy_primitives::Signature::new(sig.r(), order - sig.s(), !sig.v());
    assert_eq!(send(Envelope { signature: twin, ..good.clone() }, "{}").await, StatusCode::UNAUTHORIZED, "high s");
    let other_chain = crate::protocol::eip712::domain(1, p.address());
    let e = Envelope::sign(&key, &other_chain, "POST", "/api/v1/uploads", b"{}", 2, now + 60);
    assert_eq!(send(e, "{}").await, StatusCode::UNAUTHORIZED, "another chain id");
    let other_provider = crate::protocol::eip712::domain(p.keeper().chain_id(), PrivateKeySigner::random().address());
    let e = Envelope::sign(&key, &other_provider, "POST", "/api/v1/uploads", b"{}", 3, now + 60);
    assert_eq!(send(e, "{}").await, StatusCode::UNAUTHORIZED, "another provider");
    let e = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 4, now - 1);
    assert_eq!(send(e, "{}").await, StatusCode::UNAUTHORIZED, "expired");
    let e = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 5, now + 60);
    assert_eq!(send(e, "{ }").await, StatusCode::UNAUTHORIZED, "the body changed");
    // None of them used up the nonce of the good one.
    assert_eq!(send(good, "{}").await, StatusCode::CREATED);
}

#[tokio::test]
async fn a_far_future_not_before_is_a_400() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let body = format!(
        "{{\"serviceAgreementId\":\"{}\",\"consumerAddress\":\"{}\",\"notBefore\":{}}}",
        B256::ZERO,
        key.address(),
        (1u128 << 63) + 5
    );
    let (status, _, resp) =
        call(&p, signed(&p, &key, "POST", "/api/v1/services/compute/exec", body.as_bytes(), 1)).await;
    assert_eq!((status, resp["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("notBefore"), "{resp}");
}

#[tokio::test]
async fn crash_leftovers_in_tmp_and_jobs_are_removed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for dir in ["tmp", "jobs/0123abcd/outputs", "jobs/empty"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    std::fs::write(data.join("tmp/.tmpXYZ123"), vec![1u8; 4096]).unwrap();
    std::fs::write(data.join("jobs/0123abcd/outputs/half.bin"), b"half").unwrap();
    let config = ProviderConfig {
        data_dir: data.clone(),
        sandbox: crate::config::SandboxConfig::in_process(),
        ..ProviderConfig::default()
    };
    let p = Provider::open(config).await.unwrap();
    p.start().await.unwrap();
    assert_eq!(files_in(&data.join("tmp")), 0, "temporary files left by a killed daemon");
    assert_eq!(files_in(&data.join("jobs")), 0, "job directories left by a killed daemon");
}

/// A database locked by another writer past the busy timeout (SQLITE_BUSY): the request is
/// answered 503 with `Retry-After`, leaves nothing behind, and succeeds once the lock is gone.
#[tokio::test]
async fn a_locked_database_answers_503_then_recovers_with_nothing_half_done() {
    use sqlx::Connection;
    let (tmp, p) = provider_with(|c| c.db_busy_timeout_ms = 200).await;
    let key = PrivateKeySigner::random();
    let db = tmp.path().join("data/tidepool.db");
    let mut locker = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut locker).await.unwrap();

    let resp = router(p.api()).oneshot(signed(&p, &key, "POST", "/api/v1/keeper/faucet", b"{}", 1)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"), "{:?}", resp.headers());

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let (status, _, gift) = call(&p, signed(&p, &key, "POST", "/api/v1/keeper/faucet", b"{}", 2)).await;
    assert_eq!(status, StatusCode::OK, "{gift}");
    assert!(gift["balance"].is_string(), "{gift}");
    let path = format!("/api/v1/keeper/balances/{}", key.address());
    let (status, _, balance) = call(&p, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(balance["balance"], gift["balance"], "one gift: the refused request left nothing");
}

/// Runs `program args` and says whether it succeeded (with its stderr when not).
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = std::process::Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

/// A small tmpfs mounted over a directory for one test (root only); lazily unmounted when
/// dropped, since the provider may still hold files in it.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let size = format!("size={bytes}");
        run("mount", &["-t".as_ref(), "tmpfs".as_ref(), "-o".as_ref(), size.as_ref(), "tmpfs".as_ref(), dir.as_ref()])?;
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run("umount", &["-l".as_ref(), self.0.as_ref()]);
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until a write fails for want of space.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        while file.write_all(&vec![0u8; chunk]).and_then(|()| file.sync_all()).is_ok() {}
    }
    path
}

/// The provider's disk full (its data directory on a small tmpfs, filled but for a little room
/// for the database): a dataset file upload is answered 503 with `Retry-After`, nothing of it is kept, other requests are
/// answered or refused 503 but never fail otherwise, and once space is freed the same upload
/// succeeds. Needs root to mount the tmpfs (CI runs as root); skipped, saying so, otherwise.
#[tokio::test]
async fn a_full_disk_answers_503_then_recovers_with_nothing_half_done() {
    let mut disk = Err(String::new());
    let (_t, p) = provider_with(|c| disk = SmallDisk::mount(&c.data_dir, 16 << 20)).await;
    let _disk = match disk {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: mounting a small tmpfs needs root ({why})");
            return;
        }
    };
    let data = p.config().data_dir.clone();
    let operator = p.signer().clone();
    let (status, _, session) = call(&p, signed(&p, &operator, "POST", "/api/v1/uploads", b"{}", 1)).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let path = format!("/api/v1/uploads/{}/files/d/data.bin", session["id"].as_str().unwrap());
    let body = vec![7u8; 1 << 20];

    // Full but for room for the database's next few commits (a request's nonce), not for
    // the body: the upload fails in its own file, the path under test.
    let filler = fill(&data);
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(len - (256 << 10)).unwrap();
    let resp = router(p.api()).oneshot(signed(&p, &operator, "PUT", &path, &body, 2)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "an upload onto a full disk");
    assert!(resp.headers().contains_key("retry-after"), "{:?}", resp.headers());
    assert_eq!(files_in(&data.join("tmp")), 0, "the refused upload left a file behind");
    let hex = hex::encode(blake3::hash(&body).as_bytes());
    let blob = data.join("blobs").join(&hex[..2]).join(&hex);
    assert!(
        !blob.exists(),
        "the refused upload was kept as a blob ({} bytes)",
        std::fs::metadata(&blob).unwrap().len()
    );
    let consumer = PrivateKeySigner::random();
    let (status, _, gift) = call(&p, signed(&p, &consumer, "POST", "/api/v1/keeper/faucet", b"{}", 1)).await;
    assert!(matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{status}: {gift}");

    std::fs::remove_file(filler).unwrap();
    let (status, _, file) = call(&p, signed(&p, &operator, "PUT", &path, &body, 3)).await;
    assert_eq!((status, file["size"].as_u64()), (StatusCode::OK, Some(body.len() as u64)), "{file}");
    assert_eq!(files_in(&data.join("tmp")), 0);
    assert!(std::fs::read(&blob).unwrap() == body, "the stored blob is not the uploaded body");
    let (status, _, _) = call(&p, signed(&p, &consumer, "POST", "/api/v1/keeper/faucet", b"{}", 2)).await;
    assert_eq!(status, StatusCode::OK, "the database writes again once there is space");
}

/// Files made immutable for one test (`chattr +i`: not even root can write them, as on a
/// filesystem remounted read-only); writable again when dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(files: Vec<std::path::PathBuf>) -> Result<Self, String> {
        let mut guard = Self(Vec::new());
        for file in files {
            run("chattr", &["+i".as_ref(), file.as_ref()])?;
            guard.0.push(file);
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = run("chattr", &["-i".as_ref(), file.as_ref()]);
        }
    }
}

/// The database made unwritable under the running provider: writes are answered 503 with
/// `Retry-After`, nothing of them is kept, and they succeed again once it is writable. Needs a
/// filesystem with the immutable attribute and root (CI runs as root); skipped, saying so,
/// otherwise.
#[tokio::test]
async fn a_read_only_database_answers_503_then_recovers_with_nothing_half_done() {
    let (tmp, p) = provider().await;
    let key = PrivateKeySigner::random();
    let data = tmp.path().join("data");
    let files: Vec<_> =
        ["tidepool.db", "tidepool.db-wal"].iter().map(|f| data.join(f)).filter(|f| f.exists()).collect();
    let immutable = match Immutable::set(files) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("skipped: the database cannot be made immutable here ({why})");
            return;
        }
    };
    let resp = router(p.api()).oneshot(signed(&p, &key, "POST", "/api/v1/keeper/faucet", b"{}", 1)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"), "{:?}", resp.headers());

    drop(immutable);
    let (status, _, gift) = call(&p, signed(&p, &key, "POST", "/api/v1/keeper/faucet", b"{}", 2)).await;
    assert_eq!(status, StatusCode::OK, "{gift}");
    let path = format!("/api/v1/keeper/balances/{}", key.address());
    let (status, _, balance) = call(&p, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(balance["balance"], gift["balance"], "one gift: the refused request left nothing");
}
