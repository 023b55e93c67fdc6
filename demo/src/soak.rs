//! `--soak <seconds>`: both services under bounded loopback load (the load generator
//! of `load.rs`, 32 orders in flight) for that long, in batches, each checked like the
//! demo's single run (`logs.rs`: every line carries its own request's id and tenant, no
//! line missing). Alongside each batch, tasklocal's own churn: tasks that hold counted
//! values, inherit them into a child task, a blocking thread and rayon, copy them on
//! write, register exit handlers, and one in ten aborted mid-flight.
//!
//! Fails (exit code 1) on any failed request, any mismatched or missing log line, any
//! counted value not dropped exactly once, or resident memory that grows after the
//! warm-up. Resident memory is sampled after every batch; the post-warm-up sample is
//! the highest of the first [`WINDOW`] after the warm-up, the end sample the highest of
//! the last [`WINDOW`] (a peak against a peak: both see the same allocator noise), and
//! the end may exceed the post-warm-up sample by at most 5 % plus [`RSS_SLACK_KIB`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tasklocal::Local;

use crate::{load, logs, tenant_of, CONCURRENCY};

/// The runtime's blocking threads in a soak: the edge's and the churn's
/// `spawn_blocking` calls, [`CONCURRENCY`] each at most.
pub const BLOCKING_THREADS: usize = 2 * CONCURRENCY;

/// Orders per batch; the log is checked and then dropped after each.
const BATCH: u32 = 400;

/// How long the post-warm-up and the end samples of resident memory are taken over.
const WINDOW: Duration = Duration::from_secs(10);

/// Resident memory allowed above 5 % growth, in KiB. The process is only about 15 MiB
/// large, and its ~70 threads (the blocking pool is capped at [`BLOCKING_THREADS`] and
/// never recycled in a soak) touch more of their stacks and malloc caches now and then
/// with no leak, a few hundred KiB in all; the warm-up (a quarter of the run, at most
/// 30 s) lets the pool reach its size. 1 MiB covers that noise and still catches a
/// leak of 2 bytes per request (a 120 s soak sends about 500,000).
const RSS_SLACK_KIB: u64 = 1024;

/// Values made and dropped by the churn.
static MADE: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXITS: AtomicU64 = AtomicU64::new(0);

/// A value whose drops are counted.
#[derive(Debug)]
struct Counted(u32);

impl Counted {
    fn new(n: u32) -> Counted {
        MADE.fetch_add(1, SeqCst);
        Counted(n)
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(self.0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, SeqCst);
    }
}

static OWN: Local<Counted> = Local::new();
static INHERITED: Local<Counted> = Local::inheritable();

