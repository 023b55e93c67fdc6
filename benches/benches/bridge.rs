//! SPEC.md 9: a poll of a future whose owner holds an OpenTelemetry `Context`, with
//! tasklocal's OpenTelemetry bridge installed, against OpenTelemetry's own
//! `FutureExt::with_context` on the same future. Both futures yield `iters` times and
//! are polled by hand with a no-op waker, as in `benches/overhead.rs`'s `poll` group.
//!
//! `task_around_with_context_no_bridge`, measured before the bridge is installed, is the
//! floor of a bridged poll: a `Task` (its switch) around `with_context` (the context's
//! clone, attach and detach, which the bridge must do too).
//!
//! A bench of its own: installing a bridge is for the life of the process and changes
//! every owner switch in it, so no other benchmark may share this process.
//! `examples/hotpath_bridge.rs` counts the instructions of the same two polls.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::context::FutureExt as _;
use tasklocal::Snapshot;
use tasklocal_benches::polls::{poll_to_end, Yields};

#[derive(Clone, Copy)]
struct OtelValue(#[allow(dead_code)] u64);

fn bridge_poll(c: &mut Criterion) {
    let cx = opentelemetry::Context::new().with_value(OtelValue(1));
    let mut g = c.benchmark_group("bridge_poll");
    g.bench_function("opentelemetry_with_context", |b| {
        b.iter_custom(|iters| poll_to_end(Yields { left: iters }.with_context(cx.clone())))
    });
    // The floor of a bridged poll, before the bridge is installed: a `Task`'s switch
    // plus what `with_context` does.
    g.bench_function("task_around_with_context_no_bridge", |b| {
        b.iter_custom(|iters| {
            poll_to_end(tasklocal::Task::isolated(
                Yields { left: iters }.with_context(cx.clone()),
            ))
        })
    });
    tasklocal::opentelemetry::install();
    // A snapshot whose owners start with `cx` as their OpenTelemetry context.
    let seeded = Snapshot::empty().run(|| {
        tasklocal::opentelemetry::set_current(cx.clone());
        Snapshot::capture()
    });
    g.bench_function("tasklocal_task_bridged", |b| {
        b.iter_custom(|iters| poll_to_end(seeded.task(Yields { left: iters })))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bridge_poll
}
criterion_main!(benches);
