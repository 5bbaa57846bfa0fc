//! What every request goes through before its handler: the limits a stranger's requests are
//! held to, each refusal answered in our error format and counted.
//!
//! In order: the path and query at most `max_uri_bytes` (414), the headers at most
//! `max_header_bytes` in at most `max_headers` (431), the peer within its rate (429, see
//! [`RateLimiter`]), at most `max_requests_per_peer` of its requests in progress at once (429:
//! one peer's long polls or trickled bodies cannot take every slot), a free request slot out
//! of `max_concurrent_requests` (503 with `Retry-After`: load shedding), and a body that never idles longer than
//! `body_idle_timeout` (408). The health check and the metrics are never rate limited or
//! shed, so an operator can see an attack while it happens. (The connection-level limits,
//! header read timeout and connection cap, are in [`super::server`].)
//!
//! A response to a request whose body was not read to its end (a 413 on the declared
//! length, a 401 before an upload is read, any early refusal) says `Connection: close`, as
//! RFC 9112 section 9.6 asks: hyper closes such a connection after the response, and a client
//! told nothing would send its next request on it and lose that request to the close. The
//! rest of such a body is read and dropped, bounded, before the close ([`IdleTimeout`]): a
//! client still sending would otherwise get a reset instead of its answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::quota::Quotas;
use crate::config::HttpConfig;
use crate::metrics::{self, CounterVec};

/// Why requests were refused before their handler (the `reason` label of
/// `tidepool_http_rejected_total`), or by it for a reason worth watching.
pub mod reason {
    /// A connection over the connection cap (closed at once).
    pub const CONNECTIONS: &str = "connection_cap";
    /// No free request slot: load shed (503).
    pub const OVERLOADED: &str = "overloaded";
    /// The peer is over its rate (429).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The peer has its most requests in progress already (429).
    pub const PEER_BUSY: &str = "peer_busy";
    /// The path and query are over the limit (414).
    pub const URI_TOO_LONG: &str = "uri_too_long";
    /// Too many headers, or too many bytes of them (431).
    pub const HEADERS_TOO_LARGE: &str = "headers_too_large";
    /// A body over its limit (413).
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// A body that idled too long (408).
    pub const BODY_TIMEOUT: &str = "body_timeout";
    /// A request refused as unsigned or badly signed (401).
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// A reused nonce (409). Not counted yet: the guard counts by status, and 409 is also a flow conflict.
    pub const REPLAY: &str = "replay";
    /// An upload over its address's slots or hourly bytes (429 from a handler).
    pub const UPLOAD_QUOTA: &str = "upload_quota";
    /// A 503 from a handler: mostly storage busy or unreachable (also an upload gate at
    /// capacity, an unreachable keeper).
    pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
}

/// The HTTP layer's metrics.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// `(route, method, status)`.
    requests: CounterVec<(String, String, u16)>,
    rejected: CounterVec<&'static str>,
}

impl HttpMetrics {
    /// Counts one refusal for `reason` (one of [`reason`]'s).
    pub fn reject(&self, reason: &'static str) {
        self.rejected.inc(reason);
    }

    /// Appends the metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        metrics::header(out, "tidepool_http_requests_total", "HTTP requests answered, by route and status", "counter");
        for ((route, method, status), n) in self.requests.snapshot() {
            let status = status.to_string();
            metrics::sample(
                out,
                "tidepool_http_requests_total",
                &[("route", &route), ("method", &method), ("status", &status)],
                n,
            );
        }
        metrics::header(out, "tidepool_http_rejected_total", "Requests and connections refused, by reason", "counter");
        for (reason, n) in self.rejected.snapshot() {
            metrics::sample(out, "tidepool_http_rejected_total", &[("reason", reason)], n);
        }
    }
}

