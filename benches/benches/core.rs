//! The accessors of SPEC.md section 8, each side by side with what a user would pick
//! instead, in the same run: std `thread_local!`, tokio `task_local!`, the
//! `thread_local` crate, a `thread_local!` map of `Box<dyn Any>`, and OpenTelemetry's
//! `Context`.
//!
//! Every accessor is called through a `black_box`ed function pointer, so that the
//! optimizer can hoist nothing out of the loop, on both sides of every ratio. "In a
//! Task" means the criterion loop runs inside
//! `futures::executor::block_on(tasklocal::task(async { .. }))`; "automatic" means it
//! runs inside a plain `tokio::spawn`ed task of a runtime built with
//! `tasklocal::tokio::install` (only with `RUSTFLAGS="--cfg tokio_unstable"`; skipped
//! otherwise).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tasklocal::Local;
use thread_local::ThreadLocal;

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
    /// What a program without tasklocal writes for go-tls-style dynamic keys.
    static STD_MAP: RefCell<HashMap<&'static str, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

tokio::task_local! {
    static TOKIO_LOCAL: u64;
}

static TL_CRATE: ThreadLocal<Cell<u64>> = ThreadLocal::new();

static LOCAL: Local<u64> = Local::new();
static INHERITABLE: Local<u64> = Local::inheritable();

/// One OpenTelemetry context value (a newtype, as OpenTelemetry recommends).
#[derive(Clone, Copy)]
struct OtelValue(u64);

fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
fn std_set() {
    STD_CELL.with(|c| c.set(black_box(2)))
}
fn tokio_get() -> u64 {
    TOKIO_LOCAL.get()
}
fn tokio_set() {
    TOKIO_LOCAL.sync_scope(black_box(2), || ())
}
fn tl_crate_get() -> Option<u64> {
    TL_CRATE.get().map(Cell::get)
}
fn otel_get() -> Option<u64> {
    opentelemetry::Context::map_current(|cx| cx.get::<OtelValue>().map(|v| v.0))
}
fn otel_attach() {
    let _guard = opentelemetry::Context::current_with_value(OtelValue(black_box(2))).attach();
}
fn local_get() -> Option<u64> {
    LOCAL.get()
}
fn inheritable_get() -> Option<u64> {
    INHERITABLE.get()
}
fn local_set() {
    LOCAL.set(black_box(2))
}
fn inheritable_set() {
    INHERITABLE.set(black_box(2))
}
fn local_scope() {
    LOCAL.scope(black_box(2), || ())
}
fn dynamic_get() -> Option<u64> {
    tasklocal::get(&"key")
}
fn dynamic_set() {
    tasklocal::set("key", black_box(2u64))
}
fn std_map_get() -> Option<u64> {
    STD_MAP.with(|m| m.borrow().get("key")?.downcast_ref::<u64>().copied())
}
fn std_map_set() {
    STD_MAP.with(|m| {
        let mut m = m.borrow_mut();
        match m.get_mut("key").and_then(|v| v.downcast_mut::<u64>()) {
            Some(v) => *v = black_box(2),
            None => {
                m.insert("key", Box::new(black_box(2u64)));
            }
        }
    })
}
fn id() -> tasklocal::TaskId {
    tasklocal::id()
}
fn tokio_try_id() -> Option<tokio::task::Id> {
    tokio::task::try_id()
}

/// Runs `f` inside a `Task` (the storage of a task is current).
fn in_task(f: impl FnOnce()) {
    futures::executor::block_on(tasklocal::task(async move { f() }));
}

/// What `Bencher::iter` does, as a `'static` loop that can run inside a spawned task.
fn timed<R>(f: fn() -> R, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed()
}

/// A current-thread runtime; with `--cfg tokio_unstable` optionally in automatic mode.
fn runtime(automatic: bool) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    #[cfg(tokio_unstable)]
    if automatic {
        tasklocal::tokio::install(&mut builder);
    }
    #[cfg(not(tokio_unstable))]
    assert!(!automatic, "automatic mode needs --cfg tokio_unstable");
    builder.build().unwrap()
}

