//! `ServerLayer` streams with the OpenTelemetry bridge installed (SPEC 9 and 10): the
//! response body is polled through the bridge guard, so while each chunk is made
//! `opentelemetry::Context::current()` is the request's — the caller's remote span —
//! and it is gone again between polls. Its own binary: installing the bridge is global.
#![cfg(all(feature = "http", feature = "tokio", feature = "opentelemetry"))]

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tasklocal::http::ServerLayer;

/// The trace id of the current OpenTelemetry span, and the request id of the MDC.
fn seen() -> String {
    let trace = Context::map_current(|cx| cx.span().span_context().trace_id().to_string());
    let id = tasklocal::mdc::get("request_id").unwrap_or_default();
    format!("{id}|{trace};")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_see_the_requests_opentelemetry_context() {
    tasklocal::opentelemetry::install();
    async fn stream() -> Body {
        let chunks = futures::stream::iter(0..4).then(|_| async {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(seen())
        });
        Body::from_stream(chunks)
    }
    let app = Router::new().route("/", get(stream)).layer(ServerLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let requests = (0..16u32).map(|i| {
        let client = client.clone();
        let trace = format!("{:032x}", 0xabc0_0000_u128 + u128::from(i));
        async move {
            let request = http::Request::get(format!("http://{addr}/"))
                .header("baggage", format!("request_id=r-{i}"))
                .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                .body(Empty::new())
                .unwrap();
            let response = client.request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (format!("r-{i}|{trace};").repeat(4), body)
        }
    });
    for (expected, body) in futures::future::join_all(requests).await {
        assert_eq!(body, expected);
    }
    // Between polls, the worker threads' context is not any request's.
    let outside = tokio::spawn(async { Context::map_current(|cx| cx.has_active_span()) });
    assert!(!outside.await.unwrap());
}
