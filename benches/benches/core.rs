//! The accessors of SPEC.md section 8, each side by side with std `thread_local!` and
//! tokio `task_local!` in the same run. Every accessor is called through a
//! `black_box`ed function pointer so that the optimizer cannot hoist it out of the loop.

use std::cell::Cell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tasklocal::Local;

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
}

tokio::task_local! {
    static TOKIO_LOCAL: u64;
}

static LOCAL: Local<u64> = Local::new();
static INHERITABLE: Local<u64> = Local::inheritable();

fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
fn std_set() {
    STD_CELL.with(|c| c.set(black_box(2)))
}
fn tokio_get() -> u64 {
    TOKIO_LOCAL.get()
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
fn dynamic_get() -> Option<u64> {
    tasklocal::get(&"key")
}
fn id() -> tasklocal::TaskId {
    tasklocal::id()
}

/// Runs `f` inside a `Task` (the storage of a task is current).
fn in_task(f: impl FnOnce()) {
    futures::executor::block_on(tasklocal::task(async move { f() }));
}

fn accessors(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_u64");
    let f: fn() -> u64 = black_box(std_get);
    g.bench_function("std_thread_local_cell", |b| b.iter(f));
    let f: fn() -> u64 = black_box(tokio_get);
    TOKIO_LOCAL.sync_scope(1, || g.bench_function("tokio_task_local", |b| b.iter(f)));
    in_task(|| {
        LOCAL.set(1);
        INHERITABLE.set(1);
        let f: fn() -> Option<u64> = black_box(local_get);
        g.bench_function("tasklocal_local_in_task", |b| b.iter(f));
        let f: fn() -> Option<u64> = black_box(inheritable_get);
        g.bench_function("tasklocal_inheritable_in_task", |b| b.iter(f));
        tasklocal::set("key", 1u64);
        let f: fn() -> Option<u64> = black_box(dynamic_get);
        g.bench_function("tasklocal_dynamic_in_task", |b| b.iter(f));
        let f: fn() -> tasklocal::TaskId = black_box(id);
        g.bench_function("tasklocal_id_in_task", |b| b.iter(f));
    });
    g.finish();

    let mut g = c.benchmark_group("set_u64");
    let f: fn() = black_box(std_set);
    g.bench_function("std_thread_local_cell", |b| b.iter(f));
    in_task(|| {
        LOCAL.set(1);
        INHERITABLE.set(1);
        let f: fn() = black_box(local_set);
        g.bench_function("tasklocal_local_in_task", |b| b.iter(f));
        let f: fn() = black_box(inheritable_set);
        g.bench_function("tasklocal_inheritable_in_task", |b| b.iter(f));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = accessors
}
criterion_main!(benches);
