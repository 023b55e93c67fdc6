//! `extract`/`inject` at their edges (SPEC 7, 11). The trace: continued as version
//! `00` with a new parent id and only the defined flags, a new one for repeated or
//! non-ASCII `traceparent` lines, `tracestate` lines carried as one list only beside a
//! valid `traceparent` and within 32 members, OpenTelemetry reading the same trace
//! both ways. The baggage: lines split or not UTF-8, what `inject` writes from the MDC
//! over the limits (exactly `Baggage::current()`), incoming members and their
//! properties on the way out, registered keys against the MDC. The carriers: a
//! `HashMap`'s exact names, an AMQP `FieldTable`'s string types, old context lines
//! replaced by one, and removed when the context is empty.
#![cfg(feature = "http")]

mod support;

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use support::{fresh, pairs};
use tasklocal::http::baggage::MAX_BYTES;
use tasklocal::http::{
    extract, inject, propagate, Baggage, Carrier, TraceContext, TraceParent, TraceState,
};
use tasklocal::{mdc, Local, Snapshot};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A `traceparent` of version `version` and flags `flags`, with the test's ids.
fn traceparent(version: &str, flags: &str) -> String {
    format!("{version}-{TRACE_ID}-{PARENT_ID}-{flags}")
}

/// A header map with one line for each pair, in order.
fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        headers.append(name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

/// Makes the test's trace, with flags `flags` and `tracestate`, the current one.
fn set_trace(flags: &str, tracestate: &str) {
    let traceparent = TraceParent::parse(&traceparent("00", flags)).unwrap();
    TraceContext::new(traceparent, TraceState::parse(tracestate)).set_current();
}

/// What `inject` writes in `owner` after `setup`.
fn injected(owner: Snapshot, setup: impl FnOnce()) -> HeaderMap {
    owner.run(|| {
        setup();
        let mut out = HeaderMap::new();
        inject(&mut out);
        out
    })
}

/// What `inject` writes, with nothing changed, in the owner `extract` makes of
/// `incoming`.
fn passed_on<C: Carrier + ?Sized>(incoming: &C) -> HeaderMap {
    injected(extract(incoming), || {})
}

/// The `baggage` that `inject` writes in `owner` after `setup`.
fn injected_baggage(owner: Snapshot, setup: impl FnOnce()) -> String {
    let out = injected(owner, setup);
    out["baggage"].to_str().unwrap().to_owned()
}

/// The `traceparent` that `inject` wrote into `out`.
fn written(out: &HeaderMap) -> TraceParent {
    TraceParent::parse(out["traceparent"].to_str().unwrap()).unwrap()
}

/// The MDC and the trace context of the owner `extract` makes of `carrier`.
fn received<C: Carrier>(carrier: &C) -> (Vec<(String, String)>, TraceContext) {
    extract(carrier).run(|| (mdc::to_vec(), TraceContext::current().unwrap()))
}

// The trace.

#[test]
fn inject_continues_the_incoming_trace_as_version_00_with_a_new_parent_id_and_known_flags() {
    for (incoming, flags) in [
        (traceparent("00", "ff"), "03"),
        (traceparent("00", "fd"), "01"),
        (format!("{}-x-y", traceparent("cc", "06")), "02"),
        (traceparent("00", "00"), "00"),
        (format!(" \t{}\t ", traceparent("00", "01")), "01"),
    ] {
        let out = passed_on(&headers(&[("traceparent", &incoming)]));
        let line = out["traceparent"].to_str().unwrap();
        let parts: Vec<_> = line.split('-').collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert_eq!(parts[0], "00", "{incoming} -> {line}");
        assert_eq!(parts[1], TRACE_ID, "{incoming} -> {line}");
        assert_ne!(parts[2], PARENT_ID);
        assert_ne!(parts[2], "0".repeat(16));
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(parts[3], flags, "{incoming} -> {line}");
    }
}

#[test]
fn two_traceparent_lines_start_a_new_trace_without_the_tracestate() {
    let line = traceparent("00", "01");
    let out = passed_on(&headers(&[
        ("traceparent", &line),
        ("traceparent", &line),
        ("tracestate", "a=1"),
    ]));
    assert_ne!(written(&out).trace_id(), TRACE_ID);
    assert!(out.get("tracestate").is_none());
}

#[test]
fn non_ascii_bytes_void_a_traceparent_or_tracestate_line_without_a_panic() {
    let mut bad_flags = traceparent("00", "01").into_bytes();
    bad_flags[54] = 0xff;
    let mut bad_trace_id = traceparent("00", "01").into_bytes();
    bad_trace_id[10] = 0xe9;
    // Each line alone, and the two together: a new trace.
    for lines in [
        &[&bad_flags][..],
        &[&bad_trace_id],
        &[&bad_flags, &bad_trace_id],
    ] {
        let mut incoming = HeaderMap::new();
        for line in lines {
            incoming.append("traceparent", HeaderValue::from_bytes(line).unwrap());
        }
        let trace = extract(&incoming).run(|| TraceContext::current().unwrap());
        assert_ne!(trace.traceparent().trace_id(), TRACE_ID);
    }

    let mut incoming = headers(&[("traceparent", &traceparent("00", "01"))]);
    incoming.append("tracestate", HeaderValue::from_bytes(b"a=\xe9").unwrap());
    incoming.append("tracestate", HeaderValue::from_bytes(b"b=1").unwrap());
    let trace = extract(&incoming).run(|| TraceContext::current().unwrap());
    assert_eq!(trace.traceparent().trace_id(), TRACE_ID);
    assert!(trace.tracestate().is_empty(), "{}", trace.tracestate());
}

#[test]
fn a_new_trace_reads_in_opentelemetry_as_the_same_valid_remote_span() {
    let out = injected(Snapshot::empty(), || {});
    let carrier = support::otel::carrier(&out);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    assert!(span.is_valid() && span.is_remote());
    let ours = written(&out);
    assert_eq!(format!("{:032x}", span.trace_id()), ours.trace_id());
    assert_eq!(format!("{:016x}", span.span_id()), ours.parent_id());
    assert_eq!(span.is_sampled(), ours.sampled());
}

#[test]
fn tracestate_lines_are_carried_as_one_list_and_each_inject_writes_its_own_parent_id() {
    let incoming = headers(&[
        ("traceparent", &traceparent("00", "01")),
        ("tracestate", "rojo=1,, congo=2 "),
        ("tracestate", "x@y=3"),
    ]);
    let context = extract(&incoming);
    let (a, b) = context.run(|| {
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        inject(&mut a);
        inject(&mut b);
        (a, b)
    });
    assert_eq!(a["tracestate"], "rojo=1,congo=2,x@y=3");
    assert_eq!(b["tracestate"], "rojo=1,congo=2,x@y=3");
    assert_eq!(written(&a).trace_id(), written(&b).trace_id());
    assert_ne!(written(&a).parent_id(), written(&b).parent_id());
    // The current trace context keeps the caller's parent id, not an injected one.
    let current = context.run(TraceContext::current).unwrap();
    assert_eq!(current.traceparent().parent_id(), PARENT_ID);
}

#[test]
fn tracestate_holds_32_members_empty_slots_aside_and_33_void_it_even_over_two_lines() {
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let header = format!(",,{},,, ,\t,", members[..32].join(" ,, "));
    assert_eq!(TraceState::parse(&header).len(), 32, "{header}");
    assert!(TraceState::parse(&members.join(",")).is_empty());
    // A repeated key counts as a member received.
    let mut repeated = members[..32].to_vec();
    repeated.push("k0=again".to_string());
    assert!(TraceState::parse(&repeated.join(",")).is_empty());
    let out = passed_on(&headers(&[
        ("traceparent", &traceparent("00", "01")),
        ("tracestate", &members[..20].join(",")),
        ("tracestate", &members[20..].join(",")),
    ]));
    assert!(out.get("tracestate").is_none());
}

#[test]
fn tracestate_passes_through_opentelemetry_and_back_unchanged() {
    let header = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,a@b=c d";
    let carrier = HashMap::from([
        ("traceparent".to_string(), traceparent("00", "01")),
        ("tracestate".to_string(), header.to_string()),
    ]);
    let propagator = TraceContextPropagator::new();
    let mut from_otel = HashMap::new();
    propagator.inject_context(&propagator.extract(&carrier), &mut from_otel);
    assert_eq!(
        TraceState::parse(&from_otel["tracestate"]).to_string(),
        header
    );
    let from_us = passed_on(&carrier);
    assert_eq!(from_us["tracestate"], header);
}

// The baggage.

#[test]
fn baggage_lines_are_one_list_whatever_the_case_of_their_name() {
    let incoming = headers(&[
        ("baggage", "a=1,b=2"),
        ("baggage", "c=3"),
        ("Baggage", "d=%20"),
    ]);
    assert_eq!(
        extract(&incoming).run(mdc::to_vec),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", " ")])
    );
}

#[test]
fn a_baggage_line_that_is_not_utf8_loses_only_its_bad_members() {
    let mut incoming = HeaderMap::new();
    for line in [&b"a=1,b=\xff\xfe,c=3"[..], b"d=\xc3\xa9,e=5", b"f=6"] {
        incoming.append("baggage", HeaderValue::from_bytes(line).unwrap());
    }
    assert_eq!(
        extract(&incoming).run(mdc::to_vec),
        pairs(&[("a", "1"), ("c", "3"), ("e", "5"), ("f", "6")])
    );
}

// Carriers.

#[test]
fn a_hash_map_carries_the_context_both_ways_under_exact_lowercase_names() {
    let mut map = HashMap::from([
        ("other".to_string(), "kept".to_string()),
        ("baggage".to_string(), "stale=1".to_string()),
    ]);
    fresh(|| {
        mdc::insert("request_id", "r 7");
        set_trace("01", "a=1");
        inject(&mut map);
    });
    assert_eq!(map["baggage"], "request_id=r%207");
    assert_eq!(map["tracestate"], "a=1");
    assert_eq!(map["other"], "kept");
    assert_eq!(
        TraceParent::parse(&map["traceparent"]).unwrap().trace_id(),
        TRACE_ID
    );
    let (mdc, trace) = received(&map);
    assert_eq!(mdc, pairs(&[("request_id", "r 7")]));
    assert_eq!(trace.traceparent().trace_id(), TRACE_ID);
    // Names match exactly in a HashMap: `Baggage` is not `baggage`.
    let upper = HashMap::from([("Baggage".to_string(), "a=1".to_string())]);
    assert!(extract(&upper).run(mdc::to_vec).is_empty());
}

#[test]
fn an_empty_context_removes_old_baggage_and_tracestate_from_a_hash_map_and_a_header_map() {
    let mut map = HashMap::from([
        ("baggage".to_string(), "stale=1".to_string()),
        ("tracestate".to_string(), "stale=1".to_string()),
    ]);
    fresh(|| inject(&mut map));
    assert!(!map.contains_key("baggage"), "{map:?}");
    assert!(!map.contains_key("tracestate"), "{map:?}");
    assert!(map.contains_key("traceparent"));
    let mut lines = headers(&[
        ("baggage", "stale=1"),
        ("baggage", "stale=2"),
        ("tracestate", "s=1"),
    ]);
    fresh(|| inject(&mut lines));
    assert!(lines.get("baggage").is_none());
    assert!(lines.get("tracestate").is_none());
}

#[test]
fn inject_replaces_every_old_context_line_with_one_and_keeps_the_rest() {
    let mut lines = headers(&[
        ("baggage", "stale=1"),
        ("baggage", "stale=2"),
        ("traceparent", &traceparent("00", "01")),
        ("traceparent", &traceparent("00", "01")),
        ("tracestate", "s=1"),
        ("tracestate", "s=2"),
        ("x-other", "kept"),
    ]);
    fresh(|| {
        mdc::insert("a", "1");
        set_trace("03", "t=1");
        inject(&mut lines);
    });
    assert_eq!(lines.get_all("baggage").iter().collect::<Vec<_>>(), ["a=1"]);
    assert_eq!(lines.get_all("traceparent").iter().count(), 1);
    assert_eq!(
        lines.get_all("tracestate").iter().collect::<Vec<_>>(),
        ["t=1"]
    );
    assert_eq!(lines["x-other"], "kept");
}

#[cfg(feature = "amqp")]
#[test]
fn an_amqp_field_table_carries_the_context_in_long_and_short_strings_and_byte_arrays() {
    use amq_protocol_types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
    let mut table = FieldTable::default();
    fresh(|| {
        mdc::insert("tenant", "acme corp");
        set_trace("03", "x=1");
        inject(&mut table);
    });
    let (mdc, trace) = received(&table);
    assert_eq!(mdc, pairs(&[("tenant", "acme corp")]));
    assert_eq!(trace.traceparent().trace_id(), TRACE_ID);
    assert!(trace.traceparent().random());
    assert_eq!(trace.tracestate().to_string(), "x=1");

    let mut table = FieldTable::default();
    table.insert(
        "baggage".into(),
        AMQPValue::ShortString(ShortString::from("a=1")),
    );
    table.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent("00", "01"))),
    );
    let (mdc, trace) = received(&table);
    assert_eq!(mdc, pairs(&[("a", "1")]));
    assert_eq!(trace.traceparent().trace_id(), TRACE_ID);
    let mut table = FieldTable::default();
    table.insert(
        "baggage".into(),
        AMQPValue::ByteArray(ByteArray::from(b"b=2".to_vec())),
    );
    assert_eq!(extract(&table).run(|| mdc::get("b")).as_deref(), Some("2"));
}

