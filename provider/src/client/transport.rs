//! How a [`Client`] talks: signing each request (EIP-712, a fresh nonce, an expiry), taking
//! turns between a provider's API nodes and retrying on a node that cannot answer, and turning
//! responses into bodies or [`ClientError`]s. Nothing here knows a resource.

use std::sync::atomic::Ordering;

use alloy_primitives::{B256, keccak256};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Client, ClientError, ClientResult};
use crate::protocol::api::ErrorBody;
use crate::protocol::eip712;
use crate::protocol::signing::{Envelope, sign_typed, unix_now};

/// How long a signed request stays valid.
const REQUEST_TTL: u64 = 300;

/// A signed request, sent to whichever node as it is.
#[derive(Debug)]
pub(super) struct Signed {
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
}

impl Client {
    /// The URL of the next request's node.
    fn base(&self) -> &str {
        &self.bases[self.turn.fetch_add(1, Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends what `make` builds (again, to the next node, while a node cannot be reached or
    /// closed the connection without an answer: a node killed since its connection was pooled).
    /// A signed request is signed once ([`Client::sign`]) and `make` sends that same signature
    /// to each node, so a request a dying node did apply is refused as a replay when sent
    /// again (the nodes share their nonces): a retry never applies one twice.
    pub(super) async fn send_with(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> ClientResult<reqwest::Response> {
        let mut tries = self.bases.len();
        loop {
            tries -= 1;
            match make().send().await {
                Ok(response) => return Ok(response),
                Err(e) if (e.is_connect() || closed_unanswered(&e)) && tries > 0 => continue,
                Err(e) => {
                    let url = e.url().map_or_else(String::new, |u| u.to_string());
                    return Err(ClientError::Connect { url, source: e });
                }
            }
        }
    }

    /// A nonce greater than every one this client used: milliseconds since the epoch, bumped
    /// when two requests fall in the same millisecond.
    fn next_nonce(&self) -> u64 {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut prev = self.nonce.load(Ordering::Relaxed);
        loop {
            let next = now_ms.max(prev + 1);
            match self.nonce.compare_exchange(prev, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// A signed request to the next node: `path` includes the query; `body` is hashed into the
    /// signature.
    pub(super) fn signed(&self, method: reqwest::Method, path: &str, body_hash: B256) -> reqwest::RequestBuilder {
        self.to_next(&self.sign(method, path, body_hash))
    }

    /// `signed`, to the next node (the signature does not name the node).
    pub(super) fn to_next(&self, signed: &Signed) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(signed.method.clone(), format!("{}{}", self.base(), signed.path));
        for (name, value) in &signed.headers {
            builder = builder.header(*name, value);
        }
        builder
    }

    /// Signs a request (a fresh nonce, an expiry): `path` includes the query; `body_hash` is
    /// the body's keccak-256.
    pub(super) fn sign(&self, method: reqwest::Method, path: &str, body_hash: B256) -> Signed {
        let nonce = self.next_nonce();
        let expiry = unix_now() + REQUEST_TTL;
        let request = eip712::Request {
            method: method.as_str().to_string(),
            path: path.to_string(),
            contentHash: body_hash,
            nonce,
            expiry,
        };
        let envelope = Envelope {
            address: self.address(),
            nonce,
            expiry,
            content_hash: Some(body_hash),
            signature: sign_typed(&self.signer, &self.domain, &request),
        };
        Signed { method, path: path.to_string(), headers: envelope.headers() }
    }

    /// Sends once, to the next node (a streamed body cannot be sent twice).
    pub(super) async fn send(&self, builder: reqwest::RequestBuilder) -> ClientResult<reqwest::Response> {
        builder.send().await.map_err(|e| {
            let url = e.url().map_or_else(String::new, |u| u.to_string());
            ClientError::Connect { url, source: e }
        })
    }

    pub(super) async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let hash = keccak256(&bytes);
        let signed = self.sign(reqwest::Method::POST, path, hash);
        let req = || {
            self.to_next(&signed).header("content-type", "application/json").body(bytes.clone()).timeout(self.timeout)
        };
        decode(self.send_with(req).await?).await
    }

    pub(super) async fn get_signed<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        let signed = self.sign(reqwest::Method::GET, path, keccak256([]));
        decode(self.send_with(|| self.to_next(&signed).timeout(self.timeout)).await?).await
    }

    pub(super) async fn get_public<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        decode(self.send_with(|| self.http.get(format!("{}{path}", self.base())).timeout(self.timeout)).await?).await
    }
}

/// Percent-encodes one path segment.
pub(super) fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Turns an error response into `ClientError::Api`.
pub(super) async fn check(resp: reqwest::Response) -> ClientResult<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(ClientError::Api { status, code: e.error.code, message: e.error.message }),
        Err(_) => Err(ClientError::Api { status, code: "http".into(), message: text }),
    }
}

pub(super) async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> ClientResult<T> {
    let resp = check(resp).await?;
    let text = resp.text().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Protocol(format!("{e}: {}", text.chars().take(200).collect::<String>())))
}

/// Did the node close the connection before answering (hyper's "incomplete message")?
fn closed_unanswered(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(url_segment("a b/ü.txt"), "a%20b%2F%C3%BC.txt");
        assert_eq!(url_segment("plain-name_1.csv"), "plain-name_1.csv");
    }
}
