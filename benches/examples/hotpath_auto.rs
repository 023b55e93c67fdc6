//! Automatic mode's hot paths (SPEC.md 8b), for counting instructions exactly: polls
//! of one task yielding on a current-thread runtime, and spawn + await from a task,
//! each on a runtime without hooks, with no-op hooks, and in automatic mode.
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo build --profile bench -p tasklocal-benches --example hotpath_auto
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/unstable/release/examples/hotpath_auto
//! callgrind_annotate --inclusive=yes cg.out | grep 'hotpath_auto::'
//! ```
//!
//! Each measured loop is its own `#[inline(never)]` function: `polls_*` run
//! 1,000,000 polls (a `yield_now` round trip each; `polls_automatic_reading_each_poll`
//! also reads a value in each, which opens the task's window), `spawns_*` 200,000 spawns + awaits
//! of an empty task from a task that holds an inheritable value (SPEC.md 8b) — divide
//! the inclusive count by that. (Instruction counts leave out what atomic
//! read-modify-writes cost in cycles: compare with the `automatic` benchmark.)

#[cfg(tokio_unstable)]
mod auto {
    use tokio::runtime::Runtime;

    static INHERITED: tasklocal::Local<u64> = tasklocal::Local::inheritable();

    const POLLS: u64 = 1_000_000;
    // (Timed rounds use the same loops.)
    const SPAWNS: u64 = 200_000;

    use tasklocal_benches::runtimes;
    pub use tasklocal_benches::runtimes::current_thread as runtime;
    pub use tasklocal_benches::runtimes::multi_thread;
    pub use tasklocal_benches::runtimes::Mode;

    fn polls(rt: &Runtime, set: bool) {
        polls_reading(rt, set, false)
    }

    /// [`polls`], reading the value in every poll when `read`.
    fn polls_reading(rt: &Runtime, set: bool, read: bool) {
        runtimes::polls(rt, &INHERITED, (1, POLLS), (false, set, read));
    }

    /// 64 tasks yielding, `POLLS` polls in all.
    pub fn polls_64_tasks(rt: &Runtime, set: bool) {
        runtimes::polls(rt, &INHERITED, (64, POLLS), (false, set, false));
    }

    fn spawns(rt: &Runtime, set: bool) {
        rt.block_on(rt.spawn(async move {
            if set {
                INHERITED.set(1);
            }
            for _ in 0..SPAWNS {
                tokio::spawn(async {}).await.unwrap();
            }
        }))
        .unwrap();
    }

    #[inline(never)]
    pub fn polls_plain(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(1);
        polls(rt, false)
    }
    #[inline(never)]
    pub fn polls_noop_hooks(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(2);
        polls(rt, false)
    }
    #[inline(never)]
    pub fn polls_automatic(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(3);
        polls(rt, false)
    }
    #[inline(never)]
    pub fn polls_automatic_holding_a_value(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(4);
        polls(rt, true)
    }
    #[inline(never)]
    pub fn polls_automatic_reading_each_poll(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(8);
        polls_reading(rt, true, true)
    }
    #[inline(never)]
    pub fn spawns_plain(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(5);
        spawns(rt, false)
    }
    #[inline(never)]
    pub fn spawns_noop_hooks(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(7);
        spawns(rt, false)
    }
    #[inline(never)]
    pub fn spawns_automatic_holding_a_value(rt: &Runtime) {
        // Distinct bodies: kept apart by the linker's identical-code folding.
        std::hint::black_box(6);
        spawns(rt, true)
    }
}

#[cfg(tokio_unstable)]
fn main() {
    use auto::*;
    let plain = runtime(Mode::Plain);
    let noop = runtime(Mode::NoopHooks);
    let automatic = runtime(Mode::Automatic);
    // Warm up the allocator and the registry.
    spawns_plain(&plain);
    // With an argument, that many rounds of every loop, interleaved, timed (wall
    // clock): the median ratio over the rounds, so that both sides of a ratio see the
    // same phases of a shared machine.
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if rounds == 0 {
        polls_plain(&plain);
        polls_noop_hooks(&noop);
        polls_automatic(&automatic);
        polls_automatic_holding_a_value(&automatic);
        polls_automatic_reading_each_poll(&automatic);
        spawns_noop_hooks(&noop);
        spawns_automatic_holding_a_value(&automatic);
        return;
    }
    let time = |f: &dyn Fn()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let multi_plain = multi_thread(Mode::Plain);
    let multi_automatic = multi_thread(Mode::Automatic);
    let mut ratios: [Vec<f64>; 6] = Default::default();
    for _ in 0..rounds {
        let p = time(&|| polls_plain(&plain));
        ratios[0].push(time(&|| polls_noop_hooks(&noop)) / p);
        ratios[1].push(time(&|| polls_automatic(&automatic)) / p);
        ratios[2].push(time(&|| polls_automatic_holding_a_value(&automatic)) / p);
        let s = time(&|| spawns_plain(&plain));
        ratios[3].push(time(&|| spawns_automatic_holding_a_value(&automatic)) / s);
        ratios[5].push(time(&|| spawns_noop_hooks(&noop)) / s);
        let m = time(&|| polls_64_tasks(&multi_plain, false));
        ratios[4].push(time(&|| polls_64_tasks(&multi_automatic, true)) / m);
    }
    for (name, mut r) in [
        "poll noop_hooks",
        "poll automatic",
        "poll automatic holding a value",
        "spawn + await automatic holding a value",
        "poll, 2 workers, 64 tasks, automatic holding a value",
        "spawn + await noop_hooks",
    ]
    .into_iter()
    .zip(ratios)
    {
        r.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.3} (quartiles {:.3}..{:.3})",
            r[r.len() / 2],
            r[r.len() / 4],
            r[r.len() * 3 / 4]
        );
    }
}

#[cfg(not(tokio_unstable))]
fn main() {
    eprintln!(
        "automatic mode needs tokio's task hooks: run with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
}
