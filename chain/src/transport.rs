//! The JSON-RPC transport: HTTP POSTs through the workspace's `reqwest` client.
//!
//! alloy's own HTTP transport is built on a newer `reqwest` than the rest of the workspace;
//! enabling it would compile a second HTTP stack (reqwest, hyper, rustls). This one is the
//! few lines alloy needs: a `tower::Service` from a request packet to a response packet.
//! Connection failures come back as `TransportErrorKind::Custom` (transient, see
//! [`crate::error::ChainError::is_transient`]); non-2xx statuses as HTTP errors.

use std::task::{Context, Poll};
use std::time::Duration;

use alloy::rpc::client::RpcClient;
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};

/// An HTTP JSON-RPC endpoint.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HttpTransport {
    /// A transport to `url`; each request times out after `timeout`.
    pub fn new(url: reqwest::Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, url })
    }

    /// An alloy RPC client over this transport.
    pub fn into_client(self) -> RpcClient {
        let local = matches!(self.url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        RpcClient::new(self, local)
    }

    async fn post(self, request: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let response = self.client.post(self.url).json(&request).send().await.map_err(TransportErrorKind::custom)?;
        let status = response.status();
        let body = response.bytes().await.map_err(TransportErrorKind::custom)?;
        if !status.is_success() {
            return Err(TransportErrorKind::http_error(status.as_u16(), String::from_utf8_lossy(&body).into_owned()));
        }
        serde_json::from_slice(&body).map_err(|e| TransportError::deser_err(e, String::from_utf8_lossy(&body)))
    }
}

impl tower::Service<RequestPacket> for HttpTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        Box::pin(self.clone().post(request))
    }
}
