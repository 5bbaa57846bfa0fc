//! The one error type of the provider's API, with a documented HTTP status per variant. Every
//! failure a request can meet becomes one of these; 5xx details are logged, never returned.
//!
//! | variant | status | when |
//! |---|---|---|
//! | `BadRequest` | 400 | malformed input |
//! | `Unauthorized` | 401 | missing, expired or wrong signature |
//! | `PaymentRequired` | 402 | the balance does not cover the payment |
//! | `Forbidden` | 403 | signed, but not allowed (not the consumer, not granted, not an operator) |
//! | `NotFound` | 404 | unknown asset, agreement, job or result |
//! | `Conflict` | 409 | state conflict: exists already, too early, too late |
//! | `Replay` | 409 | a request nonce not greater than the last one |
//! | `TooLarge` | 413 | a body over its limit |
//! | `Unprocessable` | 422 | an invalid module, or one the asset's policy refuses |
//! | `Internal` | 500 | anything else (logged; the response says only "internal error") |

use crate::keeper::KeeperError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request nonce {nonce} is not greater than the last one accepted from {address}: a replay")]
    Replay { address: String, nonce: u64 },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error: {0}")]
    Internal(String),
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
            ApiError::Conflict(_) | ApiError::Replay { .. } => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Unprocessable(_) => 422,
            ApiError::Internal(_) => 500,
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
            ApiError::Conflict(_) => "conflict",
            ApiError::Replay { .. } => "replay",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<KeeperError> for ApiError {
    fn from(e: KeeperError) -> Self {
        let m = e.to_string();
        match e {
            KeeperError::NotFound(_) => ApiError::NotFound(m),
            KeeperError::AlreadyExists(_)
            | KeeperError::AlreadyFulfilled { .. }
            | KeeperError::DependencyUnfulfilled { .. }
            | KeeperError::TimedOut { .. }
            | KeeperError::Closed { .. }
            | KeeperError::NotRefundable(_) => ApiError::Conflict(m),
            KeeperError::NotParty { .. } => ApiError::Forbidden(m),
            KeeperError::InsufficientBalance { .. } => ApiError::PaymentRequired(m),
            KeeperError::Invalid(_) | KeeperError::Unsupported(_) => ApiError::BadRequest(m),
            KeeperError::Storage(_) => ApiError::Internal(m),
        }
    }
}

impl From<crate::store::DbError> for ApiError {
    fn from(e: crate::store::DbError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
