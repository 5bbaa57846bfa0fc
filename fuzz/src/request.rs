//! The `signed_request` target: a request as the daemon receives it (method, URI, headers,
//! body) through the same reading and checks as `http::extract` — the envelope from the
//! headers ([`Envelope::from_parts`]), the declared length, the signature, expiry and body hash
//! ([`extract::verify`]), the JSON bodies the signed endpoints take — and the error answers they
//! give.
//!
//! Half the inputs are signed by a fixed key and then tampered with, so the signature check
//! is reached with valid signatures too. The property: a request verifies when it is exactly
//! what was signed, and never when anything signed differs.

use alloy_primitives::{Address, B256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use arbitrary::{Arbitrary, Unstructured};
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use axum::response::IntoResponse;
use tidepool_provider::http::extract::{self, Envelope};
use tidepool_provider::http::upload::check_declared_length;
use tidepool_provider::protocol::api::{
    CreditRequest, Empty, ExecRequest, InitializeRequest, PublishRequest, ReferenceRequest,
};
use tidepool_provider::protocol::eip712::domain;
use tidepool_provider::protocol::signing::{self as auth, MAX_COUNTER};

/// The daemon's clock during a run (Unix seconds).
const NOW: u64 = 1_700_000_000;
/// How far ahead a request may expire (the daemon's `max_request_ttl_secs`).
const MAX_TTL: u64 = 600;
/// The JSON body limit (the daemon's default `max_json_bytes`).
const MAX_JSON: u64 = 1 << 20;

/// A header the input sets: one of the envelope's, `Content-Length`, or any other.
#[derive(Arbitrary, Debug)]
enum Name {
    Address,
    Nonce,
    Expiry,
    Signature,
    ContentHash,
    ContentLength,
    Other(String),
}

impl Name {
    fn header(&self) -> Option<HeaderName> {
        Some(match self {
            Name::Address => HeaderName::from_static(auth::HEADER_ADDRESS),
            Name::Nonce => HeaderName::from_static(auth::HEADER_NONCE),
            Name::Expiry => HeaderName::from_static(auth::HEADER_EXPIRY),
            Name::Signature => HeaderName::from_static(auth::HEADER_SIGNATURE),
            Name::ContentHash => HeaderName::from_static(auth::HEADER_CONTENT_HASH),
            Name::ContentLength => header::CONTENT_LENGTH,
            Name::Other(name) => HeaderName::from_bytes(name.as_bytes()).ok()?,
        })
    }
}

/// What is changed after signing.
#[derive(Arbitrary, Debug)]
enum Tamper {
    Nothing,
    Method(MethodChoice),
    Uri(String),
    Body(Vec<u8>),
    /// A header set (or replaced) after signing.
    Header(Name, Vec<u8>),
    /// A header removed after signing.
    Remove(Name),
    /// The request is checked at another time (seconds after [`NOW`]).
    Clock(i32),
}

/// A request's method: the API's, or any other.
#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Get,
    Post,
    Put,
    Other(String),
}

impl MethodChoice {
    fn method(&self) -> Method {
        match self {
            MethodChoice::Get => Method::GET,
            MethodChoice::Post => Method::POST,
            MethodChoice::Put => Method::PUT,
            MethodChoice::Other(m) => Method::from_bytes(m.as_bytes()).unwrap_or(Method::DELETE),
        }
    }
}

/// One request.
#[derive(Arbitrary, Debug)]
struct Input {
    method: MethodChoice,
    uri: String,
    headers: Vec<(Name, Vec<u8>)>,
    body: Vec<u8>,
    /// Signed by the fixed key with this nonce, expiring this many seconds after [`NOW`].
    signed: Option<(u64, u16)>,
    tamper: Tamper,
}

/// The key and domain requests are signed with.
struct Signing {
    key: PrivateKeySigner,
    domain: Eip712Domain,
}

fn signing() -> &'static Signing {
    static S: std::sync::OnceLock<Signing> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).expect("a valid key");
        Signing { key, domain: domain(1337, Address::repeat_byte(0x99)) }
    })
}

/// What a signature covers, as the daemon reads it from a request.
#[derive(Debug, PartialEq, Eq)]
struct Signed {
    method: String,
    path: String,
    content_hash: B256,
}