// Writing the MDC.

#[test]
fn inject_writes_what_baggage_current_writes_even_over_the_limits() {
    let a_len = MAX_BYTES - "a=".len() - ",b=y".len();
    let cases: Vec<Vec<(String, String)>> = vec![
        pairs(&[("a", &"x".repeat(a_len)), ("b", "y")]),
        pairs(&[("a", &"x".repeat(a_len + 1)), ("b", "y")]),
        (0..70).map(|i| (format!("k{i}"), i.to_string())).collect(),
        pairs(&[("a", "1"), ("sp", &" ".repeat(2800)), ("b", "2")]),
        pairs(&[("ok", "1"), ("bad key", "2"), ("ok2", "=,;%")]),
    ];
    for members in cases {
        let (header, current) = fresh(|| {
            for (k, v) in &members {
                mdc::insert(k.as_str(), v.as_str());
            }
            let mut out = HeaderMap::new();
            inject(&mut out);
            let header = out["baggage"].to_str().unwrap().to_owned();
            (header, Baggage::current().to_header_value())
        });
        assert!(header.len() <= MAX_BYTES);
        assert_eq!(header, current.0);
        // Every member written reads back with the value inserted; the rest were
        // counted as dropped.
        let bag = Baggage::parse(&header);
        let start = &header[..header.len().min(80)];
        assert_eq!(bag.len() + current.1, members.len(), "{start}");
        for (k, v) in bag.iter() {
            let (_, inserted) = members.iter().find(|(key, _)| key == k).unwrap();
            assert_eq!(v, inserted);
        }
    }
}

