//! The OpenTelemetry bridge (SPEC section 9): `Context::current()` is the owner's,
//! across awaits and workers, inherited by children, restored after every poll;
//! with `http`, extract/inject carry real OpenTelemetry spans (SDK, in-memory
//! exporter).
#![cfg(all(
    feature = "opentelemetry",
    feature = "http",
    feature = "tokio",
    feature = "rayon"
))]

mod support;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tasklocal::http::{extract, inject, TraceContext, TraceParent};

use support::tag::{tag, Tag};

/// The 2-worker runtime every test here runs on.
fn runtime() -> tokio::runtime::Runtime {
    support::runtime::multi_thread(2)
}

#[test]
fn every_task_has_its_own_context_across_awaits_and_workers() {
    tasklocal::opentelemetry::install();
    let rt = runtime();
    let wrong = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..300u64 {
            let mine = wrong.clone();
            handles.push(tasklocal::spawn(async move {
                tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(i)));
                for _ in 0..40 {
                    tokio::task::yield_now().await;
                    if tag() != Some(i) {
                        mine.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            let plain = wrong.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                    if tag().is_some() {
                        plain.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
}

#[test]
fn children_inherit_and_never_write_back() {
    tasklocal::opentelemetry::install();
    let rt = runtime();
    rt.block_on(tasklocal::task(async {
        tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(1)));
        let spawned = tasklocal::spawn(async {
            let seen = tag();
            tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(2)));
            (seen, tag())
        });
        assert_eq!(spawned.await.unwrap(), (Some(1), Some(2)));
        assert_eq!(tag(), Some(1), "a child's write never flows back");
        assert_eq!(tasklocal::spawn_blocking(tag).await.unwrap(), Some(1));
        assert_eq!(tasklocal::thread::spawn(tag).join().unwrap(), Some(1));
        assert_eq!(tasklocal::Snapshot::capture().run(tag), Some(1));
        let (a, b) = tasklocal::rayon::join(tag, tag);
        assert_eq!((a, b), (Some(1), Some(1)));
    }));
    assert_eq!(tag(), None);
}

#[test]
fn attach_nests_inside_a_poll_and_is_undone() {
    tasklocal::opentelemetry::install();
    let seen = futures::executor::block_on(tasklocal::Task::isolated(async {
        tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(1)));
        let inner = {
            let _guard = Context::current_with_value(Tag(2)).attach();
            tag()
        };
        (inner, tag())
    }));
    assert_eq!(seen, (Some(2), Some(1)));
}

#[test]
fn a_panicking_poll_restores_the_threads_context() {
    tasklocal::opentelemetry::install();
    let _thread = Context::new().with_value(Tag(100)).attach();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(tasklocal::Task::isolated(async {
            tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(5)));
            assert_eq!(tag(), Some(5));
            panic!("the poll fails");
        }))
    }));
    assert!(result.is_err());
    assert_eq!(tag(), Some(100));
    // An owner with no context sees an empty one, not the thread's.
    let inside = futures::executor::block_on(tasklocal::Task::isolated(async { tag() }));
    assert_eq!(inside, None);
}

#[test]
fn set_current_on_a_thread_owner_shows_at_once_and_replaces() {
    tasklocal::opentelemetry::install();
    std::thread::spawn(|| {
        for i in 0..1000 {
            tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(i)));
            assert_eq!(tag(), Some(i));
        }
        let child = tasklocal::thread::spawn(tag).join().unwrap();
        assert_eq!(child, Some(999));
    })
    .join()
    .unwrap();
}

#[test]
fn a_plain_tokio_task_cannot_set_a_context() {
    tasklocal::opentelemetry::install();
    let rt = runtime();
    let result = rt.block_on(async {
        tokio::spawn(async { tasklocal::opentelemetry::try_set_current(Context::new()) })
            .await
            .unwrap()
    });
    assert!(result.is_err());
}

fn tracer() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

