//! What a wrapper costs, side by side with the alternatives, in the same run:
//!
//! * **per poll**: `tasklocal::Task` vs tokio's `TaskLocalFuture` (one key, eight
//!   nested keys) vs OpenTelemetry's `WithContext` vs the bare future. The future yields
//!   `iters` times and is polled by hand with a no-op waker, so this measures polls,
//!   not a runtime;
//! * **spawn**: `tasklocal::spawn` with 0, 1, 8 and 64 inherited values vs plain
//!   `tokio::spawn` vs tokio's workaround (re-scoping every `task_local!` by hand for
//!   the child); current-thread runtime, spawn + await of an empty task. The parent
//!   loop runs inside a `tasklocal::task` for every variant, so that all pay the same
//!   parent-side cost; `tokio_spawn_bare_parent` shows it without;
//!   `tasklocal_spawn_8_values_child_reads_one` is SPEC.md 8's line as programs use
//!   it: the child reads one of the 8 inherited values;
//! * **snapshot**: `Snapshot::capture` + `run` vs calling the closure.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::task::noop_waker_ref;
use opentelemetry::context::FutureExt as _;
use tasklocal::{Local, Snapshot, Task};

tokio::task_local! {
    static K0: u64;
    static K1: u64;
    static K2: u64;
    static K3: u64;
    static K4: u64;
    static K5: u64;
    static K6: u64;
    static K7: u64;
}

/// 64 inheritable keys, of which the spawn benchmarks set the first 0, 1, 8 or 64.
static KEYS: [Local<u64>; 64] = [const { Local::inheritable() }; 64];
static VALUE: Local<u64> = Local::new();

#[derive(Clone, Copy)]
struct OtelValue(#[allow(dead_code)] u64);

/// A future that returns `Pending` `left` times (waking itself each time), then
/// `Ready`; on its first poll it optionally sets `keys` tasklocal values.
struct Yields {
    left: u64,
    set: usize,
}

impl Future for Yields {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        for key in &KEYS[..std::mem::take(&mut self.set)] {
            key.set(1);
        }
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `future` by hand until it is ready: the time per poll (of `polls` + 1).
fn poll_to_end(future: impl Future<Output = ()>) -> Duration {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(noop_waker_ref());
    let start = Instant::now();
    while black_box(future.as_mut()).poll(&mut cx).is_pending() {}
    start.elapsed()
}

fn yields(iters: u64) -> Yields {
    Yields {
        left: iters,
        set: 0,
    }
}

fn eight_tokio_scopes<F: Future>(f: F) -> impl Future<Output = F::Output> {
    K0.scope(
        1,
        K1.scope(
            1,
            K2.scope(
                1,
                K3.scope(1, K4.scope(1, K5.scope(1, K6.scope(1, K7.scope(1, f))))),
            ),
        ),
    )
}

fn poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll");
    g.bench_function("bare_future", |b| {
        b.iter_custom(|iters| poll_to_end(yields(iters)))
    });
    g.bench_function("tokio_task_local_future_1_key", |b| {
        b.iter_custom(|iters| poll_to_end(K0.scope(1, yields(iters))))
    });
    g.bench_function("tokio_task_local_future_8_keys", |b| {
        b.iter_custom(|iters| poll_to_end(eight_tokio_scopes(yields(iters))))
    });
    g.bench_function("opentelemetry_with_context", |b| {
        b.iter_custom(|iters| {
            let cx = opentelemetry::Context::new().with_value(OtelValue(1));
            poll_to_end(yields(iters).with_context(cx))
        })
    });
    g.bench_function("tasklocal_task_untouched", |b| {
        b.iter_custom(|iters| poll_to_end(Task::isolated(yields(iters))))
    });
    g.bench_function("tasklocal_task_1_value", |b| {
        b.iter_custom(|iters| {
            poll_to_end(Task::isolated(Yields {
                left: iters,
                set: 1,
            }))
        })
    });
    g.bench_function("tasklocal_task_8_values", |b| {
        b.iter_custom(|iters| {
            poll_to_end(Task::isolated(Yields {
                left: iters,
                set: 8,
            }))
        })
    });
    g.finish();
}

/// Spawns and awaits `iters` empty tasks with `spawn`, inside a `tasklocal::task`
/// whose first `values` inheritable keys are set.
fn spawn_loop<J>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    values: usize,
    spawn: fn() -> J,
) -> Duration
where
    J: Future + Send + 'static,
{
    rt.block_on(tasklocal::task(async move {
        for key in &KEYS[..values] {
            key.set(1);
        }
        let start = Instant::now();
        for _ in 0..iters {
            black_box(spawn().await);
        }
        start.elapsed()
    }))
}

