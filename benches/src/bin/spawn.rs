//! Spawn + await, interleaved: `tasklocal::spawn` with 0, 1, 8 and 64 inherited values
//! against plain `tokio::spawn`, on a current-thread runtime, in rounds.
//!
//! Every round runs one batch of each variant, in an order that rotates from round to
//! round, and divides each batch's time by the `tokio::spawn` batch of the same round.
//! The result is the median of those per-round ratios. Run one after another, as
//! criterion runs its benchmarks, the medians of two variants drift apart by ±15% on
//! a shared 2-core machine: a slow phase, or a heap that the previous benchmark left
//! in another shape (glibc's `posix_memalign`, which every tokio task goes through,
//! costs 570 instructions or 820 depending on what came before). Interleaved, both
//! sides of a ratio see the same phases and the same heap.
//!
//! Each batch runs in a fresh parent `Task` that sets its own inheritable values
//! first (8 for the `tokio::spawn` baseline, which inherits nothing), then spawns and
//! awaits empty tasks through a `black_box`ed function pointer.
//!
//! ```text
//! cargo run --release -p tasklocal-benches --bin spawn            # a table
//! cargo run --release -p tasklocal-benches --bin spawn -- --json  # for the report
//! cargo run --release -p tasklocal-benches --bin spawn -- --shapes
//! ```
//!
//! `--shapes` measures instead where the cost over `tokio::spawn(async {})` comes from,
//! with futures of other shapes (each parent sets 8 values):
//!
//! * `data_16_bytes`: a future carrying 16 bytes, no drop glue;
//! * `drop_glue`: a future carrying a value with a `Drop`;
//! * `task_shaped_no_switch`: a wrapper shaped like `Task` (`Option<F>`, two
//!   pointers, one of them an `Option<Arc>`, a `PinnedDrop`) that polls its future
//!   with no switch;
//! * `task_isolated`: `Task::isolated`, which adds the switch, inheriting nothing;
//! * `tasklocal_spawn_8_values`.
//!
//! Without `--shapes`, `tasklocal_spawn_8_values_child_reads_one` is SPEC.md 8's spawn
//! line as programs use it: the child reads one of the 8 inherited values.
//!
//! Options: `--rounds N` (default 200), `--batch N` spawns per batch (default 10,000).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tasklocal::{Local, Task};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The inheritable keys a parent sets: the first 0, 1, 8 or 64.
static KEYS: [Local<u64>; 64] = [const { Local::inheritable() }; 64];

#[inline(never)]
fn tokio_spawn() -> JoinHandle<()> {
    tokio::spawn(async {})
}

#[inline(never)]
fn tasklocal_spawn() -> JoinHandle<()> {
    tasklocal::spawn(async {})
}

/// SPEC.md 8's spawn line as a program uses it: the child reads one inherited value.
#[inline(never)]
fn tasklocal_spawn_child_reads_one() -> JoinHandle<()> {
    tasklocal::spawn(async {
        black_box(KEYS[0].get());
    })
}

/// A value with a `Drop`.
struct WithDrop(u64);

impl Drop for WithDrop {
    fn drop(&mut self) {
        if self.0 == 7 {
            black_box(self.0);
        }
    }
}

pin_project_lite::pin_project! {
    /// `Task`'s shape without the switch.
    struct Shaped<F> {
        #[pin]
        future: Option<F>,
        storage: Option<Box<u64>>,
        seed: Option<Arc<u64>>,
    }
    impl<F> PinnedDrop for Shaped<F> {
        fn drop(this: Pin<&mut Self>) {
            if this.project().future.is_some() {
                black_box(1);
            }
        }
    }
}

impl<F: Future> Future for Shaped<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let poll = match this.future.as_mut().as_pin_mut() {
            Some(future) => future.poll(cx),
            None => panic!("polled after completion"),
        };
        if poll.is_ready() {
            this.future.set(None);
        }
        poll
    }
}

#[inline(never)]
fn data_16_bytes() -> JoinHandle<()> {
    let data = black_box([0u64; 2]);
    tokio::spawn(async move {
        black_box(&data);
    })
}

#[inline(never)]
fn drop_glue() -> JoinHandle<()> {
    let value = WithDrop(black_box(1));
    tokio::spawn(async move {
        black_box(&value);
    })
}

