//! Benchmarks for tasklocal live in `benches/`. This library holds what several of
//! them share and is not measured itself.

/// A future to measure polls with: polled by hand, it returns `Pending` again and
/// again (`benches/bridge.rs`, `examples/hotpath_bridge.rs`).
pub mod polls {
    use std::future::Future;
    use std::hint::black_box;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use futures::task::noop_waker_ref;

    /// Returns `Pending` `left` times (waking itself each time), then `Ready`.
    pub struct Yields {
        /// How many more polls return `Pending`.
        pub left: u64,
    }

    impl Future for Yields {
        type Output = ();
        #[inline]
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Polls `future` by hand, with a no-op waker, until it is ready: the time it took.
    pub fn poll_to_end(future: impl Future<Output = ()>) -> Duration {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(noop_waker_ref());
        let start = Instant::now();
        while black_box(future.as_mut()).poll(&mut cx).is_pending() {}
        start.elapsed()
    }
}

/// The number after the option `name` in `args` (`_` may separate digits), else
/// `default`.
///
/// # Panics
///
/// When what follows `name` is not a number.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
}

/// Interleaved rounds (`src/bin/spawn.rs`, `src/bin/polls.rs`): every round runs one
/// batch of each variant, in an order shuffled anew each round, and divides
/// each batch's time by its baseline's in the same round; the result is the median of
/// those per-round ratios. Run one after another, as criterion runs its benchmarks,
/// the medians of two variants drift apart by ±15% on a shared 2-core machine (a slow
/// phase, a heap left in another shape by the benchmark before); interleaved, both
/// sides of a ratio see the same phases and the same heap.
pub mod rounds {
    use std::time::Duration;

    use serde_json::{json, Value};

    /// What [`interleave`] measured, per variant.
    pub struct Measured {
        /// How many rounds ran.
        pub rounds: usize,
        /// The operations in one batch.
        pub size: u64,
        /// The time of one operation, in nanoseconds, per round.
        pub ns: Vec<Vec<f64>>,
        /// The ratio to the variant's baseline, per round.
        pub ratios: Vec<Vec<f64>>,
    }

    impl Measured {
        /// Adds the variants of `other`, measured in as many rounds of the same size.
        pub fn append(&mut self, other: Measured) {
            assert_eq!((self.rounds, self.size), (other.rounds, other.size));
            self.ns.extend(other.ns);
            self.ratios.extend(other.ratios);
        }
    }

    /// `rounds` interleaved rounds of `n` variants, each round running `batch(i)` (a
    /// batch of `size` operations: its time) once for every variant `i`; each
    /// variant's ratio is to the variant `baseline(i)` of the same round. Every variant
    /// first runs once unmeasured (code, caches and the allocator's free lists).
    pub fn interleave(
        rounds: usize,
        size: u64,
        n: usize,
        baseline: impl Fn(usize) -> usize,
        mut batch: impl FnMut(usize) -> Duration,
    ) -> Measured {
        for i in 0..n {
            batch(i);
        }
        let mut measured = Measured {
            rounds,
            size,
            ns: vec![Vec::with_capacity(rounds); n],
            ratios: vec![Vec::with_capacity(rounds); n],
        };
        let mut order: Vec<usize> = (0..n).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..rounds {
            // A new order each round (Fisher-Yates, xorshift): in a fixed cycle, each
            // variant would always run after the same other one, and inherit the heap
            // and the idle threads that one leaves.
            for k in (1..n).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(k, (seed % (k as u64 + 1)) as usize);
            }
            let mut times = vec![0.0; n];
            for &i in &order {
                times[i] = batch(i).as_secs_f64();
            }
            for i in 0..n {
                measured.ns[i].push(times[i] * 1e9 / size as f64);
                measured.ratios[i].push(times[i] / times[baseline(i)]);
            }
        }
        measured
    }

    /// The median of `v`.
    pub fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Prints the medians of `measured` (`what`: what one operation is): a table, or
    /// with `json_out` the JSON the report reads (the ratios under `ratio_key`).
    pub fn report(
        what: &str,
        names: &[&str],
        measured: &Measured,
        ratio_key: &str,
        json_out: bool,
    ) {
        let (rounds, size) = (measured.rounds, measured.size);
        let mut median_ns = serde_json::Map::new();
        let mut ratio = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            median_ns.insert((*name).into(), json!(median(measured.ns[i].clone())));
            ratio.insert((*name).into(), json!(median(measured.ratios[i].clone())));
        }
        if json_out {
            let result: Value = json!({
                "rounds": rounds,
                "batch": size,
                "median_ns": median_ns,
                ratio_key: ratio,
            });
            println!("{result}");
            return;
        }
        println!("{what}, {rounds} interleaved rounds of {size}:");
        println!("{:<40} {:>10} {:>12}", "variant", "median", "× baseline");
        for (i, name) in names.iter().enumerate() {
            println!(
                "{:<40} {:>7.1} ns {:>11.3}×",
                name,
                median(measured.ns[i].clone()),
                median(measured.ratios[i].clone())
            );
        }
    }
}

