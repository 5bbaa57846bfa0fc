//! The Computing service (OEP-12): initialize, upload, exec, and the consumer's view of jobs.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::instrument;

use super::extract::{ApiPath, ApiQuery, Envelope, Signed, SignedJson};
use super::guard::Peer;
use super::{Api, ApiError, ApiResult};
use crate::agreement::AlgorithmSource;
use crate::jobs::ResultBody;
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{Empty, ExecRequest, InitializeRequest, JobView, ResultsView, UploadQuery, UploadResponse};

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/services/compute/initialize", post(initialize))
        .route("/api/v1/services/compute/upload", post(upload))
        .route("/api/v1/services/compute/exec", post(exec))
        .route("/api/v1/services/compute/jobs/{id}", get(job))
        .route("/api/v1/services/compute/jobs/{id}/results", get(results))
        .route("/api/v1/services/compute/jobs/{id}/results/{index}", get(download))
        .route("/api/v1/services/compute/jobs/{id}/stop", post(stop))
}

#[instrument(skip_all)]
async fn initialize(
    State(api): State<Arc<Api>>,
    SignedJson(who, req): SignedJson<InitializeRequest>,
) -> ApiResult<(StatusCode, Json<Agreement>)> {
    Ok((StatusCode::CREATED, Json(api.agreements.initialize(who, req).await?)))
}

#[instrument(skip_all)]
async fn upload(
    State(api): State<Arc<Api>>,
    envelope: Envelope,
    peer: Option<Extension<Peer>>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let authorized = super::upload::authorize(&api, &envelope, peer, &headers, api.limits.max_module_bytes).await?;
    let streamed = authorized.receive_bytes(&api, body).await?;
    let who = streamed.who;
    if q.algorithm_did.is_some() && q.environment.is_some() {
        return Err(ApiError::BadRequest(
            "a published algorithm is a module: give `environment` only with uploaded files".into(),
        ));
    }
    let source = match (q.algorithm_did, streamed.bytes.len()) {
        (Some(did), 0) => AlgorithmSource::Published(did),
        (Some(_), _) => {
            return Err(ApiError::BadRequest("send either a module body or an algorithmDid, not both".into()));
        }
        (None, 0) => {
            return Err(ApiError::BadRequest(
                "the body is empty: send the module (application/wasm), or with `environment` the files' archive \
                 (application/vnd.tidepool.files)"
                    .into(),
            ));
        }
        (None, _) => {
            let bytes = streamed.bytes;
            let name = q.algorithm_name.unwrap_or_else(|| "algorithm".into());
            match q.environment {
                Some(environment) => AlgorithmSource::Files { environment, archive: bytes, name },
                None => AlgorithmSource::Module(bytes, name),
            }
        }
    };
    Ok(Json(api.agreements.upload(who, q.service_agreement_id, q.signed_checksum, source).await?))
}

#[instrument(skip_all)]
async fn exec(
    State(api): State<Arc<Api>>,
    SignedJson(who, req): SignedJson<ExecRequest>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    Ok((StatusCode::ACCEPTED, Json(api.agreements.exec(who, req).await?)))
}

#[instrument(skip_all, fields(job_id = %id))]
async fn job(
    State(api): State<Arc<Api>>,
    Signed(who): Signed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(api.jobs.view(&id, who).await?))
}

#[instrument(skip_all, fields(job_id = %id))]
async fn results(
    State(api): State<Arc<Api>>,
    Signed(who): Signed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ResultsView>> {
    Ok(Json(api.jobs.results(&id, who).await?))
}

#[instrument(skip_all, fields(job_id = %id))]
async fn download(
    State(api): State<Arc<Api>>,
    Signed(who): Signed,
    ApiPath((id, index)): ApiPath<(String, u32)>,
) -> ApiResult<Response> {
    let (entry, body) = api.jobs.open_result(&id, who, index).await?;
    // A file's length is its entry's; bytes (the receipt, signed after its entry was written
    // in cluster mode) carry their own.
    let (body, length) = match body {
        ResultBody::Bytes(bytes) => (Body::from(bytes), None),
        ResultBody::File(file) => {
            (Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file))), Some(entry.size))
        }
    };
    let disposition = content_disposition(entry.name.rsplit('/').next().unwrap_or("result"));
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        body,
    )
        .into_response();
    if let Some(v) = length.and_then(|n| n.to_string().parse().ok()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    if let Some(hash) = entry.hash.and_then(|h| h.to_string().parse().ok()) {
        response.headers_mut().insert("x-tidepool-blake3", hash);
    }
    Ok(response)
}

/// `Content-Disposition` for a file named `name` by a guest, which may hold any byte but `/`
/// and NUL: an ASCII `filename` with every byte that cannot stand in a quoted string (controls,
/// quotes, backslashes, non-ASCII) as `_`, and, when that changed anything, the exact name as
/// `filename*` (RFC 6266, percent-encoded UTF-8).
fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' { c } else { '_' })
        .collect();
    if plain == name {
        return format!("attachment; filename=\"{plain}\"");
    }
    let mut exact = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            exact.push(char::from(b));
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}")
}

#[instrument(skip_all, fields(job_id = %id))]
async fn stop(
    State(api): State<Arc<Api>>,
    ApiPath(id): ApiPath<String>,
    SignedJson(who, Empty {}): SignedJson<Empty>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(api.jobs.stop(&id, who).await?))
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn any_file_name_makes_a_valid_content_disposition() {
        assert_eq!(content_disposition("out put.csv"), "attachment; filename=\"out put.csv\"");
        for (name, expected) in [
            ("a\nb", "attachment; filename=\"a_b\"; filename*=UTF-8''a%0Ab"),
            ("x\u{1}", "attachment; filename=\"x_\"; filename*=UTF-8''x%01"),
            ("say \"hi\"", "attachment; filename=\"say _hi_\"; filename*=UTF-8''say%20%22hi%22"),
            ("über", "attachment; filename=\"_ber\"; filename*=UTF-8''%C3%BCber"),
        ] {
            let value = content_disposition(name);
            assert_eq!(value, expected);
            axum::http::HeaderValue::from_str(&value).unwrap();
        }
    }
}