/// Runs one input (any bytes).
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let s = signing();
    let method = input.method.method();
    let uri: Uri = input.uri.parse().unwrap_or_else(|_| Uri::from_static("/api/v1/services/compute/exec"));
    let mut request = Request::builder().method(method).uri(uri).body(input.body).expect("a valid request");
    set_headers(&mut request, &input.headers);

    let untouched = matches!(input.tamper, Tamper::Nothing);
    let mut now = NOW;
    let mut signed = None;
    if let Some((nonce, ttl)) = input.signed {
        let (method, path) = method_path(&request);
        let (nonce, expiry) = (nonce & MAX_COUNTER, NOW + u64::from(ttl));
        let envelope = auth::Envelope::sign(&s.key, &s.domain, &method, &path, request.body(), nonce, expiry);
        for (name, value) in envelope.headers() {
            let value = HeaderValue::from_str(&value).expect("envelope headers are ASCII");
            request.headers_mut().insert(name, value);
        }
        // The method is signed upper-cased (`GET` and `get` sign alike).
        let method = method.to_ascii_uppercase();
        signed = Some((Signed { method, path, content_hash: keccak256(request.body()) }, envelope));
        match input.tamper {
            Tamper::Nothing => {}
            Tamper::Method(m) => *request.method_mut() = m.method(),
            Tamper::Uri(u) => {
                if let Ok(u) = u.parse() {
                    *request.uri_mut() = u;
                }
            }
            Tamper::Body(b) => *request.body_mut() = b,
            Tamper::Header(name, value) => set_headers(&mut request, &[(name, value)]),
            Tamper::Remove(name) => {
                if let Some(name) = name.header() {
                    request.headers_mut().remove(name);
                }
            }
            Tamper::Clock(delta) => now = NOW.saturating_add_signed(i64::from(delta)),
        }
    }

    let (parts, body) = request.into_parts();
    let content_hash = keccak256(&body);
    let verified = Envelope::from_parts(&parts).and_then(|e| {
        check_declared_length(&parts.headers, MAX_JSON)?;
        extract::verify(&e, &s.domain, MAX_TTL, content_hash, now)?;
        Ok(e)
    });
    let verified_ok = verified.is_ok();
    crate::reached(usize::from(verified_ok) + 2 * usize::from(signed.is_some()));
    match verified {
        Err(error) => {
            // Every refusal is an answer in the documented format.
            let response = error.into_response();
            assert!(response.status().is_client_error(), "a bad request answered {}", response.status());
        }
        Ok(e) => {
            let Some((want, envelope)) = &signed else {
                panic!("an unsigned request verified: {e:?}");
            };
            let got = Signed { method: e.method.to_ascii_uppercase(), path: e.path.clone(), content_hash };
            assert_eq!(&got, want, "a request verified that is not the one signed");
            assert_eq!(e.envelope.address, s.key.address(), "verified as another signer");
            assert_eq!((e.envelope.nonce, e.envelope.expiry), (envelope.nonce, envelope.expiry));
            decode_bodies(&body);
        }
    }
    // A request signed within its validity and left alone verifies.
    let fresh = input.signed.is_some_and(|(_, ttl)| ttl > 0 && u64::from(ttl) <= MAX_TTL);
    if fresh && untouched && check_declared_length(&parts.headers, MAX_JSON).is_ok() {
        assert!(verified_ok, "a signed, untouched request was refused");
    }
}

/// The method and path with query as the client signs them (what [`Envelope::from_parts`] reads).
fn method_path<B>(request: &Request<B>) -> (String, String) {
    let uri = request.uri();
    let path = uri.path_and_query().map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    (request.method().as_str().to_string(), path)
}

fn set_headers<B>(request: &mut Request<B>, headers: &[(Name, Vec<u8>)]) {
    for (name, value) in headers {
        if let (Some(name), Ok(value)) = (name.header(), HeaderValue::from_bytes(value)) {
            request.headers_mut().insert(name, value);
        }
    }
}

/// The bodies of the signed JSON endpoints, read as `SignedJson` reads them.
fn decode_bodies(body: &[u8]) {
    let _ = serde_json::from_slice::<Empty>(body);
    let _ = serde_json::from_slice::<InitializeRequest>(body);
    let _ = serde_json::from_slice::<ExecRequest>(body);
    let _ = serde_json::from_slice::<PublishRequest>(body);
    let _ = serde_json::from_slice::<ReferenceRequest>(body);
    let _ = serde_json::from_slice::<CreditRequest>(body);
}
