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
        // The child reads one inherited value, as a child normally does (one that
        // reads nothing is in the detail).
        let spawn_line = "tasklocal_spawn_8_values_child_reads_one";
        let spawn_ratio = self.spawn["median_ratio_to_tokio_spawn"][spawn_line]
            .as_f64()
            .or_else(|| {
                self.ratio(
                    &format!("spawn_await/{spawn_line}"),
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
                what: "`tasklocal::spawn` with 8 inherited values, the child reading one, vs plain `tokio::spawn` (spawn + await)"
                    .into(),
                short: "spawn, 8 values vs tokio::spawn",
                measured: spawn_ratio,
                limit: 1.1,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {} ({spawn_source}); a child that reads nothing: {} ({})",
                    spawn_ns(spawn_line).map_or("—".into(), fmt_ns),
                    spawn_ns("tokio_spawn").map_or("—".into(), fmt_ns),
                    spawn_ns("tasklocal_spawn_8_values").map_or("—".into(), fmt_ns),
                    self.spawn["median_ratio_to_tokio_spawn"]["tasklocal_spawn_8_values"]
                        .as_f64()
                        .or_else(|| self.ratio("spawn_await/tasklocal_spawn_8_values", "spawn_await/tokio_spawn"))
                        .map_or("—".into(), |r| format!("{r:.2}×")),
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

impl Report<'_> {
    /// Instructions per call of `name` in `examples/hotpath_request.rs` (`"request"`) or
    /// `examples/hotpath_bridge.rs` (`"bridge"`).
    fn count(&self, program: &str, name: &str) -> Option<f64> {
        self.request_instructions[program][name].as_f64()
    }

    /// "a vs b ns; instructions x vs y (r×)" for a line measured by criterion and callgrind.
    fn both(&self, a: &str, b: &str, ia: Option<f64>, ib: Option<f64>) -> String {
        let instructions = match (ia, ib) {
            (Some(x), Some(y)) => format!("; instructions {x:.0} vs {y:.0} ({:.2}×)", x / y),
            _ => String::new(),
        };
        format!("{} vs {}{instructions}", self.ns(a), self.ns(b))
    }

    /// The lines of SPEC.md section 8b (the per-request path) and section 9 (the
    /// OpenTelemetry bridge), each with where its numbers come from.
    pub(crate) fn budgets_request(&self) -> Vec<Budget> {
        let ratio = |short: &'static str,
                     what: &str,
                     a: &str,
                     b: &str,
                     limit: f64,
                     ia: Option<f64>,
                     ib: Option<f64>,
                     source: &str| Budget {
            what: what.into(),
            short,
            measured: self.ratio(a, b),
            limit,
            at_most: true,
            unit: "×",
            detail: format!("{} — {source}", self.both(a, b, ia, ib)),
        };
        let r = |n: &str| self.count("request", n);
        let u = "tokio_unstable: ";
        let auto =
            |group: &str, a: &str, b: &str| (format!("{u}{group}/{a}"), format!("{u}{group}/{b}"));
        let (mt_a, mt_b) = auto(
            "poll_multi_thread_2_workers_64_tasks",
            "automatic_one_value_set",
            "plain",
        );
        let (ct_a, ct_b) = auto("poll_current_thread", "automatic", "plain");
        let (sp_a, sp_b) = auto(
            "spawn_await_current_thread",
            "automatic_from_task_holding_a_value",
            "plain_from_task",
        );
        // ServerLayer's overhead: the layered trivial service minus the service alone.
        let layer = self
            .median("request/server_layer/trivial_service_with_server_layer")
            .zip(self.median("request/server_layer/trivial_service"))
            .map(|(a, b)| a - b);
        let layer_ins = r("service_layered")
            .zip(r("service_plain"))
            .map(|(a, b)| a - b);
        let otel_extract = "request/propagation/extract/opentelemetry";
        // What a bridged poll cannot go below: a `Task`'s switch around `with_context`.
        let otel_with_context = "bridge_poll/opentelemetry_with_context";
        let bridge_floor = "bridge_poll/task_around_with_context_no_bridge";
        let bridge_floor = match self.ratio(bridge_floor, otel_with_context) {
            Some(r) => format!(
                "; its floor, a `Task` around `with_context` with no bridge: {} ({r:.2}×)",
                self.ns(bridge_floor)
            ),
            None => String::new(),
        };
        let e2e = &self.e2e["automatic_layer"];
        let e2e = if e2e.is_null() {
            &self.e2e["layer"]
        } else {
            e2e
        };
        let e2e_mode = if self.e2e["automatic_layer"].is_null() {
            "ServerLayer (outermost, around the router) + one MDC field, **without** automatic mode (not built with --cfg tokio_unstable)"
        } else {
            "automatic mode + ServerLayer (outermost, around the router) + one MDC field"
        };
        let bridge = |n: &str| self.count("bridge", n);
        let bench = "`cargo bench -p tasklocal-benches --bench";
        let unstable = "`RUSTFLAGS=\"--cfg tokio_unstable\" cargo bench -p tasklocal-benches --bench automatic`";
        // The automatic-mode spawn line: the interleaved rounds of `src/bin/spawn.rs
        // --automatic` when they ran (both sides of the ratio in the same rounds, as
        // for section 8's spawn line), else criterion's medians.
        let auto_spawn_what =
            "automatic mode, spawn + await from a task that holds a value vs without";
        let auto_spawn_short = "8b automatic spawn + await, value held";
        let sa = &self.spawn_automatic;
        let sa_ns = |n: &str| sa["median_ns"][n].as_f64().map_or("—".into(), fmt_ns);
        let sa_ratio = |n: &str| sa["median_ratio_to_plain_from_task"][n].as_f64();
        let auto_spawn = match sa_ratio("automatic_from_task_holding_a_value") {
            Some(r) => Budget {
                what: auto_spawn_what.into(),
                short: auto_spawn_short,
                measured: Some(r),
                limit: 1.15,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {} ({} interleaved rounds of {}, median of per-round ratios; \
                     no-op hooks alone: {}); criterion, one benchmark after another: {} — \
                     `RUSTFLAGS=\"--cfg tokio_unstable\" cargo run --release -p \
                     tasklocal-benches --bin spawn -- --automatic`",
                    sa_ns("automatic_from_task_holding_a_value"),
                    sa_ns("plain_from_task"),
                    sa["rounds"],
                    sa["batch"],
                    sa_ratio("noop_hooks_from_task").map_or("—".into(), |r| format!("{r:.2}×")),
                    self.both(&sp_a, &sp_b, None, None),
                ),
            },
            None => ratio(
                auto_spawn_short,
                auto_spawn_what,
                &sp_a,
                &sp_b,
                1.15,
                None,
                None,
                unstable,
            ),
        };
        // The automatic-mode per-poll lines: the interleaved rounds of
        // `src/bin/polls.rs` when they ran (as for the spawn lines), else criterion's.
        let pa = &self.polls_automatic;
        let auto_poll =
            |short: &'static str, what: &str, a: &str, base: &str, (ca, cb): (&str, &str)| {
                let pa_ns = |n: &str| pa["median_ns"][n].as_f64().map_or("—".into(), fmt_ns);
                match pa["median_ratio_to_plain"][a].as_f64() {
                    Some(r) => Budget {
                        what: what.into(),
                        short,
                        measured: Some(r),
                        limit: 1.10,
                        at_most: true,
                        unit: "×",
                        detail: format!(
                            "{} vs {} ({} interleaved rounds of {} polls, median of per-round \
                         ratios); criterion, one benchmark after another: {} — \
                         `RUSTFLAGS=\"--cfg tokio_unstable\" cargo run --release -p \
                         tasklocal-benches --bin polls`",
                            pa_ns(a),
                            pa_ns(base),
                            pa["rounds"],
                            pa["batch"],
                            self.both(ca, cb, None, None),
                        ),
                    },
                    None => ratio(short, what, ca, cb, 1.10, None, None, unstable),
                }
            };
        let auto_poll_mt = auto_poll(
            "8b automatic poll, 2 workers",
            "automatic mode per poll, multi-thread runtime with 2 workers vs the same runtime without",
            "mt_automatic_one_value_set",
            "mt_plain",
            (&mt_a, &mt_b),
        );
        let auto_poll_ct = auto_poll(
            "8b automatic poll, current-thread",
            "automatic mode per poll, current-thread runtime vs without",
            "ct_automatic",
            "ct_plain",
            (&ct_a, &ct_b),
        );
        let mut thread_line = ratio(
            "8b Local::get on a thread vs Cell::get",
            "`Local::get` on a thread owner vs std `thread_local!` `Cell::get`",
            "get_u64/tasklocal_on_thread",
            "get_u64/std_thread_local_cell",
            2.0,
            r("thread_owner_get"),
            r("std_get"),
            &format!("{bench} core`"),
        );
        // The floor with `tokio`: the isolation rule's question alone.
        thread_line.detail = format!(
            "{}; tokio's `try_id` alone, asked first on every access: {}",
            thread_line.detail,
            self.ns("get_u64/tokio_try_id_on_thread")
        );
        vec![
            ratio(
                "8b Local::scope vs tokio sync_scope",
                "`Local::scope` of a `u64` in a `Task` vs tokio `task_local!` `sync_scope`",
                "set_u64/tasklocal_scope_in_task",
                "set_u64/tokio_sync_scope",
                3.0,
                r("local_scope"),
                r("tokio_sync_scope"),
                &format!("{bench} core`"),
            ),
            thread_line,
            ratio(
                "8b Local::get on a thread, no tokio feature",
                "… the same, tasklocal with its default features (no `tokio`: no plain tokio task to ask about)",
                "get_u64_without_tokio/tasklocal_on_thread",
                "get_u64_without_tokio/std_thread_local_cell",
                2.0,
                self.count("lean", "thread_owner_get"),
                self.count("lean", "std_get"),
                "`cargo bench -p tasklocal-benches-lean`",
            ),
            ratio(
                "8b mdc::insert vs HashMap insert",
                "`mdc::insert` replacing one of 4 fields vs `thread_local!` `RefCell<HashMap<String, String>>` insert",
                "request/mdc/insert_replace/tasklocal_mdc",
                "request/mdc/insert_replace/std_thread_local_hashmap",
                1.5,
                r("mdc_insert"),
                r("hashmap_insert"),
                &format!("{bench} request`"),
            ),
            ratio(
                "8b mdc::get vs HashMap get + clone",
                "`mdc::get` of one of 4 fields vs that map's `get` + `clone`",
                "request/mdc/get/tasklocal_mdc",
                "request/mdc/get/std_thread_local_hashmap",
                1.5,
                r("mdc_get"),
                r("hashmap_get"),
                &format!("{bench} request`"),
            ),
            ratio(
                "8b http::extract vs OpenTelemetry",
                "`http::extract` (traceparent, tracestate 2 members, baggage 3 members) vs OpenTelemetry's TraceContext + Baggage propagators",
                "request/propagation/extract/tasklocal",
                otel_extract,
                0.5,
                r("tasklocal_extract"),
                r("otel_extract"),
                &format!("{bench} request`"),
            ),
            ratio(
                "8b http::inject vs OpenTelemetry",
                "`http::inject` of that context vs OpenTelemetry's inject",
                "request/propagation/inject/tasklocal",
                "request/propagation/inject/opentelemetry",
                0.5,
                r("tasklocal_inject"),
                r("otel_inject"),
                &format!("{bench} request`"),
            ),
            Budget {
                what: "`ServerLayer` overhead per request (those headers, trivial service) vs OpenTelemetry's extract alone".into(),
                short: "8b ServerLayer overhead vs OTel extract",
                measured: layer.zip(self.median(otel_extract)).map(|(a, b)| a / b),
                limit: 1.0,
                at_most: true,
                unit: "×",
                detail: format!(
                    "{} vs {}{} — {bench} request`",
                    layer.map_or("—".into(), fmt_ns),
                    self.ns(otel_extract),
                    layer_ins
                        .zip(r("otel_extract"))
                        .map_or(String::new(), |(a, b)| format!(
                            "; instructions {a:.0} vs {b:.0} ({:.2}×)",
                            a / b
                        )),
                ),
            },
            auto_poll_mt,
            auto_poll_ct,
            auto_spawn,
            ratio(
                "8b log record via MdcLogger vs inline kv",
                "a `log` record with 4 MDC fields through `MdcLogger` (env_logger) vs the same record with 4 inline key-values",
                "log_line_env_logger/mdc_logger_4_mdc_fields",
                "log_line_env_logger/plain_4_explicit_kv_fields",
                1.3,
                r("log_mdc_logger"),
                r("log_inline_kv"),
                &format!("{bench} mdc`"),
            ),
            Budget {
                what: format!("axum hello-world under loopback load, {e2e_mode}, vs plain axum: requests/s"),
                short: "8b axum + tasklocal vs plain: req/s",
                measured: e2e["median_ratio_requests_per_s_to_plain"].as_f64(),
                limit: 0.9,
                at_most: false,
                unit: "×",
                detail: format!(
                    "median of per-round ratios; {} vs {} req/s, p99 {} vs {} µs (p99 ratio {}), server CPU per request {} vs {} µs ({}); {}; {} — `cargo run --release -p tasklocal-benches --bin e2e` (report `--e2e`)",
                    e2e["median_requests_per_s"].as_f64().map_or("—".into(), |v| format!("{v:.0}")),
                    self.e2e["plain"]["median_requests_per_s"].as_f64().map_or("—".into(), |v| format!("{v:.0}")),
                    e2e["median_p99_us"].as_f64().map_or("—".into(), |v| format!("{v:.0}")),
                    self.e2e["plain"]["median_p99_us"].as_f64().map_or("—".into(), |v| format!("{v:.0}")),
                    e2e["median_ratio_p99_to_plain"].as_f64().map_or("—".into(), |v| format!("{v:.2}×")),
                    e2e["median_cpu_us_per_request"].as_f64().map_or("—".into(), |v| format!("{v:.1}")),
                    self.e2e["plain"]["median_cpu_us_per_request"].as_f64().map_or("—".into(), |v| format!("{v:.1}")),
                    e2e["median_ratio_cpu_per_request_to_plain"].as_f64().map_or("—".into(), |v| format!("{v:.2}×")),
                    {
                        let st = &self.e2e["setup"];
                        format!(
                            "{} rounds × {} s, {} keep-alive connections",
                            st["rounds"], st["seconds"], st["connections"]
                        )
                    },
                    // Each mode alone (goal: ServerLayer alone ≥ 0.95×).
                    ["layer", "automatic", "automatic_layer"]
                        .iter()
                        .filter_map(|m| {
                            let ratio = self.e2e[*m]["median_ratio_requests_per_s_to_plain"].as_f64()?;
                            Some(format!("{m} {ratio:.2}×"))
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            },
            ratio(
                "9 bridge poll vs OTel with_context",
                "SPEC 9: a poll of a `Task` with the OpenTelemetry bridge installed vs OpenTelemetry's `FutureExt::with_context` on the same future",
                "bridge_poll/tasklocal_task_bridged",
                otel_with_context,
                1.0,
                bridge("poll_task_bridged"),
                bridge("poll_with_context"),
                &format!(
                    "`cargo bench -p tasklocal-benches --bench bridge` (instructions: \
                     `examples/hotpath_bridge.rs`){bridge_floor}"
                ),
            ),
        ]
    }
}