/// The time of `iters` calls of `f`, in a plain `tokio::spawn`ed task of `rt`, after
/// `setup` ran in that task.
fn in_tokio_task<R: 'static>(
    rt: &tokio::runtime::Runtime,
    setup: fn(),
    f: fn() -> R,
    iters: u64,
) -> Duration {
    rt.block_on(async move {
        tokio::spawn(async move {
            setup();
            timed(black_box(f), iters)
        })
        .await
        .unwrap()
    })
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_u64");
    let f: fn() -> u64 = black_box(std_get);
    g.bench_function("std_thread_local_cell", |b| b.iter(f));
    let f: fn() -> u64 = black_box(tokio_get);
    TOKIO_LOCAL.sync_scope(1, || g.bench_function("tokio_task_local", |b| b.iter(f)));
    TL_CRATE.get_or(|| Cell::new(1));
    let f: fn() -> Option<u64> = black_box(tl_crate_get);
    g.bench_function("thread_local_crate", |b| b.iter(f));
    let _otel = opentelemetry::Context::current_with_value(OtelValue(1)).attach();
    let f: fn() -> Option<u64> = black_box(otel_get);
    g.bench_function("opentelemetry_context", |b| b.iter(f));
    drop(_otel);
    in_task(|| {
        LOCAL.set(1);
        INHERITABLE.set(1);
        let f: fn() -> Option<u64> = black_box(local_get);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
        let f: fn() -> Option<u64> = black_box(inheritable_get);
        g.bench_function("tasklocal_inheritable_in_task", |b| b.iter(f));
    });
    // On a plain thread: the thread's own storage.
    LOCAL.set(1);
    let f: fn() -> Option<u64> = black_box(local_get);
    g.bench_function("tasklocal_on_thread", |b| b.iter(f));
    // What the isolation rule asks first on every thread-owner access (with the
    // `tokio` feature): whether a plain tokio task runs here.
    let f: fn() -> Option<tokio::task::Id> = black_box(tokio_try_id);
    g.bench_function("tokio_try_id_on_thread", |b| b.iter(f));
    if cfg!(tokio_unstable) {
        let rt = runtime(true);
        g.bench_function("tasklocal_automatic", |b| {
            b.iter_custom(|iters| in_tokio_task(&rt, || LOCAL.set(1), local_get, iters))
        });
    }
    g.finish();
}

fn set(c: &mut Criterion) {
    let mut g = c.benchmark_group("set_u64");
    let f: fn() = black_box(std_set);
    g.bench_function("std_thread_local_cell", |b| b.iter(f));
    let f: fn() = black_box(tokio_set);
    g.bench_function("tokio_sync_scope", |b| b.iter(f));
    let f: fn() = black_box(otel_attach);
    g.bench_function("opentelemetry_attach", |b| b.iter(f));
    in_task(|| {
        LOCAL.set(1);
        INHERITABLE.set(1);
        let f: fn() = black_box(local_set);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
        let f: fn() = black_box(inheritable_set);
        g.bench_function("tasklocal_inheritable_in_task", |b| b.iter(f));
        let f: fn() = black_box(local_scope);
        g.bench_function("tasklocal_scope_in_task", |b| b.iter(f));
    });
    LOCAL.set(1);
    let f: fn() = black_box(local_set);
    g.bench_function("tasklocal_on_thread", |b| b.iter(f));
    if cfg!(tokio_unstable) {
        let rt = runtime(true);
        g.bench_function("tasklocal_automatic", |b| {
            b.iter_custom(|iters| in_tokio_task(&rt, || LOCAL.set(1), local_set, iters))
        });
    }
    g.finish();
}

fn dynamic(c: &mut Criterion) {
    let mut g = c.benchmark_group("dynamic_get_u64");
    std_map_set();
    let f: fn() -> Option<u64> = black_box(std_map_get);
    g.bench_function("std_thread_local_hashmap_any", |b| b.iter(f));
    in_task(|| {
        tasklocal::set("key", 1u64);
        let f: fn() -> Option<u64> = black_box(dynamic_get);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
    });
    g.finish();

    let mut g = c.benchmark_group("dynamic_set_u64");
    let f: fn() = black_box(std_map_set);
    g.bench_function("std_thread_local_hashmap_any", |b| b.iter(f));
    in_task(|| {
        tasklocal::set("key", 1u64);
        let f: fn() = black_box(dynamic_set);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
    });
    g.finish();
}

fn ids(c: &mut Criterion) {
    let mut g = c.benchmark_group("id");
    // tokio's id exists only inside a tokio task: measured in one.
    let rt = runtime(false);
    g.bench_function("tokio_try_id_in_tokio_task", |b| {
        b.iter_custom(|iters| in_tokio_task(&rt, || (), tokio_try_id, iters))
    });
    in_task(|| {
        tasklocal::id();
        let f: fn() -> tasklocal::TaskId = black_box(id);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = get, set, dynamic, ids
}
criterion_main!(benches);
