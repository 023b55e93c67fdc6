//! Bridges in automatic mode (`--cfg tokio_unstable`): OpenTelemetry's context and the
//! log-mdc map follow every plain `tokio::spawn` task of a runtime with
//! `tasklocal::tokio::install`, inherited at spawn, restored after every poll.
#![cfg(all(
    tokio_unstable,
    feature = "tokio",
    feature = "opentelemetry",
    feature = "log-mdc"
))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry::Context;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Tag(u64);

fn tag() -> Option<u64> {
    Context::map_current(|cx| cx.get::<Tag>().map(|t| t.0))
}

#[test]
fn plain_tokio_tasks_each_see_their_own_context_and_mdc() {
    tasklocal::opentelemetry::install();
    tasklocal::log_mdc::install();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    tasklocal::tokio::install(&mut builder);
    let rt = builder.build().unwrap();
    let wrong = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..200u64 {
            let wrong = wrong.clone();
            handles.push(tokio::spawn(async move {
                tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(i)));
                tasklocal::mdc::insert("request_id", i.to_string());
                // A child inherits both at spawn.
                let child = tokio::spawn(async {
                    (tag(), log_mdc::get("request_id", |v| v.map(str::to_owned)))
                });
                let (child_tag, child_id) = child.await.unwrap();
                if child_tag != Some(i) || child_id != Some(i.to_string()) {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                    let id = log_mdc::get("request_id", |v| v.map(str::to_owned));
                    if tag() != Some(i) || id != Some(i.to_string()) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    // The runtime's threads are back to their own (empty) state between polls.
    let after = rt.block_on(async { tokio::spawn(async { tag() }).await.unwrap() });
    assert_eq!(after, None);
}
