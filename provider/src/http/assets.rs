//! Assets: resolving DDOs, and publishing through upload sessions.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::instrument;

use super::extract::{ApiPath, ApiQuery, Envelope, SignedJson};
use super::guard::Peer;
use super::{Api, ApiError, ApiResult};
use crate::assets::StagedFile;
use crate::protocol::api::{Empty, PublishRequest, Published, ReferenceRequest, UploadSession, UploadedFile};
use crate::protocol::ddo::{AssetKind, Ddo, Did};

pub fn router() -> Router<Arc<Api>> {
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

async fn list(State(api): State<Arc<Api>>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Vec<Ddo>>> {
    Ok(Json(api.assets.list(q.kind).await?))
}

async fn resolve(State(api): State<Arc<Api>>, ApiPath(did): ApiPath<String>) -> ApiResult<Json<Ddo>> {
    let did: Did = did.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    Ok(Json(api.assets.ddo(did).await?))
}

#[instrument(skip_all)]
async fn create_session(
    State(api): State<Arc<Api>>,
    SignedJson(who, Empty {}): SignedJson<Empty>,
) -> ApiResult<(StatusCode, Json<UploadSession>)> {
    Ok((StatusCode::CREATED, Json(api.assets.create_session(who).await?)))
}

#[instrument(skip_all, fields(session = %id))]
async fn upload_file(
    State(api): State<Arc<Api>>,
    envelope: Envelope,
    peer: Option<Extension<Peer>>,
    ApiPath((id, dataset, path)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadedFile>> {
    crate::protocol::names::check_dataset_name(&dataset).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    crate::protocol::names::check_path(&path).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The signature over the body's claimed hash, and the session's owner, before a byte of
    // the body is accepted.
    let authorized = super::upload::authorize(&api, &envelope, peer, &headers, api.limits.max_file_bytes).await?;
    api.assets.check_session(&id, authorized.who).await?;
    let streamed = authorized.receive(&api, body).await?;
    let who = streamed.who;
    let staged = StagedFile { file: streamed.file, hash: streamed.blake3, size: streamed.size };
    Ok(Json(api.assets.add_file(who, &id, &dataset, &path, staged).await?))
}

#[instrument(skip_all, fields(session = %id))]
async fn reference(
    State(api): State<Arc<Api>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, req): SignedJson<ReferenceRequest>,
) -> ApiResult<Json<Vec<UploadedFile>>> {
    if !req.local_path.is_absolute() {
        return Err(ApiError::BadRequest("localPath must be an absolute path on the provider's machine".into()));
    }
    Ok(Json(api.assets.reference_dir(who, &id, &req.dataset, req.local_path).await?))
}

#[instrument(skip_all, fields(session = %id))]
async fn publish(
    State(api): State<Arc<Api>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, req): SignedJson<PublishRequest>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    Ok((StatusCode::CREATED, Json(api.assets.publish(who, &id, req).await?)))
}
