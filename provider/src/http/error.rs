//! The one error type of the HTTP API, with a documented status per variant, and how each
//! domain's errors map to it: the only place where a domain error becomes a status. 5xx causes
//! are logged with their whole chain, never returned.
//!
//! | variant | status | when |
//! |---|---|---|
//! | `BadRequest` | 400 | malformed input |
//! | `Unauthorized` | 401 | missing, expired or wrong signature |
//! | `PaymentRequired` | 402 | the balance does not cover the payment |
//! | `Forbidden` | 403 | signed, but not allowed (not the consumer, not granted, not an operator) |
//! | `NotFound` | 404 | unknown asset, agreement, job or result |
//! | `MethodNotAllowed` | 405 | a known path, another method |
//! | `Timeout` | 408 | the request body stalled longer than the body idle timeout |
//! | `Conflict` | 409 | state conflict: exists already, too early, too late |
//! | `Replay` | 409 | a request nonce not greater than the last one |
//! | `TooLarge` | 413 | a body over its limit (refused from its `Content-Length` when it has one) |
//! | `UriTooLong` | 414 | a path and query over the URI limit |
//! | `Unprocessable` | 422 | an invalid module, or one the asset's policy refuses |
//! | `TooManyRequests` | 429 | over the per-peer rate or the per-address upload quota; with `Retry-After` |
//! | `HeadersTooLarge` | 431 | more header bytes or headers than allowed |
//! | `Internal` | 500 | anything else (logged; the response says only "internal error") |
//! | `Unavailable` | 503 | the provider cannot serve now but will (storage busy, full or unreachable; too many requests or uploads at once); with `Retry-After` |

use crate::agreement::ServiceError;
use crate::algorithms::AdmissionError;
use crate::assets::AssetError;
use crate::jobs::JobError;
use crate::keeper::KeeperError;
use crate::protocol::signing::AuthError;
use crate::store::DbError;

/// A failed request: its status, code and message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a missing, expired or wrong signature.
    #[error("{0}")]
    Unauthorized(String),
    /// 402: the balance does not cover the payment.
    #[error("{0}")]
    PaymentRequired(String),
    /// 403: signed, but not allowed (not the consumer, not granted, not an operator).
    #[error("{0}")]
    Forbidden(String),
    /// 404: an unknown asset, agreement, job or result.
    #[error("{0}")]
    NotFound(String),
    /// 409: a state conflict (exists already, too early, too late).
    #[error("{0}")]
    Conflict(String),
    /// 409: a request nonce not greater than the last one accepted from its signer.
    #[error("the request nonce {nonce} is not greater than the last one accepted from {address}: a replay")]
    Replay {
        /// The signer.
        address: String,
        /// The nonce refused.
        nonce: u64,
    },
    /// 413: a body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: an invalid module, or one the asset's policy refuses.
    #[error("{0}")]
    Unprocessable(String),
    /// 405: a known path, another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408: the request body stalled longer than the body idle timeout.
    #[error("{0}")]
    Timeout(String),
    /// 414: a path and query over the URI limit.
    #[error("{0}")]
    UriTooLong(String),
    /// 431: more header bytes or headers than allowed.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 429: over a rate or quota: try again after `retry_after_secs`.
    #[error("{message}")]
    TooManyRequests {
        /// Seconds until a retry may succeed (the `Retry-After` header).
        retry_after_secs: u64,
        /// What was exceeded, for the client.
        message: String,
    },
    /// 500: a failure of the provider's own; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 503: a condition that should clear: try again after `retry_after_secs`. The cause is
    /// logged.
    #[error("the provider cannot serve this now; try again in {retry_after_secs} s")]
    Unavailable {
        /// Seconds until a retry may succeed (the `Retry-After` header).
        retry_after_secs: u64,
        /// Why, for the log.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// The HTTP status of each variant.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::PaymentRequired(_) => 402,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Timeout(_) => 408,
            ApiError::Conflict(_) | ApiError::Replay { .. } => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::UriTooLong(_) => 414,
            ApiError::Unprocessable(_) => 422,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::HeadersTooLarge(_) => 431,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable { .. } => 503,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "bad_signature",
            ApiError::PaymentRequired(_) => "insufficient_balance",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Timeout(_) => "timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::Replay { .. } => "replay",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    /// A failure of the provider's own, with its cause.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    /// Seconds a client should wait before trying again, for the statuses that say so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable { retry_after_secs, .. } | ApiError::TooManyRequests { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }

    /// The provider is overloaded (too many requests or uploads at once): 503, retry soon.
    pub fn overloaded(what: &str) -> Self {
        ApiError::Unavailable { retry_after_secs: 1, cause: format!("overloaded: {what}").into() }
    }

    /// A storage failure: 503 when it should clear by itself (the database busy or
    /// unreachable, the disk full), 500 otherwise.
    pub fn storage(e: DbError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable { retry_after_secs: 1, cause: Box::new(e) }
        } else {
            ApiError::internal(e)
        }
    }

    /// A failure of the provider's own files: 503 when the disk is full or read-only (or a
    /// quota is reached), a condition the operator clears; 500 otherwise.
    pub fn io(e: std::io::Error) -> Self {
        use std::io::ErrorKind::{QuotaExceeded, ReadOnlyFilesystem, StorageFull};
        match e.kind() {
            StorageFull | ReadOnlyFilesystem | QuotaExceeded => {
                ApiError::Unavailable { retry_after_secs: DISK_RETRY_AFTER_SECS, cause: Box::new(e) }
            }
            _ => ApiError::internal(e),
        }
    }
}

