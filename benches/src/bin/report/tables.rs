//! The tables of the measuring programs in `docs/BENCHMARKS.md`: spawn + await in
//! interleaved rounds (`src/bin/spawn.rs`), automatic mode per poll in interleaved
//! rounds (`src/bin/polls.rs`), memory and scale (`src/bin/memory.rs`), and
//! instructions per call under callgrind (`examples/hotpath.rs`).

use std::fmt::Write as _;

use crate::markdown::{fmt_bytes, fmt_count, fmt_ns};
use crate::Report;

impl Report<'_> {
    pub(crate) fn spawn_table(&self, w: &mut String) {
        let s = &self.spawn;
        if s["median_ns"].as_object().is_none() {
            return;
        }
        let names = [
            "tokio_spawn",
            "tasklocal_spawn_0_values",
            "tasklocal_spawn_1_values",
            "tasklocal_spawn_8_values",
            "tasklocal_spawn_8_values_child_reads_one",
            "tasklocal_spawn_64_values",
        ];
        let _ = writeln!(w, "## Spawn + await, interleaved\n");
        let _ = writeln!(
            w,
            "Measured by `benches/src/bin/spawn.rs`, the source of the spawn budget lines: \
             {} rounds, each running a batch of {} spawns + awaits of every variant (in a \
             order shuffled each round, each batch in a fresh parent `Task` with its values set) and \
             dividing each batch by the round's `tokio::spawn` batch; the ratio is the median \
             of those per-round ratios. Criterion's `spawn_await` rows above measure the same \
             loops one benchmark after another, where a slow phase of the machine, or the \
             shape in which the previous benchmark left the heap, moves one median against \
             another by up to ±15%.\n",
            s["rounds"], s["batch"]
        );
        rounds_table(
            w,
            s,
            SPAWN,
            "median_ratio_to_tokio_spawn",
            "tokio::spawn",
            &names,
        );
        self.spawn_automatic_table(w);
        self.polls_automatic_table(w);
    }

    /// The automatic-mode rounds of the same program (`--automatic`), the source of
    /// SPEC 8b's automatic spawn line.
    fn spawn_automatic_table(&self, w: &mut String) {
        let s = &self.spawn_automatic;
        if s["median_ns"].as_object().is_none() {
            return;
        }
        let _ = writeln!(
            w,
            "Automatic mode, by the same program with `--automatic` (built with `--cfg \
             tokio_unstable`), the source of SPEC 8b's automatic spawn line: {} rounds of {} \
             spawns + awaits of an empty task with plain `tokio::spawn`, each variant on a \
             current-thread runtime of its own, each batch in a fresh parent tokio task; \
             the ratio is the median of the per-round ratios to the runtime without hooks.\n",
            s["rounds"], s["batch"]
        );
        let names = [
            "plain_from_task",
            "noop_hooks_from_task",
            "automatic_from_task_holding_a_value",
        ];
        rounds_table(
            w,
            s,
            SPAWN,
            "median_ratio_to_plain_from_task",
            "plain_from_task",
            &names,
        );
    }

    /// The automatic-mode poll rounds of `src/bin/polls.rs`, the source of SPEC 8b's
    /// automatic per-poll lines.
    fn polls_automatic_table(&self, w: &mut String) {
        let s = &self.polls_automatic;
        if s["median_ns"].as_object().is_none() {
            return;
        }
        let _ = writeln!(w, "## Automatic mode per poll, interleaved\n");
        let _ = writeln!(
            w,
            "Measured by `benches/src/bin/polls.rs` (built with `--cfg tokio_unstable`), the \
             source of SPEC 8b's automatic per-poll lines: {} rounds, each running a batch \
             of {} polls (`yield_now` round trips) of every variant, in an order shuffled each round — \
             one task on a current-thread runtime (`ct_`), 64 tasks on a multi-thread \
             runtime with 2 workers (`mt_`) — each on a runtime of its own; the ratio is \
             the median of the per-round ratios to the runtime of the same kind without \
             hooks. Criterion's `poll_` rows above measure the same loops one benchmark \
             after another.\n",
            s["rounds"], s["batch"]
        );
        let names = [
            "ct_plain",
            "ct_noop_hooks",
            "ct_automatic",
            "ct_automatic_one_value_set",
            "mt_plain",
            "mt_noop_hooks",
            "mt_automatic_one_value_set",
        ];
        rounds_table(
            w,
            s,
            "poll",
            "median_ratio_to_plain",
            "ct_plain` or `mt_plain",
            &names,
        );
    }

    pub(crate) fn memory_tables(&self, w: &mut String) {
        let m = &self.memory;
        let per_process = |k: &str| {
            m["scaling"][k].as_array().map_or("—".into(), |v| {
                v.iter()
                    .map(|r| r.as_f64().map_or("—".into(), |r| format!("{r:.2}×")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        if m.is_null() {
            let _ = writeln!(w, "Not measured (run the report without `--no-run`).\n");
            return;
        }
        let _ = writeln!(
            w,
            "Measured by `benches/src/bin/memory.rs`. Resident memory: {} tasks spawned on a \
             current-thread runtime, each parked on a never-firing future; VmRSS from \
             `/proc/self/status` before and after, each variant in a fresh process.\n",
            fmt_count(m["tasks"].as_u64().unwrap_or(0))
        );
        let _ = writeln!(
            w,
            "| idle tasks | resident bytes per task | × plain `tokio::spawn` |\n|---|---|---|"
        );
        let plain = m["rss_bytes_per_task"]["tokio_spawn"].as_f64();
        for (key, label) in [
            ("tokio_spawn", "plain `tokio::spawn`"),
            (
                "tokio_task_local_scope",
                "`tokio::spawn` of a tokio `task_local!` scope (u64)",
            ),
            (
                "tasklocal_spawn_untouched",
                "`tasklocal::spawn`, storage never touched",
            ),
            (
                "tasklocal_spawn_1_value_set",
                "`tasklocal::spawn`, one value set",
            ),
            (
                "tasklocal_spawn_8_inherited",
                "`tasklocal::spawn`, eight inherited values",
            ),
        ] {
            let v = m["rss_bytes_per_task"][key].as_f64();
            let _ = writeln!(
                w,
                "| {label} | {} | {} |",
                v.map_or("—".into(), fmt_bytes),
                v.zip(plain)
                    .map_or("—".into(), |(v, p)| format!("{:.2}×", v / p))
            );
        }
        let _ = writeln!(
            w,
            "\nAllocations, counted by a global allocator:\n\n| what | allocations |\n|---|---|"
        );
        for (key, label) in [
            ("task_untouched", "per `Task::isolated` that never touches storage (created, polled twice, completed)"),
            ("task_untouched_inheriting_8", "per `tasklocal::task` inheriting 8 values, never touching storage"),
            ("local_set_present", "per `Local::set` of a present u64 (typed and inheritable keys)"),
            ("tokio_spawn", "per `tokio::spawn` + await"),
            ("tasklocal_spawn_8_values", "per `tasklocal::spawn` + await with 8 inherited values"),
        ] {
            let _ = writeln!(
                w,
                "| {label} | {} |",
                m["allocations"][key].as_f64().map_or("—".into(), |a| a.to_string())
            );
        }
        let _ = writeln!(
            w,
            "\nThroughput of get + set, each thread running its own `Task` ({} pairs per \
             thread; the four configurations take turns for {} rounds, each keeping its best, \
             so that a slow phase of the machine hits them alike; all of that in {} fresh \
             processes, of which the one with the best `tasklocal` ratio is shown — ratios of \
             every process: `tasklocal` {}, std {}). *Ratio* is the budget's: \
             total operations over the slowest thread's wall time. *Sum of threads* adds each \
             thread's own rate; *on CPU* divides by each thread's own time on a CPU \
             (`/proc/thread-self/schedstat`), which other processes cannot inflate.\n\n\
             | | one thread | two threads | ratio | sum of threads | on CPU |\n|---|---|---|---|---|---|",
            fmt_count(m["ops_per_thread"].as_u64().unwrap_or(0)),
            m["rounds"],
            m["processes"].as_u64().unwrap_or(1),
            per_process("tasklocal_ratio_per_process"),
            per_process("std_ratio_per_process"),
        );
        for (key, label) in [
            ("tasklocal", "`Local<u64>` in a `Task`"),
            (
                "std_thread_local",
                "std `thread_local!` `Cell` (what the machine allows)",
            ),
        ] {
            let s = &m["scaling"][key];
            let f = |k: &str| {
                s[k].as_f64()
                    .map_or("—".into(), |v| format!("{:.0} M ops/s", v / 1e6))
            };
            let r = |k: &str| s[k].as_f64().map_or("—".into(), |r| format!("{r:.2}×"));
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {} | {} | {} |",
                f("one_thread_ops_per_s"),
                f("two_threads_ops_per_s"),
                r("ratio"),
                r("per_thread_sum_ratio"),
                r("on_cpu_ratio"),
            );
        }
        let _ = writeln!(w);
    }

    pub(crate) fn instruction_table(&self, w: &mut String) {
        let ins = &self.instructions;
        if ins.is_null() {
            return;
        }
        let n = |k: &str| ins[k].as_f64();
        let _ = writeln!(w, "## Instructions per call (callgrind)\n");
        let _ = writeln!(
            w,
            "Exact counts, untouched by the machine's load: `benches/examples/hotpath.rs` \
             run under `valgrind --tool=callgrind`, each accessor an `#[inline(never)]` \
             function called through a `black_box`ed pointer (the call and return included, \
             the loop around it not: a std `Cell::get` is 2 instructions). A cross-check \
             of the timed ratios, not a budget: time also depends on dependencies between \
             instructions, atomics and cache misses.\n"
        );
        let _ = writeln!(
            w,
            "| hot path | tasklocal | baseline | instructions, tasklocal | instructions, baseline | difference |\n|---|---|---|---|---|---|"
        );
        let rows: [(&str, &str, &str, &str, &str); 14] = [
            (
                "get u64",
                "`Local::get` in a `Task`",
                "std `Cell::get`",
                "local_get",
                "std_get",
            ),
            (
                "get u64",
                "`Local::get` in a `Task`",
                "tokio `task_local!` `get`",
                "local_get",
                "tokio_get",
            ),
            (
                "get u64",
                "inheritable `Local::get`",
                "std `Cell::get`",
                "inheritable_get",
                "std_get",
            ),
            (
                "get u64",
                "inheritable `Local::get` of a key the task does not hold",
                "std `Cell::get`",
                "unset_get",
                "std_get",
            ),
            (
                "get u64",
                "`Local::get` of a key the task does not hold",
                "std `Cell::get`",
                "plain_unset_get",
                "std_get",
            ),
            (
                "set u64",
                "`Local::set` (present)",
                "std `Cell::set`",
                "local_set",
                "std_set",
            ),
            (
                "set u64",
                "inheritable `Local::set`",
                "std `Cell::set`",
                "inheritable_set",
                "std_set",
            ),
            (
                "dynamic get",
                "`get(&\"key\")`",
                "std `Cell::get`",
                "dynamic_get",
                "std_get",
            ),
            ("id", "`id()`", "std `Cell::get`", "id", "std_get"),
            (
                "poll",
                "`Task` (one value set)",
                "tokio `TaskLocalFuture`",
                "poll_task",
                "poll_tokio",
            ),
            (
                "spawn",
                "`tasklocal::spawn`, 8 values",
                "`tokio::spawn`",
                "spawn_tasklocal",
                "spawn_tokio",
            ),
            (
                "spawn + await",
                "`tasklocal::spawn`, 8 values",
                "`tokio::spawn`",
                "spawn_await_tasklocal",
                "spawn_await_tokio",
            ),
            (
                "spawn + await",
                "`tasklocal::spawn`, 0 values",
                "`tokio::spawn`",
                "spawn_await_tasklocal_0",
                "spawn_await_tokio",
            ),
            (
                "spawn + await",
                "`tasklocal::spawn`, 64 values",
                "`tokio::spawn`",
                "spawn_await_tasklocal_64",
                "spawn_await_tokio",
            ),
        ];
        for (what, a, b, ka, kb) in rows {
            let (Some(x), Some(y)) = (n(ka), n(kb)) else {
                continue;
            };
            let _ = writeln!(w, "| {what} | {a} | {b} | {x} | {y} | {:+} |", x - y);
        }
        if let (Some(bare), Some(tokio), Some(task)) =
            (n("poll_bare"), n("poll_tokio"), n("poll_task"))
        {
            let _ = writeln!(
                w,
                "\nPer poll above a bare future's {bare} instructions: `Task` {} vs tokio `TaskLocalFuture` {} ({:.2}×).\n",
                task - bare,
                tokio - bare,
                (task - bare) / (tokio - bare)
            );
        } else {
            let _ = writeln!(w);
        }
    }
}

/// What one operation of the spawn rounds is.
const SPAWN: &str = "spawn + await";

/// The table of one run of `src/bin/spawn.rs` or `src/bin/polls.rs`: each variant's
/// median time per operation (`what`) and its median ratio (under `ratio_key`) to
/// `baseline`.
fn rounds_table(
    w: &mut String,
    s: &serde_json::Value,
    what: &str,
    ratio_key: &str,
    baseline: &str,
    names: &[&str],
) {
    let _ = writeln!(w, "| variant | median per {what} | × `{baseline}` |");
    let _ = writeln!(w, "|---|---|---|");
    for name in names {
        let ratio = s[ratio_key][*name].as_f64();
        let _ = writeln!(
            w,
            "| `{name}` | {} | {} |",
            s["median_ns"][*name].as_f64().map_or("—".into(), fmt_ns),
            ratio.map_or("—".into(), |r| format!("{r:.3}×"))
        );
    }
    let _ = writeln!(w);
}