#[test]
fn incoming_properties_count_towards_the_byte_limit_on_the_way_out() {
    let props = "p".repeat(8000);
    let incoming = headers(&[("baggage", &format!("a=1;{props},b=2"))]);
    let out = injected_baggage(extract(&incoming), || mdc::insert("c", "x".repeat(300)));
    assert!(out.len() <= MAX_BYTES, "{} bytes", out.len());
    assert_eq!(Baggage::parse(&out).get("b"), Some("2"));
}

#[test]
fn unchanged_incoming_members_keep_their_properties_and_changed_or_removed_ones_do_not() {
    let incoming = headers(&[("baggage", "a=x%2Cy;p=1, b = 2 ; q ,c=3;r")]);
    let out = injected_baggage(extract(&incoming), || mdc::insert("c", "changed"));
    let bag = Baggage::parse(&out);
    assert_eq!(bag.get("a"), Some("x,y"), "{out}");
    assert_eq!(bag.properties("a"), Some(&["p=1".to_string()][..]), "{out}");
    assert_eq!(bag.properties("b"), Some(&["q".to_string()][..]), "{out}");
    assert_eq!(bag.get("c"), Some("changed"));
    assert_eq!(bag.properties("c").map(<[String]>::len), Some(0), "{out}");
    let out = injected_baggage(extract(&incoming), || {
        mdc::remove("a");
    });
    assert!(Baggage::parse(&out).get("a").is_none(), "{out}");
}

