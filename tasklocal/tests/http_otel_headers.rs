//! Interoperability with the OpenTelemetry Rust SDK propagators as the peer: what
//! `inject` writes into a header map is what the SDK reads, and what the SDK writes is
//! what `extract` reads, MDC and trace context alike. The codecs and the documented
//! deviations: `http_otel.rs`.
#![cfg(feature = "http")]

mod support;

use std::collections::HashMap;

use http::HeaderMap;
use opentelemetry::baggage::{Baggage as OtelBaggage, BaggageExt, KeyValueMetadata};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState as OtelTraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use support::otel::{carrier, header_map, otel_extract_baggage, CORPUS};
use tasklocal::http::{extract, inject, TraceContext, TraceParent};
use tasklocal::{mdc, Snapshot};

/// What OpenTelemetry reads from the headers `inject` writes with this MDC.
fn otel_reads_injected(pairs: &[(&str, &str)]) -> (HeaderMap, Context) {
    let headers = Snapshot::empty().run(|| {
        mdc::extend(pairs.iter().copied());
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        headers
    });
    let carrier = carrier(&headers);
    let cx = BaggagePropagator::new().extract(&carrier);
    let cx = TraceContextPropagator::new().extract_with_context(&cx, &carrier);
    (headers, cx)
}

#[test]
fn injected_mdc_is_read_by_otel_to_the_same_values() {
    let (headers, cx) = otel_reads_injected(CORPUS);
    assert_eq!(cx.baggage().len(), CORPUS.len(), "{:?}", headers["baggage"]);
    for (k, v) in CORPUS {
        assert_eq!(
            cx.baggage().get(*k).map(|v| v.as_str()),
            Some(*v),
            "key {k:?}"
        );
    }
}

#[test]
fn otel_baggage_is_extracted_into_the_mdc() {
    let otel: OtelBaggage = CORPUS.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
    let mut carrier = HashMap::new();
    BaggagePropagator::new().inject_context(&Context::new().with_baggage(otel), &mut carrier);
    let seen = extract(&header_map(&carrier)).run(mdc::to_vec);
    let read_by_otel = otel_extract_baggage(&carrier["baggage"]);
    assert_eq!(seen.len(), CORPUS.len());
    for (k, v) in &seen {
        assert_eq!(
            read_by_otel.baggage().get(k.as_str()).map(|v| v.as_str()),
            Some(v.as_str()),
            "key {k:?}"
        );
    }
}

#[test]
fn extract_then_inject_passes_otel_baggage_on_unchanged() {
    // A service in the middle passes on what it received, properties included.
    let otel = OtelBaggage::from([
        KeyValueMetadata::new("request_id", "r-1", "ttl=30"),
        KeyValueMetadata::new("tenant", "acme corp", ""),
    ]);
    let mut carrier = HashMap::new();
    BaggagePropagator::new().inject_context(&Context::new().with_baggage(otel), &mut carrier);
    let out = extract(&header_map(&carrier)).run(|| {
        let mut out = HeaderMap::new();
        inject(&mut out);
        out
    });
    let cx = otel_extract_baggage(out["baggage"].to_str().unwrap());
    let (value, meta) = cx.baggage().get_with_metadata("request_id").unwrap();
    assert_eq!((value.as_str(), meta.as_str()), ("r-1", "ttl=30"));
    assert_eq!(
        cx.baggage().get("tenant").map(|v| v.as_str()),
        Some("acme corp")
    );
    // A member changed on the way loses its properties: they described the old value.
    let out = extract(&header_map(&carrier)).run(|| {
        mdc::insert("request_id", "r-2");
        let mut out = HeaderMap::new();
        inject(&mut out);
        out
    });
    let cx = otel_extract_baggage(out["baggage"].to_str().unwrap());
    let (value, meta) = cx.baggage().get_with_metadata("request_id").unwrap();
    assert_eq!((value.as_str(), meta.as_str()), ("r-2", ""));
}

#[test]
fn injected_traceparent_continues_the_extracted_trace_in_otel() {
    let incoming = HashMap::from([
        (
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        ),
        (
            "tracestate".to_owned(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned(),
        ),
    ]);
    let out = extract(&header_map(&incoming)).run(|| {
        let mut out = HeaderMap::new();
        inject(&mut out);
        out
    });
    let cx = TraceContextPropagator::new().extract(&carrier(&out));
    let span = cx.span();
    let sc = span.span_context();
    assert!(sc.is_valid());
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_ne!(
        sc.span_id().to_string(),
        "00f067aa0ba902b7",
        "a new parent id"
    );
    assert!(sc.is_sampled());
    assert_eq!(
        sc.trace_state().header(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
}

#[test]
fn otel_traceparent_is_extracted_as_the_trace_context() {
    for flags in [TraceFlags::default(), TraceFlags::SAMPLED] {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            flags,
            true,
            OtelTraceState::from_key_value([("congo", "t61rcWkgMzE")]).unwrap(),
        );
        let mut carrier = HashMap::new();
        TraceContextPropagator::new()
            .inject_context(&Context::new().with_remote_span_context(sc), &mut carrier);
        let trace = extract(&header_map(&carrier))
            .run(TraceContext::current)
            .unwrap();
        let parent = trace.traceparent();
        assert_eq!(parent.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(parent.parent_id(), "b7ad6b7169203331");
        assert_eq!(parent.sampled(), flags.is_sampled());
        assert_eq!(trace.tracestate().to_string(), "congo=t61rcWkgMzE");
    }
}

#[test]
fn a_new_trace_is_valid_for_otel() {
    // No incoming context: `inject` starts a trace OpenTelemetry accepts.
    let (headers, cx) = otel_reads_injected(&[]);
    assert!(!headers.contains_key("baggage") && !headers.contains_key("tracestate"));
    let span = cx.span();
    let sc = span.span_context();
    let ours = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert!(sc.is_valid() && ours.random());
    assert_eq!(sc.trace_id().to_string(), ours.trace_id());
    assert_eq!(sc.span_id().to_string(), ours.parent_id());
}