fn tokio_spawn() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}
fn tasklocal_spawn() -> tokio::task::JoinHandle<()> {
    tasklocal::spawn(async {})
}
/// SPEC.md 8's spawn line as a program uses it: the child reads one inherited value.
fn tasklocal_spawn_child_reads_one() -> tokio::task::JoinHandle<()> {
    tasklocal::spawn(async {
        black_box(KEYS[0].get());
    })
}
fn tokio_rescope_1() -> tokio::task::JoinHandle<()> {
    tokio::spawn(K0.scope(K0.get(), async {}))
}
fn tokio_rescope_8() -> tokio::task::JoinHandle<()> {
    let v = [
        K0.get(),
        K1.get(),
        K2.get(),
        K3.get(),
        K4.get(),
        K5.get(),
        K6.get(),
        K7.get(),
    ];
    tokio::spawn(K0.scope(
        v[0],
        K1.scope(
            v[1],
            K2.scope(
                v[2],
                K3.scope(
                    v[3],
                    K4.scope(
                        v[4],
                        K5.scope(v[5], K6.scope(v[6], K7.scope(v[7], async {}))),
                    ),
                ),
            ),
        ),
    ))
}

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("spawn_await");
    g.bench_function("tokio_spawn_bare_parent", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let spawn: fn() -> _ = black_box(tokio_spawn);
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(spawn().await).unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("tokio_spawn", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, 0, black_box(tokio_spawn)))
    });
    for values in [0, 1, 8, 64] {
        g.bench_function(format!("tasklocal_spawn_{values}_values"), |b| {
            b.iter_custom(|iters| spawn_loop(&rt, iters, values, black_box(tasklocal_spawn)))
        });
    }
    g.bench_function("tasklocal_spawn_8_values_child_reads_one", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, 8, black_box(tasklocal_spawn_child_reads_one)))
    });
    g.bench_function("tokio_rescope_1_key", |b| {
        b.iter_custom(|iters| {
            rt.block_on(tasklocal::task(K0.scope(1, async move {
                spawn_loop_inner(iters, black_box(tokio_rescope_1)).await
            })))
        })
    });
    g.bench_function("tokio_rescope_8_keys", |b| {
        b.iter_custom(|iters| {
            rt.block_on(tasklocal::task(eight_tokio_scopes(async move {
                spawn_loop_inner(iters, black_box(tokio_rescope_8)).await
            })))
        })
    });
    g.finish();
}

async fn spawn_loop_inner<J: Future>(iters: u64, spawn: fn() -> J) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(spawn().await);
    }
    start.elapsed()
}

fn work() -> u64 {
    black_box(1)
}
fn bare_call() -> u64 {
    let f: fn() -> u64 = black_box(work);
    f()
}
fn capture_run() -> u64 {
    let f: fn() -> u64 = black_box(work);
    Snapshot::capture().run(f)
}
fn capture_run_get() -> Option<u64> {
    Snapshot::capture().run(|| KEYS[0].get())
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    let f: fn() -> u64 = black_box(bare_call);
    g.bench_function("bare_closure_call", |b| b.iter(f));
    futures::executor::block_on(tasklocal::task(async {
        for key in &KEYS[..8] {
            key.set(1);
        }
        VALUE.set(1);
        let f: fn() -> u64 = black_box(capture_run);
        g.bench_function("capture_run_8_values", |b| b.iter(f));
        let f: fn() -> Option<u64> = black_box(capture_run_get);
        g.bench_function("capture_run_get_8_values", |b| b.iter(f));
    }));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = poll, spawn, snapshot
}
criterion_main!(benches);
