//! Assets: resolving DDOs, and publishing through upload sessions.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery, Envelope, SignedJson, authorize, stream_body};
use crate::api::{Published, ReferenceRequest, UploadSession, UploadedFile};
use crate::assets;
use crate::ddo::{AssetKind, Ddo, Did};
use crate::error::{ApiError, ApiResult};
use crate::provider::Provider;

pub fn router() -> Router<Arc<Provider>> {
    Router::new()
        .route("/api/v1/assets", get(list))
        .route("/api/v1/assets/{did}", get(resolve))
        .route("/api/v1/uploads", post(create_session))
        .route("/api/v1/uploads/{id}/files/{dataset}/{*path}", put(upload_file))
        .route("/api/v1/uploads/{id}/reference", post(reference))
        .route("/api/v1/uploads/{id}/publish", post(publish))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    kind: Option<AssetKind>,
}

async fn list(State(p): State<Arc<Provider>>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Vec<Ddo>>> {
    Ok(Json(assets::list(&p, q.kind).await?))
}

async fn resolve(State(p): State<Arc<Provider>>, ApiPath(did): ApiPath<String>) -> ApiResult<Json<Ddo>> {
    let did: Did = did.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    Ok(Json(assets::ddo(&p, did).await?))
}

async fn create_session(
    State(p): State<Arc<Provider>>,
    SignedJson(who, _): SignedJson<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<UploadSession>)> {
    Ok((StatusCode::CREATED, Json(assets::create_session(&p, who).await?)))
}

async fn upload_file(
    State(p): State<Arc<Provider>>,
    envelope: Envelope,
    ApiPath((id, dataset, path)): ApiPath<(String, String, String)>,
    body: Body,
) -> ApiResult<Json<UploadedFile>> {
    assets::check_dataset_name(&dataset)?;
    assets::check_path(&path)?;
    // Cheap checks on the claimed signer before accepting a large body; the signature itself
    // can only be checked once the body's hash is known.
    assets::check_session(&p, &id, envelope.envelope.address).await?;
    let streamed = stream_body(body, p.config.max_file_bytes, p.blobs.tmp_dir()).await?;
    let who = authorize(&p, &envelope, streamed.keccak).await?;
    assets::check_session(&p, &id, who).await?;
    let kept = streamed.file.keep().map_err(|e| ApiError::internal(e.error))?;
    p.blobs.adopt(&kept, &streamed.blake3)?;
    Ok(Json(assets::record_file(&p, &id, &dataset, &path, streamed.blake3, streamed.size).await?))
}

async fn reference(
    State(p): State<Arc<Provider>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, req): SignedJson<ReferenceRequest>,
) -> ApiResult<Json<Vec<UploadedFile>>> {
    if !req.local_path.is_absolute() {
        return Err(ApiError::BadRequest("localPath must be an absolute path on the provider's machine".into()));
    }
    Ok(Json(assets::reference_dir(&p, who, &id, &req.dataset, req.local_path).await?))
}

async fn publish(
    State(p): State<Arc<Provider>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, req): SignedJson<crate::api::PublishRequest>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    Ok((StatusCode::CREATED, Json(assets::publish(&p, who, &id, req).await?)))
}
