//! Regenerates `docs/BENCHMARKS.md` and `docs/benchmarks.svg`: runs every criterion
//! benchmark of this crate with short warm-up and measurement times, runs the
//! `memory` program and the interleaved `spawn` and (with `--automatic`) `polls`
//! programs, reads criterion's
//! `estimates.json` files, and writes a table of medians and ratios with the SPEC.md
//! section 8 budget lines marked pass or fail.
//!
//! ```text
//! cargo run --release -p tasklocal-benches --bin report
//! ```
//!
//! Options:
//!
//! * `--automatic`: also build with `RUSTFLAGS="--cfg tokio_unstable"` (in
//!   `<target>/unstable`) and measure automatic mode (the `automatic` bench and the
//!   `automatic` rows of `core`);
//! * `--no-run`: run nothing, regenerate the files from the results already on disk;
//! * `--quick`: shorter times, no repetition (a smoke test of the pipeline, not for
//!   publishing);
//! * `--repeat N`: run the budget's benches (`core`, `overhead`) N times, each in a
//!   fresh process, keeping each benchmark's lower median (default 2): a slow phase
//!   of a shared machine only ever inflates a median;
//! * `--tasks N`: idle tasks for the memory measurement (default 1,000,000);
//! * `--no-callgrind`: skip the instruction counts (taken when `valgrind` is installed:
//!   `examples/hotpath.rs`, `examples/hotpath_request.rs`, `examples/hotpath_bridge.rs`
//!   and `lean/examples/hotpath_lean.rs` under callgrind);
//! * `--only a,b`: run only these criterion benches (e.g. `request,core`), not the
//!   memory and spawn programs; the other results are those of the last run, from disk
//!   (say so when publishing);
//! * `--e2e`: also run `src/bin/e2e.rs` (axum under loopback load, SPEC.md 8b's last
//!   line; with `--automatic`, built with `--cfg tokio_unstable` so that automatic mode
//!   is measured too); `--no-run` reuses its last result.
//!
//! Results live under `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
//!
//! One module per job: [`run`] runs the benchmarks and the measuring programs,
//! [`estimates`] reads and merges criterion's results, [`machine`] describes the machine
//! and the run, [`budget`] checks the SPEC.md section 8 budget lines, [`markdown`] and
//! [`tables`] write `docs/BENCHMARKS.md`, and [`svg`] draws `docs/benchmarks.svg`.

mod budget;
mod estimates;
mod machine;
mod markdown;
mod run;
mod svg;
mod tables;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use estimates::{estimates_from_json, estimates_to_json, keep_lower, read_estimates, Estimate};
use machine::{load_average, source_version, LoadSampler, Machine};
use markdown::fmt_ns;
use run::{
    cargo_bench, run_callgrind, run_callgrind_request, run_e2e, run_memory, run_program, BENCHES,
    REPEATED,
};

