//! Spawn + await, interleaved: `tasklocal::spawn` with 0, 1, 8 and 64 inherited values
//! against plain `tokio::spawn`, on a current-thread runtime, in rounds.
//!
//! In interleaved rounds ([`tasklocal_benches::rounds`]): each ratio is the median of
//! per-round ratios to the `tokio::spawn` batch of the same round. Criterion, running
//! one benchmark after another, lets the heap's shape drift between them: glibc's
//! `posix_memalign`, which every tokio task goes through, costs 570 instructions or
//! 820 depending on what came before.
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
//! `--automatic` (built with `--cfg tokio_unstable`) measures instead SPEC.md 8b's
//! automatic-mode spawn line the same way: spawn + await of an empty task with plain
//! `tokio::spawn`, from a plain tokio task of a runtime without hooks
//! (`plain_from_task`, the baseline), with no-op hooks (`noop_hooks_from_task`: what
//! tokio's hook calls alone cost), and in automatic mode from a task that holds an
//! inheritable value (`automatic_from_task_holding_a_value`). Each variant has a
//! current-thread runtime of its own, built once; each batch runs in a fresh parent
//! task.
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo run --release -p tasklocal-benches --bin spawn -- --automatic
//! ```
//!
//! Options: `--rounds N` (default 200), `--batch N` spawns per batch (default 10,000).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tasklocal::{Local, Task};
use tasklocal_benches::arg;
use tasklocal_benches::rounds::{interleave, report};
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

    if args.iter().any(|a| a == "--automatic") {
        return automatic(rounds, size, json_out);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
    let measured = interleave(
        rounds,
        size,
        variants.len(),
        |_| 0,
        |i| batch(&rt, &variants[i], size),
    );
    report(
        "spawn + await",
        &names,
        &measured,
        "median_ratio_to_tokio_spawn",
        json_out,
    );
}

/// `--automatic`: SPEC.md 8b's automatic-mode spawn line (see the module docs).
#[cfg(tokio_unstable)]
fn automatic(rounds: usize, size: u64, json_out: bool) {
    use tasklocal_benches::runtimes::{current_thread, Mode};

    let variants = [
        ("plain_from_task", Mode::Plain),
        ("noop_hooks_from_task", Mode::NoopHooks),
        ("automatic_from_task_holding_a_value", Mode::Automatic),
    ];
    let runtimes: Vec<Runtime> = variants
        .iter()
        .map(|(_, mode)| current_thread(*mode))
        .collect();
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    let measured = interleave(
        rounds,
        size,
        variants.len(),
        |_| 0,
        |i| {
            let holds = matches!(variants[i].1, Mode::Automatic);
            let rt = &runtimes[i];
            rt.block_on(rt.spawn(async move {
                if holds {
                    KEYS[0].set(1);
                }
                let start = Instant::now();
                for _ in 0..size {
                    black_box(tokio::spawn(async {}).await).expect("the empty task completes");
                }
                start.elapsed()
            }))
            .expect("the parent task completes")
        },
    );
    report(
        "spawn + await",
        &names,
        &measured,
        "median_ratio_to_plain_from_task",
        json_out,
    );
}

#[cfg(not(tokio_unstable))]
fn automatic(_rounds: usize, _size: u64, _json_out: bool) {
    eprintln!(
        "--automatic needs tokio's task hooks: build with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
    std::process::exit(2);
}