/// The limits and their state, shared by every request.
#[derive(Debug)]
pub struct Guard {
    config: HttpConfig,
    slots: Arc<Semaphore>,
    rates: RateLimiter,
    peers: Arc<Quotas<IpAddr>>,
    /// The requests answered and refused.
    pub metrics: HttpMetrics,
}

impl Guard {
    /// The guard for `config`'s limits.
    pub fn new(config: HttpConfig) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            rates: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            peers: Quotas::new("peer", "requests", config.max_requests_per_peer, 0),
            config,
            metrics: HttpMetrics::default(),
        })
    }

    /// The limits it enforces.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The peer a request is counted against: the connection's address, or, when that is a
    /// trusted proxy, the last address in `X-Forwarded-For` that is not one.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.config.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(forwarded.into_iter().rev().find(|ip| !self.config.trusted_proxies.contains(ip)).unwrap_or(peer))
    }

    /// Checks a request's size before anything reads it.
    fn check_sizes(&self, req: &Request) -> Result<(), (ApiError, &'static str)> {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.config.max_uri_bytes {
            let e = ApiError::UriTooLong(format!(
                "the path and query are {uri_len} bytes, over the limit of {}",
                self.config.max_uri_bytes
            ));
            return Err((e, reason::URI_TOO_LONG));
        }
        let headers = req.headers();
        let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if headers.len() > self.config.max_headers || bytes > self.config.max_header_bytes {
            let e = ApiError::HeadersTooLarge(format!(
                "{} headers of {bytes} bytes; at most {} headers of {} bytes are accepted",
                headers.len(),
                self.config.max_headers,
                self.config.max_header_bytes
            ));
            return Err((e, reason::HEADERS_TOO_LARGE));
        }
        Ok(())
    }
}

/// Paths that are never rate limited or shed.
fn is_exempt(path: &str) -> bool {
    path == "/api/v1/health" || path == "/metrics"
}

/// The middleware: the checks of the module, then the handler, then the request counted.
pub async fn guard(axum::extract::State(g): axum::extract::State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().as_str().to_string();
    let read = Arc::new(AtomicBool::new(!has_body(req.headers())));
    let idle = Duration::from_millis(g.config.body_idle_timeout_ms.max(1));
    let req = req.map(|body| Body::new(IdleTimeout::new(body, idle, read.clone())));
    let mut response = admit(&g, req, next).await;
    if !read.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    g.metrics.requests.inc((route, method, response.status().as_u16()));
    response
}

/// Whether a request comes with a body (a `Content-Length` over 0, or a `Transfer-Encoding`).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
}

/// The peer a request is counted against (see [`Guard::client_ip`]), for handlers that count
/// more (upload quotas). Absent on the exempt paths.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// The checks, then the handler.
async fn admit(g: &Guard, mut req: Request, next: Next) -> Response {
    if let Err((e, why)) = g.check_sizes(&req) {
        g.metrics.reject(why);
        return e.into_response();
    }
    let exempt = is_exempt(req.uri().path());
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = if exempt { None } else { g.client_ip(peer, req.headers()) };
    // The peer's rate, then its requests in progress (held until the response is made).
    let mut _peer_ticket = None;
    if let Some(ip) = ip {
        if let Err(wait) = g.rates.check(ip) {
            g.metrics.reject(reason::RATE_LIMITED);
            return ApiError::TooManyRequests {
                retry_after_secs: wait,
                message: format!("too many requests from {ip}; slow down"),
            }
            .into_response();
        }
        match g.peers.enter(ip, 0) {
            Ok(ticket) => _peer_ticket = ticket,
            Err(e) => {
                g.metrics.reject(reason::PEER_BUSY);
                return e.into_response();
            }
        }
        req.extensions_mut().insert(Peer(ip));
    }
    let _slot = if exempt {
        None
    } else {
        match g.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                g.metrics.reject(reason::OVERLOADED);
                return ApiError::overloaded("requests").into_response();
            }
        }
    };
    let response = next.run(req).await;
    match response.status().as_u16() {
        401 => g.metrics.reject(reason::BAD_SIGNATURE),
        408 => g.metrics.reject(reason::BODY_TIMEOUT),
        413 => g.metrics.reject(reason::BODY_TOO_LARGE),
        429 => g.metrics.reject(reason::UPLOAD_QUOTA),
        503 => g.metrics.reject(reason::STORAGE_UNAVAILABLE),
        _ => {}
    }
    response
}