#[inline(never)]
fn task_shaped_no_switch() -> JoinHandle<()> {
    tokio::spawn(Shaped {
        future: Some(async {}),
        storage: None,
        seed: None,
    })
}

#[inline(never)]
fn task_isolated() -> JoinHandle<()> {
    tokio::spawn(Task::isolated(async {}))
}

/// A variant: its name, how many values its parent sets, how it spawns.
struct Variant {
    name: &'static str,
    values: usize,
    spawn: fn() -> JoinHandle<()>,
}

const VARIANTS: [Variant; 6] = [
    Variant {
        name: "tokio_spawn",
        values: 8,
        spawn: tokio_spawn,
    },
    Variant {
        name: "tasklocal_spawn_0_values",
        values: 0,
        spawn: tasklocal_spawn,
    },
    Variant {
        name: "tasklocal_spawn_1_values",
        values: 1,
        spawn: tasklocal_spawn,
    },
    Variant {
        name: "tasklocal_spawn_8_values",
        values: 8,
        spawn: tasklocal_spawn,
    },
    Variant {
        name: "tasklocal_spawn_64_values",
        values: 64,
        spawn: tasklocal_spawn,
    },
    Variant {
        name: "tasklocal_spawn_8_values_child_reads_one",
        values: 8,
        spawn: tasklocal_spawn_child_reads_one,
    },
];

/// `--shapes`: `tokio::spawn` first, the baseline of every ratio.
const SHAPES: [Variant; 6] = [
    Variant {
        name: "tokio_spawn",
        values: 8,
        spawn: tokio_spawn,
    },
    Variant {
        name: "data_16_bytes",
        values: 8,
        spawn: data_16_bytes,
    },
    Variant {
        name: "drop_glue",
        values: 8,
        spawn: drop_glue,
    },
    Variant {
        name: "task_shaped_no_switch",
        values: 8,
        spawn: task_shaped_no_switch,
    },
    Variant {
        name: "task_isolated",
        values: 8,
        spawn: task_isolated,
    },
    Variant {
        name: "tasklocal_spawn_8_values",
        values: 8,
        spawn: tasklocal_spawn,
    },
];

/// The time of `batch` spawns + awaits by `variant`, in a fresh parent `Task`.
fn batch(rt: &Runtime, variant: &Variant, batch: u64) -> Duration {
    let (values, spawn) = (variant.values, black_box(variant.spawn));
    rt.block_on(tasklocal::task(async move {
        for key in &KEYS[..values] {
            key.set(1);
        }
        let start = Instant::now();
        for _ in 0..batch {
            black_box(spawn().await).expect("the empty task completes");
        }
        start.elapsed()
    }))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 200) as usize;
    let size = arg(&args, "--batch", 10_000);
    let json_out = args.iter().any(|a| a == "--json");
    let variants: &[Variant] = if args.iter().any(|a| a == "--shapes") {
        &SHAPES
    } else {
        &VARIANTS
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    // Warm-up: code, caches and the allocator's free lists.
    for variant in variants {
        batch(&rt, variant, size);
    }
    let n = variants.len();
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        let mut times = vec![0.0; n];
        for k in 0..n {
            let i = (round + k) % n;
            times[i] = batch(&rt, &variants[i], size).as_secs_f64();
        }
        for i in 0..n {
            ns[i].push(times[i] * 1e9 / size as f64);
            ratios[i].push(times[i] / times[0]);
        }
    }
    let mut median_ns = serde_json::Map::new();
    let mut ratio = serde_json::Map::new();
    for (i, variant) in variants.iter().enumerate() {
        median_ns.insert(variant.name.into(), json!(median(ns[i].clone())));
        ratio.insert(variant.name.into(), json!(median(ratios[i].clone())));
    }
    let result: Value = json!({
        "rounds": rounds,
        "batch": size,
        "median_ns": median_ns,
        "median_ratio_to_tokio_spawn": ratio,
    });
    if json_out {
        println!("{result}");
        return;
    }
    println!("spawn + await, {rounds} interleaved rounds of {size}:");
    println!("{:<28} {:>10} {:>12}", "variant", "median", "× tokio");
    for (i, variant) in variants.iter().enumerate() {
        println!(
            "{:<28} {:>7.1} ns {:>11.3}×",
            variant.name,
            median(ns[i].clone()),
            median(ratios[i].clone())
        );
    }
}
