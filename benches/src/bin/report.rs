//! Regenerates `docs/BENCHMARKS.md` and `docs/benchmarks.svg`: runs every criterion
//! benchmark of this crate with short warm-up and measurement times, runs the
//! `memory` program and the interleaved `spawn` program, reads criterion's
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
//!   `examples/hotpath.rs` under callgrind).
//!
//! Results live under `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde_json::Value;

/// The benches of this crate that need no special build, in report order.
const BENCHES: [&str; 4] = ["core", "overhead", "mdc", "http"];
/// The benches of the budget lines: run `--repeat` times, the lower median counts.
const REPEATED: [&str; 2] = ["core", "overhead"];

/// One criterion result.
#[derive(Clone, Debug)]
struct Estimate {
    /// Median time per iteration, ns.
    median: f64,
    /// Its 95% confidence interval, ns.
    low: f64,
    high: f64,
}

struct Options {
    run: bool,
    automatic: bool,
    callgrind: bool,
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
    let callgrind_file = target.join("tasklocal-instructions.json");
    let results_file = target.join("tasklocal-criterion.json");

    let load_before = load_average();
    let source_before = source_version(&workspace);
    let sampler = LoadSampler::start();
    let mut results: BTreeMap<String, Estimate> = BTreeMap::new();
    if options.run {
        for bench in BENCHES {
            // The budget's benches run more than once, each in a fresh process: a slow
            // phase of the machine only ever inflates a median, so the lower one counts.
            let repeats = if REPEATED.contains(&bench) {
                options.repeat
            } else {
                1
            };
            for _ in 0..repeats {
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
                keep_lower(&mut results, read_estimates(&stable_home, Some(since)), "");
            }
        }
        if options.automatic {
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
        let memory = run_memory(&workspace, &target, &options.tasks);
        fs::write(&memory_file, &memory).expect("write the memory results");
        let spawn = run_program(&workspace, &target, "spawn", &[]);
        fs::write(&spawn_file, &spawn).expect("write the spawn results");
        if options.callgrind {
            match run_callgrind(&workspace, &target) {
                Some(counts) => fs::write(&callgrind_file, counts.to_string())
                    .expect("write the instruction counts"),
                None => {
                    let _ = fs::remove_file(&callgrind_file);
                }
            }
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
    let memory: Value = fs::read_to_string(&memory_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);

    let spawn: Value = fs::read_to_string(&spawn_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let instructions: Value = fs::read_to_string(&callgrind_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
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
        instructions,
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

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[allow(clippy::too_many_arguments)]
fn cargo_bench(
    workspace: &Path,
    target: &Path,
    home: &Path,
    bench: &str,
    filter: Option<&str>,
    options: &Options,
    unstable: bool,
) {
    eprintln!(
        "== cargo bench --bench {bench}{}{}",
        filter.map(|f| format!(" -- {f}")).unwrap_or_default(),
        if unstable {
            " (--cfg tokio_unstable)"
        } else {
            ""
        }
    );
    let mut cmd = cargo();
    cmd.current_dir(workspace)
        .args(["bench", "-p", "tasklocal-benches", "--bench", bench, "--"])
        .args(filter)
        .args([
            "--noplot",
            "--warm-up-time",
            options.warm_up,
            "--measurement-time",
            options.measurement,
        ])
        .env("CARGO_TARGET_DIR", target)
        .env("CRITERION_HOME", home)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if unstable {
        let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        cmd.env("RUSTFLAGS", format!("{flags} --cfg tokio_unstable"));
    }
    let status = cmd.status().expect("run cargo bench");
    assert!(status.success(), "cargo bench --bench {bench} failed");
}

fn run_memory(workspace: &Path, target: &Path, tasks: &str) -> String {
    eprintln!("== memory and scale (--tasks {tasks})");
    run_program(workspace, target, "memory", &["--tasks", tasks])
}

/// Runs the program `bin` of this crate with `--json` and `args`; its standard output.
fn run_program(workspace: &Path, target: &Path, bin: &str, args: &[&str]) -> String {
    eprintln!("== {bin}");
    let out = cargo()
        .current_dir(workspace)
        .args([
            "run",
            "--release",
            "-p",
            "tasklocal-benches",
            "--bin",
            bin,
            "--",
            "--json",
        ])
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run the {bin} program: {e}"));
    assert!(out.status.success(), "the {bin} program failed");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// What `examples/hotpath.rs` calls, and how many times: the instructions of one call
/// are the function's inclusive count divided by this.
const HOTPATH: [(&str, f64); 18] = [
    ("std_get", 1e6),
    ("std_set", 1e6),
    ("tokio_get", 1e6),
    ("local_get", 1e6),
    ("local_set", 1e6),
    ("inheritable_get", 1e6),
    ("inheritable_set", 1e6),
    ("dynamic_get", 1e6),
    ("id", 1e6),
    ("poll_bare", 1e6),
    ("poll_tokio", 1e6),
    ("poll_task", 1e6),
    ("spawn_tokio", 2e5),
    ("spawn_tasklocal", 6e5),
    ("spawn_await_tokio", 2e5),
    ("spawn_await_tasklocal", 2e5),
    ("spawn_await_tasklocal_0", 2e5),
    ("spawn_await_tasklocal_64", 2e5),
];

/// Counts instructions per call of the hot paths under callgrind (exact, whatever the
/// load); `None` when valgrind is not installed.
fn run_callgrind(workspace: &Path, target: &Path) -> Option<Value> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("== valgrind not found: no instruction counts");
        return None;
    }
    eprintln!("== instruction counts (callgrind, examples/hotpath.rs)");
    let status = cargo()
        .current_dir(workspace)
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "tasklocal-benches",
            "--example",
            "hotpath",
        ])
        .env("CARGO_TARGET_DIR", target)
        .status()
        .ok()?;
    assert!(status.success(), "building examples/hotpath.rs failed");
    let out_file = target.join("tasklocal-callgrind.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(target.join("release/examples/hotpath"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    assert!(status.success(), "callgrind failed");
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&out_file)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&annotated.stdout);
    let mut counts = serde_json::Map::new();
    for (name, calls) in HOTPATH {
        let needle = format!("hotpath::{name} [");
        let total = text.lines().find(|l| l.contains(&needle)).and_then(|l| {
            l.split_whitespace()
                .next()?
                .replace(',', "")
                .parse::<f64>()
                .ok()
        });
        if let Some(total) = total {
            counts.insert(name.to_string(), Value::from((total / calls).round()));
        }
    }
    Some(Value::Object(counts))
}

/// Adds `new` to `into` under `prefix`, keeping the lower median of a benchmark seen
/// twice.
fn keep_lower(
    into: &mut BTreeMap<String, Estimate>,
    new: BTreeMap<String, Estimate>,
    prefix: &str,
) {
    for (id, e) in new {
        let id = format!("{prefix}{id}");
        match into.get(&id) {
            Some(old) if old.median <= e.median => {}
            _ => {
                into.insert(id, e);
            }
        }
    }
}

fn estimates_to_json(results: &BTreeMap<String, Estimate>) -> Value {
    results
        .iter()
        .map(|(id, e)| (id.clone(), serde_json::json!([e.median, e.low, e.high])))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn estimates_from_json(v: &Value) -> BTreeMap<String, Estimate> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, e)| {
            Some((
                id.clone(),
                Estimate {
                    median: e[0].as_f64()?,
                    low: e[1].as_f64()?,
                    high: e[2].as_f64()?,
                },
            ))
        })
        .collect()
}

