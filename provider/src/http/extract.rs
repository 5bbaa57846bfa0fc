//! Extractors that authenticate and parse requests, rejecting with [`ApiError`]s.
//!
//! * [`Signed`]: a body-less signed request (GET, or POST with an empty body);
//! * [`SignedJson`]: a signed request with a JSON body (at most 1 MiB);
//! * [`Envelope`] + [`super::upload::receive`]: signed requests whose body is streamed to disk
//!   (files, modules), verified before the body is read;
//! * [`ApiPath`], [`ApiQuery`]: path and query parameters with 400s instead of axum's defaults.

use std::sync::Arc;

use alloy_primitives::{Address, B256, keccak256};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use alloy_sol_types::Eip712Domain;

use super::Api;
use super::error::{ApiError, ApiResult};
use super::guard::body_error;
use super::upload::check_declared_length;
use crate::protocol::signing::{self as auth, unix_now};
use crate::store::nonces::Nonces;

/// The envelope of a signed request, read from its headers (not verified yet).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The signature's headers.
    pub envelope: auth::Envelope,
    /// The request's method.
    pub method: String,
    /// Its path and query, as the client sent them (what was signed).
    pub path: String,
}

impl FromRequestParts<Arc<Api>> for Envelope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Api>) -> Result<Self, ApiError> {
        Self::from_parts(parts)
    }
}

impl Envelope {
    /// Reads the envelope from a request's headers, with the method and the path (and query)
    /// it was sent to, as the client signed them.
    pub fn from_parts(parts: &Parts) -> Result<Self, ApiError> {
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
    /// Checks requests signed under `domain`, valid for at most `max_ttl_secs` from now, against `nonces`.
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
        verify(e, &self.domain, self.max_ttl_secs, content_hash, unix_now())?;
        if !self.nonces.accept(e.envelope.address, e.envelope.nonce).await? {
            return Err(ApiError::Replay { address: e.envelope.address.to_string(), nonce: e.envelope.nonce });
        }
        Ok(e.envelope.address)
    }
}

/// Checks `e` at time `now` (Unix seconds) as [`RequestAuth::authorize`] does, all but the
/// nonce: an expiry at most `max_ttl_secs` ahead, and the signature over the request and
/// `content_hash` by the claimed address.
pub fn verify(e: &Envelope, domain: &Eip712Domain, max_ttl_secs: u64, content_hash: B256, now: u64) -> ApiResult<()> {
    if e.envelope.expiry > now.saturating_add(max_ttl_secs) {
        return Err(ApiError::Unauthorized(format!(
            "the request expires too far in the future (at most {max_ttl_secs} s from now)"
        )));
    }
    Ok(e.envelope.verify(domain, &e.method, &e.path, content_hash, now)?)
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
        let limit = api.guard.config().max_json_bytes;
        check_declared_length(&parts.headers, limit)?;
        let bytes =
            axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).await.map_err(body_error)?;
        let who = api.auth.authorize(&e, keccak256(&bytes)).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))?;
        Ok(SignedJson(who, value))
    }
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
