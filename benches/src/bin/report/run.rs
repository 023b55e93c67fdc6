//! Running the measurements: criterion benches through `cargo bench`, the `memory` and
//! `spawn` programs of this crate, and `examples/hotpath.rs` under callgrind.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::Options;

/// The benches that need no special build, in report order: this crate's (`bridge` in
/// a process of its own: it installs the OpenTelemetry bridge), and `lean` of
/// `tasklocal-benches-lean` (tasklocal with its default features, no `tokio`).
pub(crate) const BENCHES: [&str; 7] = [
    "core", "overhead", "mdc", "http", "request", "bridge", "lean",
];
/// The benches of the budget lines: run `--repeat` times, the lower median counts.
pub(crate) const REPEATED: [&str; 3] = ["core", "overhead", "lean"];

/// The package that has `bench` (or `example`): built on its own, so that its features
/// are its own.
fn package(bench: &str) -> &'static str {
    if bench.contains("lean") {
        "tasklocal-benches-lean"
    } else {
        "tasklocal-benches"
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn cargo_bench(
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
        .args(["bench", "-p", package(bench), "--bench", bench, "--"])
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

pub(crate) fn run_memory(workspace: &Path, target: &Path, tasks: &str) -> String {
    eprintln!("== memory and scale (--tasks {tasks})");
    run_program(workspace, target, "memory", &["--tasks", tasks], false)
}

/// Runs program `bin` of this crate with `--json` and `args`, built in `target`; with
/// `unstable`, built with `--cfg tokio_unstable`. Its standard output.
pub(crate) fn run_program(
    workspace: &Path,
    target: &Path,
    bin: &str,
    args: &[&str],
    unstable: bool,
) -> String {
    eprintln!("== {bin} {}", args.join(" "));
    let mut cmd = cargo();
    if unstable {
        let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        cmd.env("RUSTFLAGS", format!("{flags} --cfg tokio_unstable"));
    }
    let out = cmd
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
pub(crate) const HOTPATH: [(&str, f64); 21] = [
    ("std_get", 1e6),
    ("std_set", 1e6),
    ("tokio_get", 1e6),
    ("local_get", 1e6),
    ("local_set", 1e6),
    ("inheritable_get", 1e6),
    ("inheritable_set", 1e6),
    ("inherited_get", 1e6),
    ("unset_get", 1e6),
    ("plain_unset_get", 1e6),
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
pub(crate) fn run_callgrind(workspace: &Path, target: &Path) -> Option<Value> {
    run_callgrind_example(workspace, target, "hotpath", &HOTPATH)
}

/// What `examples/hotpath_request.rs` (SPEC.md 8b) calls: 100,000 times each.
pub(crate) const HOTPATH_REQUEST: [(&str, f64); 18] = [
    ("std_get", 1e5),
    ("thread_owner_get", 1e5),
    ("tokio_sync_scope", 1e5),
    ("local_scope", 1e5),
    ("hashmap_insert", 1e5),
    ("hashmap_get", 1e5),
    ("mdc_insert", 1e5),
    ("mdc_get", 1e5),
    ("otel_extract", 1e5),
    ("tasklocal_extract", 1e5),
    ("otel_inject", 1e5),
    ("tasklocal_inject", 1e5),
    ("service_plain", 1e5),
    ("service_layered", 1e5),
    ("log_inline_kv", 1e5),
    ("log_mdc_logger", 1e5),
    ("trivial", 1e5),
    ("headers", 1e5),
];

/// What `examples/hotpath_bridge.rs` (SPEC.md 9) calls: 1,000,000 polls each.
pub(crate) const HOTPATH_BRIDGE: [(&str, f64); 3] = [
    ("poll_bare", 1e6),
    ("poll_with_context", 1e6),
    ("poll_task_bridged", 1e6),
];

/// What `examples/hotpath_lean.rs` of `tasklocal-benches-lean` (no `tokio`) calls:
/// 1,000,000 times each.
pub(crate) const HOTPATH_LEAN: [(&str, f64); 4] = [
    ("std_get", 1e6),
    ("thread_owner_get", 1e6),
    ("thread_owner_inheritable_get", 1e6),
    ("thread_owner_set", 1e6),
];

/// The per-request, bridge and no-`tokio` counts:
/// `{"request": {..}, "bridge": {..}, "lean": {..}}`.
pub(crate) fn run_callgrind_request(workspace: &Path, target: &Path) -> Option<Value> {
    let request = run_callgrind_example(workspace, target, "hotpath_request", &HOTPATH_REQUEST)?;
    let bridge = run_callgrind_example(workspace, target, "hotpath_bridge", &HOTPATH_BRIDGE)?;
    let lean = run_callgrind_example(workspace, target, "hotpath_lean", &HOTPATH_LEAN)?;
    Some(serde_json::json!({ "request": request, "bridge": bridge, "lean": lean }))
}

/// Runs `src/bin/e2e.rs` (axum under loopback load); with `automatic`, built with
/// `--cfg tokio_unstable` in `target` so that automatic mode is one of its modes.
pub(crate) fn run_e2e(workspace: &Path, target: &Path, automatic: bool) -> String {
    eprintln!(
        "== e2e (axum under loopback load){}",
        if automatic {
            " (--cfg tokio_unstable)"
        } else {
            ""
        }
    );
    let mut cmd = cargo();
    cmd.current_dir(workspace)
        .args([
            "run",
            "--release",
            "-p",
            "tasklocal-benches",
            "--bin",
            "e2e",
            "--",
        ])
        .env("CARGO_TARGET_DIR", target)
        .stderr(Stdio::inherit());
    if automatic {
        let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        cmd.env("RUSTFLAGS", format!("{flags} --cfg tokio_unstable"));
    }
    let out = cmd.output().expect("run the e2e program");
    assert!(out.status.success(), "the e2e program failed");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Counts instructions per call of `calls` in `example` under callgrind.
fn run_callgrind_example(
    workspace: &Path,
    target: &Path,
    example: &str,
    calls_of: &[(&str, f64)],
) -> Option<Value> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("== valgrind not found: no instruction counts");
        return None;
    }
    eprintln!("== instruction counts (callgrind, examples/{example}.rs)");
    let status = cargo()
        .current_dir(workspace)
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            package(example),
            "--example",
            example,
        ])
        .env("CARGO_TARGET_DIR", target)
        .status()
        .ok()?;
    assert!(status.success(), "building examples/{example}.rs failed");
    let out_file = target.join(format!("tasklocal-callgrind-{example}.out"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(target.join("release/examples").join(example))
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
    for &(name, calls) in calls_of {
        let needle = format!("{example}::{name} [");
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
