//! Publishing: upload sessions, files, and the asset they become; reading the catalogue.

use std::path::Path;

use alloy_primitives::B256;

use super::transport::{decode, url_segment};
use super::{Client, ClientError, ClientResult};
use crate::protocol::api::{PublishRequest, Published, ReferenceRequest, UploadSession, UploadedFile};
use crate::protocol::ddo::{Ddo, Did};

impl Client {
    /// Opens an upload session (`POST /api/v1/uploads`); returns its id.
    pub async fn create_session(&self) -> ClientResult<String> {
        let s: UploadSession = self.post_json("/api/v1/uploads", &serde_json::json!({})).await?;
        Ok(s.id)
    }

    /// Uploads one file (streamed; it is read twice: once to sign its hash, once to send it).
    pub async fn upload_file(
        &self,
        session: &str,
        dataset: &str,
        path: &str,
        local: &Path,
    ) -> ClientResult<UploadedFile> {
        let local_owned = local.to_path_buf();
        let hash = tokio::task::spawn_blocking(move || -> std::io::Result<B256> {
            let mut f = std::fs::File::open(local_owned)?;
            let mut h = alloy_primitives::Keccak256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    return Ok(h.finalize());
                }
                h.update(&buf[..n]);
            }
        })
        .await
        .map_err(|e| ClientError::Flow(e.to_string()))??;
        let file = tokio::fs::File::open(local).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let encoded: Vec<String> = path.split('/').map(url_segment).collect();
        let url_path = format!("/api/v1/uploads/{session}/files/{}/{}", url_segment(dataset), encoded.join("/"));
        decode(self.send(self.signed(reqwest::Method::PUT, &url_path, hash).body(body)).await?).await
    }

    /// Asks the provider to copy a directory on its own disk into a dataset (operators only).
    pub async fn reference(&self, session: &str, dataset: &str, local_path: &Path) -> ClientResult<Vec<UploadedFile>> {
        let req = ReferenceRequest { dataset: dataset.into(), local_path: local_path.to_path_buf() };
        self.post_json(&format!("/api/v1/uploads/{session}/reference"), &req).await
    }

    /// Publishes a session's datasets as one asset (`POST /api/v1/uploads/{session}/publish`):
    /// its DID and DDO.
    pub async fn publish(&self, session: &str, req: &PublishRequest) -> ClientResult<Published> {
        self.post_json(&format!("/api/v1/uploads/{session}/publish"), req).await
    }

    /// Uploads every file of each `(dataset, directory)` and publishes them as one asset.
    pub async fn publish_dirs(
        &self,
        datasets: &[(String, std::path::PathBuf)],
        req: &PublishRequest,
    ) -> ClientResult<Published> {
        let session = self.create_session().await?;
        for (name, dir) in datasets {
            let tree =
                tidepool_runtime::tree::scan(dir).map_err(|e| ClientError::Flow(format!("{}: {e}", dir.display())))?;
            for entry in &tree.entries {
                match &entry.kind {
                    tidepool_runtime::tree::EntryKind::File { .. } => {
                        self.upload_file(&session, name, &entry.path, &dir.join(&entry.path)).await?;
                    }
                    tidepool_runtime::tree::EntryKind::Dir => {}
                    tidepool_runtime::tree::EntryKind::Symlink { .. } => {
                        return Err(ClientError::Flow(format!(
                            "{}/{}: symlinks cannot be published",
                            dir.display(),
                            entry.path
                        )));
                    }
                }
            }
        }
        self.publish(&session, req).await
    }

    /// The DDO of the asset `did` (`GET /api/v1/assets/{did}`).
    pub async fn ddo(&self, did: Did) -> ClientResult<Ddo> {
        self.get_public(&format!("/api/v1/assets/{did}")).await
    }

    /// The DDOs of every asset the provider offers.
    pub async fn assets(&self) -> ClientResult<Vec<Ddo>> {
        self.get_public("/api/v1/assets").await
    }
}
