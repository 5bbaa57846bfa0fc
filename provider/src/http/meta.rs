//! About the provider: health, identity, and the OpenAPI document.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};

use crate::api::ProviderView;
use crate::provider::Provider;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<Arc<Provider>> {
    Router::new()
        .route("/api/v1/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/api/v1/provider", get(provider))
        .route("/api/v1/openapi.json", get(|| async { ([("content-type", "application/json")], OPENAPI) }))
}

async fn provider(axum::extract::State(p): axum::extract::State<Arc<Provider>>) -> Json<ProviderView> {
    Json(ProviderView {
        address: p.address(),
        chain_id: p.keeper.chain_id(),
        keeper: p.keeper.kind().into(),
        template_id: crate::agreement::template::template_id(),
        tidepool_version: tidepool_runtime::VERSION.into(),
        wasmtime_version: tidepool_runtime::engine::WASMTIME_VERSION.into(),
        dev_faucet: p.config.dev_faucet,
        max_module_bytes: p.config.max_module_bytes,
    })
}
