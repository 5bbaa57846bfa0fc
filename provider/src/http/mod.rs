//! The HTTP API under `/api/v1` (documented in `openapi.json`, served at
//! `/api/v1/openapi.json`): one module per resource, each with its `router()`.
//!
//! Every consumer and publisher request is signed (see [`crate::auth`]); [`extract`] verifies
//! signatures and nonces and turns every bad input into an [`ApiError`](crate::error::ApiError)
//! with its JSON body, so a client never sees a framework's default error.

mod assets;
mod compute;
pub mod extract;
mod keeper;
mod meta;
mod response;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;

use crate::error::ApiError;
use crate::provider::Provider;

/// The whole API.
pub fn router(p: Arc<Provider>) -> Router {
    Router::new()
        .merge(meta::router())
        .merge(assets::router())
        .merge(compute::router())
        .merge(keeper::router())
        .fallback(|| async {
            ApiError::NotFound("no such endpoint (the API is under /api/v1; see /api/v1/openapi.json)".into())
        })
        .with_state(p)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    p: Arc<Provider>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(p)).with_graceful_shutdown(shutdown).await
}
