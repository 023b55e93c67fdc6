//! The spans of every request, exported with the OpenTelemetry SDK and checked to form
//! one trace per request with the right parents — across both services, a spawned
//! task, a blocking thread and rayon.
//!
//! The services make their spans with `tracing`; `tracing-opentelemetry` turns them into
//! OpenTelemetry spans (an in-memory exporter here; an OTLP exporter in production).
//! `tasklocal::opentelemetry::install()` makes `Context::current()` each task's own, so
//! a span started in a spawned task, on a blocking thread or on rayon finds its parent,
//! and `ServerLayer`/`ClientLayer` carry the trace between the services.

use std::collections::HashMap;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// The spans of one request and their parents: (span, parent). `None`: a remote parent
/// (the load generator starts each trace; its span is not exported).
pub const TREE: [(&str, Option<&str>); 7] = [
    ("order", None),
    ("stock", Some("order")),
    ("invoice", Some("order")),
    ("net", Some("invoice")),
    ("tax", Some("invoice")),
    ("score", Some("order")),
    ("risk", Some("score")),
];

/// The exporter the services' spans go to.
pub struct Spans {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
}

/// Installs the tracing subscriber that exports spans, and tasklocal's OpenTelemetry
/// bridge.
pub fn install() -> Spans {
    let exporter = InMemorySpanExporter::default();
    // Every request is recorded: the load generator starts traces without sampling
    // them, and the default sampler follows the parent's decision.
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("demo")));
    tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    tasklocal::opentelemetry::install();
    Spans {
        exporter,
        _provider: provider,
    }
}

/// What the check found.
pub struct Check {
    /// Traces whose spans form exactly [`TREE`].
    pub complete: usize,
    /// Traces that do not, with what is wrong.
    pub broken: Vec<String>,
}

impl Spans {
    /// Groups the exported spans by trace and checks each trace against [`TREE`].
    pub fn check(&self) -> Check {
        let spans = self.exporter.get_finished_spans().unwrap_or_default();
        let mut traces: HashMap<TraceId, Vec<&SpanData>> = HashMap::new();
        for span in &spans {
            traces
                .entry(span.span_context.trace_id())
                .or_default()
                .push(span);
        }
        let mut check = Check {
            complete: 0,
            broken: Vec::new(),
        };
        for (trace, spans) in traces {
            match check_tree(&spans) {
                Ok(()) => check.complete += 1,
                Err(why) => check.broken.push(format!("trace {trace}: {why}")),
            }
        }
        check
    }
}

/// Whether `spans` (one trace) are exactly [`TREE`], each under its parent.
fn check_tree(spans: &[&SpanData]) -> Result<(), String> {
    let by_id: HashMap<SpanId, &str> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s.name.as_ref()))
        .collect();
    if spans.len() != TREE.len() {
        let mut names: Vec<&str> = by_id.values().copied().collect();
        names.sort_unstable();
        return Err(format!("{} spans {names:?}", spans.len()));
    }
    for (name, parent) in TREE {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no span {name}"))?;
        let found = by_id.get(&span.parent_span_id).copied();
        if found != parent {
            return Err(format!("{name}'s parent is {found:?}, not {parent:?}"));
        }
    }
    Ok(())
}