/// Runtimes with and without automatic mode, for the automatic-mode benchmarks
/// (`benches/automatic.rs`, `examples/hotpath_auto.rs`). Only with
/// `--cfg tokio_unstable`: tokio's task hooks need it.
#[cfg(tokio_unstable)]
pub mod runtimes {
    use std::time::{Duration, Instant};

    use tokio::runtime::{Builder, Runtime};

    /// What a runtime is built with.
    #[derive(Clone, Copy, Debug)]
    pub enum Mode {
        /// No task hooks.
        Plain,
        /// Hooks that do nothing: what the hooks themselves cost.
        NoopHooks,
        /// tasklocal's automatic mode.
        Automatic,
    }

    /// A current-thread runtime in `mode`.
    pub fn current_thread(mode: Mode) -> Runtime {
        build(Builder::new_current_thread(), mode)
    }

    /// A multi-thread runtime with 2 workers in `mode` (SPEC.md 8b's first
    /// automatic-mode line).
    pub fn multi_thread(mode: Mode) -> Runtime {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(2);
        build(builder, mode)
    }

    /// `tasks` tasks spawned with plain `tokio::spawn` on `rt` (each in a
    /// `Task::isolated` when `wrap`), yielding `iters` times in all; each first sets
    /// `value` when `set`, and reads it after every yield when `read`. The time per
    /// `iters` polls (the spawns and awaits included, spread over them).
    pub fn polls(
        rt: &Runtime,
        value: &'static tasklocal::Local<u64>,
        (tasks, iters): (u64, u64),
        (wrap, set, read): (bool, bool, bool),
    ) -> Duration {
        let per_task = iters.div_ceil(tasks);
        let start = Instant::now();
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let work = async move {
                        if set {
                            value.set(1);
                        }
                        for _ in 1..per_task {
                            tokio::task::yield_now().await;
                            if read {
                                std::hint::black_box(value.get());
                            }
                        }
                    };
                    if wrap {
                        tokio::spawn(tasklocal::Task::isolated(work))
                    } else {
                        tokio::spawn(work)
                    }
                })
                .collect();
            for handle in handles {
                handle.await.expect("the task completes");
            }
        });
        start
            .elapsed()
            .mul_f64(iters as f64 / (per_task * tasks) as f64)
    }

    fn build(mut builder: Builder, mode: Mode) -> Runtime {
        match mode {
            Mode::Plain => {}
            Mode::NoopHooks => {
                builder
                    .on_task_spawn(|_| {})
                    .on_before_task_poll(|_| {})
                    .on_after_task_poll(|_| {})
                    .on_task_terminate(|_| {});
            }
            Mode::Automatic => {
                tasklocal::tokio::install(&mut builder);
            }
        }
        builder.build().expect("a runtime")
    }
}