/// Per-peer token buckets: `rate` requests a second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` requests a second per peer, `burst` at once; a `rate` of 0 or less turns it off.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `ip`; when there is none, how many seconds until there is.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Forget peers whose buckets have refilled: they lose nothing.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// A request body that fails with [`BodyIdle`] when no data arrives for `idle`, and sets
/// `read` once it has been read to its end. Dropped before that (its request answered before
/// its body was read: a 413, a 401...), it reads and drops the rest in the background, up to
/// [`LINGER_BYTES`] for at most [`LINGER`]: closing a connection whose client is still
/// sending resets it, and the client then sees a broken pipe instead of its answer.
#[derive(Debug)]
pub struct IdleTimeout {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    read: Arc<AtomicBool>,
}

/// A request body sent nothing for longer than the body idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdle(Duration);

impl IdleTimeout {
    fn new(inner: Body, idle: Duration, read: Arc<AtomicBool>) -> Self {
        Self { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), read }
    }
}

/// How long a dropped body is read on at most (nginx's `lingering_time`).
const LINGER: Duration = Duration::from_secs(30);
/// How many bytes of a dropped body are read on at most.
const LINGER_BYTES: usize = 256 << 20;

impl Drop for IdleTimeout {
    fn drop(&mut self) {
        if self.read.load(Ordering::Acquire) || http_body::Body::is_end_stream(&self.inner) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let body = std::mem::replace(&mut self.inner, Body::empty());
        let idle = self.idle.min(Duration::from_secs(5));
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + LINGER;
            let mut stream = body.into_data_stream();
            let mut left = LINGER_BYTES;
            while left > 0 {
                let until = deadline.min(tokio::time::Instant::now() + idle);
                match tokio::time::timeout_at(until, stream.next()).await {
                    Ok(Some(Ok(chunk))) => left = left.saturating_sub(chunk.len()),
                    _ => break,
                }
            }
        });
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || self.inner.is_end_stream() {
                    self.read.store(true, Ordering::Release);
                }
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyIdle(self.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a failure to read a request body means for the client: 408 when it stalled, 413 when
/// it went over a limit, 400 otherwise.
pub fn body_error(e: axum::Error) -> ApiError {
    let inner = e.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(err) = source {
        if err.is::<BodyIdle>() {
            return ApiError::Timeout(format!("{err}; the request is abandoned"));
        }
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::TooLarge(format!("the body is over its limit: {err}"));
        }
        source = err.source();
    }
    ApiError::BadRequest(format!("reading the request body: {inner}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(1.0, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            limiter.check(a).unwrap();
        }
        assert_eq!(limiter.check(a), Err(1), "the burst is spent");
        limiter.check(b).unwrap();
        assert_eq!(RateLimiter::new(0.0, 1).check(a), Ok(()), "rate 0: no limit");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let g = Guard::new(HttpConfig { trusted_proxies: vec![proxy], ..HttpConfig::default() });
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4".parse().unwrap());
        let from = |ip: IpAddr| Some(SocketAddr::new(ip, 5000));
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(g.client_ip(from(stranger), &headers), Some(stranger), "a stranger's header is ignored");
        assert_eq!(g.client_ip(from(proxy), &headers), Some("1.2.3.4".parse().unwrap()), "the proxy's last hop");
        assert_eq!(g.client_ip(from(proxy), &HeaderMap::new()), Some(proxy), "no header: the proxy itself");
        assert_eq!(g.client_ip(None, &headers), None, "no connection (in-process calls)");
    }
}
