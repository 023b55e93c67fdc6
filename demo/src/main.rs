//! The tasklocal demo: two services and a load generator in one process, over
//! 127.0.0.1.
//!
//! * **edge** (`services.rs`) takes an order, puts a request id and the tenant into the
//!   MDC, and does its work in a spawned task, on a blocking thread and on rayon, and
//!   by calling downstream through `tasklocal::http::ClientLayer`;
//! * **downstream** receives the context as W3C `baggage`/`traceparent` through
//!   `tasklocal::http::ServerLayer` and logs with the same request id and trace — also
//!   from each chunk of a streamed response, made after its handler returned;
//! * the **load generator** (`load.rs`) sends a few hundred concurrent orders; then every
//!   log line of both services is checked against the order it talks about (`logs.rs`),
//!   and every request's spans — exported with the OpenTelemetry SDK through
//!   `tracing-opentelemetry` — must form one trace with the right parents across both
//!   services, a spawned task, a blocking thread and rayon (`spans.rs`).
//!
//! `cargo run -p demo [-- <requests>]`; the exit code is 1 if any line carries another
//! request's id, or none. `cargo run -p demo --release -- --soak <seconds>` runs the
//! same services under load for that long and checks memory too (`soak.rs`).

mod load;
mod logs;
mod services;
mod soak;
mod spans;

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Orders sent by default, and how many are in flight at once.
const REQUESTS: u32 = 400;
const CONCURRENCY: usize = 32;

/// The tenant each order is sent for.
fn tenant_of(order: u32) -> &'static str {
    ["acme", "globex", "initech", "umbrella"][order as usize % 4]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let soak = (args.first().map(String::as_str) == Some("--soak"))
        .then(|| args.get(1).and_then(|s| s.parse().ok()).unwrap_or(120u64));
    let requests = args
        .first()
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(REQUESTS)
        .clamp(1, 10_000);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if soak.is_some() {
        // A blocking pool of fixed size whose threads are never recycled: the soak
        // measures the services' memory, not the pool's growth and thread churn.
        runtime
            .max_blocking_threads(soak::BLOCKING_THREADS)
            .thread_keep_alive(Duration::from_secs(24 * 3600));
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(soak, requests)),
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(soak: Option<u64>, requests: u32) -> ExitCode {
    let log = logs::install();
    // The soak keeps no spans: an in-memory exporter would only grow.
    let spans = soak.is_none().then(spans::install);

    let started = async {
        let downstream = services::start_downstream().await?;
        let edge = services::start_edge(downstream).await?;
        std::io::Result::Ok((edge, downstream))
    };
    let (edge, downstream) = match started.await {
        Ok(addrs) => addrs,
        Err(err) => {
            eprintln!("cannot listen on 127.0.0.1: {err}");
            return ExitCode::from(2);
        }
    };
    println!("tasklocal demo: edge on {edge}, downstream on {downstream}");
    if let Some(seconds) = soak {
        return soak::run(edge, &log, Duration::from_secs(seconds)).await;
    }
    println!("sending {requests} orders to the edge, {CONCURRENCY} at a time");

    let clock = Instant::now();
    let outcome = load::run(edge, requests, CONCURRENCY, tenant_of).await;
    let elapsed = clock.elapsed();

    // Every answer is in, and each service logs before it answers: the log is complete.
    let lines = log.lines();
    let check = logs::check(&lines, tenant_of);
    let spans = spans.map(|spans| spans.check());
    report(requests, elapsed, &outcome, &lines, &check, spans.as_ref())
}

/// Prints the summary; the exit code says whether every check passed.
fn report(
    requests: u32,
    elapsed: Duration,
    outcome: &load::Outcome,
    lines: &[String],
    check: &logs::Check<'_>,
    spans: Option<&spans::Check>,
) -> ExitCode {
    let answered = outcome.request_ids.len();
    let distinct: std::collections::HashSet<&String> = outcome.request_ids.iter().collect();
    let complete = |id: &String| {
        check.requests.get(id.as_str()).is_some_and(|r| {
            r.edge_lines == logs::EDGE_LINES && r.downstream_lines == logs::DOWNSTREAM_LINES
        })
    };
    let incomplete: Vec<&String> = outcome
        .request_ids
        .iter()
        .filter(|id| !complete(id))
        .collect();
    let in_edge = check.requests.values().filter(|r| r.edge_lines > 0).count();
    let in_downstream = check
        .requests
        .values()
        .filter(|r| r.downstream_lines > 0)
        .count();
    let edge_lines: usize = check.requests.values().map(|r| r.edge_lines).sum();
    let downstream_lines: usize = check.requests.values().map(|r| r.downstream_lines).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    println!();
    println!("Summary");
    println!(
        "  requests     {requests} sent, {answered} answered, {} failed, in {:.2} s ({:.0} requests/s)",
        outcome.failures.len(),
        elapsed.as_secs_f64(),
        f64::from(requests) / elapsed.as_secs_f64()
    );
    println!(
        "  request ids  {} distinct: {in_edge} seen in the edge's log, {in_downstream} in downstream's",
        distinct.len()
    );
    println!(
        "  log lines    {} checked: {edge_lines} edge ({} per request), {downstream_lines} downstream ({} per request)",
        edge_lines + downstream_lines + check.mismatches.len(),
        logs::EDGE_LINES,
        logs::DOWNSTREAM_LINES,
    );
    println!(
        "  mismatches   {} (lines without their own request's id and tenant), {} requests with lines missing",
        check.mismatches.len(),
        incomplete.len()
    );
    println!(
        "  traces       {} requests with the same trace id in both services, {} without",
        check.requests.len() - check.trace_mismatches,
        check.trace_mismatches
    );
    if let Some(spans) = spans {
        println!(
            "  spans        {} requests form one trace of {} spans with the right parents (edge, spawned task, blocking thread, rayon, downstream), {} do not",
            spans.complete,
            spans::TREE.len(),
            spans.broken.len()
        );
    }
    println!(
        "  latency      p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        ms(outcome.percentile(50)),
        ms(outcome.percentile(90)),
        ms(outcome.percentile(99)),
        ms(outcome.percentile(100)),
    );

    if let Some(headers) = services::FIRST_HEADERS.get() {
        println!();
        println!("On the wire, edge -> downstream (first request)");
        for (name, value) in headers {
            println!("  {name}: {value}");
        }
    }

    // One request's lines, from both services.
    if let Some(id) = outcome.request_ids.first() {
        let field = format!(" request_id={id} ");
        println!();
        println!("Sample: every log line of {id}");
        for line in lines.iter().filter(|l| format!("{l} ").contains(&field)) {
            println!("  {line}");
        }
    }

    let failed = !outcome.failures.is_empty()
        || !check.mismatches.is_empty()
        || !incomplete.is_empty()
        || check.trace_mismatches > 0
        || answered != requests as usize
        || distinct.len() != answered
        || spans.is_some_and(|s| s.complete != requests as usize || !s.broken.is_empty());
    println!();
    if failed {
        for failure in outcome.failures.iter().take(5) {
            println!("  failed: {failure}");
        }
        for line in check.mismatches.iter().take(5) {
            println!("  mismatch: {line}");
        }
        for id in incomplete.iter().take(5) {
            println!("  lines missing for {id}");
        }
        for trace in spans.iter().flat_map(|s| s.broken.iter()).take(5) {
            println!("  spans: {trace}");
        }
        println!("FAILED");
        ExitCode::FAILURE
    } else {
        println!("OK: every line of both services carries its own request's id and tenant");
        ExitCode::SUCCESS
    }
}
