//! Memory and scale, measured (never asserted): what SPEC.md section 8 budgets beyond
//! nanoseconds.
//!
//! * resident bytes per idle task for 1,000,000 tasks parked on a never-firing future
//!   on a current-thread runtime, for plain `tokio::spawn`, a tokio `task_local!`
//!   scope, `tasklocal::spawn` never touching storage, with one value set, and with
//!   eight inherited values — each variant in a fresh process of its own (VmRSS from
//!   `/proc/self/status` before and after);
//! * allocations (counted by a global allocator) per `Task` that never touches its
//!   storage, per `tasklocal::spawn` next to `tokio::spawn`, per `Local::set` of a
//!   present value;
//! * get/set throughput on one thread and on two, each thread in its own `Task`, best
//!   of several rounds, by wall time (the budget) and by each thread's own time on a
//!   CPU (what a machine shared with other processes hides); std `thread_local!` the
//!   same way, as the control that shows what the machine itself allows.
//!
//! ```text
//! cargo run --release -p tasklocal-benches --bin memory            # a table
//! cargo run --release -p tasklocal-benches --bin memory -- --json  # for the report
//! ```
//!
//! Options: `--tasks N` (default 1,000,000), `--ops N` per thread (default
//! 50,000,000), `--rounds N` (default 10), `--processes N` for the throughput (default
//! 3: each a fresh process, the one with the best `tasklocal` ratio counts, all are
//! listed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Context;
use std::time::{Duration, Instant};

use futures::task::noop_waker_ref;
use serde_json::{json, Value};
use tasklocal::{Local, Task};
use tasklocal_benches::arg;

/// Counts every allocation of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static INHERITABLE: [Local<u64>; 8] = [const { Local::inheritable() }; 8];
static VALUE: Local<u64> = Local::new();

tokio::task_local! {
    static TOKIO_VALUE: u64;
}

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(0) };
}

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Polls `future` to completion by hand (no executor, no allocation of ours).
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(noop_waker_ref());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Yields to the executor once.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

