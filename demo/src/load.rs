//! The load generator: many concurrent orders to the edge, over loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;

use crate::services::{plain_client, Body, PlainClient};

/// What the load generator saw.
pub struct Outcome {
    /// The request ids the edge answered with.
    pub request_ids: Vec<String>,
    /// Requests that failed, with why.
    pub failures: Vec<String>,
    /// Every answered request's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Outcome {
    /// The latency below which `percent` % of the requests were answered (nearest rank).
    pub fn percentile(&self, percent: usize) -> Duration {
        let rank = (self.latencies.len() * percent).div_ceil(100);
        self.latencies
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Sends orders 1..=`requests` to the edge, `concurrency` at a time, and prints a
/// line every 100 answers.
pub async fn run(
    edge: SocketAddr,
    requests: u32,
    concurrency: usize,
    tenant_of: fn(u32) -> &'static str,
) -> Outcome {
    run_with(edge, requests, concurrency, tenant_of, true).await
}

/// [`run`], printing progress lines only if `progress` (the soak runs it in batches).
pub async fn run_with(
    edge: SocketAddr,
    requests: u32,
    concurrency: usize,
    tenant_of: fn(u32) -> &'static str,
    progress: bool,
) -> Outcome {
    let client = plain_client();
    let answered = AtomicU32::new(0);
    let results: Vec<(u32, Result<String, String>, Duration)> = futures::stream::iter(1..=requests)
        .map(|n| {
            let (client, answered) = (client.clone(), &answered);
            async move {
                let started = Instant::now();
                let uri = format!("http://{edge}/orders/{}/{n}", tenant_of(n));
                let result = order(&client, &uri).await;
                let latency = started.elapsed();
                let count = answered.fetch_add(1, Ordering::Relaxed) + 1;
                if progress && (count % 100 == 0 || count == requests) {
                    println!("  {count:>5} / {requests} answered");
                }
                (n, result, latency)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut outcome = Outcome {
        request_ids: Vec::new(),
        failures: Vec::new(),
        latencies: Vec::new(),
    };
    for (n, result, latency) in results {
        match result {
            Ok(id) if id == format!("req-{n:04}") => {
                outcome.request_ids.push(id);
                outcome.latencies.push(latency);
            }
            Ok(id) => outcome
                .failures
                .push(format!("order {n}: answered with {id}")),
            Err(why) => outcome.failures.push(format!("order {n}: {why}")),
        }
    }
    outcome.latencies.sort_unstable();
    outcome
}

/// One order: the request id the edge answers with.
async fn order(client: &PlainClient, uri: &str) -> Result<String, String> {
    let request = Request::get(uri)
        .body(Body::new())
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