/// `n` tasks of churn, [`CONCURRENCY`] at a time (so that the blocking pool stays
/// small); the number that saw a value that was not theirs.
async fn churn(n: u32) -> usize {
    let wrong: Vec<usize> = futures::stream::iter(0..n)
        .map(|i| async move {
            let (holding, held) = tokio::sync::oneshot::channel();
            let task = tasklocal::spawn(async move {
                OWN.set(Counted::new(i));
                INHERITED.set(Counted::new(i));
                tasklocal::at_exit(|| {
                    EXITS.fetch_add(1, SeqCst);
                });
                if i % 10 == 0 {
                    // Aborted mid-flight, holding its values.
                    let _ = holding.send(());
                    std::future::pending::<()>().await;
                }
                let child = tasklocal::spawn(async move { INHERITED.with(|v| v.map(|v| v.0)) });
                let blocking = tasklocal::spawn_blocking(move || {
                    let (a, b) = tasklocal::rayon::join(
                        || INHERITED.with(|v| v.map(|v| v.0)),
                        || INHERITED.with(|v| v.map(|v| v.0)),
                    );
                    // Copied on write: the copy is this thread's owner's, counted too.
                    INHERITED.with_mut(|v| v.0 += 0);
                    a == Some(i) && b == Some(i)
                });
                tokio::task::yield_now().await;
                let ok = child.await.ok().flatten() == Some(i)
                    && blocking.await.unwrap_or(false)
                    && OWN.with(|v| v.map(|v| v.0)) == Some(i);
                usize::from(!ok)
            });
            if i % 10 == 0 {
                let _ = held.await;
                task.abort();
                usize::from(!task.await.is_err_and(|e| e.is_cancelled()))
            } else {
                task.await.unwrap_or(1)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    wrong.iter().sum()
}

/// A number of /proc/self/status (`VmRSS` in KiB, `Threads`), 0 where there is none.
fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Resident memory in KiB.
fn rss_kib() -> u64 {
    status("VmRSS:")
}

/// Runs the soak against the edge at `edge` for `duration`, checking the log `log`.
pub async fn run(edge: SocketAddr, log: &logs::Captured, duration: Duration) -> ExitCode {
    let warm_up = (duration / 4).clamp(Duration::from_secs(2), Duration::from_secs(30));
    println!(
        "soak: {} s of batches of {BATCH} orders, {CONCURRENCY} in flight, and {BATCH} churn tasks ({CONCURRENCY} at a time); warm-up {} s",
        duration.as_secs(),
        warm_up.as_secs()
    );
    let started = Instant::now();
    let (mut batches, mut sent, mut answered, mut lines_checked) = (0u64, 0u64, 0u64, 0u64);
    let (mut failures, mut mismatches, mut incomplete, mut traces, mut wrong) =
        (Vec::new(), Vec::new(), 0usize, 0usize, 0usize);
    let mut unbalanced = Vec::new();
    // (time since the start, resident KiB) after each batch past the warm-up.
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut reported = Duration::ZERO;
    while started.elapsed() < duration {
        let (outcome, churned) = tokio::join!(
            load::run_with(edge, BATCH, CONCURRENCY, tenant_of, false),
            churn(BATCH)
        );
        batches += 1;
        sent += u64::from(BATCH);
        answered += outcome.request_ids.len() as u64;
        failures.extend(outcome.failures.iter().take(5).cloned());
        failures.truncate(5);
        if outcome.request_ids.len() + outcome.failures.len() != BATCH as usize {
            failures.push(format!("batch {batches}: answers missing"));
        }
        wrong += churned;
        let (made, dropped) = (MADE.load(SeqCst), DROPPED.load(SeqCst));
        if made != dropped {
            unbalanced.push(format!(
                "batch {batches}: {made} values made, {dropped} dropped"
            ));
        }

        let lines = log.take_lines();
        let check = logs::check(&lines, tenant_of);
        lines_checked += lines.len() as u64;
        mismatches.extend(check.mismatches.iter().take(5).map(|l| l.to_string()));
        mismatches.truncate(5);
        incomplete += outcome
            .request_ids
            .iter()
            .filter(|id| {
                !check.requests.get(id.as_str()).is_some_and(|r| {
                    r.edge_lines == logs::EDGE_LINES && r.downstream_lines == logs::DOWNSTREAM_LINES
                })
            })
            .count();
        traces += check.trace_mismatches;
        let mismatched_here = check.mismatches.len();

        let elapsed = started.elapsed();
        let rss = rss_kib();
        if elapsed >= warm_up {
            samples.push((elapsed, rss));
        }
        if elapsed >= reported + Duration::from_secs(10) {
            reported = elapsed;
            println!(
                "  {:>4} s  {batches:>5} batches  {answered:>8} answered  {} failed  {mismatched_here} mismatched  rss {rss} KiB  {} threads",
                elapsed.as_secs(),
                sent - answered,
                status("Threads:"),
            );
        }
    }
    let elapsed = started.elapsed();
    let (made, dropped, exits) = (MADE.load(SeqCst), DROPPED.load(SeqCst), EXITS.load(SeqCst));
    // A third of what follows the warm-up at most, so that the two windows never meet.
    let window = WINDOW.min(elapsed.saturating_sub(warm_up) / 3);
    let highest = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|&(_, rss)| rss)
            .max()
            .unwrap_or(0)
    };
    let base = highest(warm_up, warm_up + window);
    let last = highest(elapsed.saturating_sub(window), elapsed);
    let peak = highest(warm_up, elapsed);
    let limit = base + base / 20 + RSS_SLACK_KIB;
    let growth = |kib: u64| (kib as f64 / base.max(1) as f64 - 1.0) * 100.0;

    println!();
    println!("Soak summary");
    println!(
        "  requests     {sent} sent, {answered} answered, {} failed, in {:.0} s ({:.0} requests/s), {batches} batches",
        sent - answered,
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  log lines    {lines_checked} checked, {} mismatched, {incomplete} requests with lines missing, {traces} trace mismatches",
        mismatches.len()
    );
    println!(
        "  values       {made} made, {dropped} dropped, {exits} exit handlers run, {wrong} tasks saw a value not theirs"
    );
    println!(
        "  memory       {base} KiB after the warm-up, {last} KiB at the end ({:+.1} %; highest of {} s each), peak {peak} KiB ({:+.1} %); limit {limit} KiB (+5 % + {RSS_SLACK_KIB} KiB), {} samples",
        growth(last),
        window.as_secs(),
        growth(peak),
        samples.len()
    );

    let mut problems = Vec::new();
    if answered != sent || !failures.is_empty() {
        problems.push(format!("{} requests failed: {failures:?}", sent - answered));
    }
    if !mismatches.is_empty() || incomplete > 0 || traces > 0 {
        problems.push(format!(
            "log: {mismatches:?}, {incomplete} incomplete, {traces} trace mismatches"
        ));
    }
    if made != dropped || !unbalanced.is_empty() || wrong > 0 {
        problems.push(format!(
            "values: {unbalanced:?}, {wrong} tasks saw another's value"
        ));
    }
    if base == 0 || last == 0 {
        problems.push("no memory sample after the warm-up: run longer".into());
    } else if last > limit {
        problems.push(format!(
            "resident memory grew from {base} KiB to {last} KiB"
        ));
    }
    println!();
    if problems.is_empty() {
        println!("OK: no failed request, no mismatched line, every value dropped, memory flat");
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("  {problem}");
        }
        println!("FAILED");
        ExitCode::FAILURE
    }
}