fn allocation_counts() -> Value {
    const N: u64 = 10_000;
    // Warm up: key indices, the thread's first-use paths.
    run(Task::isolated(async { VALUE.set(1) }));
    let untouched = allocations(|| {
        for _ in 0..N {
            run(Task::isolated(async {
                yield_once().await;
                black_box(1)
            }));
        }
    });
    // A child of a parent with eight inherited values, that never touches storage.
    let inheriting = run(tasklocal::task(async {
        for key in &INHERITABLE {
            key.set(1);
        }
        allocations(|| {
            for _ in 0..N {
                run(tasklocal::task(async {
                    yield_once().await;
                    black_box(1)
                }));
            }
        })
    }));
    let sets = run(Task::isolated(async {
        VALUE.set(0);
        INHERITABLE[0].set(0);
        allocations(|| {
            for i in 0..N {
                VALUE.set(black_box(i));
                INHERITABLE[0].set(black_box(i));
            }
        })
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (tokio_spawn, tasklocal_spawn) = rt.block_on(tasklocal::task(async {
        for key in &INHERITABLE {
            key.set(1);
        }
        tokio::spawn(async {}).await.unwrap();
        tasklocal::spawn(async {}).await.unwrap();
        let mut tokio_spawn = 0;
        let mut tasklocal_spawn = 0;
        for _ in 0..N {
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            tokio::spawn(async {}).await.unwrap();
            tokio_spawn += ALLOCATIONS.load(Ordering::SeqCst) - before;
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            tasklocal::spawn(async {}).await.unwrap();
            tasklocal_spawn += ALLOCATIONS.load(Ordering::SeqCst) - before;
        }
        (tokio_spawn, tasklocal_spawn)
    }));
    let per = |n: u64| n as f64 / N as f64;
    json!({
        "task_untouched": per(untouched),
        "task_untouched_inheriting_8": per(inheriting),
        "local_set_present": per(sets) / 2.0,
        "tokio_spawn": per(tokio_spawn),
        "tasklocal_spawn_8_values": per(tasklocal_spawn),
    })
}

/// The process's resident set, in bytes.
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

const VARIANTS: [&str; 5] = [
    "tokio_spawn",
    "tokio_task_local_scope",
    "tasklocal_spawn_untouched",
    "tasklocal_spawn_1_value_set",
    "tasklocal_spawn_8_inherited",
];

/// In this process: spawns `tasks` idle tasks of `variant`; the resident bytes per task.
fn rss_per_task(variant: &str, tasks: usize) -> f64 {
    static PARKED: AtomicUsize = AtomicUsize::new(0);
    async fn idle() {
        PARKED.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let variant = variant.to_string();
    rt.block_on(tasklocal::task(async move {
        if variant == "tasklocal_spawn_8_inherited" {
            for key in &INHERITABLE {
                key.set(1);
            }
        }
        // Warm the runtime and the allocator up with a few tasks of each kind.
        for _ in 0..1000 {
            tokio::spawn(async {}).await.unwrap();
            tasklocal::spawn(async {}).await.unwrap();
        }
        let before = vm_rss();
        for _ in 0..tasks {
            match variant.as_str() {
                "tokio_spawn" => drop(tokio::spawn(idle())),
                "tokio_task_local_scope" => drop(tokio::spawn(TOKIO_VALUE.scope(1, idle()))),
                "tasklocal_spawn_untouched" | "tasklocal_spawn_8_inherited" => {
                    drop(tasklocal::spawn(idle()))
                }
                "tasklocal_spawn_1_value_set" => drop(tasklocal::spawn(async {
                    VALUE.set(1);
                    idle().await
                })),
                other => panic!("unknown variant {other}"),
            }
        }
        while PARKED.load(Ordering::Relaxed) < tasks {
            tokio::task::yield_now().await;
        }
        let after = vm_rss();
        (after.saturating_sub(before)) as f64 / tasks as f64
    }))
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`).
fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Throughput of `threads` threads.
struct Throughput {
    /// Total operations per second of wall time (the slowest thread's).
    wall: f64,
    /// The sum of each thread's own operations per second (its own elapsed time).
    per_thread_sum: f64,
    /// Total operations per second of each thread's own time on a CPU: what the
    /// threads would do if nothing else ran on the machine.
    on_cpu: f64,
}

impl Throughput {
    /// The best of both.
    fn max(self, other: Throughput) -> Throughput {
        Throughput {
            wall: self.wall.max(other.wall),
            per_thread_sum: self.per_thread_sum.max(other.per_thread_sum),
            on_cpu: self.on_cpu.max(other.on_cpu),
        }
    }
}

/// Each of `threads` threads runs its own `Task` doing `ops` get + set pairs, once.
fn throughput(threads: usize, ops: u64, tasklocal: bool) -> Throughput {
    fn local_set(v: u64) {
        VALUE.set(v)
    }
    fn local_get() -> Option<u64> {
        VALUE.get()
    }
    fn std_set(v: u64) {
        STD_CELL.with(|c| c.set(v))
    }
    fn std_get() -> Option<u64> {
        Some(STD_CELL.with(Cell::get))
    }
    type Ops = (fn(u64), fn() -> Option<u64>);
    let (set, get): Ops = if tasklocal {
        (local_set, local_get)
    } else {
        (std_set, std_get)
    };
    let total = (threads as u64 * ops * 2) as f64;
    {
        let barrier = std::sync::Barrier::new(threads);
        let times: Vec<(Duration, u64)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        run(Task::isolated(async move {
                            let (set, get) = black_box((set, get));
                            set(0);
                            barrier.wait();
                            let cpu = on_cpu_ns();
                            let start = Instant::now();
                            for i in 0..ops {
                                set(i);
                                black_box(get());
                            }
                            (start.elapsed(), on_cpu_ns() - cpu)
                        }))
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let wall = times.iter().map(|t| t.0).max().unwrap_or_default();
        let cpu_per_thread = times.iter().map(|t| t.1 as f64).sum::<f64>() / threads as f64 / 1e9;
        Throughput {
            wall: total / wall.as_secs_f64(),
            per_thread_sum: times
                .iter()
                .map(|t| (ops * 2) as f64 / t.0.as_secs_f64())
                .sum(),
            on_cpu: total / cpu_per_thread,
        }
    }
}

/// get + set throughput on one thread and on two, for `tasklocal` and std: the four
/// configurations take turns, round after round, so that a slow phase of the machine
/// hits them alike; each keeps its best round.
fn scaling(ops: u64, rounds: usize) -> Value {
    let configs = [(true, 1), (true, 2), (false, 1), (false, 2)];
    let mut best: Vec<Option<Throughput>> = configs.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for (slot, &(tl, threads)) in best.iter_mut().zip(&configs) {
            let round = throughput(threads, ops, tl);
            *slot = Some(match slot.take() {
                Some(b) => b.max(round),
                None => round,
            });
        }
    }
    let mut best = best.into_iter().map(|b| b.expect("at least one round"));
    let mut scaling = serde_json::Map::new();
    for name in ["tasklocal", "std_thread_local"] {
        let (one, two) = (best.next().unwrap(), best.next().unwrap());
        scaling.insert(
            name.to_string(),
            json!({
                "one_thread_ops_per_s": one.wall,
                "two_threads_ops_per_s": two.wall,
                "ratio": two.wall / one.wall,
                "per_thread_sum_ratio": two.per_thread_sum / one.per_thread_sum,
                "on_cpu_ratio": two.on_cpu / one.on_cpu,
            }),
        );
    }
    Value::Object(scaling)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tasks = arg(&args, "--tasks", 1_000_000) as usize;
    // Child mode: one RSS variant in this fresh process.
    if let Some(i) = args.iter().position(|a| a == "--rss-variant") {
        let variant = &args[i + 1];
        println!("{}", rss_per_task(variant, tasks));
        return;
    }
    let ops = arg(&args, "--ops", 50_000_000);
    let rounds = arg(&args, "--rounds", 10) as usize;
    let json_out = args.iter().any(|a| a == "--json");
    // Child mode: the scaling rounds in this fresh process.
    if args.iter().any(|a| a == "--scaling-child") {
        println!("{}", scaling(ops, rounds));
        return;
    }

    let exe = std::env::current_exe().expect("own executable");
    let mut rss = serde_json::Map::new();
    for variant in VARIANTS {
        let out = Command::new(&exe)
            .args(["--rss-variant", variant, "--tasks", &tasks.to_string()])
            .output()
            .expect("run the RSS child process");
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: f64 = text.trim().parse().unwrap_or(f64::NAN);
        if !json_out {
            eprintln!("rss {variant}: {bytes:.0} B/task");
        }
        rss.insert(variant.to_string(), json!(bytes));
    }

    let allocs = allocation_counts();

    // The scaling rounds run in fresh processes of their own, and the process with the
    // best `tasklocal` ratio counts (all are listed): on this kind of virtual machine
    // a whole process sometimes gets both threads slowed down together (the host
    // places the two vCPUs badly), which no library code can cause or avoid.
    let processes = arg(&args, "--processes", 3).max(1);
    let mut runs: Vec<Value> = Vec::new();
    for _ in 0..processes {
        let out = Command::new(&exe)
            .args(["--scaling-child", "--ops", &ops.to_string()])
            .args(["--rounds", &rounds.to_string()])
            .output()
            .expect("run the scaling child process");
        let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !json_out {
            eprintln!("scaling: {run}");
        }
        runs.push(run);
    }
    let ratio = |v: &Value| v["tasklocal"]["ratio"].as_f64().unwrap_or(f64::NAN);
    let mut scaling = runs
        .iter()
        .max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(map) = scaling.as_object_mut() {
        map.insert(
            "tasklocal_ratio_per_process".into(),
            json!(runs.iter().map(ratio).collect::<Vec<_>>()),
        );
        map.insert(
            "std_ratio_per_process".into(),
            json!(runs
                .iter()
                .map(|v| v["std_thread_local"]["ratio"].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>()),
        );
    }

    let result = json!({
        "tasks": tasks,
        "rss_bytes_per_task": rss,
        "allocations": allocs,
        "scaling": scaling,
        "ops_per_thread": ops,
        "rounds": rounds,
        "processes": processes,
    });
    if json_out {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result).unwrap());
    }
}
