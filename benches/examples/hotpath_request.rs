//! The per-request paths of SPEC.md section 8b, `N` calls each through a `black_box`ed
//! function pointer, for counting instructions exactly with callgrind:
//!
//! ```text
//! cargo build --profile bench -p tasklocal-benches --example hotpath_request
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/hotpath_request
//! callgrind_annotate --inclusive=yes cg.out | grep 'hotpath_request::'
//! ```
//!
//! Each path is its own `#[inline(never)]` function: its inclusive count divided by `N`
//! is the instructions of one call. Run without valgrind, the program prints the heap
//! allocations of one call of each (a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use log::Log;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tasklocal::http::{extract, inject, ServerLayer, ServerService};
use tasklocal::{mdc, Local, Snapshot};
use tower::{service_fn, Layer, Service};

/// Counts allocations (not frees), so that the output can say how many a call makes.
struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 100_000;

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
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
    static STD_MAP: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}
tokio::task_local! {
    static TOKIO_LOCAL: u64;
}
static LOCAL: Local<u64> = Local::new();

#[inline(never)]
fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
#[inline(never)]
fn thread_owner_get() -> Option<u64> {
    LOCAL.get()
}
#[inline(never)]
fn tokio_sync_scope() {
    TOKIO_LOCAL.sync_scope(black_box(2), || ())
}
#[inline(never)]
fn local_scope() {
    LOCAL.scope(black_box(2), || ())
}
#[inline(never)]
fn hashmap_insert() {
    STD_MAP.with(|map| {
        map.borrow_mut().insert(
            "request_id".to_string(),
            black_box("4bf92f3577b34da7").to_string(),
        )
    });
}
#[inline(never)]
fn hashmap_get() -> Option<String> {
    STD_MAP.with(|map| map.borrow().get("route").cloned())
}
#[inline(never)]
fn mdc_insert() {
    mdc::insert("request_id", black_box("4bf92f3577b34da7"))
}
#[inline(never)]
fn mdc_get() -> Option<String> {
    mdc::get("route")
}

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

#[inline(never)]
fn tasklocal_extract() -> Snapshot {
    extract(typical())
}
#[inline(never)]
fn otel_extract() -> opentelemetry::Context {
    propagator().extract(&HeaderExtractor(typical()))
}
#[inline(never)]
fn tasklocal_inject() -> HeaderMap {
    let mut out = HeaderMap::new();
    inject(&mut out);
    out
}
#[inline(never)]
fn otel_inject() -> HeaderMap {
    let mut out = HeaderMap::new();
    propagator().inject_context(otel_context(), &mut HeaderInjector(&mut out));
    out
}

type Trivial = fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>;
fn trivial(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}
#[inline(never)]
fn service_plain(s: &mut tower::util::ServiceFn<Trivial>, r: Request<()>) {
    black_box(futures::executor::block_on(s.call(r)).is_ok());
}
#[inline(never)]
fn service_layered(s: &mut ServerService<tower::util::ServiceFn<Trivial>>, r: Request<()>) {
    black_box(futures::executor::block_on(s.call(r)).is_ok());
}

fn logger() -> env_logger::Logger {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .format_timestamp(None)
        .target(env_logger::Target::Pipe(Box::new(io::sink())))
        .build()
}
#[inline(never)]
fn log_inline_kv(logger: &env_logger::Logger) {
    let fields: &[(&str, &str)] = &FIELDS;
    logger.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .target("app::billing")
            .args(format_args!("charged card {}", black_box(42)))
            .key_values(&fields)
            .build(),
    );
}
#[inline(never)]
fn log_mdc_logger(logger: &tasklocal::log::MdcLogger<env_logger::Logger>) {
    logger.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .target("app::billing")
            .args(format_args!("charged card {}", black_box(42)))
            .build(),
    );
}

/// Calls `f` `N` times; returns the allocations of one call (rounded).
fn calls<R>(name: &str, f: fn() -> R) {
    let f = black_box(f);
    black_box(f());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        black_box(f());
    }
    report(name, before);
}
fn report(name: &str, before: u64) {
    let per_call = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!("{name}: {per_call:.2} allocations per call");
}

fn main() {
    calls("std_get", std_get);
    LOCAL.set(1);
    calls("thread_owner_get", thread_owner_get);
    calls("tokio_sync_scope", tokio_sync_scope);
    futures::executor::block_on(tasklocal::task(async {
        LOCAL.set(1);
        calls("local_scope", local_scope);
    }));
    STD_MAP.with(|m| {
        m.borrow_mut()
            .extend(FIELDS.map(|(k, v)| (k.to_string(), v.to_string())))
    });
    calls("hashmap_insert", hashmap_insert);
    calls("hashmap_get", hashmap_get);
    Snapshot::empty().run(|| {
        mdc::extend(FIELDS);
        calls("mdc_insert", mdc_insert);
        calls("mdc_get", mdc_get);
    });
    calls("otel_extract", otel_extract);
    calls("tasklocal_extract", tasklocal_extract);
    calls("otel_inject", otel_inject);
    extract(typical()).run(|| calls("tasklocal_inject", tasklocal_inject));

    let mut plain = service_fn(trivial as Trivial);
    let mut layered = ServerLayer.layer(service_fn(trivial as Trivial));
    let requests = || {
        (0..N)
            .map(|_| {
                let mut r = Request::new(());
                *r.headers_mut() = headers();
                r
            })
            .collect::<Vec<_>>()
    };
    let batch = requests();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for r in batch {
        service_plain(&mut plain, r);
    }
    report("service_plain", before);
    let batch = requests();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for r in batch {
        service_layered(&mut layered, r);
    }
    report("service_layered", before);

    let plain = logger();
    let wrapped = tasklocal::log::MdcLogger::new(logger());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        log_inline_kv(&plain);
    }
    report("log_inline_kv", before);
    Snapshot::empty().run(|| {
        mdc::extend(FIELDS);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..N {
            log_mdc_logger(&wrapped);
        }
        report("log_mdc_logger", before);
    });
}