/// The command line.
struct Options {
    run: bool,
    automatic: bool,
    callgrind: bool,
    e2e: bool,
    only: Option<Vec<String>>,
    repeat: usize,
    warm_up: &'static str,
    measurement: &'static str,
    tasks: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let options = Options {
        run: !args.iter().any(|a| a == "--no-run"),
        automatic: args.iter().any(|a| a == "--automatic"),
        callgrind: !args.iter().any(|a| a == "--no-callgrind"),
        e2e: args.iter().any(|a| a == "--e2e"),
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|list| list.split(',').map(str::to_string).collect()),
        repeat: args
            .iter()
            .position(|a| a == "--repeat")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(if quick { 1 } else { 2 })
            .max(1),
        warm_up: if quick { "0.2" } else { "0.5" },
        measurement: if quick { "0.5" } else { "1.5" },
        tasks: args
            .iter()
            .position(|a| a == "--tasks")
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| "1000000".into()),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benches crate lives in the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let target = if target.is_relative() {
        workspace.join(target)
    } else {
        target
    };
    let stable_home = target.join("criterion");
    let unstable_target = target.join("unstable");
    let unstable_home = target.join("criterion-unstable");
    let memory_file = target.join("tasklocal-memory.json");
    let spawn_file = target.join("tasklocal-spawn.json");
    let spawn_automatic_file = target.join("tasklocal-spawn-automatic.json");
    let polls_automatic_file = target.join("tasklocal-polls-automatic.json");
    let callgrind_file = target.join("tasklocal-instructions.json");
    let request_callgrind_file = target.join("tasklocal-instructions-request.json");
    let e2e_file = target.join("tasklocal-e2e.json");
    let results_file = target.join("tasklocal-criterion.json");

    let load_before = load_average();
    let source_before = source_version(&workspace);
    let sampler = LoadSampler::start();
    let mut results: BTreeMap<String, Estimate> = BTreeMap::new();
    if options.only.is_some() {
        // A partial run: start from the last merged results.
        results = fs::read_to_string(&results_file)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map(|v| estimates_from_json(&v))
            .unwrap_or_default();
    }
    let selected = |bench: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == bench))
    };
    if options.run {
        for bench in BENCHES.into_iter().filter(|b| selected(b)) {
            // The budget's benches run more than once, each in a fresh process: a slow
            // phase of the machine only ever inflates a median, so the lower one counts.
            let repeats = if REPEATED.contains(&bench) {
                options.repeat
            } else {
                1
            };
            for repeat in 0..repeats {
                let since = SystemTime::now();
                cargo_bench(
                    &workspace,
                    &target,
                    &stable_home,
                    bench,
                    None,
                    &options,
                    false,
                );
                let new = read_estimates(&stable_home, Some(since));
                if repeat == 0 && options.only.is_some() {
                    // A partial run replaces the last run's results of this bench.
                    results.extend(new);
                } else {
                    keep_lower(&mut results, new, "");
                }
            }
        }
        if options.automatic && (selected("core") || selected("automatic")) {
            let since = SystemTime::now();
            cargo_bench(
                &workspace,
                &unstable_target,
                &unstable_home,
                "core",
                Some("automatic|std_thread_local_cell"),
                &options,
                true,
            );
            cargo_bench(
                &workspace,
                &unstable_target,
                &unstable_home,
                "automatic",
                None,
                &options,
                true,
            );
            keep_lower(
                &mut results,
                read_estimates(&unstable_home, Some(since)),
                "tokio_unstable: ",
            );
        }
        fs::write(&results_file, estimates_to_json(&results).to_string())
            .expect("write the merged results");
        if options.only.is_none() {
            let memory = run_memory(&workspace, &target, &options.tasks);
            fs::write(&memory_file, &memory).expect("write the memory results");
            let spawn = run_program(&workspace, &target, "spawn", &[], false);
            fs::write(&spawn_file, &spawn).expect("write the spawn results");
            if options.automatic {
                let spawn = run_program(
                    &workspace,
                    &unstable_target,
                    "spawn",
                    &["--automatic"],
                    true,
                );
                fs::write(&spawn_automatic_file, &spawn)
                    .expect("write the automatic-mode spawn results");
                let polls = run_program(&workspace, &unstable_target, "polls", &[], true);
                fs::write(&polls_automatic_file, &polls)
                    .expect("write the automatic-mode poll results");
            }
        }
        if options.callgrind {
            match run_callgrind(&workspace, &target) {
                Some(counts) => fs::write(&callgrind_file, counts.to_string())
                    .expect("write the instruction counts"),
                None => {
                    let _ = fs::remove_file(&callgrind_file);
                }
            }
            match run_callgrind_request(&workspace, &target) {
                Some(counts) => fs::write(&request_callgrind_file, counts.to_string())
                    .expect("write the instruction counts"),
                None => {
                    let _ = fs::remove_file(&request_callgrind_file);
                }
            }
        }
        if options.e2e {
            let e2e_target = if options.automatic {
                &unstable_target
            } else {
                &target
            };
            let e2e = run_e2e(&workspace, e2e_target, options.automatic);
            fs::write(&e2e_file, &e2e).expect("write the e2e results");
        }
    }
    let load_after = load_average();
    let peak = sampler.stop();

    if !options.run {
        // Regenerate from the last run's merged results, else from criterion's files.
        results = fs::read_to_string(&results_file)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map(|v| estimates_from_json(&v))
            .unwrap_or_else(|| {
                let mut r = read_estimates(&stable_home, None);
                keep_lower(
                    &mut r,
                    read_estimates(&unstable_home, None),
                    "tokio_unstable: ",
                );
                r
            });
    }
    let read_json = |file: &Path| -> Value {
        fs::read_to_string(file)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    };
    let memory = read_json(&memory_file);
    let spawn = read_json(&spawn_file);
    let spawn_automatic = read_json(&spawn_automatic_file);
    let polls_automatic = read_json(&polls_automatic_file);
    let instructions = read_json(&callgrind_file);
    let request_instructions = read_json(&request_callgrind_file);
    let e2e = read_json(&e2e_file);
    let mut machine = Machine::probe(&workspace, load_before, load_after);
    machine.peak_load = peak;
    if options.run && machine.source != source_before {
        machine.source = format!(
            "**changed during the run**: {source_before} at the start, {} at the end — \
             the results mix versions; run again",
            machine.source
        );
    }
    let report = Report {
        results,
        memory,
        spawn,
        spawn_automatic,
        polls_automatic,
        instructions,
        request_instructions,
        e2e,
        machine,
        options: &options,
    };
    let docs = workspace.join("docs");
    fs::create_dir_all(&docs).expect("create docs/");
    let (markdown, svg) = report.render();
    fs::write(docs.join("BENCHMARKS.md"), markdown).expect("write docs/BENCHMARKS.md");
    fs::write(docs.join("benchmarks.svg"), svg).expect("write docs/benchmarks.svg");
    eprintln!("wrote {}", docs.join("BENCHMARKS.md").display());
    eprintln!("wrote {}", docs.join("benchmarks.svg").display());
}

/// Everything the outputs are made of: criterion's results, the programs' JSON, the
/// machine. Each output module adds its part of the `impl`.
struct Report<'a> {
    results: BTreeMap<String, Estimate>,
    memory: Value,
    /// The interleaved spawn + await rounds of `src/bin/spawn.rs`.
    spawn: Value,
    /// The same program's rounds in automatic mode (`--automatic`).
    spawn_automatic: Value,
    /// The interleaved per-poll rounds of `src/bin/polls.rs` (automatic mode).
    polls_automatic: Value,
    instructions: Value,
    /// `examples/hotpath_request.rs`, `examples/hotpath_bridge.rs` and
    /// `lean/examples/hotpath_lean.rs` under callgrind.
    request_instructions: Value,
    /// `src/bin/e2e.rs`: axum under loopback load.
    e2e: Value,
    machine: Machine,
    options: &'a Options,
}

impl Report<'_> {
    fn median(&self, id: &str) -> Option<f64> {
        self.results.get(id).map(|e| e.median)
    }

    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.median(a)? / self.median(b)?)
    }

    fn ns(&self, id: &str) -> String {
        self.median(id).map_or("—".into(), fmt_ns)
    }
}
