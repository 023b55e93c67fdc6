//! `ServerLayer` and the response body's lifetime (SPEC 10), with bodies polled by hand:
//! the request's owner outlives the handler, every poll of the body and the body's own
//! drop run in it, and it ends — exit handlers (FILO), then drops, once — when the
//! body ends, is dropped unfinished (also inside another owner), or is dropped after a
//! poll panicked, and when the handler fails or its response future is dropped. With
//! the bridges (SPEC 9), the handler and every body poll show the request's
//! OpenTelemetry trace and MDC, and the poller's come back after each frame. Real
//! servers streaming to real clients: `http_streaming.rs`.
//!
//! Bridges are process-wide: every test installs OpenTelemetry's and log-mdc's first,
//! so each runs the same way whatever order the tests run in. Tests that read
//! thread-locals run on a std thread of their own, which nobody else touches.
#![cfg(all(feature = "http", feature = "opentelemetry", feature = "log-mdc"))]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures::executor::block_on;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use support::pairs;
use tasklocal::http::{ResponseBody, ServerLayer};
use tasklocal::{mdc, Local};
use tower::{service_fn, Layer, ServiceExt};

fn install_bridges() {
    tasklocal::opentelemetry::install();
    tasklocal::log_mdc::install();
}

/// Runs `f` on a fresh std thread (its own thread-locals: owner, otel stack, log-mdc).
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

/// A response body of `left` data frames that calls `on_poll` at every poll (the
/// last, which ends it, included) with the number of frames still to come.
struct Frames<F> {
    left: usize,
    on_poll: F,
}

impl<F: FnMut(usize) + Unpin> Body for Frames<F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let left = self.left;
        (self.on_poll)(left);
        if left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }
}

/// The next frame of `body`, polled to completion on this thread.
fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
    block_on(body.frame())
}

