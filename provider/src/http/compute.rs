//! The Computing service (OEP-12): initialize, upload, exec, and the consumer's view of jobs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{ApiPath, ApiQuery, Envelope, Signed, SignedJson, authorize, stream_body};
use crate::agreement::service::{self, AlgorithmSource};
use crate::api::{ExecRequest, InitializeRequest, JobView, ResultsView, UploadQuery, UploadResponse};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, ResultBody};
use crate::keeper::Agreement;
use crate::provider::Provider;

pub fn router() -> Router<Arc<Provider>> {
    Router::new()
        .route("/api/v1/services/compute/initialize", post(initialize))
        .route("/api/v1/services/compute/upload", post(upload))
        .route("/api/v1/services/compute/exec", post(exec))
        .route("/api/v1/services/compute/jobs/{id}", get(job))
        .route("/api/v1/services/compute/jobs/{id}/results", get(results))
        .route("/api/v1/services/compute/jobs/{id}/results/{index}", get(download))
        .route("/api/v1/services/compute/jobs/{id}/stop", post(stop))
}

async fn initialize(
    State(p): State<Arc<Provider>>,
    SignedJson(who, req): SignedJson<InitializeRequest>,
) -> ApiResult<(StatusCode, Json<Agreement>)> {
    Ok((StatusCode::CREATED, Json(service::initialize(&p, who, req).await?)))
}

async fn upload(
    State(p): State<Arc<Provider>>,
    envelope: Envelope,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let streamed = stream_body(body, p.config.max_module_bytes, p.blobs.tmp_dir()).await?;
    let who = authorize(&p, &envelope, streamed.keccak).await?;
    let source = match (q.algorithm_did, streamed.size) {
        (Some(did), 0) => AlgorithmSource::Published(did),
        (Some(_), _) => {
            return Err(ApiError::BadRequest("send either a module body or an algorithmDid, not both".into()));
        }
        (None, 0) => return Err(ApiError::BadRequest("the body is empty: send the module (application/wasm)".into())),
        (None, _) => AlgorithmSource::Module(
            tokio::fs::read(&streamed.file).await?,
            q.algorithm_name.unwrap_or_else(|| "algorithm".into()),
        ),
    };
    Ok(Json(service::upload(&p, who, q.service_agreement_id, q.signed_checksum, source).await?))
}

async fn exec(
    State(p): State<Arc<Provider>>,
    SignedJson(who, req): SignedJson<ExecRequest>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    Ok((StatusCode::ACCEPTED, Json(service::exec(&p, who, req).await?)))
}

async fn job(
    State(p): State<Arc<Provider>>,
    Signed(who): Signed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(jobs::view(&p, &id, who).await?))
}

async fn results(
    State(p): State<Arc<Provider>>,
    Signed(who): Signed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ResultsView>> {
    Ok(Json(jobs::results(&p, &id, who).await?))
}

async fn download(
    State(p): State<Arc<Provider>>,
    Signed(who): Signed,
    ApiPath((id, index)): ApiPath<(String, u32)>,
) -> ApiResult<Response> {
    let (entry, body) = jobs::open_result(&p, &id, who, index).await?;
    let body = match body {
        ResultBody::Bytes(bytes) => Body::from(bytes),
        ResultBody::File(file) => Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file))),
    };
    let disposition =
        format!("attachment; filename=\"{}\"", entry.name.rsplit('/').next().unwrap_or("result").replace('"', "_"));
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        body,
    )
        .into_response();
    if let Ok(v) = entry.size.to_string().parse() {
        response.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    if let Some(hash) = entry.hash.and_then(|h| h.to_string().parse().ok()) {
        response.headers_mut().insert("x-tidepool-blake3", hash);
    }
    Ok(response)
}

async fn stop(
    State(p): State<Arc<Provider>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, _): SignedJson<serde_json::Value>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(jobs::stop(&p, &id, who).await?))
}
