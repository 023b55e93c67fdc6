//! Where the cost of `tasklocal::spawn` over `tokio::spawn(async {})` comes from: futures
//! of different shapes spawned and awaited in interleaved rounds like
//! `src/bin/spawn.rs`, each against `tokio::spawn(async {})`.
//!
//! ```text
//! cargo run --release -p tasklocal-benches --example spawn_shapes
//! ```
//!
//! * `data_16_bytes`: a future carrying 16 bytes, no drop glue;
//! * `drop_glue`: a future carrying a value with a `Drop`;
//! * `task_shaped_no_switch`: a wrapper shaped like `Task` (`Option<F>` and two
//!   pointers, one an `Option<Arc>`, a `PinnedDrop`), polling its future with no switch;
//! * `task_isolated`: `Task::isolated`, the switch added, nothing inherited;
//! * `tasklocal_spawn_8_values`: `tasklocal::spawn` with 8 inherited values.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tasklocal::{Local, Task};
use tokio::task::JoinHandle;

static KEYS: [Local<u64>; 8] = [const { Local::inheritable() }; 8];

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
fn tokio_spawn() -> JoinHandle<()> {
    tokio::spawn(async {})
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
#[inline(never)]
fn tasklocal_spawn() -> JoinHandle<()> {
    tasklocal::spawn(async {})
}

type Spawn = fn() -> JoinHandle<()>;
const VARIANTS: [(&str, Spawn); 6] = [
    ("tokio_spawn", tokio_spawn),
    ("data_16_bytes", data_16_bytes),
    ("drop_glue", drop_glue),
    ("task_shaped_no_switch", task_shaped_no_switch),
    ("task_isolated", task_isolated),
    ("tasklocal_spawn_8_values", tasklocal_spawn),
];

fn main() {
    const ROUNDS: usize = 200;
    const BATCH: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let batch = |spawn: Spawn| {
        let spawn = black_box(spawn);
        rt.block_on(tasklocal::task(async move {
            for key in &KEYS {
                key.set(1);
            }
            let start = Instant::now();
            for _ in 0..BATCH {
                black_box(spawn().await).expect("the empty task completes");
            }
            start.elapsed().as_secs_f64()
        }))
    };
    for (_, spawn) in VARIANTS {
        batch(spawn);
    }
    let n = VARIANTS.len();
    let mut ratios = vec![Vec::with_capacity(ROUNDS); n];
    for round in 0..ROUNDS {
        let mut times = vec![0.0; n];
        for k in 0..n {
            let i = (round + k) % n;
            times[i] = batch(VARIANTS[i].1);
        }
        for i in 0..n {
            ratios[i].push(times[i] / times[0]);
        }
    }
    println!(
        "spawn + await, {ROUNDS} interleaved rounds of {BATCH}, median × tokio::spawn(async {{}}):"
    );
    for (i, (name, _)) in VARIANTS.iter().enumerate() {
        let mut r = ratios[i].clone();
        r.sort_by(f64::total_cmp);
        println!("{name:<26} {:.3}×", r[r.len() / 2]);
    }
}
