//! SPEC.md 8b's thread-owner line with tasklocal's default features (no `tokio`):
//! `Local::get` on a plain thread vs std `thread_local!` `Cell::get`, and, for scale,
//! the same read inside a `Task`.
//!
//! Run on its own, so that no other package of the workspace turns `tokio` on:
//!
//! ```text
//! cargo bench -p tasklocal-benches-lean
//! ```
//!
//! Every accessor is called through a `black_box`ed function pointer, as in
//! `benches/benches/core.rs`. With the `tokio` feature (`get_u64/tasklocal_on_thread`
//! in `core`) every read of a thread's storage first asks tokio whether a plain tokio
//! task runs (SPEC.md 1's isolation rule); without it there is nothing to ask.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tasklocal::Local;

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
}

static LOCAL: Local<u64> = Local::new();

fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
fn local_get() -> Option<u64> {
    LOCAL.get()
}

/// Runs `f` inside a `Task`, polled once by hand (no executor: `futures` would bring
/// nothing else here).
fn in_task(f: impl FnOnce()) {
    let task = pin!(tasklocal::task(async { f() }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(task.poll(&mut cx), Poll::Ready(())));
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_u64_without_tokio");
    let f: fn() -> u64 = black_box(std_get);
    g.bench_function("std_thread_local_cell", |b| b.iter(f));
    LOCAL.set(1);
    let f: fn() -> Option<u64> = black_box(local_get);
    assert_eq!(f(), Some(1));
    g.bench_function("tasklocal_on_thread", |b| b.iter(f));
    in_task(|| {
        LOCAL.set(1);
        g.bench_function("tasklocal_in_task", |b| b.iter(f));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = get
}
criterion_main!(benches);
