//! The budget lines of SPEC.md section 8 (and 8b), each measured from the results and
//! checked against its limit.

use crate::markdown::{fmt_bytes, fmt_count, fmt_ns};
use crate::Report;

/// A budget line of SPEC.md section 8.
pub(crate) struct Budget {
    pub(crate) what: String,
    /// The label in the chart.
    pub(crate) short: &'static str,
    pub(crate) measured: Option<f64>,
    pub(crate) limit: f64,
    /// `true`: the measured value must be at most `limit`; `false`: at least.
    pub(crate) at_most: bool,
    pub(crate) unit: &'static str,
    pub(crate) detail: String,
}

impl Budget {
    pub(crate) fn pass(&self) -> Option<bool> {
        let m = self.measured?;
        Some(if self.at_most {
            m <= self.limit
        } else {
            m >= self.limit
        })
    }
    pub(crate) fn verdict(&self) -> &'static str {
        match self.pass() {
            Some(true) => "**pass**",
            Some(false) => "**FAIL**",
            None => "not measured",
        }
    }
    pub(crate) fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if self.unit == "×" => format!("{m:.2}×"),
            Some(m) => format!("{m} {}", self.unit),
            None => "—".into(),
        }
    }
    pub(crate) fn limit_text(&self) -> String {
        let op = if self.at_most { "≤" } else { "≥" };
        if self.unit == "×" {
            format!("{op} {}×", self.limit)
        } else {
            format!("{op} {} {}", self.limit, self.unit)
        }
    }
}

impl Report<'_> {
    pub(crate) fn budgets(&self) -> Vec<Budget> {
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
}
