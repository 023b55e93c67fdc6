//! The tower layers and reqwest at their edges (SPEC 7, 10, 11): `ServerLayer`'s owner
//! ends once whether the handler fails, its future is dropped unfinished, or its body
//! (streamed, empty, with trailers) ends — and the body sees what the handler wrote;
//! an edge → A → B chain of hyper servers on 127.0.0.1 carries the MDC and the trace
//! through `ClientLayer` from a child task; reqwest's `ContextMiddleware` replaces or
//! removes old context headers on a request.
#![cfg(all(feature = "http", feature = "tokio"))]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use support::loopback::{body_text, client, listen};
use tasklocal::http::{ClientLayer, ServerLayer, TraceContext, TraceParent};
use tasklocal::mdc;
use tower::{service_fn, Layer, Service, ServiceExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A request with `baggage` and the test's trace.
fn request(baggage: &str) -> http::Request<()> {
    http::Request::builder()
        .header("baggage", baggage)
        .header("traceparent", TRACEPARENT)
        .body(())
        .unwrap()
}

/// Registers an exit handler that counts the end of the current owner in `ends`.
fn count_the_end(ends: &'static AtomicUsize) {
    tasklocal::at_exit(move || {
        ends.fetch_add(1, Ordering::SeqCst);
    });
}

// ServerLayer.

#[tokio::test]
async fn a_failing_handler_ends_the_owner_when_its_future_completes() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        count_the_end(&ENDS);
        Err::<http::Response<Full<Bytes>>, _>("boom")
    }));
    let result = service.oneshot(request("a=1")).await;
    assert_eq!(result.err(), Some("boom"));
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_future_dropped_unfinished_ends_the_owner_once() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let mut service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        count_the_end(&ENDS);
        futures::future::pending::<()>().await;
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
    }));
    let mut future = Box::pin(service.ready().await.unwrap().call(request("a=1")));
    // One poll: the handler registers its exit handler, then waits forever.
    assert!(futures::poll!(&mut future).is_pending());
    assert_eq!(ENDS.load(Ordering::SeqCst), 0);
    drop(future);
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_streamed_body_sees_what_the_handler_wrote_and_ends_the_owner_once() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        mdc::insert("step", "handler");
        mdc::insert("request_id", "replaced");
        count_the_end(&ENDS);
        let chunks = futures::stream::iter(0..3).map(|i| {
            let chunk = format!("{i}:{:?}|", mdc::to_vec());
            Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
        });
        Ok::<_, Infallible>(http::Response::new(StreamBody::new(chunks)))
    }));
    let response = service
        .oneshot(request("request_id=r-7,tenant=t"))
        .await
        .unwrap();
    assert_eq!(ENDS.load(Ordering::SeqCst), 0);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let mdc = r#"[("request_id", "replaced"), ("tenant", "t"), ("step", "handler")]"#;
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        format!("0:{mdc}|1:{mdc}|2:{mdc}|")
    );
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
    // Nothing leaked into the test's own owner.
    assert!(mdc::to_vec().is_empty());
}

#[tokio::test]
async fn an_empty_body_still_ends_the_owner_once() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        count_the_end(&ENDS);
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    }));
    let body = service.oneshot(request("a=1")).await.unwrap().into_body();
    assert!(body.is_end_stream());
    assert!(body.collect().await.unwrap().to_bytes().is_empty());
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_size_hint_end_of_stream_and_trailers_pass_through() {
    let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
    }));
    let body = service.oneshot(request("a=1")).await.unwrap().into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");

    // Trailers made in the owner, from its MDC.
    let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
        let mut trailers = HeaderMap::new();
        let value = HeaderValue::from_str(&mdc::get("a").unwrap()).unwrap();
        trailers.insert("x-request", value);
        let frames = [
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        Ok::<_, Infallible>(http::Response::new(StreamBody::new(futures::stream::iter(
            frames,
        ))))
    }));
    let response = service.oneshot(request("a=1")).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-request"], "1");
}

// A chain of hyper servers.

/// Serves `service` with hyper's HTTP/1 server on a free loopback port, one task per
/// connection, until the runtime shuts down.
async fn serve_hyper<S, B>(service: S) -> SocketAddr
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Service B: answers `mdc|traceparent received|current traceparent`.
async fn service_b(
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let received = request
        .headers()
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let current = TraceContext::current().unwrap().traceparent().to_string();
    let text = format!("{:?}|{received}|{current}", mdc::to_vec());
    Ok(http::Response::new(Full::new(Bytes::from(text))))
}

