//! SPEC.md section 8b, the per-request path, side by side in one run; every accessor is
//! called through a `black_box`ed function pointer on both sides:
//!
//! * `mdc::insert` (replacing one of 4 fields, `&'static str` arguments) and `mdc::get`
//!   vs a `thread_local!` `RefCell<HashMap<String, String>>` insert and get + clone;
//! * `http::extract` of `traceparent` + `tracestate` (2 members) + `baggage` (3
//!   members) vs OpenTelemetry's `TraceContextPropagator` + `BaggagePropagator`
//!   (composite) extracting the same headers;
//! * `http::inject` of that context vs OpenTelemetry's inject of the same context;
//! * `ServerLayer` over a trivial service vs the service alone: the difference is the
//!   layer's overhead per request, compared with OpenTelemetry's extract above.
//!
//! The other 8b lines are in `core.rs` (`Local::scope`, thread-owner `get`), `mdc.rs`
//! (the `log` record) and `automatic.rs`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tasklocal::http::{extract, inject, ServerLayer};
use tasklocal::{mdc, Snapshot};
use tower::{service_fn, Layer, Service};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
const BAGGAGE: &str = "request_id=4bf92f3577b34da6,tenant=acme,user=ada";

const FIELDS: [(&str, &str); 4] = [
    ("request_id", "4bf92f3577b34da6"),
    ("tenant", "acme"),
    ("user", "ada"),
    ("route", "/v1/charges"),
];

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    headers.insert("tracestate", HeaderValue::from_static(TRACESTATE));
    headers.insert("baggage", HeaderValue::from_static(BAGGAGE));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

thread_local! {
    /// What a program without tasklocal would write.
    static STD_MAP: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

fn std_map_insert() {
    STD_MAP.with(|map| {
        map.borrow_mut().insert(
            "request_id".to_string(),
            black_box("4bf92f3577b34da7").to_string(),
        )
    });
}
fn std_map_get() -> Option<String> {
    STD_MAP.with(|map| map.borrow().get("route").cloned())
}
fn mdc_insert() {
    mdc::insert("request_id", black_box("4bf92f3577b34da7"))
}
fn mdc_get() -> Option<String> {
    mdc::get("route")
}

fn mdc_lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("request/mdc");
    STD_MAP.with(|m| {
        m.borrow_mut()
            .extend(FIELDS.map(|(k, v)| (k.to_string(), v.to_string())))
    });
    Snapshot::empty().run(|| {
        mdc::extend(FIELDS);
        let f: fn() = black_box(std_map_insert);
        g.bench_function("insert_replace/std_thread_local_hashmap", |b| b.iter(f));
        let f: fn() = black_box(mdc_insert);
        g.bench_function("insert_replace/tasklocal_mdc", |b| b.iter(f));
        let f: fn() -> Option<String> = black_box(std_map_get);
        g.bench_function("get/std_thread_local_hashmap", |b| b.iter(f));
        let f: fn() -> Option<String> = black_box(mdc_get);
        g.bench_function("get/tasklocal_mdc", |b| b.iter(f));
    });
    g.finish();
}

/// OpenTelemetry's carrier for `http::HeaderMap`, as `opentelemetry-http` writes it.
struct HeaderExtractor<'a>(&'a HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}
struct HeaderInjector<'a>(&'a mut HeaderMap);
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

fn propagator() -> &'static TextMapCompositePropagator {
    static P: OnceLock<TextMapCompositePropagator> = OnceLock::new();
    P.get_or_init(|| {
        TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ])
    })
}
fn typical() -> &'static HeaderMap {
    static H: OnceLock<HeaderMap> = OnceLock::new();
    H.get_or_init(headers)
}
fn otel_context() -> &'static opentelemetry::Context {
    static C: OnceLock<opentelemetry::Context> = OnceLock::new();
    C.get_or_init(otel_extract)
}

fn tasklocal_extract() -> Snapshot {
    extract(typical())
}
fn otel_extract() -> opentelemetry::Context {
    propagator().extract(&HeaderExtractor(typical()))
}
fn tasklocal_inject() -> HeaderMap {
    let mut out = HeaderMap::new();
    inject(&mut out);
    out
}
fn otel_inject() -> HeaderMap {
    let mut out = HeaderMap::new();
    propagator().inject_context(otel_context(), &mut HeaderInjector(&mut out));
    out
}

fn propagation(c: &mut Criterion) {
    let mut g = c.benchmark_group("request/propagation");
    let f: fn() -> Snapshot = black_box(tasklocal_extract);
    g.bench_function("extract/tasklocal", |b| b.iter(f));
    let f: fn() -> opentelemetry::Context = black_box(otel_extract);
    g.bench_function("extract/opentelemetry", |b| b.iter(f));
    extract(typical()).run(|| {
        let f: fn() -> HeaderMap = black_box(tasklocal_inject);
        g.bench_function("inject/tasklocal", |b| b.iter(f));
    });
    let f: fn() -> HeaderMap = black_box(otel_inject);
    g.bench_function("inject/opentelemetry", |b| b.iter(f));
    g.finish();
}

/// The trivial service: answers at once, reading nothing.
fn trivial(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}
fn request() -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = headers();
    request
}

fn server_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("request/server_layer");
    let mut plain = service_fn(trivial);
    let mut layered = ServerLayer.layer(service_fn(trivial));
    g.bench_function("trivial_service", |b| {
        b.iter_batched(
            request,
            |r| futures::executor::block_on(plain.call(r)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("trivial_service_with_server_layer", |b| {
        b.iter_batched(
            request,
            |r| futures::executor::block_on(layered.call(r)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = mdc_lines, propagation, server_layer
}
criterion_main!(benches);
