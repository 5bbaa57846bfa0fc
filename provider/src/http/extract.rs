//! Extractors that authenticate and parse requests, rejecting with [`ApiError`]s.
//!
//! * [`Signed`]: a body-less signed request (GET, or POST with an empty body);
//! * [`SignedJson`]: a signed request with a JSON body (at most 1 MiB);
//! * [`Envelope`] + [`stream_body`] + [`RequestAuth::authorize`]: signed requests whose body is
//!   streamed to disk (files, modules), verified once the body's hash is known;
//! * [`ApiPath`], [`ApiQuery`]: path and query parameters with 400s instead of axum's defaults.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Keccak256, keccak256};
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Query, Request};
use axum::http::request::Parts;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use alloy_sol_types::Eip712Domain;

use super::Api;
use super::error::{ApiError, ApiResult};
use crate::protocol::signing::{self as auth, unix_now};
use crate::store::nonces::Nonces;

/// Largest JSON body accepted.
const MAX_JSON: usize = 1 << 20;

/// The envelope of a signed request, read from its headers (not verified yet).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub envelope: auth::Envelope,
    pub method: String,
    pub path: String,
}

impl FromRequestParts<Arc<Api>> for Envelope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Api>) -> Result<Self, ApiError> {
        let envelope = auth::Envelope::from_headers(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()))?;
        let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |u| &u.0);
        let path = uri.path_and_query().map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
        Ok(Self { envelope, method: parts.method.as_str().to_string(), path })
    }
}

/// Request authentication: the provider's signing domain, the longest validity a request may
/// claim, and the nonces already accepted.
#[derive(Debug)]
pub struct RequestAuth {
    nonces: Nonces,
    domain: Eip712Domain,
    max_ttl_secs: u64,
}

impl RequestAuth {
    pub fn new(nonces: Nonces, domain: Eip712Domain, max_ttl_secs: u64) -> Self {
        Self { nonces, domain, max_ttl_secs }
    }

    /// The domain requests (and receipts) are signed under.
    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    /// Verifies `envelope` against the body's keccak-256 and records its nonce: the request is
    /// then the signer's, and can never be accepted again.
    pub async fn authorize(&self, e: &Envelope, content_hash: B256) -> ApiResult<Address> {
        let now = unix_now();
        if e.envelope.expiry > now.saturating_add(self.max_ttl_secs) {
            return Err(ApiError::Unauthorized(format!(
                "the request expires too far in the future (at most {} s from now)",
                self.max_ttl_secs
            )));
        }
        e.envelope.verify(&self.domain, &e.method, &e.path, content_hash, now)?;
        if !self.nonces.accept(e.envelope.address, e.envelope.nonce).await? {
            return Err(ApiError::Replay { address: e.envelope.address.to_string(), nonce: e.envelope.nonce });
        }
        Ok(e.envelope.address)
    }
}

/// A verified, body-less signed request.
#[derive(Debug, Clone, Copy)]
pub struct Signed(pub Address);

impl FromRequestParts<Arc<Api>> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let e = Envelope::from_request_parts(parts, api).await?;
        Ok(Signed(api.auth.authorize(&e, keccak256([])).await?))
    }
}

/// A verified signed request with a JSON body.
#[derive(Debug, Clone)]
pub struct SignedJson<T>(pub Address, pub T);

impl<T: DeserializeOwned + Send> FromRequest<Arc<Api>> for SignedJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Arc<Api>) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let e = Envelope::from_request_parts(&mut parts, api).await?;
        let bytes = axum::body::to_bytes(body, MAX_JSON)
            .await
            .map_err(|_| ApiError::TooLarge(format!("JSON bodies are limited to {MAX_JSON} bytes")))?;
        let who = api.auth.authorize(&e, keccak256(&bytes)).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))?;
        Ok(SignedJson(who, value))
    }
}

/// A body streamed to a temporary file.
#[derive(Debug)]
pub struct Streamed {
    pub file: tempfile::TempPath,
    pub size: u64,
    pub keccak: B256,
    pub blake3: B256,
}

/// Streams `body` into a temporary file in `dir`, hashing it; `TooLarge` past `limit` bytes.
pub async fn stream_body(body: Body, limit: u64, dir: &std::path::Path) -> ApiResult<Streamed> {
    let tmp = tempfile::NamedTempFile::new_in(dir)?.into_temp_path();
    let mut file = tokio::fs::File::create(&tmp).await?;
    let (mut keccak, mut blake) = (Keccak256::new(), blake3::Hasher::new());
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(format!("the body is over its {limit}-byte limit")));
        }
        keccak.update(&chunk);
        blake.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok(Streamed { file: tmp, size, keccak: keccak.finalize(), blake3: B256::from(*blake.finalize().as_bytes()) })
}

/// Path parameters, rejected with a 400 in our format.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))
    }
}

/// Query parameters, rejected with a 400 in our format.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
    }
}
