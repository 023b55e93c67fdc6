//! The two services. Neither passes a request id around by hand: the edge puts it into
//! the MDC once, and tasklocal carries it into spawned tasks, blocking threads, rayon
//! and — as W3C `baggage` — into the downstream service, whose logs carry it too.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use log::info;
use tasklocal::http::{ClientLayer, ClientService, ServerLayer, TraceContext};
use tasklocal::mdc;
use tower::{Layer, ServiceExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The (empty) bodies the demo's requests carry.
pub type Body = Empty<axum::body::Bytes>;

/// A plain HTTP client (hyper-util's).
pub type PlainClient = Client<HttpConnector, Body>;

/// An HTTP client whose every request carries the caller's context (`ClientLayer`).
pub type PropagatingClient = ClientService<PlainClient>;

/// A plain HTTP client, for the load generator: it is the outside world.
pub fn plain_client() -> PlainClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves `app` on 127.0.0.1 at an ephemeral port.
async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The trace id of the current request.
fn trace_id() -> String {
    TraceContext::current().map_or_else(String::new, |trace| trace.traceparent().trace_id())
}

// ---------------------------------------------------------------------------
// The edge: `GET /orders/{tenant}/{n}` answers with the request id it gave the order.

#[derive(Clone)]
struct Edge {
    downstream: PropagatingClient,
    downstream_addr: SocketAddr,
}

/// Starts the edge, which calls the downstream service at `downstream_addr`.
pub async fn start_edge(downstream_addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let edge = Edge {
        downstream: ClientLayer.layer(plain_client()),
        downstream_addr,
    };
    let app = Router::new()
        .route("/orders/{tenant}/{n}", get(place_order))
        .with_state(edge)
        // Each request runs in a task of its own, seeded from its headers.
        .layer(ServerLayer);
    serve(app).await
}

async fn place_order(
    State(edge): State<Edge>,
    Path((tenant, n)): Path<(String, u32)>,
) -> Result<String, StatusCode> {
    let span = tracing::info_span!("order", order = n);
    order(edge, tenant, n).instrument(span).await
}

/// Makes the current span the task's OpenTelemetry context: the spans of the tasks,
/// threads and calls it starts from here on are its children.
fn continue_span() {
    tasklocal::opentelemetry::set_current(tracing::Span::current().context());
}

async fn order(edge: Edge, tenant: String, n: u32) -> Result<String, StatusCode> {
    continue_span();
    // Once, at the edge. Everything below logs it without being told.
    let request_id = format!("req-{n:04}");
    mdc::insert("request_id", request_id.as_str());
    mdc::insert("tenant", tenant);
    info!(target: "edge", "order {n}: accepted (trace {})", trace_id());

    // An async task...
    let stock = tasklocal::spawn(async move {
        let _span = tracing::info_span!("stock").entered();
        info!(target: "edge", "order {n}: stock reserved");
    });
    // ...a blocking thread, which fans out on rayon...
    let invoice = tasklocal::spawn_blocking(move || {
        let _span = tracing::info_span!("invoice").entered();
        continue_span();
        let (net, tax) = tasklocal::rayon::join(
            || {
                let _span = tracing::info_span!("net").entered();
                info!(target: "edge", "order {n}: net price computed on rayon");
                100 + n % 50
            },
            || {
                let _span = tracing::info_span!("tax").entered();
                info!(target: "edge", "order {n}: tax computed on rayon");
                20
            },
        );
        info!(target: "edge", "order {n}: invoice of {} computed on a blocking thread", net + tax);
    });
    // ...and a call to the next service: `ClientLayer` sends the MDC as `baggage` and the
    // trace as `traceparent`.
    let uri = format!("http://{}/score/{n}", edge.downstream_addr);
    let request = axum::http::Request::get(uri)
        .body(Body::new())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let response = edge
        .downstream
        .clone()
        .oneshot(request)
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    let score = response
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .to_bytes();

    // ...and a streamed response: downstream makes (and logs) each chunk as it is sent.
    let uri = format!("http://{}/history/{n}", edge.downstream_addr);
    let request = axum::http::Request::get(uri)
        .body(Body::new())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let history = edge
        .downstream
        .oneshot(request)
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .to_bytes();
    if history.len() != HISTORY_CHUNKS {
        return Err(StatusCode::BAD_GATEWAY);
    }

    stock.await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    invoice
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    info!(target: "edge", "order {n}: done, score {}", String::from_utf8_lossy(&score));
    Ok(request_id)
}

// ---------------------------------------------------------------------------
// Downstream: `GET /score/{n}` answers with a score. It never sees the request id as
// a parameter: it comes in the `baggage` header, and `ServerLayer` puts it into the MDC.

/// The headers of the first request downstream received, to show what went over the
/// wire.
pub static FIRST_HEADERS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Starts the downstream service.
pub async fn start_downstream() -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/score/{n}", get(score))
        .route("/history/{n}", get(history))
        .layer(ServerLayer);
    serve(app).await
}

async fn score(Path(n): Path<u32>, headers: HeaderMap) -> String {
    let span = tracing::info_span!("score", order = n);
    score_order(n, headers).instrument(span).await
}

async fn score_order(n: u32, headers: HeaderMap) -> String {
    continue_span();
    FIRST_HEADERS.get_or_init(|| {
        ["baggage", "traceparent"]
            .iter()
            .filter_map(|name| {
                Some((
                    name.to_string(),
                    headers.get(*name)?.to_str().ok()?.to_owned(),
                ))
            })
            .collect()
    });
    info!(target: "downstream", "order {n}: scoring (trace {})", trace_id());
    let risk = tasklocal::spawn(async move {
        let _span = tracing::info_span!("risk").entered();
        info!(target: "downstream", "order {n}: risk checked");
        n % 7
    })
    .await
    .unwrap_or_default();
    (10 - risk).to_string()
}

/// Chunks in each `/history` response (one byte each).
pub const HISTORY_CHUNKS: usize = 3;

/// `GET /history/{n}`: a streamed body. Each chunk is made — and logged — when the
/// server sends it, after the handler returned: `ServerLayer` polls the body inside the
/// request's owner, so every chunk's line carries the request's id.
async fn history(Path(n): Path<u32>) -> axum::body::Body {
    let chunks = futures::stream::iter(0..HISTORY_CHUNKS).then(move |i| async move {
        tokio::task::yield_now().await;
        info!(target: "downstream", "order {n}: history chunk {i} streamed");
        Ok::<_, std::convert::Infallible>(vec![b'0' + i as u8])
    });
    axum::body::Body::from_stream(chunks)
}
