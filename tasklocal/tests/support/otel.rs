//! OpenTelemetry as the peer: a corpus both sides must carry exactly, its baggage
//! propagator, and its carriers (string maps) as `http` header maps and back.

use std::collections::HashMap;

use http::{HeaderMap, HeaderValue};
use opentelemetry::baggage::{Baggage as OtelBaggage, BaggageExt};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::BaggagePropagator;

/// The header map as an OpenTelemetry carrier.
pub fn carrier(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect()
}

/// An OpenTelemetry carrier as a header map.
pub fn header_map(carrier: &HashMap<String, String>) -> HeaderMap {
    carrier
        .iter()
        .map(|(name, value)| (name.parse().unwrap(), HeaderValue::from_str(value).unwrap()))
        .collect()
}

/// Key/value corpus that both sides must carry exactly.
pub const CORPUS: &[(&str, &str)] = &[
    ("plain", "value"),
    ("space", "hello world"),
    ("equals", "a=b=c"),
    ("comma", "a,b"),
    ("semicolon", "a;b"),
    ("percent", "100%"),
    ("escape-like", "%41%zz%"),
    ("accent", "é"),
    ("cjk", "日本"),
    ("empty", ""),
    ("quote", "\"q\""),
    ("backslash", "a\\b"),
    ("controls", "tab\there\r\nnext"),
    ("plus", "a+b"),
    ("emoji", "🦀 ok"),
    ("Token.Chars_~!#$&'*+^`|", "k"),
];

/// The context the SDK's baggage propagator reads from a `baggage` header.
pub fn otel_extract_baggage(header: &str) -> Context {
    let carrier = HashMap::from([("baggage".to_owned(), header.to_owned())]);
    BaggagePropagator::new().extract(&carrier)
}

/// The `baggage` header the SDK's propagator writes for `baggage`.
pub fn otel_inject_baggage(baggage: OtelBaggage) -> String {
    let mut carrier = HashMap::new();
    BaggagePropagator::new().inject_context(&Context::new().with_baggage(baggage), &mut carrier);
    carrier.remove("baggage").unwrap_or_default()
}
