//! reqwest → axum: a request id and a trace set in the caller arrive in the server's
//! context, through `tasklocal::reqwest::ContextMiddleware` and `http::ServerLayer`.
//!
//! `cargo run -p tasklocal --example reqwest_client --features reqwest,tokio`
//! (runs a server on 127.0.0.1 and calls it; no other network).

use axum::routing::get;
use reqwest_middleware::ClientBuilder;
use tasklocal::http::{ServerLayer, TraceContext};
use tasklocal::mdc;
use tasklocal::reqwest::ContextMiddleware;

/// The server's handler: it never receives the request id as a parameter.
async fn hello() -> String {
    let request_id = mdc::get("request_id").unwrap_or_default();
    let trace = TraceContext::current().map(|t| t.traceparent().trace_id());
    println!(
        "server: handling {request_id} in trace {}",
        trace.unwrap_or_default()
    );
    format!("hello, {request_id}")
}

#[tokio::main]
async fn main() {
    // A server whose requests run in the context their headers carry.
    let app = axum::Router::new()
        .route("/", get(hello))
        .layer(ServerLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A reqwest client that sends the caller's context with every request.
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ContextMiddleware)
        .build();

    // The caller: a task of its own with a request id and a trace.
    let answer = tasklocal::spawn(async move {
        mdc::insert("request_id", "req-42");
        let trace = TraceContext::new_trace();
        trace.clone().set_current();
        println!(
            "client: calling in trace {}",
            trace.traceparent().trace_id()
        );
        // A child task inherits the context, and so do its calls.
        let child = tasklocal::spawn(async move {
            let response = client.get(url).send().await.expect("the server answers");
            response.text().await.expect("a text answer")
        });
        child.await.unwrap()
    })
    .await
    .unwrap();

    println!("client: the server answered {answer:?}");
    assert_eq!(answer, "hello, req-42");
}
