//! axum + OpenTelemetry + tracing, with tasklocal carrying the context.
//!
//! One process, two services on 127.0.0.1: `/order` (the edge) calls `/stock` (the
//! downstream) through `tasklocal::http::ClientLayer`; both run behind
//! `tasklocal::http::ServerLayer`. Spans are made by `tracing` and exported by
//! `tracing-opentelemetry` to the OpenTelemetry SDK (an in-memory exporter here; an
//! OTLP exporter in production). With `tasklocal::opentelemetry::install()`, every
//! span started in a handler — also in a task it spawns — joins the incoming trace,
//! and the outgoing call continues it. At the end the example prints the span tree.
//!
//! `cargo run -p tasklocal --example axum_opentelemetry --all-features`

use std::collections::HashMap;

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tasklocal::http::{ClientLayer, ServerLayer};
use tower::{Service, ServiceBuilder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type Body = http_body_util::Empty<bytes::Bytes>;

async fn order() -> String {
    let span = tracing::info_span!("order");
    async {
        // Children of this span from here on: spawned tasks, outgoing calls.
        tasklocal::opentelemetry::set_current(tracing::Span::current().context());
        tasklocal::mdc::insert("request_id", "r-1");
        let stock = call_stock().await;
        tasklocal::spawn(async {
            let _audit = tracing::info_span!("audit").entered();
        })
        .await
        .unwrap();
        format!("ordered, stock says: {stock}")
    }
    .instrument(span)
    .await
}

async fn stock() -> String {
    let _span = tracing::info_span!("stock").entered();
    format!(
        "ok for {}",
        tasklocal::mdc::get("request_id").unwrap_or_default()
    )
}

async fn call_stock() -> String {
    let addr = STOCK.get().expect("started");
    let mut client = ServiceBuilder::new()
        .layer(ClientLayer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let request = http::Request::get(format!("http://{addr}/stock"))
        .body(Empty::new())
        .unwrap();
    let response = client.call(request).await.expect("downstream answers");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

static STOCK: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

#[tokio::main]
async fn main() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("example")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    tasklocal::opentelemetry::install();

    let app = Router::new()
        .route("/order", get(order))
        .route("/stock", get(stock))
        .layer(ServerLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    STOCK.set(addr).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // An incoming request that is part of a trace started elsewhere.
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = http::Request::get(format!("http://{addr}/order"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    println!("{}", String::from_utf8_lossy(&body));

    // The span tree: every span in the caller's trace, each under its parent.
    let spans = exporter.get_finished_spans().unwrap();
    let names: HashMap<_, _> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s.name.to_string()))
        .collect();
    for span in &spans {
        let parent = names
            .get(&span.parent_span_id)
            .cloned()
            .unwrap_or_else(|| format!("remote {}", span.parent_span_id));
        println!(
            "trace {} span {:<6} parent {parent}",
            span.span_context.trace_id(),
            span.name
        );
        assert_eq!(
            span.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "every span joins the incoming trace"
        );
    }
    let parent_of = |name: &str| {
        let span = spans.iter().find(|s| s.name == name).expect("exported");
        names.get(&span.parent_span_id).cloned()
    };
    assert_eq!(parent_of("order"), None, "the remote caller is its parent");
    assert_eq!(parent_of("audit").as_deref(), Some("order"));
    assert_eq!(parent_of("stock").as_deref(), Some("order"));
}
