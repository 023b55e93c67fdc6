//! The log: env_logger behind `tasklocal::log::MdcLogger`, written to memory so that
//! the demo can check every line afterwards.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use tasklocal::log::MdcLogger;

/// Lines each request logs in each service (see `services.rs`).
pub const EDGE_LINES: usize = 6;
/// Downstream: scoring, the risk check, and one line per chunk of the streamed history.
pub const DOWNSTREAM_LINES: usize = 2 + crate::services::HISTORY_CHUNKS;

/// The bytes the logger wrote.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines written so far, removed from memory (the soak checks the log batch by
    /// batch, so that the log itself does not grow).
    pub fn take_lines(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Installs the logger: `[INFO  edge] order 7: accepted request_id=req-0007 tenant=acme`.
pub fn install() -> Captured {
    let captured = Captured::default();
    let env_logger = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .format_timestamp(None)
        .target(env_logger::Target::Pipe(Box::new(captured.clone())))
        .build();
    let max_level = env_logger.filter();
    MdcLogger::new(env_logger)
        .init(max_level)
        .expect("the demo installs the only logger");
    captured
}

/// One log line, taken apart.
pub struct Line<'a> {
    pub service: &'a str,
    /// The order number in the message: `order 7: ...`.
    pub order: Option<u32>,
    pub request_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// The trace id in the message, where the line has one: `(trace 4bf9...)`.
    pub trace: Option<&'a str>,
}

impl<'a> Line<'a> {
    pub fn parse(line: &'a str) -> Option<Line<'a>> {
        let (head, rest) = line.strip_prefix('[')?.split_once("] ")?;
        let service = head.split_whitespace().last()?;
        let order = rest
            .strip_prefix("order ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok());
        let field = |key: &str| {
            rest.split(' ')
                .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        };
        let trace = rest
            .split_once("(trace ")
            .and_then(|(_, t)| t.split(')').next());
        Some(Line {
            service,
            order,
            request_id: field("request_id"),
            tenant: field("tenant"),
            trace,
        })
    }
}

/// What the log says about each request.
#[derive(Default)]
pub struct Request<'a> {
    pub edge_lines: usize,
    pub downstream_lines: usize,
    pub edge_trace: Option<&'a str>,
    pub downstream_trace: Option<&'a str>,
}

/// The verdict on a whole log.
#[derive(Default)]
pub struct Check<'a> {
    /// By request id.
    pub requests: BTreeMap<&'a str, Request<'a>>,
    /// Lines whose request id or tenant is not their order's, or missing.
    pub mismatches: Vec<&'a str>,
    /// Requests whose trace id differs between the services.
    pub trace_mismatches: usize,
}

/// Checks every line of `lines` against the order it talks about: the request id must be
/// that order's (`req-0007` for order 7), the tenant the one it was sent for.
pub fn check<'a>(lines: &'a [String], tenant_of: impl Fn(u32) -> &'static str) -> Check<'a> {
    let mut check = Check::default();
    for text in lines {
        let Some(line) = Line::parse(text) else {
            continue;
        };
        let Some(order) = line.order else {
            continue; // not one of the demo's lines
        };
        let expected_id = format!("req-{order:04}");
        let (Some(id), Some(tenant)) = (line.request_id, line.tenant) else {
            check.mismatches.push(text);
            continue;
        };
        if id != expected_id || tenant != tenant_of(order) {
            check.mismatches.push(text);
            continue;
        }
        let request = check.requests.entry(id).or_default();
        match line.service {
            "edge" => {
                request.edge_lines += 1;
                request.edge_trace = request.edge_trace.or(line.trace);
            }
            "downstream" => {
                request.downstream_lines += 1;
                request.downstream_trace = request.downstream_trace.or(line.trace);
            }
            _ => check.mismatches.push(text),
        }
    }
    check.trace_mismatches = check
        .requests
        .values()
        .filter(|r| r.edge_trace.is_none() || r.edge_trace != r.downstream_trace)
        .count();
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_of(_: u32) -> &'static str {
        "acme"
    }

    #[test]
    fn a_line_with_another_requests_id_or_none_is_a_mismatch() {
        let lines = [
            "[INFO  edge] order 7: accepted (trace abc) request_id=req-0007 tenant=acme",
            "[INFO  downstream] order 7: scoring (trace abc) request_id=req-0007 tenant=acme",
            "[INFO  edge] order 7: stock reserved request_id=req-0008 tenant=acme",
            "[INFO  edge] order 7: stock reserved tenant=acme",
            "[INFO  edge] order 7: stock reserved request_id=req-0007 tenant=globex",
            "[INFO  hyper] not an order line",
        ]
        .map(String::from);
        let check = check(&lines, tenant_of);
        assert_eq!(check.mismatches, &lines[2..5]);
        let request = &check.requests["req-0007"];
        assert_eq!((request.edge_lines, request.downstream_lines), (1, 1));
        assert_eq!(check.trace_mismatches, 0);
    }

    #[test]
    fn different_traces_in_the_two_services_are_counted() {
        let lines = [
            "[INFO  edge] order 1: accepted (trace abc) request_id=req-0001 tenant=acme",
            "[INFO  downstream] order 1: scoring (trace def) request_id=req-0001 tenant=acme",
        ]
        .map(String::from);
        assert_eq!(check(&lines, tenant_of).trace_mismatches, 1);
    }
}
