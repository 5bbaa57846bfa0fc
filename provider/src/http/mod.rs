//! The HTTP API under `/api/v1` (documented in `openapi.json`, served at
//! `/api/v1/openapi.json`): one module per resource, each with its `router()`.
//!
//! Every consumer and publisher request is signed (see [`crate::protocol::signing`]);
//! [`extract`] verifies signatures and nonces and turns every bad input into an [`ApiError`]
//! with its JSON body, so a client never sees a framework's default error. Handlers
//! authenticate, parse, call one component, and map its errors ([`error`]); they hold no logic
//! of their own.

mod assets;
mod compute;
pub mod error;
pub mod extract;
pub mod guard;
#[cfg(test)]
mod hardening_tests;
mod keeper;
mod meta;
mod quota;
mod response;
pub mod server;
#[cfg(test)]
mod tests;
pub mod upload;

use std::sync::Arc;

use alloy_primitives::U256;
use axum::Router;

pub use error::{ApiError, ApiResult};
pub use extract::RequestAuth;
pub use guard::Guard;
pub use upload::{UploadGate, UploadLimits};

use crate::agreement::Agreements;
use crate::assets::Assets;
use crate::config::Operators;
use crate::jobs::Jobs;
use crate::keeper::Keeper;
use crate::protocol::api::ProviderView;

/// Largest bodies accepted for files and modules.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// The largest dataset file, in bytes.
    pub max_file_bytes: u64,
    /// The largest algorithm upload (a module or a files archive), in bytes.
    pub max_module_bytes: u64,
}

/// What the handlers serve: the components they call, and request authentication.
#[derive(Debug)]
pub struct Api {
    /// The provider's side of the agreement flow.
    pub agreements: Arc<Agreements>,
    /// Uploads, publishing and the catalogue.
    pub assets: Arc<Assets>,
    /// Jobs, their results and their stops.
    pub jobs: Arc<Jobs>,
    /// The keeper, for its read-only views, balances and the faucet.
    pub keeper: Arc<dyn Keeper>,
    /// Signature and nonce checks for signed requests.
    pub auth: RequestAuth,
    /// `GET /api/v1/provider`.
    pub view: ProviderView,
    /// The largest bodies accepted.
    pub limits: BodyLimits,
    /// What the development faucet gives, when it is on.
    pub faucet: Option<U256>,
    /// The addresses allowed the operator-only requests (credit, local references).
    pub operators: Operators,
    /// The request limits, and the HTTP metrics.
    pub guard: Arc<Guard>,
    /// Upload slots and per-address upload quotas.
    pub uploads: Arc<UploadGate>,
}

/// The state every handler gets.
pub type State = axum::extract::State<Arc<Api>>;

/// The whole API, behind the request [`guard`].
pub fn router(api: Arc<Api>) -> Router {
    let guard = api.guard.clone();
    Router::new()
        .merge(meta::router())
        .merge(assets::router())
        .merge(compute::router())
        .merge(keeper::router())
        .fallback(|| async {
            ApiError::NotFound("no such endpoint (the API is under /api/v1; see /api/v1/openapi.json)".into())
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(format!("{method} is not allowed here (see /api/v1/openapi.json)"))
        })
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// Serves the API on `listener` until `shutdown` resolves, under the server's limits (see
/// [`server`]).
pub async fn serve(
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = api.guard.clone();
    server::serve(router(api), guard, listener, shutdown).await
}
