//! `inject`/`extract` over every `Carrier` (SPEC 11): `http::HeaderMap`,
//! `HashMap<String, String>` and AMQP's `FieldTable` (lapin's message headers, also
//! through its wire encoding) — the same codec rules for each, and no panic on any
//! bytes.
#![cfg(all(feature = "http", feature = "amqp"))]

use std::collections::HashMap;

use amq_protocol_types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use tasklocal::http::baggage::{MAX_BYTES, MAX_MEMBERS};
use tasklocal::http::{extract, inject, Baggage, Carrier, TraceContext, TraceParent, TraceState};
use tasklocal::Snapshot;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";

/// MDC values that need every kind of escaping, and none.
fn pairs() -> Vec<(String, String)> {
    [
        ("request_id", "r-7"),
        ("tenant", "acme corp"),
        ("odd", "a=b,c;d%e \"f\" é 日本"),
        ("crlf", "x\r\nbaggage: forged=1"),
        ("empty", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Injects a context with `pairs` in the MDC and a known trace into `carrier`.
fn inject_context<C: Carrier>(carrier: &mut C, pairs: &[(String, String)]) {
    Snapshot::empty().run(|| {
        mdc::extend_pairs(pairs);
        TraceContext::new(
            TraceParent::parse(TRACEPARENT).unwrap(),
            TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        )
        .set_current();
        inject(carrier);
    });
}

/// What `extract` gives from `carrier`: the MDC, the trace.
fn extract_context<C: Carrier>(carrier: &C) -> (Vec<(String, String)>, TraceContext) {
    extract(carrier).run(|| (mdc::to_vec(), TraceContext::current().unwrap()))
}

/// The MDC, and `insert` of each of some pairs.
mod mdc {
    pub use tasklocal::mdc::*;
    pub fn extend_pairs(pairs: &[(String, String)]) {
        for (k, v) in pairs {
            insert(k.as_str(), v.as_str());
        }
    }
}

fn check_round_trip<C: Carrier>(carrier: &mut C) {
    inject_context(carrier, &pairs());
    let (seen, trace) = extract_context(carrier);
    assert_eq!(seen, pairs());
    let parent = trace.traceparent();
    assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parent.parent_id(), "00f067aa0ba902b7", "a new parent id");
    assert!(parent.sampled() && parent.random());
    assert_eq!(
        trace.tracestate().to_string(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
}

/// The three headers as text, read back through the carrier.
fn headers_of<C: Carrier>(carrier: &C) -> Vec<(String, String)> {
    let mut names: Vec<&str> = carrier.keys().collect();
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| {
            let value = carrier.get(name).unwrap();
            (name.to_owned(), String::from_utf8(value.to_vec()).unwrap())
        })
        .collect()
}

#[test]
fn round_trip_through_a_header_map() {
    check_round_trip(&mut http::HeaderMap::new());
}

#[test]
fn round_trip_through_a_hash_map() {
    check_round_trip(&mut HashMap::<String, String>::new());
}

#[test]
fn round_trip_through_an_amqp_field_table() {
    check_round_trip(&mut FieldTable::default());
}

/// Encoded as AMQP 0-9-1 puts message headers on the wire, and parsed back.
fn over_the_wire(table: &FieldTable) -> FieldTable {
    let (bytes, _) = cookie_factory::r#gen(
        amq_protocol_types::generation::gen_field_table(table),
        Vec::new(),
    )
    .unwrap();
    let (rest, parsed) = amq_protocol_types::parsing::parse_field_table(&bytes[..]).unwrap();
    assert!(rest.is_empty());
    parsed
}

#[test]
fn round_trip_through_the_amqp_wire_encoding() {
    let mut table = FieldTable::default();
    // Headers of the application's own stay as they are.
    table.insert("x-retry".into(), AMQPValue::LongInt(3));
    inject_context(&mut table, &pairs());
    let received = over_the_wire(&table);
    assert_eq!(received, table);
    let (seen, trace) = extract_context(&received);
    assert_eq!(seen, pairs());
    assert_eq!(
        trace.traceparent().trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(received.inner()["x-retry"], AMQPValue::LongInt(3));
}

#[test]
fn every_carrier_gets_the_same_headers() {
    let mut map = http::HeaderMap::new();
    let mut hash = HashMap::<String, String>::new();
    let mut table = FieldTable::default();
    // One context, three carriers: only the parent id (new for each call) differs.
    Snapshot::empty().run(|| {
        mdc::extend_pairs(&pairs());
        TraceContext::new(
            TraceParent::parse(TRACEPARENT).unwrap(),
            TraceState::default(),
        )
        .set_current();
        inject(&mut map);
        inject(&mut hash);
        inject(&mut table);
    });
    let strip_parent = |mut headers: Vec<(String, String)>| {
        for (name, value) in &mut headers {
            if name == "traceparent" {
                value.replace_range(36..52, "");
            }
        }
        headers
    };
    let from_map = strip_parent(headers_of(&map));
    assert_eq!(
        from_map.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["baggage", "traceparent"],
        "no empty tracestate"
    );
    assert_eq!(from_map, strip_parent(headers_of(&hash)));
    assert_eq!(from_map, strip_parent(headers_of(&table)));
}

#[test]
fn injecting_replaces_old_context_headers_and_keeps_the_rest() {
    let mut table = FieldTable::default();
    table.insert("tracestate".into(), AMQPValue::LongString("old=1".into()));
    table.insert("baggage".into(), AMQPValue::LongString("old=1".into()));
    table.insert("x-app".into(), AMQPValue::Boolean(true));
    // No MDC, no trace: a new trace, and nothing else.
    Snapshot::empty().run(|| inject(&mut table));
    let names: Vec<&str> = table.keys().collect();
    assert_eq!(names, ["traceparent", "x-app"]);

    let mut hash = HashMap::from([("baggage".to_string(), "old=1".to_string())]);
    Snapshot::empty().run(|| inject(&mut hash));
    assert!(!hash.contains_key("baggage"));
    assert!(TraceParent::parse(&hash["traceparent"]).is_some());
}

/// Over the W3C limits, whole members are dropped — never part of one — whatever the
/// carrier.
#[test]
fn the_limits_hold_in_every_carrier() {
    let many: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("key{i:03}"),
                format!("value {i} {}", "x".repeat(150)),
            )
        })
        .collect();
    let check = |header: &[u8]| {
        let header = std::str::from_utf8(header).unwrap();
        assert!(header.len() <= MAX_BYTES);
        let bag = Baggage::parse(header);
        assert!(bag.len() <= MAX_MEMBERS && bag.len() > 10);
        for (key, value) in bag.iter() {
            let i: usize = key[3..].parse().unwrap();
            assert_eq!(value, many[i].1, "a member was cut");
        }
    };
    let mut map = http::HeaderMap::new();
    let mut hash = HashMap::<String, String>::new();
    let mut table = FieldTable::default();
    inject_context(&mut map, &many);
    inject_context(&mut hash, &many);
    inject_context(&mut table, &many);
    check(Carrier::get(&map, "baggage").unwrap());
    check(Carrier::get(&hash, "baggage").unwrap());
    check(Carrier::get(&table, "baggage").unwrap());
}

