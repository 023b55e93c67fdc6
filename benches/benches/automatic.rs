//! Automatic mode (`tasklocal::tokio::install`): the cost per poll and per spawn,
//! side by side with the same runtime without hooks, in the same run.
//!
//! Needs tokio's unstable task hooks:
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo bench -p tasklocal-benches --bench automatic
//! ```
//!
//! A poll here is one `yield_now` round trip of a task that does nothing else, so
//! the difference between `plain` and `automatic` is the whole per-poll cost of the
//! hooks. A poll that does not touch the API leaves the task's window pending (no
//! lock, no switch); `automatic_reads_each_poll` reads a value in every poll, which
//! locks the task's cell, switches its frame in and out, and unlocks the cell.
//! `noop_hooks` shows what tokio's hook calls alone cost.
//! `benches/examples/hotpath_auto.rs` counts the instructions and times the same
//! loops in interleaved rounds.

#[cfg(tokio_unstable)]
mod automatic {
    use std::time::{Duration, Instant};

    use criterion::{criterion_group, Criterion};
    use tasklocal_benches::runtimes::{self, current_thread, multi_thread, Mode};
    use tokio::runtime::Runtime;

    static VALUE: tasklocal::Local<u64> = tasklocal::Local::new();
    /// What the parent of SPEC.md 8b's spawn line holds (children inherit it).
    static INHERITED: tasklocal::Local<u64> = tasklocal::Local::inheritable();

    /// `tasks` tasks polled `iters` times in all, each setting `VALUE` first when
    /// `set` (in a `Task::isolated` when `wrap`): the time per `iters` polls.
    fn polls(rt: &Runtime, tasks: u64, iters: u64, wrap: bool, set: bool) -> Duration {
        runtimes::polls(rt, &VALUE, (tasks, iters), (wrap, set, false))
    }

    fn poll(c: &mut Criterion) {
        let mut g = c.benchmark_group("poll_current_thread");
        for (name, mode, wrap, set) in [
            ("plain", Mode::Plain, false, false),
            ("noop_hooks", Mode::NoopHooks, false, false),
            ("automatic", Mode::Automatic, false, false),
            ("automatic_one_value_set", Mode::Automatic, false, true),
            (
                "plain_tasklocal_task_one_value_set",
                Mode::Plain,
                true,
                true,
            ),
        ] {
            let rt = current_thread(mode);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| polls(&rt, 1, iters, wrap, set))
            });
        }
        let rt = current_thread(Mode::Automatic);
        g.bench_function("automatic_reads_each_poll", |b| {
            b.iter_custom(|iters| runtimes::polls(&rt, &VALUE, (1, iters), (false, true, true)))
        });
        g.finish();

        let mut g = c.benchmark_group("poll_multi_thread_2_workers_64_tasks");
        for (name, mode, set) in [
            ("plain", Mode::Plain, false),
            ("noop_hooks", Mode::NoopHooks, false),
            ("automatic_one_value_set", Mode::Automatic, true),
        ] {
            let rt = multi_thread(mode);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| polls(&rt, 64, iters.max(64), false, set))
            });
        }
        g.finish();
    }

    /// Spawn and await a task that does nothing: the spawn and terminate hooks.
    fn spawn(c: &mut Criterion) {
        let mut g = c.benchmark_group("spawn_await_current_thread");
        for (name, mode) in [("plain", Mode::Plain), ("automatic", Mode::Automatic)] {
            let rt = current_thread(mode);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..iters {
                            tokio::spawn(async {}).await.unwrap();
                        }
                    });
                    start.elapsed()
                })
            });
        }
        // SPEC.md 8b: spawn + await from a task (not `block_on`) that holds a value.
        for (name, mode) in [
            ("plain_from_task", Mode::Plain),
            ("automatic_from_task_holding_a_value", Mode::Automatic),
        ] {
            let rt = current_thread(mode);
            let holds = matches!(mode, Mode::Automatic);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(rt.spawn(async move {
                        if holds {
                            INHERITED.set(1);
                        }
                        let start = Instant::now();
                        for _ in 0..iters {
                            tokio::spawn(async {}).await.unwrap();
                        }
                        start.elapsed()
                    }))
                    .unwrap()
                })
            });
        }
        g.finish();
    }

    criterion_group!(benches, poll, spawn);
}

#[cfg(tokio_unstable)]
criterion::criterion_main!(automatic::benches);

#[cfg(not(tokio_unstable))]
fn main() {
    eprintln!(
        "automatic mode needs tokio's task hooks: run with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
}