/// Every `new/estimates.json` under `home`, by "group/function" id; with `since`, only
/// those written after it (results of benchmarks removed since are left out).
fn read_estimates(home: &Path, since: Option<SystemTime>) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().and_then(|n| n.to_str()) != Some("estimates.json")
                || path
                    .parent()
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    != Some("new")
            {
                continue;
            }
            if let Some(since) = since {
                let written = entry.metadata().and_then(|m| m.modified());
                if written.map_or(true, |w| w < since) {
                    continue;
                }
            }
            let Some(id) = fs::read_to_string(path.with_file_name("benchmark.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["full_id"].as_str().map(str::to_string))
            else {
                continue;
            };
            let Some(est) = fs::read_to_string(&path)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            else {
                continue;
            };
            let median = &est["median"];
            let (Some(median), Some(low), Some(high)) = (
                median["point_estimate"].as_f64(),
                median["confidence_interval"]["lower_bound"].as_f64(),
                median["confidence_interval"]["upper_bound"].as_f64(),
            ) else {
                continue;
            };
            out.insert(id, Estimate { median, low, high });
        }
    }
    out
}

/// Samples the 1-minute load average every two seconds while the benchmarks run.
struct LoadSampler {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<f64>,
}

impl LoadSampler {
    fn start() -> LoadSampler {
        let (done, stop) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut peak = 0.0_f64;
            loop {
                let one = fs::read_to_string("/proc/loadavg")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .unwrap_or(0.0);
                peak = peak.max(one);
                match stop.recv_timeout(std::time::Duration::from_secs(2)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return peak,
                }
            }
        });
        LoadSampler { done, thread }
    }

    fn stop(self) -> Option<f64> {
        let _ = self.done.send(());
        self.thread.join().ok()
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct Machine {
    cpus: usize,
    cpu_model: String,
    rustc: String,
    versions: Vec<(String, String)>,
    load_before: String,
    load_after: String,
    /// The highest 1-minute load average seen during the run.
    peak_load: Option<f64>,
    /// The commit measured, and whether `tasklocal/` had uncommitted changes.
    source: String,
}

impl Machine {
    fn probe(workspace: &Path, load_before: String, load_after: String) -> Machine {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let lock = fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
        let versions = [
            "tasklocal",
            "tokio",
            "futures",
            "thread_local",
            "opentelemetry",
            "criterion",
        ]
        .iter()
        .map(|name| (name.to_string(), locked_version(&lock, name)))
        .collect();
        Machine {
            cpus,
            cpu_model,
            rustc,
            versions,
            load_before,
            load_after,
            peak_load: None,
            source: source_version(workspace),
        }
    }
}

/// `git` commit of the workspace, noting uncommitted changes to the library.
fn source_version(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                git(&["status", "--porcelain", "--", "tasklocal"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("`{commit}` with uncommitted changes in `tasklocal/`")
            } else {
                format!("`{commit}`")
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

/// The version of `name` in a `Cargo.lock`.
fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|at| {
            let rest = &lock[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// A budget line of SPEC.md section 8.
struct Budget {
    what: String,
    /// The label in the chart.
    short: &'static str,
    measured: Option<f64>,
    limit: f64,
    /// `true`: the measured value must be at most `limit`; `false`: at least.
    at_most: bool,
    unit: &'static str,
    detail: String,
}

impl Budget {
    fn pass(&self) -> Option<bool> {
        let m = self.measured?;
        Some(if self.at_most {
            m <= self.limit
        } else {
            m >= self.limit
        })
    }
    fn verdict(&self) -> &'static str {
        match self.pass() {
            Some(true) => "**pass**",
            Some(false) => "**FAIL**",
            None => "not measured",
        }
    }
    fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if self.unit == "×" => format!("{m:.2}×"),
            Some(m) => format!("{m} {}", self.unit),
            None => "—".into(),
        }
    }
    fn limit_text(&self) -> String {
        let op = if self.at_most { "≤" } else { "≥" };
        if self.unit == "×" {
            format!("{op} {}×", self.limit)
        } else {
            format!("{op} {} {}", self.limit, self.unit)
        }
    }
}

/// Each group's baseline, the row every other row of the group is divided by.
const BASELINES: [(&str, &str); 8] = [
    ("get_u64", "std_thread_local_cell"),
    ("set_u64", "std_thread_local_cell"),
    ("dynamic_get_u64", "std_thread_local_hashmap_any"),
    ("dynamic_set_u64", "std_thread_local_hashmap_any"),
    ("id", "tokio_try_id_in_tokio_task"),
    ("poll", "tokio_task_local_future_1_key"),
    ("spawn_await", "tokio_spawn"),
    ("snapshot", "bare_closure_call"),
];

/// Published figures, not measured here.
const PUBLISHED: [(&str, &str, &str); 7] = [
    ("timandy/routine", "goroutine-local `Get`", "8.6 ns"),
    ("timandy/routine", "goroutine-local `Set`", "22.6 ns"),
    (
        "timandy/routine",
        "inherit on spawn (`GoWait` with inheritable values)",
        "3.5× a plain `go` spawn",
    ),
    ("huandu/go-tls", "`Get`", "20 ns"),
    ("jtolds/gls", "`GetValue`", "~900–1,400 ns"),
    ("Go stdlib", "`ctx.Value`", "5 ns"),
    ("Go stdlib", "`context.WithValue`", "55 ns"),
];

struct Report<'a> {
    results: BTreeMap<String, Estimate>,
    memory: Value,
    /// The interleaved spawn + await rounds of `src/bin/spawn.rs`.
    spawn: Value,
    instructions: Value,
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

    fn budgets(&self) -> Vec<Budget> {
        let m = &self.memory;
        let std_get = "get_u64/std_thread_local_cell";
        let poll_overhead = |id: &str| Some(self.median(id)? - self.median("poll/bare_future")?);
        let tl_poll = poll_overhead("poll/tasklocal_task_1_value");
        let tokio_poll = poll_overhead("poll/tokio_task_local_future_1_key");
        // Spawn lines: the interleaved rounds of `src/bin/spawn.rs` when they ran (both
        // sides of each ratio in the same rounds), else criterion's medians.
        let interleaved = |n: &str| self.spawn["median_ns"][n].as_f64();
        let spawn_ns =
            |n: &str| interleaved(n).or_else(|| self.median(&format!("spawn_await/{n}")));
        let spawns: Vec<Option<f64>> = [0, 1, 8, 64]
            .iter()
            .map(|n| spawn_ns(&format!("tasklocal_spawn_{n}_values")))
            .collect();
        let spawn_ratio = self.spawn["median_ratio_to_tokio_spawn"]["tasklocal_spawn_8_values"]
            .as_f64()
            .or_else(|| {
                self.ratio(
                    "spawn_await/tasklocal_spawn_8_values",
                    "spawn_await/tokio_spawn",
                )
            });
        let spawn_source = if self.spawn.is_null() {
            "criterion medians"
        } else {
            "interleaved rounds, median of per-round ratios"
        };
        let spread = spawns
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(|v| {
                let max = v.iter().copied().fold(f64::MIN, f64::max);
                let min = v.iter().copied().fold(f64::MAX, f64::min);
                max / min
            });
        let rss = |k: &str| m["rss_bytes_per_task"][k].as_f64();
        let allocs = |k: &str| m["allocations"][k].as_f64();
        vec![
            Budget {
                what: "`Local::get` u64 in a `Task` vs std `thread_local!` `Cell::get`".into(),
                short: "Local::get vs std Cell::get",
                measured: self.ratio("get_u64/tasklocal_in_task", std_get),
                limit: 2.5,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {}",
                    self.ns("get_u64/tasklocal_in_task"),
                    self.ns(std_get)
                ),
            },
            Budget {
                what: "`Local::get` u64 in a `Task` vs tokio `task_local!` `get`".into(),
                short: "Local::get vs tokio task_local! get",
                measured: self.ratio("get_u64/tasklocal_in_task", "get_u64/tokio_task_local"),
                limit: 2.0,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {}",
                    self.ns("get_u64/tasklocal_in_task"),
                    self.ns("get_u64/tokio_task_local")
                ),
            },
            Budget {
                what: "`Local::set` u64 (present) vs std `Cell::set`".into(),
                short: "Local::set vs std Cell::set",
                measured: self.ratio("set_u64/tasklocal_in_task", "set_u64/std_thread_local_cell"),
                limit: 3.0,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {}",
                    self.ns("set_u64/tasklocal_in_task"),
                    self.ns("set_u64/std_thread_local_cell")
                ),
            },
            Budget {
                what: "`Local::set` u64 (present): allocations per call".into(),
                short: "Local::set: allocations",
                measured: allocs("local_set_present"),
                limit: 0.0,
                at_most: true,
                unit: "allocations",
                detail: "counting global allocator, typed and inheritable keys".into(),
            },
            Budget {
                what: "dynamic `get(&\"key\")` u64 vs std `Cell::get`".into(),
                short: r#"dynamic get(&"key") vs Cell::get"#,
                measured: self.ratio("dynamic_get_u64/tasklocal_in_task", std_get),
                limit: 5.0,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {}",
                    self.ns("dynamic_get_u64/tasklocal_in_task"),
                    self.ns(std_get)
                ),
            },
            Budget {
                what: "`id()` vs std `Cell::get`".into(),
                short: "id() vs Cell::get",
                measured: self.ratio("id/tasklocal_in_task", std_get),
                limit: 2.0,
                at_most: true,
                unit: "×",
                detail: format!("{} vs {}", self.ns("id/tasklocal_in_task"), self.ns(std_get)),
            },
            Budget {
                what: "`Task` overhead per poll (one value set) vs tokio `TaskLocalFuture` (one key)"
                    .into(),
                short: "Task per-poll overhead vs TaskLocalFuture",
                measured: tl_poll.zip(tokio_poll).map(|(a, b)| a / b),
                limit: 1.5,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {} above a bare future's poll ({})",
                    tl_poll.map_or("—".into(), fmt_ns),
                    tokio_poll.map_or("—".into(), fmt_ns),
                    self.ns("poll/bare_future")
                ),
            },
            Budget {
                what: "`tasklocal::spawn` with 8 inherited values vs plain `tokio::spawn` (spawn + await)"
                    .into(),
                short: "spawn, 8 values vs tokio::spawn",
                measured: spawn_ratio,
                limit: 1.1,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {} ({spawn_source})",
                    spawn_ns("tasklocal_spawn_8_values").map_or("—".into(), fmt_ns),
                    spawn_ns("tokio_spawn").map_or("—".into(), fmt_ns),
                ),
            },
            Budget {
                what: "… independent of the number: slowest / fastest of 0, 1, 8, 64 values".into(),
                short: "spawn: slowest / fastest of 0–64 values",
                measured: spread,
                limit: 1.1,
                at_most: true,
                unit: "×",
                detail: spawns
                    .iter()
                    .zip([0, 1, 8, 64])
                    .map(|(t, n)| format!("{n}: {}", t.map_or("—".into(), fmt_ns)))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            Budget {
                what: "a `Task` that never touches storage: allocations".into(),
                short: "untouched Task: allocations",
                measured: allocs("task_untouched")
                    .zip(allocs("task_untouched_inheriting_8"))
                    .map(|(a, b)| a.max(b)),
                limit: 0.0,
                at_most: true,
                unit: "allocations",
                detail: format!(
                    "isolated: {}, inheriting 8 values: {} per task (created, polled twice, completed)",
                    allocs("task_untouched").map_or("—".into(), |a| a.to_string()),
                    allocs("task_untouched_inheriting_8").map_or("—".into(), |a| a.to_string()),
                ),
            },
            Budget {
                what: format!(
                    "{} idle `tasklocal::spawn`ed tasks: resident memory vs plain `tokio::spawn`",
                    fmt_count(m["tasks"].as_u64().unwrap_or(0))
                ),
                short: "idle tasks: RSS vs tokio::spawn",
                measured: rss("tasklocal_spawn_untouched")
                    .zip(rss("tokio_spawn"))
                    .map(|(a, b)| a / b),
                limit: 1.15,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {} per task",
                    rss("tasklocal_spawn_untouched").map_or("—".into(), fmt_bytes),
                    rss("tokio_spawn").map_or("—".into(), fmt_bytes)
                ),
            },
            Budget {
                what: "two threads on separate tasks vs one (get + set throughput)".into(),
                short: "2 threads vs 1: throughput",
                measured: m["scaling"]["tasklocal"]["ratio"].as_f64(),
                limit: 1.8,
                at_most: false,
                unit: "×",
                detail: format!(
                    "std `thread_local!` on the same machine: {}",
                    m["scaling"]["std_thread_local"]["ratio"]
                        .as_f64()
                        .map_or("—".into(), |r| format!("{r:.2}×"))
                ),
            },
        ]
    }

    fn render(&self) -> (String, String) {
        let budgets = self.budgets();
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Generated by `cargo run --release -p tasklocal-benches --bin report`{} — do not \
             edit by hand. Every accessor is called through a `black_box`ed function pointer \
             (one call the optimizer cannot hoist out of the loop) on both sides of each ratio; \
             all rows of one table come from the same run. Times are criterion medians{}.\n",
            if self.options.automatic {
                " `--automatic`"
            } else {
                ""
            },
            if self.options.run {
                format!(
                    " (warm-up {} s, measurement {} s per benchmark; `core` and `overhead` \
                     ran {} times, each in a fresh process, and each benchmark keeps its \
                     lower median: a slow phase of a shared machine only ever inflates one)",
                    self.options.warm_up, self.options.measurement, self.options.repeat
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(w, "![ratios against the budget](benchmarks.svg)\n");

        let _ = writeln!(w, "## Machine\n");
        let mc = &self.machine;
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| CPU | {} |", mc.cpu_model);
        let _ = writeln!(w, "| `nproc` | {} |", mc.cpus);
        let _ = writeln!(w, "| tasklocal source | {} |", mc.source);
        let _ = writeln!(w, "| rustc | `{}` |", mc.rustc);
        let _ = writeln!(
            w,
            "| crates | {} |",
            mc.versions
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            w,
            "| load average (1, 5, 15 min) | {} before the run, {} after; highest 1-min \
             load during the run: {} |",
            mc.load_before,
            mc.load_after,
            mc.peak_load.map_or("—".into(), |p| format!("{p:.2}"))
        );
        let _ = writeln!(w, "| noise | {} |\n", self.noise());

        let _ = writeln!(w, "## Budget (SPEC.md section 8)\n");
        let _ = writeln!(w, "| line | measured | budget | verdict | detail |");
        let _ = writeln!(w, "|---|---|---|---|---|");
        for b in &budgets {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                b.what,
                b.measured_text(),
                b.limit_text(),
                b.verdict(),
                b.detail
            );
        }
        let passed = budgets.iter().filter(|b| b.pass() == Some(true)).count();
        let _ = writeln!(
            w,
            "\n{passed} of {} budget lines pass in this run.\n",
            budgets.len()
        );

        let _ = writeln!(w, "## Medians and ratios\n");
        let _ = writeln!(
            w,
            "Each group is divided by its baseline (the row marked 1.00×). `poll` rows are \
             per poll of a future that returns `Pending` again and again, polled by hand with a \
             no-op waker; *overhead* is the median minus the bare future's. `spawn_await` \
             rows spawn and await an empty task on a current-thread runtime, from a parent \
             that is itself a `tasklocal::task` (except `tokio_spawn_bare_parent`).\n"
        );
        for (group, baseline) in BASELINES {
            self.group_table(w, group, Some(baseline));
        }

        self.spawn_table(w);
        let _ = writeln!(w, "## Memory and scale\n");
        self.memory_tables(w);
        self.instruction_table(w);

        let others: Vec<String> = {
            let mine: Vec<&str> = BASELINES.iter().map(|(g, _)| *g).collect();
            let mut groups: Vec<String> = self
                .results
                .keys()
                .filter_map(|id| id.rsplit_once('/').map(|(g, _)| g.to_string()))
                .filter(|g| !mine.contains(&g.as_str()))
                .collect();
            groups.sort();
            groups.dedup();
            groups
        };
        if !others.is_empty() {
            let _ = writeln!(w, "## Other benchmarks of this crate\n");
            let _ = writeln!(
                w,
                "`benches/mdc.rs`, `benches/http.rs` and (with `--automatic`) \
                 `benches/automatic.rs`; the baseline of each group is its plain / std / \
                 no-layer row where there is one.\n"
            );
            for group in &others {
                self.group_table(w, group, None);
            }
        }

        let _ = writeln!(w, "## Published reference figures (not measured here)\n");
        let _ = writeln!(
            w,
            "For scale only: these come from the projects' own published benchmarks, \
             measured on a 2-vCPU Xeon with Go 1.19/1.25, not on this machine and not in this run.\n"
        );
        let _ = writeln!(w, "| project | operation | published cost |\n|---|---|---|");
        for (project, op, cost) in PUBLISHED {
            let _ = writeln!(w, "| {project} | {op} | {cost} |");
        }
        let _ = writeln!(w);
        (md, self.svg(&budgets))
    }

    /// A one-line summary of how noisy the run was.
    fn noise(&self) -> String {
        let mut widths: Vec<f64> = self
            .results
            .values()
            .filter(|e| e.median > 0.0)
            .map(|e| (e.high - e.low) / e.median * 100.0)
            .collect();
        widths.sort_by(f64::total_cmp);
        if widths.is_empty() {
            return "no results".into();
        }
        let mid = widths[widths.len() / 2];
        let p90 = widths[(widths.len() * 9 / 10).min(widths.len() - 1)];
        format!(
            "95% confidence interval of the median: {mid:.1}% of it for the typical \
             benchmark, {p90:.1}% at the 90th percentile ({} benchmarks); load above {} \
             means other processes shared the CPUs",
            widths.len(),
            self.machine.cpus
        )
    }

    fn group_table(&self, w: &mut String, group: &str, baseline: Option<&str>) {
        let prefix = format!("{group}/");
        let rows: Vec<(&str, &Estimate)> = self
            .results
            .iter()
            .filter_map(|(id, e)| Some((id.strip_prefix(&prefix)?, e)))
            .filter(|(name, _)| !name.contains('/'))
            .collect();
        if rows.is_empty() {
            return;
        }
        let base = baseline
            .and_then(|b| rows.iter().find(|(n, _)| *n == b))
            .map(|(_, e)| e.median);
        // Groups of the other benches compare rows pairwise: each row with the row
        // that does the same work without tasklocal.
        let pair = |name: &str| -> Option<(&str, f64)> {
            let wanted = other_baseline(group, name)?;
            rows.iter()
                .find(|(n, _)| n.starts_with(wanted) && *n != name)
                .map(|(n, e)| (*n, e.median))
        };
        let poll = group == "poll";
        let bare = self.median("poll/bare_future");
        let _ = writeln!(w, "### `{group}`\n");
        if poll {
            let _ = writeln!(
                w,
                "| benchmark | median | 95% CI | overhead per poll | × baseline |\n|---|---|---|---|---|"
            );
        } else {
            let _ = writeln!(
                w,
                "| benchmark | median | 95% CI | ratio |\n|---|---|---|---|"
            );
        }
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| a.1.median.total_cmp(&b.1.median));
        for (name, e) in sorted {
            let ratio = match (base, pair(name)) {
                (Some(b), _) => format!("{:.2}×", e.median / b),
                (None, Some((other, b))) => format!("{:.2}× `{other}`", e.median / b),
                _ => "—".into(),
            };
            let marked = if Some(name) == baseline {
                format!("**{name}** (baseline)")
            } else {
                format!("`{name}`")
            };
            let ci = format!("{} – {}", fmt_ns(e.low), fmt_ns(e.high));
            if poll {
                let over = bare.map_or("—".into(), |b| fmt_ns(e.median - b));
                let _ = writeln!(
                    w,
                    "| {marked} | {} | {ci} | {over} | {ratio} |",
                    fmt_ns(e.median)
                );
            } else {
                let _ = writeln!(w, "| {marked} | {} | {ci} | {ratio} |", fmt_ns(e.median));
            }
        }
        let _ = writeln!(w);
    }

    fn spawn_table(&self, w: &mut String) {
        let s = &self.spawn;
        if s["median_ns"].as_object().is_none() {
            return;
        }
        let names = [
            "tokio_spawn",
            "tasklocal_spawn_0_values",
            "tasklocal_spawn_1_values",
            "tasklocal_spawn_8_values",
            "tasklocal_spawn_64_values",
        ];
        let _ = writeln!(w, "## Spawn + await, interleaved\n");
        let _ = writeln!(
            w,
            "Measured by `benches/src/bin/spawn.rs`, the source of the spawn budget lines: \
             {} rounds, each running a batch of {} spawns + awaits of every variant (in a \
             rotating order, each batch in a fresh parent `Task` with its values set) and \
             dividing each batch by the round's `tokio::spawn` batch; the ratio is the median \
             of those per-round ratios. Criterion's `spawn_await` rows above measure the same \
             loops one benchmark after another, where a slow phase of the machine, or the \
             shape in which the previous benchmark left the heap, moves one median against \
             another by up to ±15%.\n",
            s["rounds"], s["batch"]
        );
        let _ = writeln!(
            w,
            "| variant | median per spawn + await | × `tokio::spawn` |"
        );
        let _ = writeln!(w, "|---|---|---|");
        for name in names {
            let ratio = s["median_ratio_to_tokio_spawn"][name].as_f64();
            let _ = writeln!(
                w,
                "| `{name}` | {} | {} |",
                s["median_ns"][name].as_f64().map_or("—".into(), fmt_ns),
                ratio.map_or("—".into(), |r| format!("{r:.3}×"))
            );
        }
        let _ = writeln!(w);
    }

    fn memory_tables(&self, w: &mut String) {
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

    fn instruction_table(&self, w: &mut String) {
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
        let rows: [(&str, &str, &str, &str, &str); 12] = [
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

    /// Two panels: every budget line against its limit, and the cost of a read next
    /// to the published Go figures.
    fn svg(&self, budgets: &[Budget]) -> String {
        let label_w = 300.0;
        let bar_w = 380.0;
        let row = 24.0;
        let width = label_w + bar_w + 170.0;
        let top1 = 58.0;
        let panel1 = budgets.len() as f64 * row;
        let reads: Vec<(&str, Option<f64>, bool)> = vec![
            (
                "std thread_local! Cell::get",
                self.median("get_u64/std_thread_local_cell"),
                false,
            ),
            (
                "tokio task_local! get",
                self.median("get_u64/tokio_task_local"),
                false,
            ),
            (
                "thread_local crate get",
                self.median("get_u64/thread_local_crate"),
                false,
            ),
            (
                "tasklocal Local::get in a Task",
                self.median("get_u64/tasklocal_in_task"),
                false,
            ),
            (
                "tasklocal dynamic get(&\"key\")",
                self.median("dynamic_get_u64/tasklocal_in_task"),
                false,
            ),
            (
                "OpenTelemetry Context get",
                self.median("get_u64/opentelemetry_context"),
                false,
            ),
            ("Go ctx.Value", Some(5.0), true),
            ("timandy/routine Get", Some(8.6), true),
            ("huandu/go-tls Get", Some(20.0), true),
            ("jtolds/gls GetValue (~900–1,400)", Some(1100.0), true),
        ];
        let top2 = top1 + panel1 + 78.0;
        let height = top2 + reads.len() as f64 * row + 16.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
        );
        let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="10" y="22" font-size="15" font-weight="bold">tasklocal against its budget (SPEC.md section 8)</text>"##
        );
        let _ = writeln!(
            s,
            r##"<text x="10" y="40" fill="#555">Bars: measured ratio (green within budget, red over); black tick: the budget. {} CPUs, {}, one run.</text>"##,
            self.machine.cpus,
            xml(&self.machine.cpu_model)
        );
        let max = budgets
            .iter()
            .filter(|b| b.unit == "×")
            .flat_map(|b| [b.measured.unwrap_or(0.0), b.limit])
            .fold(2.0_f64, f64::max)
            * 1.05;
        let x_of = |v: f64| label_w + (v / max).clamp(0.0, 1.0) * bar_w;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y2}" stroke="#999" stroke-dasharray="3,3"/><text x="{x:.1}" y="{ty}" text-anchor="middle" fill="#555">1×</text>"##,
            x = x_of(1.0),
            y1 = top1,
            y2 = top1 + panel1,
            ty = top1 + panel1 + 14.0
        );
        for (i, b) in budgets.iter().enumerate() {
            let y = top1 + i as f64 * row;
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
                label_w - 8.0,
                y + 16.0,
                xml(b.short)
            );
            let color = match b.pass() {
                Some(true) => "#3a9a3a",
                Some(false) => "#c83232",
                None => "#aaaaaa",
            };
            if b.unit != "×" {
                // A count that must be zero: a dot and the number.
                let _ = writeln!(
                    s,
                    r##"<circle cx="{}" cy="{}" r="6" fill="{color}"/><text x="{}" y="{}">{} (budget {})</text>"##,
                    label_w + 6.0,
                    y + 12.0,
                    label_w + 18.0,
                    y + 16.0,
                    xml(&b.measured_text()),
                    xml(&b.limit_text())
                );
                continue;
            }
            let v = b.measured.unwrap_or(0.0);
            let _ = writeln!(
                s,
                r##"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"##,
                y + 4.0,
                x_of(v) - label_w,
                row - 8.0
            );
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#000" stroke-width="2"/>"##,
                y + 1.0,
                y + row - 1.0,
                x = x_of(b.limit)
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}">{} (budget {})</text>"##,
                x_of(v.max(b.limit)) + 6.0,
                y + 16.0,
                xml(&b.measured_text()),
                xml(&b.limit_text())
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}" font-size="15" font-weight="bold">One read of a u64, ns</text><text x="10" y="{}" fill="#555">Blue: measured in this run. Grey: published Go figures (2-vCPU Xeon, Go 1.19/1.25), not measured here.</text>"##,
            top2 - 32.0,
            top2 - 14.0
        );
        let read_max = 25.0;
        let x_ns = |v: f64| label_w + (v / read_max).min(1.0) * bar_w;
        for (i, (label, v, published)) in reads.iter().enumerate() {
            let y = top2 + i as f64 * row;
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
                label_w - 8.0,
                y + 16.0,
                xml(label)
            );
            let Some(v) = v else { continue };
            let color = if *published { "#b0b0b0" } else { "#3a6fb0" };
            let _ = writeln!(
                s,
                r##"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"##,
                y + 4.0,
                x_ns(*v) - label_w,
                row - 8.0
            );
            let text = if *v > read_max {
                format!("{v:.0} ns, off scale")
            } else {
                format!("{v:.1} ns")
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}">{text}</text>"##,
                x_ns(*v) + 6.0,
                y + 16.0
            );
        }
        let _ = writeln!(s, "</svg>");
        s
    }
}

/// For the groups of the other benches: the row that `name` is compared with (a
/// prefix of its name).
fn other_baseline(group: &str, name: &str) -> Option<&'static str> {
    if name.contains("+ ServerLayer") {
        Some("axum router, no layer")
    } else if name.contains("+ ClientLayer") {
        Some("tower client, no layer")
    } else if name.starts_with("mdc_logger_4") || name.starts_with("with_mdc_4") {
        Some("plain_4_explicit")
    } else if name.ends_with("empty_mdc") {
        Some("plain_no_fields")
    } else if group.starts_with("mdc/") && name.starts_with("tasklocal") {
        Some("std_thread_local")
    } else if group.starts_with("tokio_unstable: ") && name.starts_with("tasklocal") {
        Some("std_thread_local_cell")
    } else if group.contains("poll_") || group.contains("spawn_await_current_thread") {
        (name != "plain").then_some("plain")
    } else {
        None
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns.abs() >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns.abs() >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.2} ns")
    }
}

fn fmt_bytes(b: f64) -> String {
    format!("{b:.0} B")
}

fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
