//! `docs/benchmarks.svg`: every budget line against its limit, and the cost of a read
//! next to the published Go figures.

use std::fmt::Write as _;

use crate::budget::Budget;
use crate::Report;

impl Report<'_> {
    /// Two panels: every budget line against its limit, and the cost of a read next
    /// to the published Go figures.
    pub(crate) fn svg(&self, budgets: &[Budget]) -> String {
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

pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
