//! About the provider: health, identity, and the OpenAPI document.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};

use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, ApiResult};
use crate::protocol::api::ProviderView;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/api/v1/provider", get(provider))
        .route("/api/v1/openapi.json", get(|| async { ([("content-type", "application/json")], OPENAPI) }))
        .route("/metrics", get(metrics))
}

/// Prometheus metrics (text exposition format): jobs by status, queue depth, job durations and
/// fuel, HTTP requests by route and status, refusals by reason.
async fn metrics(axum::extract::State(api): axum::extract::State<Arc<Api>>) -> ApiResult<Response> {
    if !api.guard.config().metrics {
        return Err(ApiError::NotFound("metrics are off on this provider ([http] metrics = false)".into()));
    }
    let mut out = String::new();
    api.jobs.render_metrics(&mut out).await?;
    api.guard.metrics.render(&mut out);
    Ok(([("content-type", "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

async fn provider(axum::extract::State(api): axum::extract::State<Arc<Api>>) -> Json<ProviderView> {
    Json(api.view.clone())
}
