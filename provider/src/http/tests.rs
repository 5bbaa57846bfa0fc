//! The router, driven in-process with `oneshot`: routing, the error format, authentication,
//! replays, and that every route the OpenAPI document lists exists.

use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::router;
use crate::config::ProviderConfig;
use crate::protocol::signing::{Envelope, unix_now};
use crate::provider::Provider;

async fn provider() -> (tempfile::TempDir, Arc<Provider>) {
    let tmp = tempfile::tempdir().unwrap();
    let config = ProviderConfig {
        data_dir: tmp.path().join("data"),
        sandbox: crate::config::SandboxConfig::in_process(),
        ..ProviderConfig::default()
    };
    let p = Provider::open(config).await.unwrap();
    (tmp, p)
}

async fn call(p: &Arc<Provider>, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = router(p.api()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn signed(p: &Provider, key: &PrivateKeySigner, method: &str, path: &str, body: &[u8], nonce: u64) -> Request<Body> {
    let env = Envelope::sign(key, p.domain(), method, path, body, nonce, unix_now() + 60);
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    for (k, v) in env.headers() {
        req = req.header(k, v);
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

#[tokio::test]
async fn unknown_routes_and_bad_input_get_the_json_error_format() {
    let (_t, p) = provider().await;
    let (status, body) = call(&p, Request::get("/api/v1/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = call(&p, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = call(&p, Request::get("/api/v1/assets/did:op:zz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let (status, _) = call(&p, Request::get("/api/v1/keeper/events?after=x").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = format!("/api/v1/assets/did:op:{}", "00".repeat(32));
    let (status, _) = call(&p, Request::get(missing).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signatures_are_required_checked_and_never_replayable() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let unsigned = Request::post("/api/v1/uploads").body(Body::from("{}")).unwrap();
    let (status, body) = call(&p, unsigned).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_signature")));
    let first = signed(&p, &key, "POST", "/api/v1/uploads", b"{}", 1);
    let (status, _) = call(&p, first).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&p, signed(&p, &key, "POST", "/api/v1/uploads", b"{}", 1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("replay")));
    // A body that is not the one signed.
    let env = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 2, unix_now() + 60);
    let mut tampered = Request::post("/api/v1/uploads");
    for (k, v) in env.headers() {
        tampered = tampered.header(k, v);
    }
    let (status, _) = call(&p, tampered.body(Body::from("{\"x\":1}")).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Expired, and valid for too long.
    let old = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 3, unix_now() - 1);
    let far = Envelope::sign(&key, p.domain(), "POST", "/api/v1/uploads", b"{}", 4, unix_now() + 100_000);
    for env in [old, far] {
        let mut req = Request::post("/api/v1/uploads");
        for (k, v) in env.headers() {
            req = req.header(k, v);
        }
        let (status, _) = call(&p, req.body(Body::from("{}")).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Malformed JSON, correctly signed.
    let (status, body) = call(&p, signed(&p, &key, "POST", "/api/v1/services/compute/initialize", b"{nope", 5)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
}

#[tokio::test]
async fn every_documented_route_exists() {
    let (_t, p) = provider().await;
    let doc: serde_json::Value = serde_json::from_str(super::meta::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "the document lists the API");
    for (path, methods) in paths {
        let concrete = path
            .replace("{did}", &format!("did:op:{}", "00".repeat(32)))
            .replace("{id}", &format!("0x{}", "00".repeat(32)))
            .replace("{address}", &format!("0x{}", "00".repeat(20)))
            .replace("{index}", "0")
            .replace("{dataset}", "d")
            .replace("{path}", "f.txt");
        for method in methods.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::from("{}"))
                .unwrap();
            let (_, body) = call(&p, req).await;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.contains("no such endpoint"), "{method} {path} is documented but not routed");
        }
    }
}
