//! How an [`ApiError`] becomes a response: its status and `{"error": {"code", "message"}}`.
//! Server errors are logged with their whole chain and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::protocol::api::{ErrorBody, ErrorDetail};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if let ApiError::Unavailable { .. } = &self {
            tracing::warn!(error = %crate::error_chain(&self), "request refused for now");
            self.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %crate::error_chain(&self), "request failed");
            "internal error (the provider logged the details)".to_string()
        } else {
            self.to_string()
        };
        let retry_after = self.retry_after();
        let body = ErrorBody { error: ErrorDetail { code: self.code().into(), message } };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