/// Service A: adds to the MDC what it received, calls B from a child task through
/// `ClientLayer` (with old context headers set, which are replaced), and answers
/// `its own traceparent#B's answer`.
async fn service_a(
    b: SocketAddr,
    _: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    mdc::insert("hop", "a");
    let own = TraceContext::current().unwrap().traceparent().to_string();
    let call_b = tasklocal::spawn(async move {
        let client = tower::ServiceBuilder::new()
            .layer(ClientLayer)
            .service(client());
        let mut request = http::Request::builder()
            .uri(format!("http://{b}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("baggage", HeaderValue::from_static("stale=1"));
        headers.insert("tracestate", HeaderValue::from_static("stale=1"));
        body_text(client.oneshot(request).await.unwrap()).await
    });
    let text = call_b.await.unwrap();
    Ok(http::Response::new(Full::new(Bytes::from(format!(
        "{own}#{text}"
    )))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_to_a_to_b_chain_over_hyper_carries_the_mdc_and_the_trace() {
    let b = serve_hyper(ServerLayer.layer(service_fn(service_b))).await;
    let a = serve_hyper(ServerLayer.layer(service_fn(move |r| service_a(b, r)))).await;
    let request = http::Request::builder()
        .uri(format!("http://{a}/"))
        .header("baggage", "request_id=r-7, tenant=acme%20corp;prop")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let text = body_text(client().request(request).await.unwrap()).await;
    let (a_own, from_b) = text.split_once('#').unwrap();
    let parts: Vec<_> = from_b.split('|').collect();
    assert_eq!(a_own, TRACEPARENT, "A continues the edge's trace");
    assert_eq!(
        parts[0],
        r#"[("request_id", "r-7"), ("tenant", "acme corp"), ("hop", "a")]"#
    );
    let sent = TraceParent::parse(parts[1]).unwrap();
    assert_eq!(sent.trace_id(), TRACE_ID);
    assert_ne!(sent.parent_id(), PARENT_ID);
    assert!(sent.sampled());
    assert_eq!(parts[2], parts[1], "B's context is what it received");
}

// reqwest.

#[cfg(feature = "reqwest")]
mod reqwest_middleware_edges {
    use axum::routing::get;
    use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
    use tasklocal::http::{TraceContext, TraceParent, TraceState};
    use tasklocal::mdc;
    use tasklocal::reqwest::ContextMiddleware;

    use super::{support, TRACEPARENT, TRACE_ID};

    /// Answers with the lines of the three context headers it received, each name's
    /// lines joined by `+`: `baggage|traceparent|tracestate`.
    async fn echo(headers: axum::http::HeaderMap) -> String {
        let lines = |name: &str| {
            let lines: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            lines.join("+")
        };
        format!(
            "{}|{}|{}",
            lines("baggage"),
            lines("traceparent"),
            lines("tracestate")
        )
    }

    /// What `echo` received from a request with the header `lines`, sent from an empty
    /// owner of its own (`Task::isolated`) in which `setup` ran first:
    /// `[baggage, traceparent, tracestate]`.
    async fn received(
        client: &ClientWithMiddleware,
        url: &str,
        lines: &[(&'static str, &'static str)],
        setup: fn(),
    ) -> [String; 3] {
        let mut request = client.get(url);
        for (name, value) in lines {
            request = request.header(*name, *value);
        }
        let text = tasklocal::Task::isolated(async move {
            setup();
            request.send().await.unwrap().text().await.unwrap()
        })
        .await;
        let parts: Vec<String> = text.split('|').map(str::to_owned).collect();
        parts.try_into().unwrap()
    }

    #[tokio::test]
    async fn old_context_headers_on_a_request_are_replaced_or_removed() {
        let app = axum::Router::new().route("/", get(echo));
        let url = format!("http://{}/", support::loopback::serve(app).await);
        let client = ClientBuilder::new(reqwest::Client::new())
            .with(ContextMiddleware)
            .build();
        let old = [
            ("baggage", "stale=1"),
            ("tracestate", "stale=1"),
            ("traceparent", TRACEPARENT),
        ];
        // An empty context: the old baggage and tracestate go, a new trace is sent.
        let [baggage, traceparent, tracestate] = received(&client, &url, &old, || {}).await;
        assert_eq!(baggage, "");
        assert_eq!(tracestate, "");
        assert_ne!(
            TraceParent::parse(&traceparent).unwrap().trace_id(),
            TRACE_ID
        );
        // A context: each replaced by one line.
        let [baggage, traceparent, tracestate] = received(&client, &url, &old[..2], || {
            mdc::insert("request_id", "r 7");
            let traceparent = TraceParent::parse(TRACEPARENT).unwrap();
            TraceContext::new(traceparent, TraceState::parse("v=1")).set_current();
        })
        .await;
        assert_eq!(baggage, "request_id=r%207");
        assert_eq!(tracestate, "v=1");
        assert_eq!(
            TraceParent::parse(&traceparent).unwrap().trace_id(),
            TRACE_ID
        );
    }
}