// ---------------------------------------------------------------------------------
// the request's owner: a log of what runs in it

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: impl Into<String>) {
    log.lock().unwrap().push(entry.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// `what rid=…`: what ran, with the `rid` in the MDC where it ran.
fn logged(log: &Log, what: &str) {
    push(log, format!("{what} rid={:?}", mdc::get("rid")));
}

/// An entry of a log made inside the request (`rid` from its baggage).
fn in_request(what: &str) -> String {
    format!("{what} rid=Some(\"r-1\")")
}

/// Runs `f` with a new log on a fresh std thread; returns the log.
fn logging_on_thread(f: impl FnOnce(&Log) + Send + 'static) -> Log {
    let log: Log = Arc::default();
    let request_log = log.clone();
    on_thread(move || f(&request_log));
    log
}

/// The request's whole log once its owner ended after `polls` polls of the body: the
/// handler returned, then every poll, the body's drop and the exit handlers (FILO)
/// ran inside the request, then its value was dropped.
fn assert_ended_after_polls(log: &Log, polls: usize) {
    let log = entries(log);
    let mut expected = vec!["handler returns".to_string()];
    expected.extend((0..polls).map(|_| in_request("poll")));
    expected.extend(["drop body", "exit 2", "exit 1"].map(in_request));
    assert_eq!(log.len(), expected.len() + 1, "{log:?}");
    assert_eq!(log[..expected.len()], expected, "{log:?}");
    // Values are dropped after the handlers; the MDC (a value too) may be gone then.
    assert!(log[expected.len()].starts_with("drop value"), "{log:?}");
}

/// A value whose drop is logged.
struct Logged(Log, &'static str);

impl Drop for Logged {
    fn drop(&mut self) {
        logged(&self.0, &format!("drop {}", self.1));
    }
}

static REQUEST_VALUE: Local<Logged> = Local::new();

fn request() -> http::Request<()> {
    http::Request::builder()
        .header("baggage", "rid=r-1")
        .body(())
        .unwrap()
}

/// Serves `request()` through `ServerLayer` with a handler that sets a value and two
/// exit handlers, answering with a body of `frames` frames that logs every poll and
/// its drop, and panics when `panic_at` frames are left.
fn serve(
    log: &Log,
    frames: usize,
    panic_at: Option<usize>,
) -> ResponseBody<Frames<impl FnMut(usize) + Unpin>> {
    let log = log.clone();
    let service = ServerLayer.layer(service_fn(move |_request: http::Request<()>| {
        let log = log.clone();
        async move {
            REQUEST_VALUE.set(Logged(log.clone(), "value"));
            let (first, second) = (log.clone(), log.clone());
            tasklocal::at_exit(move || logged(&first, "exit 1"));
            tasklocal::at_exit(move || logged(&second, "exit 2"));
            push(&log, "handler returns");
            // The closure holds the body's drop log: it drops with the body.
            let body_drop = Logged(log.clone(), "body");
            let on_poll = move |left| {
                logged(&body_drop.0, "poll");
                if panic_at == Some(left) {
                    panic!("body fails");
                }
            };
            Ok::<_, Infallible>(http::Response::new(Frames {
                left: frames,
                on_poll,
            }))
        }
    }));
    block_on(service.oneshot(request())).unwrap().into_body()
}

/// The body is polled to its end: every poll and the body's own drop see the request,
/// then exit handlers (FILO), then the value drop; nothing before the end, and nothing
/// again when the ended body is polled once more. The poller's MDC is its own
/// between frames.
#[test]
fn the_owner_ends_when_the_body_ends_in_order() {
    install_bridges();
    let log = logging_on_thread(|log| {
        mdc::insert("rid", "outer");
        let mut body = serve(log, 2, None);
        assert_eq!(entries(log), ["handler returns"]);
        assert!(next_frame(&mut body).is_some());
        assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
        assert_eq!(entries(log).len(), 2, "{:?}", entries(log));
        assert!(next_frame(&mut body).is_some());
        assert!(next_frame(&mut body).is_none());
        assert!(
            next_frame(&mut body).is_none(),
            "polled again after the end"
        );
        drop(body);
        assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
    });
    assert_ended_after_polls(&log, 3);
}

/// The body dropped unfinished inside another owner: the body's drop and the exit
/// handlers see the request; the other owner's values are untouched afterwards.
#[test]
fn a_body_dropped_unfinished_inside_another_owner_ends_the_request() {
    install_bridges();
    let log = logging_on_thread(|log| {
        let mut body = serve(log, 5, None);
        block_on(tasklocal::Task::isolated(async move {
            mdc::insert("rid", "other");
            let _ = body.frame().await;
            assert_eq!(mdc::get("rid").as_deref(), Some("other"));
            drop(body);
            assert_eq!(mdc::get("rid").as_deref(), Some("other"));
        }));
    });
    assert_ended_after_polls(&log, 1);
}

/// A body whose poll panics: the poller's owner is current again where the panic is
/// caught; dropping the body afterwards ends the request's owner exactly once.
#[test]
fn a_body_dropped_after_its_poll_panicked_ends_the_request_once() {
    install_bridges();
    let log = logging_on_thread(|log| {
        mdc::insert("rid", "outer");
        let mut body = serve(log, 3, Some(2));
        assert!(next_frame(&mut body).is_some());
        let unwound = panic::catch_unwind(AssertUnwindSafe(|| next_frame(&mut body)));
        assert_eq!(support::message(unwound.unwrap_err()), "body fails");
        assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
        drop(body);
        assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
    });
    let log = entries(&log);
    let count = |prefix: &str| log.iter().filter(|l| l.starts_with(prefix)).count();
    let counts = (count("exit"), count("drop value"), count("drop body"));
    assert_eq!(counts, (2, 1, 1), "{log:?}");
    let first_exit = log.iter().position(|l| l.starts_with("exit")).unwrap();
    assert_eq!(log[first_exit], in_request("exit 2"), "{log:?}");
}

/// The handler fails: no body, so the owner ends when the error is returned (once).
/// The response future dropped before it completes ends the owner too.
#[test]
fn the_owner_ends_on_an_error_and_on_a_dropped_response_future() {
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    install_bridges();
    let service = ServerLayer.layer(service_fn(|request: http::Request<()>| async move {
        tasklocal::at_exit(|| {
            ENDED.fetch_add(1, SeqCst);
        });
        if request.uri().path() == "/pending" {
            std::future::pending::<()>().await;
        }
        Err::<http::Response<String>, _>("failed")
    }));
    let failed = block_on(service.oneshot(http::Request::new(())));
    assert!(failed.is_err());
    assert_eq!(ENDED.load(SeqCst), 1);
    let pending = http::Request::get("/pending").body(()).unwrap();
    let mut response = Box::pin(service.oneshot(pending));
    let waker = futures::task::noop_waker();
    let poll = response.as_mut().poll(&mut TaskContext::from_waker(&waker));
    assert!(poll.is_pending());
    assert_eq!(ENDED.load(SeqCst), 1);
    drop(response);
    assert_eq!(ENDED.load(SeqCst), 2);
}

// ---------------------------------------------------------------------------------
// with the bridges: what the body's polls show

/// With the OpenTelemetry bridge, the body is polled with the request's trace as the
/// current context, and the poller's context comes back after each frame.
#[test]
fn body_polls_show_the_request_trace_in_otel() {
    static SEEN: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Tag(u64);
    let poller_tag = || Context::map_current(|cx| cx.get::<Tag>().map(|t| t.0));
    install_bridges();
    on_thread(move || {
        let _thread = Context::new().with_value(Tag(100)).attach();
        let service = ServerLayer.layer(service_fn(|_request: http::Request<()>| async {
            let on_poll = |_| {
                let trace_id = Context::map_current(|cx| {
                    let span = cx.span();
                    let context = span.span_context();
                    context.is_valid().then(|| context.trace_id().to_string())
                });
                SEEN.lock().unwrap().push(trace_id);
            };
            Ok::<_, Infallible>(http::Response::new(Frames { left: 2, on_poll }))
        }));
        let request = http::Request::builder()
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let response = block_on(service.oneshot(request)).unwrap();
        assert_eq!(poller_tag(), Some(100));
        let mut body = response.into_body();
        while next_frame(&mut body).is_some() {
            assert_eq!(poller_tag(), Some(100));
        }
        assert_eq!(poller_tag(), Some(100));
    });
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.as_deref() == Some("4bf92f3577b34da6a3ce929d0e0e4736")),
        "{seen:?}"
    );
}

/// With the log-mdc bridge, the handler and every body poll show the request's
/// baggage (and the handler's writes) in log-mdc; `into_inner` ends the owner, and the
/// poller's map is intact throughout.
#[test]
fn handler_and_body_polls_show_the_request_mdc_in_log_mdc() {
    static SEEN: Mutex<Vec<Vec<(String, String)>>> = Mutex::new(Vec::new());
    fn log_mdc_all() -> Vec<(String, String)> {
        let mut all = Vec::new();
        log_mdc::iter(|k, v| all.push((k.to_owned(), v.to_owned())));
        all.sort();
        all
    }
    install_bridges();
    on_thread(|| {
        mdc::insert("who", "thread");
        let service = ServerLayer.layer(service_fn(|_request: http::Request<()>| async {
            SEEN.lock().unwrap().push(log_mdc_all());
            mdc::insert("step", "handler");
            let on_poll = |_| SEEN.lock().unwrap().push(log_mdc_all());
            Ok::<_, Infallible>(http::Response::new(Frames { left: 1, on_poll }))
        }));
        let response = block_on(service.oneshot(request())).unwrap();
        assert_eq!(log_mdc_all(), pairs(&[("who", "thread")]));
        let mut body = response.into_body();
        assert!(next_frame(&mut body).is_some());
        assert_eq!(log_mdc_all(), pairs(&[("who", "thread")]));
        assert!(body.into_inner().is_some());
        assert_eq!(log_mdc_all(), pairs(&[("who", "thread")]));
    });
    assert_eq!(
        *SEEN.lock().unwrap(),
        [
            pairs(&[("rid", "r-1")]),
            pairs(&[("rid", "r-1"), ("step", "handler")]),
        ]
    );
}
