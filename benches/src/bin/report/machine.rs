//! The machine and the run: CPU, toolchain, crate versions, the load average before,
//! during and after, and the commit measured.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Samples the 1-minute load average every two seconds while the benchmarks run.
pub(crate) struct LoadSampler {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<f64>,
}

impl LoadSampler {
    pub(crate) fn start() -> LoadSampler {
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

    pub(crate) fn stop(self) -> Option<f64> {
        let _ = self.done.send(());
        self.thread.join().ok()
    }
}

pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) rustc: String,
    pub(crate) versions: Vec<(String, String)>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    /// The highest 1-minute load average seen during the run.
    pub(crate) peak_load: Option<f64>,
    /// The commit measured, and whether `tasklocal/` had uncommitted changes.
    pub(crate) source: String,
}

impl Machine {
    pub(crate) fn probe(workspace: &Path, load_before: String, load_after: String) -> Machine {
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
pub(crate) fn source_version(workspace: &Path) -> String {
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
pub(crate) fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|at| {
            let rest = &lock[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "?".into())
}