// Registered keys.

static REGISTERED_USER: Local<u64> = Local::inheritable();
static REGISTERED_TEXT: Local<String> = Local::inheritable();

/// Registers the two keys; each test that needs them calls this (registering a name
/// again replaces the earlier registration).
fn register() {
    propagate(&REGISTERED_USER, "registered_user");
    propagate(&REGISTERED_TEXT, "registered_text");
}

#[test]
fn a_registered_name_wins_over_the_mdc_both_ways() {
    register();
    let out = injected_baggage(Snapshot::empty(), || {
        mdc::insert("registered_user", "from-mdc");
        mdc::insert("other", "1");
        REGISTERED_USER.set(42);
    });
    assert_eq!(
        Baggage::parse(&out).get("registered_user"),
        Some("42"),
        "{out}"
    );
    assert_eq!(out.matches("registered_user=").count(), 1, "{out}");
    // In: the member goes to the key, not into the MDC.
    let incoming = headers(&[("baggage", "registered_user=7,other=2")]);
    let seen = extract(&incoming).run(|| (REGISTERED_USER.get(), mdc::to_vec()));
    assert_eq!(seen, (Some(7), pairs(&[("other", "2")])));
    // A value that does not parse is dropped, and not put into the MDC either.
    let incoming = headers(&[("baggage", "registered_user=seven,other=2")]);
    let seen = extract(&incoming).run(|| (REGISTERED_USER.get(), mdc::to_vec()));
    assert_eq!(seen, (None, pairs(&[("other", "2")])));
}

#[test]
fn registered_text_values_are_encoded_and_decoded_exactly_here_and_by_opentelemetry() {
    register();
    let value = "a b,c;d=e%f\"g\\h\r\né";
    let out = injected_baggage(Snapshot::empty(), || REGISTERED_TEXT.set(value.to_string()));
    assert!(!out.contains(' ') && !out.contains('\r'), "{out}");
    let incoming = headers(&[("baggage", &out)]);
    assert_eq!(
        extract(&incoming).run(|| REGISTERED_TEXT.get()).as_deref(),
        Some(value)
    );
    let otel = support::otel::otel_extract_baggage(&out);
    assert_eq!(otel.baggage().len(), 1, "{out}");
    assert_eq!(
        otel.baggage()
            .get("registered_text")
            .map(|v| v.to_string())
            .as_deref(),
        Some(value)
    );
}
