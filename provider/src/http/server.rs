//! The HTTP/1.1 server: hyper's connection handling with the limits a server facing strangers
//! needs, which `axum::serve` does not set.
//!
//! * at most `max_connections` open connections: one accepted beyond them is closed at once
//!   (and counted), so sockets that never send anything cannot exhaust the descriptors;
//! * the request line and headers must arrive within `header_read_timeout`, and an idle
//!   keep-alive connection is closed after it too (hyper's timer);
//! * hyper's own read buffer and header count are set just above the limits the
//!   [`guard`](super::guard) checks, so nearly every oversized request gets our 414/431 in
//!   our error format (only one over hyper's buffer as well gets hyper's bare answer);
//! * each request carries its peer's address (`ConnectInfo`), for per-peer rate limits.
//!
//! Shutdown is graceful: the listener closes, then each connection finishes the request it is
//! serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::guard::{Guard, reason};

/// Serves `app` on `listener` under `guard`'s limits until `shutdown` resolves.
pub async fn serve(
    app: Router,
    guard: Arc<Guard>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = guard.config().clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms.max(1)))
        // Room for the largest request line and headers the guard accepts, and a margin, so
        // that the guard (not hyper) answers requests over them.
        .max_buf_size((config.max_uri_bytes + config.max_header_bytes).saturating_mul(2).max(16 << 10))
        .max_headers(config.max_headers.saturating_mul(2).max(16));
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait
                    // a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            guard.metrics.reject(reason::CONNECTIONS);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: axum::http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let finished = tokio::select! {
                _ = conn.as_mut() => true,
                _ = stopped.wait_for(|s| *s) => false,
            };
            if !finished {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Wait (a bounded time) for the connections to finish what they serve.
    let all = u32::try_from(config.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(30), connections.acquire_many(all)).await;
    Ok(())
}