#[test]
fn amqp_values_of_other_types_are_ignored() {
    let mut table = FieldTable::default();
    table.insert("baggage".into(), AMQPValue::LongLongInt(7));
    table.insert(
        "traceparent".into(),
        AMQPValue::FieldTable(FieldTable::default()),
    );
    let (seen, trace) = extract_context(&table);
    assert!(seen.is_empty());
    assert_ne!(
        trace.traceparent().trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Short strings and byte arrays are read like long strings.
    table.insert("baggage".into(), AMQPValue::ShortString("a=1".into()));
    table.insert(
        "traceparent".into(),
        AMQPValue::ByteArray(ByteArray::from(TRACEPARENT.as_bytes().to_vec())),
    );
    let (seen, trace) = extract_context(&table);
    assert_eq!(seen, [("a".to_string(), "1".to_string())]);
    assert_eq!(
        trace.traceparent().trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[test]
fn a_name_an_amqp_table_cannot_hold_is_left_out() {
    let mut table = FieldTable::default();
    Carrier::set(&mut table, &"n".repeat(300), "v".into());
    assert_eq!(table.keys().count(), 0);
    Carrier::remove(&mut table, &"n".repeat(300));
}

#[test]
fn a_header_map_refuses_what_is_not_a_header_without_panicking() {
    let mut map = http::HeaderMap::new();
    map.insert("baggage", "old=1".parse().unwrap());
    // Not a header value: the name is left out, nothing half-written stays.
    Carrier::set(&mut map, "baggage", "a=1\r\nx-forged: 1".into());
    assert!(map.is_empty());
    // Not a header name: nothing is written.
    Carrier::set(&mut map, "bad name\n", "a=1".into());
    Carrier::remove(&mut map, "bad name\n");
    assert_eq!(Carrier::get_all(&map, "bad name\n").count(), 0);
    assert!(map.is_empty());
    // Names are case-insensitive in HTTP.
    Carrier::set(&mut map, "X-Custom", "v".into());
    assert_eq!(Carrier::get(&map, "x-custom"), Some(&b"v"[..]));
}

/// Bytes dense in what the grammars care about, and any bytes at all.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[,;=% \r\n\t\"\\\\a-f0-9@*/éA日\u{0}-]{0,120}".prop_map(String::into_bytes),
        "[0-9a-fA-F]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-fA-F-]{2,6}".prop_map(String::into_bytes),
    ]
}

/// `extract` of a carrier holding `good` (a valid member) and hostile bytes: no panic,
/// within the limits, the good member kept when the hostile bytes are on their own.
fn check_hostile<C: Carrier>(carrier: &C, good_kept: bool) {
    let (seen, _trace) = extract_context(carrier);
    assert!(seen.len() <= MAX_MEMBERS);
    if good_kept {
        assert!(
            seen.contains(&("zz_ok".to_string(), "1".to_string())),
            "{seen:?}"
        );
    }
    // What came in goes out within the rules.
    let mut out = HashMap::<String, String>::new();
    extract(carrier).run(|| inject(&mut out));
    if let Some(baggage) = out.get("baggage") {
        assert!(baggage.len() <= MAX_BYTES);
        assert!(!baggage.contains(['\r', '\n', ' ', '"']));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hostile_bytes_in_a_header_map(baggage in hostile(), parent in hostile(), state in hostile()) {
        let mut map = http::HeaderMap::new();
        map.append("baggage", "zz_ok=1".parse().unwrap());
        for (name, bytes) in [("baggage", &baggage), ("traceparent", &parent), ("tracestate", &state)] {
            // A header line holds any byte but control characters.
            if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
                map.append(name, value);
            }
        }
        check_hostile(&map, true);
    }

    #[test]
    fn hostile_strings_in_a_hash_map(baggage in hostile(), parent in hostile(), state in hostile()) {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let hash = HashMap::from([
            ("baggage".to_string(), format!("zz_ok=1,{}", text(&baggage))),
            ("traceparent".to_string(), text(&parent)),
            ("tracestate".to_string(), text(&state)),
        ]);
        check_hostile(&hash, true);
    }

    #[test]
    fn hostile_bytes_in_an_amqp_table(baggage in hostile(), parent in hostile(), state in hostile()) {
        let mut table = FieldTable::default();
        table.insert(ShortString::from("baggage"), AMQPValue::LongString(LongString::from(baggage)));
        table.insert("traceparent".into(), AMQPValue::ByteArray(ByteArray::from(parent)));
        table.insert("tracestate".into(), AMQPValue::LongString(LongString::from(state)));
        // Through the wire encoding too.
        check_hostile(&over_the_wire(&table), false);
        check_hostile(&table, false);
    }
}