#[test]
fn spans_started_in_an_extracted_request_are_children_of_the_remote_parent() {
    tasklocal::opentelemetry::install();
    let (provider, exporter) = tracer();
    let tracer = provider.tracer("test");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    headers.insert("tracestate", "rojo=1".parse().unwrap());
    // Not futures' executor: the SDK's simple exporter runs one of its own.
    let rt = runtime();
    let outgoing = rt.block_on(extract(&headers).task(async {
        let span = tracer.start("handler");
        let cx = Context::current_with_span(span);
        tasklocal::opentelemetry::set_current(cx);
        // A child task's span joins the same trace.
        tasklocal::task(async {
            let _ = tracer.start("child");
        })
        .await;
        let mut outgoing = http::HeaderMap::new();
        inject(&mut outgoing);
        Context::current().span().end();
        outgoing
    }));
    let spans = exporter.get_finished_spans().unwrap();
    let handler = spans.iter().find(|s| s.name == "handler").unwrap();
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    assert_eq!(
        handler.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(handler.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(child.parent_span_id, handler.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        handler.span_context.trace_id()
    );
    // The outgoing request continues the handler's span.
    let parent = TraceParent::parse(outgoing["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        parent.parent_id(),
        handler.span_context.span_id().to_string()
    );
    assert_eq!(outgoing["tracestate"], "rojo=1");
}

#[test]
fn without_an_active_span_inject_writes_a_new_parent_id() {
    tasklocal::opentelemetry::install();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let outgoing = extract(&headers).run(|| {
        let mut outgoing = http::HeaderMap::new();
        inject(&mut outgoing);
        outgoing
    });
    let parent = TraceParent::parse(outgoing["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parent.parent_id(), "00f067aa0ba902b7");
}

#[test]
fn conversions_round_trip() {
    let parent =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
    let trace = TraceContext::new(parent, tasklocal::http::TraceState::parse("rojo=1,congo=2"));
    let span = opentelemetry::trace::SpanContext::from(&trace);
    let back = TraceContext::try_from(&span).unwrap();
    assert_eq!(back, trace);

    let ours = tasklocal::http::Baggage::parse("a=1,b=x%20y");
    let theirs = opentelemetry::baggage::Baggage::from(&ours);
    let back = tasklocal::http::Baggage::from(&theirs);
    assert_eq!(back.get("a"), Some("1"));
    assert_eq!(back.get("b"), Some("x y"));
    assert_eq!(back.len(), 2);
    let _ = (KeyValue::new("k", "v"), SpanKind::Internal);
}

/// An owner that another bridge's call runs is entered with no bridge (they would
/// recurse): its `set_current` stores its context but must not replace the context
/// attached for the owner the call runs for, which is still current around it.
#[test]
fn set_current_in_an_owner_run_by_a_bridge_leaves_the_outer_context_attached() {
    use tasklocal::Snapshot;

    fn cx(tag: u64) -> Context {
        Context::new().with_value(Tag(tag))
    }

    tasklocal::opentelemetry::install();
    let seen = futures::executor::block_on(tasklocal::Task::isolated(async {
        tasklocal::opentelemetry::set_current(cx(1));
        // Entering the owner below calls the OpenTelemetry bridge (attaching its
        // context: none), then a bridge whose own owner sets 3.
        support::bridged::run_an_owner_at_the_next_switch(|| {
            tasklocal::opentelemetry::set_current(cx(3))
        });
        let inner = Snapshot::empty().run(|| {
            let entered = tag();
            tasklocal::opentelemetry::set_current(cx(2));
            (entered, tag())
        });
        (inner, tag())
    }));
    // The owner run by the bridge kept its context to itself.
    assert_eq!(seen, ((None, Some(2)), Some(1)));
}

#[test]
fn reset_and_unload_show_at_once() {
    // Both drop the owner's context with its other values: `Context::current()` is
    // empty then and there, not at the next switch.
    tasklocal::opentelemetry::install();
    std::thread::spawn(|| {
        for end in [tasklocal::reset as fn(), tasklocal::unload] {
            futures::executor::block_on(tasklocal::Task::isolated(async move {
                tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(1)));
                assert_eq!(tag(), Some(1));
                end();
                assert!(tasklocal::opentelemetry::owner_context().is_none());
                assert_eq!(tag(), None);
            }));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn children_inherit_the_owners_context_not_one_attached_on_top() {
    // As the module docs say: an attached context is the attaching code's; a child
    // gets it through `with_context` (or `set_current` before the child is made).
    use opentelemetry::context::FutureExt;
    tasklocal::opentelemetry::install();
    let seen = futures::executor::block_on(tasklocal::Task::isolated(async {
        tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(1)));
        let (plain, carried) = {
            let attached = Context::current_with_value(Tag(2));
            let _guard = attached.clone().attach();
            (
                tasklocal::task(async { tag() }),
                tasklocal::task(async { tag() }.with_context(attached)),
            )
        };
        (plain.await, carried.await)
    }));
    assert_eq!(seen, (Some(1), Some(2)));
}
