//! About the provider: health, identity, and the OpenAPI document.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};

use super::Api;
use crate::protocol::api::ProviderView;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/api/v1/provider", get(provider))
        .route("/api/v1/openapi.json", get(|| async { ([("content-type", "application/json")], OPENAPI) }))
}

async fn provider(axum::extract::State(api): axum::extract::State<Arc<Api>>) -> Json<ProviderView> {
    Json(api.view.clone())
}
