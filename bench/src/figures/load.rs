//! The daemon under load (issue 10): ten thousand requests from a hundred concurrent clients
//! against one `tidepool serve` with its default limits but for the per-peer ones (rate and
//! requests in progress; every client here is the same loopback peer): no answer may be a
//! 5xx; p50 and p99 are reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use anyhow::{Result, anyhow};
use tidepool_provider::client::Client;
use tidepool_provider::protocol::api::ServiceLimits;
use tidepool_test_artifacts::daemon::Daemon;

use crate::env::{Ctx, progress};
use crate::timing::{Row, Target, millis, percentile};

/// What a request ended as.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    server_errors: usize,
    other_errors: Vec<String>,
}

/// 10,000 requests (a DDO, a balance, an agreement that does not exist: a 404) from 100
/// concurrent clients.
pub async fn load(ctx: &Ctx) -> Result<Row> {
    let (requests, concurrency) = (ctx.runs(10_000, 1_000), 100);
    // The bench's clients are one peer: lift its rate limit and its bound on requests in
    // progress, keep every other limit.
    let daemon = Daemon::start(
        &ctx.native("tidepool")?,
        &[],
        &["--rate-limit", "1000000", "--rate-burst", "1000000", "--max-requests-per-peer", "0"],
    );
    let did = super::http::publish_on(ctx, &daemon, ServiceLimits::default()).await?;
    progress(&format!("{requests} requests from {concurrency} concurrent clients"));
    let per_client = requests / concurrency;
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(Arc::new(Client::connect(&daemon.url, PrivateKeySigner::random()).await?));
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for i in 0..per_client {
                    let sent = Instant::now();
                    let answer = match i % 3 {
                        0 => c.ddo(did).await.map(drop),
                        1 => c.balance(c.address()).await.map(drop),
                        _ => c.agreement(alloy_primitives::B256::repeat_byte(7)).await.map(drop),
                    };
                    tally.latencies.push(sent.elapsed());
                    match answer {
                        Ok(()) => {}
                        Err(e) if e.status() == Some(404) => {}
                        Err(e) if e.status().is_some_and(|s| s >= 500) => tally.server_errors += 1,
                        Err(e) => tally.other_errors.push(e.to_string()),
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies.extend(t.latencies);
        all.server_errors += t.server_errors;
        all.other_errors.extend(t.other_errors);
    }
    let elapsed = start.elapsed();
    if let Some(first) = all.other_errors.first() {
        return Err(anyhow!("{} requests failed, the first: {first}", all.other_errors.len()));
    }
    let sent = all.latencies.len();
    let (p50, p99) = (percentile(&mut all.latencies, 50.0), percentile(&mut all.latencies, 99.0));
    Ok(Row::absolute(
        &format!(
            "{sent} requests from {concurrency} concurrent clients (DDO, balance, unknown agreement: 200, 200, 404), \
             default limits but the per-peer rate: 5xx answers"
        ),
        format!(
            "{} 5xx; p50 {}, p99 {}; {:.0} requests/s",
            all.server_errors,
            millis(p50),
            millis(p99),
            sent as f64 / elapsed.as_secs_f64()
        ),
        all.server_errors as f64,
        Target::AtMost(0.0, " 5xx"),
        "one run",
    ))
}
