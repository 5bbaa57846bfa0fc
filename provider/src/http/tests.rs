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
    let unknown = Request::get("/api/v1/keeper/events?waitFor=ComputeGranted,Nope").body(Body::empty()).unwrap();
    let (status, body) = call(&p, unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("`Nope` is not an event"), "{body}");
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
        for method in methods.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(concrete(path))
                .body(Body::from("{}"))
                .unwrap();
            let (_, body) = call(&p, req).await;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.contains("no such endpoint"), "{method} {path} is documented but not routed");
        }
    }
}

/// The OpenAPI document.
fn document() -> serde_json::Value {
    serde_json::from_str(super::meta::OPENAPI).unwrap()
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

/// The statuses an operation documents.
fn documented(op: &serde_json::Value) -> Vec<u16> {
    op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect()
}

/// Resolves a `$ref` into the document.
fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling {r}")),
        None => schema,
    }
}

/// Where `value` departs from `schema` (types, nullable, required, properties, items, enums): the
/// checks schemathesis makes that matter for our bodies, so a regression shows in `cargo test`.
fn violations(doc: &serde_json::Value, schema: &serde_json::Value, value: &serde_json::Value, at: &str) -> Vec<String> {
    use serde_json::Value;
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    if value.is_null() {
        if schema["nullable"] != true && schema.get("type").is_some() {
            out.push(format!("{at}: null where the document says {}", schema["type"]));
        }
        return out;
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !fits {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return out;
    }
    if let Some(allowed) = schema["enum"].as_array().filter(|a| !a.contains(value)) {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(fields) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(name.as_str().unwrap()) {
                out.push(format!("{at}: required field {name} is missing"));
            }
        }
        for (name, field) in fields {
            if let Some(s) = schema["properties"].get(name) {
                out.extend(violations(doc, s, field, &format!("{at}.{name}")));
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            out.extend(violations(doc, s, item, &format!("{at}[{i}]")));
        }
    }
    out
}

#[test]
fn the_document_lists_every_error_code() {
    use super::ApiError;
    let doc = document();
    let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"].clone();
    let s = String::new;
    let every = [
        ApiError::BadRequest(s()),
        ApiError::Unauthorized(s()),
        ApiError::PaymentRequired(s()),
        ApiError::Forbidden(s()),
        ApiError::NotFound(s()),
        ApiError::Conflict(s()),
        ApiError::Replay { address: s(), nonce: 1 },
        ApiError::TooLarge(s()),
        ApiError::Unprocessable(s()),
        ApiError::MethodNotAllowed(s()),
        ApiError::Timeout(s()),
        ApiError::UriTooLong(s()),
        ApiError::HeadersTooLarge(s()),
        ApiError::TooManyRequests { retry_after_secs: 1, message: s() },
        ApiError::internal(std::io::Error::other("x")),
        ApiError::overloaded("requests"),
    ];
    for e in every {
        assert!(codes.as_array().unwrap().contains(&e.code().into()), "code {} is not in the document", e.code());
    }
}

#[test]
fn every_operation_documents_the_statuses_any_request_may_get() {
    let doc = document();
    for (path, method, op) in operations(&doc) {
        let statuses = documented(&op);
        let mut expected = vec![414, 431];
        // The guard's rate limit and load shedding spare only the health check.
        if path != "/api/v1/health" {
            expected.extend([429, 503]);
        }
        // Malformed or out-of-range signature headers, a bad signature, a replayed nonce.
        if op.get("security").is_some() {
            expected.extend([400, 401, 409]);
        }
        // A malformed body, a stalled one, one over its limit.
        if op.get("requestBody").is_some() {
            expected.extend([400, 408, 413]);
        }
        for status in expected {
            assert!(statuses.contains(&status), "{method} {path} does not document {status}");
        }
    }
}

/// A concrete path for a documented one.
fn concrete(path: &str) -> String {
    path.replace("{did}", &format!("did:op:{}", "00".repeat(32)))
        .replace("{id}", &format!("0x{}", "00".repeat(32)))
        .replace("{address}", &format!("0x{}", "00".repeat(20)))
        .replace("{index}", "0")
        .replace("{dataset}", "d")
        .replace("{path}", "f.txt")
}

#[tokio::test]
async fn malformed_json_bodies_get_a_documented_400() {
    let (_t, p) = provider().await;
    let key = PrivateKeySigner::random();
    let doc = document();
    let mut nonce = 0;
    for (path, method, op) in operations(&doc) {
        if op["requestBody"]["content"].get("application/json").is_none() {
            continue;
        }
        // No body, and JSON that is not an object (`[null,null]` was once a valid upload session).
        for body in [&b""[..], b"[null,null]"] {
            nonce += 1;
            let uri = concrete(&path);
            let (status, reply) = call(&p, signed(&p, &key, &method.to_uppercase(), &uri, body, nonce)).await;
            let shown = String::from_utf8_lossy(body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} with body {shown:?}: {reply}");
            assert!(documented(&op).contains(&400), "{method} {path} answers 400 but does not document it");
        }
    }
}

#[test]
fn agreements_conform_to_the_document_before_and_after_release() {
    use crate::protocol::agreement::{Agreement, AgreementState, Condition, ConditionStatus};
    use crate::protocol::template::ConditionName;
    use alloy_primitives::{Address, B256, U256};
    let doc = document();
    let schema = &doc["components"]["schemas"]["Agreement"];
    let condition = |fulfilled_at| Condition {
        name: ConditionName::LockPayment,
        key: B256::repeat_byte(1),
        values_hash: B256::repeat_byte(2),
        timeout: 60,
        deadline: None,
        dependencies: vec![],
        status: ConditionStatus::Unfulfilled,
        fulfilled_at,
    };
    let active = Agreement {
        id: B256::repeat_byte(3),
        did: format!("did:op:{}", "ab".repeat(32)).parse().unwrap(),
        template_id: B256::repeat_byte(4),
        consumer: Address::repeat_byte(5),
        provider: Address::repeat_byte(6),
        price_per_fuel: U256::from(3),
        max_fuel: 10,
        escrow: U256::ZERO,
        state: AgreementState::Active,
        conditions: vec![condition(None)],
        algorithm_hash: None,
        receipt_hash: None,
        output_did: None,
        provider_paid: None,
        consumer_refunded: None,
        created_at: 1,
    };
    let released = Agreement {
        state: AgreementState::Released,
        conditions: vec![condition(Some(2))],
        algorithm_hash: Some(B256::repeat_byte(7)),
        receipt_hash: Some(B256::repeat_byte(8)),
        output_did: Some(format!("did:op:{}", "cd".repeat(32)).parse().unwrap()),
        provider_paid: Some(U256::from(30)),
        consumer_refunded: Some(U256::ZERO),
        ..active.clone()
    };
    for agreement in [active, released] {
        let value = serde_json::to_value(&agreement).unwrap();
        let found = violations(&doc, schema, &value, "agreement");
        assert!(found.is_empty(), "{found:#?}");
        let fields = value.as_object().unwrap().keys();
        let undocumented: Vec<_> = fields.filter(|k| schema["properties"].get(k.as_str()).is_none()).collect();
        assert!(undocumented.is_empty(), "fields the document does not describe: {undocumented:?}");
    }
}
