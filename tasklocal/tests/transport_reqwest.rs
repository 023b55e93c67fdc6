//! reqwest through `tasklocal::reqwest::ContextMiddleware` (SPEC 11): an axum server
//! with `ServerLayer` on 127.0.0.1 sees the caller's trace and MDC — from the caller's
//! task and from the tasks it spawns.
#![cfg(all(feature = "reqwest", feature = "tokio"))]

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tasklocal::http::{ServerLayer, TraceContext, TraceParent, TraceState};
use tasklocal::mdc;
use tasklocal::reqwest::ContextMiddleware;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// What the server saw: its MDC (from `baggage`), its trace id and the parent id it
/// was sent, as `key=value;...|trace|parent`.
async fn seen(headers: HeaderMap) -> String {
    let mdc: Vec<String> = mdc::to_vec()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let trace = TraceContext::current().unwrap().traceparent();
    // The header sent, if any (without one the server starts a new trace).
    let sent = headers
        .get("traceparent")
        .and_then(|value| TraceParent::parse(value.to_str().ok()?));
    let parent = match sent {
        Some(sent) if sent == trace => trace.parent_id(),
        _ => "none sent".to_owned(),
    };
    format!("{}|{}|{}", mdc.join(";"), trace.trace_id(), parent)
}

async fn start() -> SocketAddr {
    let app = Router::new().route("/", get(seen)).layer(ServerLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(ContextMiddleware)
        .build()
}

async fn call(client: &ClientWithMiddleware, addr: SocketAddr) -> (String, String, String) {
    let response = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert!(response.status().is_success());
    let text = response.text().await.unwrap();
    let mut parts = text.split('|').map(str::to_owned);
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

/// A caller in a request of its own: a known trace, an MDC.
fn in_request<F: std::future::Future + Send + 'static>(
    future: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F::Output: Send + 'static,
{
    tasklocal::spawn(async move {
        TraceContext::new(
            TraceParent::parse(&format!("00-{TRACE_ID}-{PARENT_ID}-01")).unwrap(),
            TraceState::default(),
        )
        .set_current();
        mdc::insert("request_id", "r-7");
        mdc::insert("tenant", "acme corp");
        future.await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_the_callers_trace_and_mdc() {
    let addr = start().await;
    let client = client();
    let (mdc, trace, parent) = in_request(async move { call(&client, addr).await })
        .await
        .unwrap();
    assert_eq!(mdc, "request_id=r-7;tenant=acme corp");
    assert_eq!(trace, TRACE_ID, "one trace across the call");
    assert_ne!(parent, PARENT_ID, "the call is a new span: a new parent id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_children_call_with_the_context_they_inherited() {
    let addr = start().await;
    let client = client();
    let results = in_request(async move {
        let children: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                tasklocal::spawn(async move {
                    // The child's own write travels with its calls alone.
                    mdc::insert("child", i.to_string());
                    call(&client, addr).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for child in children {
            results.push(child.await.unwrap());
        }
        // The parent's calls carry none of its children's writes.
        results.push(call(&client, addr).await);
        results
    })
    .await
    .unwrap();
    let mut parents = std::collections::HashSet::new();
    for (i, (mdc, trace, parent)) in results.iter().enumerate() {
        let expected = if i < 8 {
            format!("request_id=r-7;tenant=acme corp;child={i}")
        } else {
            "request_id=r-7;tenant=acme corp".to_string()
        };
        assert_eq!(mdc, &expected);
        assert_eq!(trace, TRACE_ID);
        assert!(
            parents.insert(parent.clone()),
            "each call its own parent id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_send_their_own_context() {
    let addr = start().await;
    let client = client();
    let callers: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tasklocal::spawn(async move {
                mdc::insert("request_id", format!("r-{i}"));
                let trace = TraceContext::new_trace();
                trace.clone().set_current();
                let (mdc, seen_trace, _) = call(&client, addr).await;
                (i, mdc, seen_trace, trace.traceparent().trace_id())
            })
        })
        .collect();
    for caller in callers {
        let (i, mdc, seen_trace, trace) = caller.await.unwrap();
        assert_eq!(mdc, format!("request_id=r-{i}"));
        assert_eq!(seen_trace, trace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_middleware_nothing_is_sent() {
    // The control: the same call through a client without the middleware carries no
    // context, so the server starts a trace of its own.
    let addr = start().await;
    let plain = ClientBuilder::new(reqwest::Client::new()).build();
    let (mdc, trace, parent) = in_request(async move { call(&plain, addr).await })
        .await
        .unwrap();
    assert_eq!(mdc, "");
    assert_ne!(trace, TRACE_ID);
    assert_eq!(parent, "none sent");
}
