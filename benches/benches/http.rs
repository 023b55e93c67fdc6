//! Crossing process boundaries: what `tasklocal::http` costs per request.
//!
//! * the codecs alone: `baggage`, `traceparent`, `tracestate` parsed and written;
//! * `extract` (headers → the request's `Snapshot`) and `inject` (the current context →
//!   headers) for typical headers: 4 baggage members, a `traceparent`, a 2-member
//!   `tracestate`;
//! * the per-request overhead of the layers: the same axum router called with
//!   `tower::ServiceExt::oneshot` (no network) with and without `ServerLayer`, and the
//!   same tower client stand-in with and without `ClientLayer`, side by side.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;

use axum::body::Body;
use axum::routing::get;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request};
use tasklocal::http::{
    extract, inject, Baggage, ClientLayer, ServerLayer, TraceContext, TraceParent, TraceState,
};
use tasklocal::{mdc, Snapshot};
use tower::{service_fn, Layer, Service, ServiceExt};

const BAGGAGE: &str = "request_id=4bf92f3577b34da6,tenant=acme,user=ada,route=%2Fv1%2Fcharges";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn typical_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("baggage", HeaderValue::from_static(BAGGAGE));
    headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    headers.insert("tracestate", HeaderValue::from_static(TRACESTATE));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("http/codec");
    g.bench_function("baggage parse (4 members)", |b| {
        b.iter(|| Baggage::parse(black_box(BAGGAGE)))
    });
    let baggage = Baggage::parse(BAGGAGE);
    g.bench_function("baggage write (4 members)", |b| {
        b.iter(|| black_box(&baggage).to_string())
    });
    g.bench_function("traceparent parse", |b| {
        b.iter(|| TraceParent::parse(black_box(TRACEPARENT)))
    });
    let parent = TraceParent::parse(TRACEPARENT).unwrap();
    g.bench_function("traceparent write (new parent id)", |b| {
        b.iter(|| black_box(&parent).with_new_parent_id().to_string())
    });
    g.bench_function("tracestate parse (2 members)", |b| {
        b.iter(|| TraceState::parse(black_box(TRACESTATE)))
    });
    g.finish();
}

fn inject_extract(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    let headers = typical_headers();
    g.bench_function("extract (typical headers)", |b| {
        b.iter(|| extract(black_box(&headers)))
    });
    g.bench_function("extract (no context: new trace)", |b| {
        let empty = HeaderMap::new();
        b.iter(|| extract(black_box(&empty)))
    });
    // Inside a request seeded from the typical headers, as a handler would call it.
    extract(&headers).run(|| {
        let mut out = HeaderMap::with_capacity(8);
        g.bench_function("inject (typical context)", |b| {
            b.iter(|| {
                out.clear();
                inject(black_box(&mut out));
            })
        });
    });
    g.bench_function("extract + inject round trip", |b| {
        let mut out = HeaderMap::with_capacity(8);
        b.iter(|| {
            extract(black_box(&headers)).run(|| {
                out.clear();
                inject(&mut out);
            })
        })
    });
    g.finish();
}

/// The handler of both routers: reads the MDC (it sees nothing without the layer).
async fn handler() -> &'static str {
    if mdc::get("request_id").is_some() {
        "with context"
    } else {
        "without"
    }
}

fn request() -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.headers_mut() = typical_headers();
    request
}

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("http/layer");
    let router = axum::Router::new().route("/", get(handler));
    let layered = router.clone().layer(ServerLayer);
    // The request is built outside the timed part on both sides (`iter_batched`).
    g.bench_function("axum router, no layer", |b| {
        b.iter_batched(
            request,
            |request| futures::executor::block_on(router.clone().oneshot(request)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("axum router + ServerLayer", |b| {
        b.iter_batched(
            request,
            |request| futures::executor::block_on(layered.clone().oneshot(request)),
            criterion::BatchSize::SmallInput,
        )
    });

    // A tower client that answers at once (and is always ready, so `call` needs no
    // `poll_ready` first): what remains is the layer's cost.
    fn echo(request: Request<()>) -> Ready<Result<Request<()>, Infallible>> {
        ready(Ok(request))
    }
    let mut client = service_fn(echo);
    let mut propagating = ClientLayer.layer(service_fn(echo));
    // Called inside a request with the typical context, as a handler would.
    extract(&typical_headers()).run(|| {
        assert!(TraceContext::current().is_some());
        g.bench_function("tower client, no layer", |b| {
            b.iter(|| futures::executor::block_on(client.call(Request::new(()))))
        });
        g.bench_function("tower client + ClientLayer", |b| {
            b.iter(|| futures::executor::block_on(propagating.call(Request::new(()))))
        });
    });
    g.finish();
}

/// The snapshot a request starts from, built by hand the way `extract` does, to show
/// where the time goes: the MDC needs an owner to be written (`Snapshot::run`).
fn snapshot_parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("http/extract parts");
    g.bench_function("Snapshot::run + 4 mdc inserts + capture", |b| {
        b.iter(|| {
            Snapshot::empty().run(|| {
                mdc::extend(black_box([
                    ("request_id", "4bf92f3577b34da6"),
                    ("tenant", "acme"),
                    ("user", "ada"),
                    ("route", "/v1/charges"),
                ]));
                Snapshot::capture()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, codecs, inject_extract, layers, snapshot_parts);
criterion_main!(benches);