/// `Retry-After` when the provider's disk is full or read-only: an operator has to act.
const DISK_RETRY_AFTER_SECS: u64 = 30;

/// Results of request handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::OutOfRange { .. } => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unauthorized(e.to_string()),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::storage(e)
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::io(e)
    }
}

impl From<KeeperError> for ApiError {
    fn from(e: KeeperError) -> Self {
        let m = e.to_string();
        match e {
            KeeperError::NotFound(_) => ApiError::NotFound(m),
            KeeperError::AlreadyExists(_)
            | KeeperError::AlreadyFulfilled { .. }
            | KeeperError::OutputAlreadyPublished(_)
            | KeeperError::DependencyUnfulfilled { .. }
            | KeeperError::TimedOut { .. }
            | KeeperError::Closed { .. }
            | KeeperError::NotRefundable(_) => ApiError::Conflict(m),
            KeeperError::NotParty { .. } => ApiError::Forbidden(m),
            KeeperError::InsufficientBalance { .. } => ApiError::PaymentRequired(m),
            KeeperError::Invalid(_) | KeeperError::Unsupported(_) => ApiError::BadRequest(m),
            KeeperError::ReceiptRefused(_) => ApiError::Conflict(m),
            KeeperError::Unreachable(_) => ApiError::Unavailable { retry_after_secs: 2, cause: Box::new(e) },
            KeeperError::Storage(db) => ApiError::storage(db),
            KeeperError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            AdmissionError::Refused(_) | AdmissionError::NoEnvironment { .. } => ApiError::Unprocessable(e.to_string()),
            AdmissionError::BadFiles(_) => ApiError::BadRequest(e.to_string()),
            AdmissionError::Runtime(_) | AdmissionError::Interrupted(_) => ApiError::internal(e),
        }
    }
}

impl From<AssetError> for ApiError {
    fn from(e: AssetError) -> Self {
        let m = e.to_string();
        match e {
            AssetError::Name(_) | AssetError::Invalid(_) => ApiError::BadRequest(m),
            AssetError::NoSession(_) | AssetError::NotFound(_) => ApiError::NotFound(m),
            AssetError::NotSessionOwner | AssetError::NotOperator(_) => ApiError::Forbidden(m),
            AssetError::Exists(_) => ApiError::Conflict(m),
            AssetError::FileTooLarge { .. } => ApiError::TooLarge(m),
            AssetError::Module(e) => e.into(),
            AssetError::Keeper(e) => e.into(),
            AssetError::Db(db) => ApiError::storage(db),
            AssetError::Io(io) => ApiError::io(io),
            AssetError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let m = e.to_string();
        match e {
            JobError::NotFound(_) | JobError::NoResult { .. } => ApiError::NotFound(m),
            JobError::NotConsumer { .. } => ApiError::Forbidden(m),
            JobError::Ended { .. } | JobError::AgreementHasJob { .. } => ApiError::Conflict(m),
            JobError::Keeper(e) => e.into(),
            JobError::Asset(e) => e.into(),
            JobError::Db(db) => ApiError::storage(db),
            JobError::Io(io) => ApiError::io(io),
            _ => ApiError::internal(e),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let m = e.to_string();
        match e {
            ServiceError::Forbidden(_) => ApiError::Forbidden(m),
            ServiceError::BadSignature(_) | ServiceError::Signature(_) => ApiError::Unauthorized(m),
            ServiceError::NoService { .. } => ApiError::NotFound(m),
            ServiceError::Conflict(_) | ServiceError::Template(_) => ApiError::Conflict(m),
            ServiceError::Refused(_) => ApiError::Unprocessable(m),
            ServiceError::BadRequest(_) => ApiError::BadRequest(m),
            ServiceError::Keeper(e) => e.into(),
            ServiceError::Asset(e) => e.into(),
            ServiceError::Admission(e) => e.into(),
            ServiceError::Job(e) => e.into(),
            ServiceError::Db(db) => ApiError::storage(db),
            ServiceError::Io(io) => ApiError::io(io),
        }
    }
}
