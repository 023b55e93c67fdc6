//! The W3C codecs at their edges (SPEC 7). `baggage`: what `Baggage::parse` keeps and
//! drops (empty values, tabs, percent-escapes, key case, repeated keys, members at
//! and over the 64-member and 8,192-byte limits), how each special byte is written,
//! which whole members writing drops over a limit. `traceparent`: which versions, ids,
//! flags and separators parse, and what is written back. `tracestate`: the key and
//! value grammar, and `insert`. For any bytes at all: no codec panics, and what is
//! written reads back the same, here and in OpenTelemetry.
#![cfg(feature = "http")]

mod support;

use http::{HeaderMap, HeaderValue};
use opentelemetry::baggage::BaggageExt;
use proptest::prelude::*;
use support::otel::otel_extract_baggage;
use support::pairs;
use tasklocal::http::baggage::{MAX_BYTES, MAX_MEMBERS};
use tasklocal::http::traceparent::MAX_TRACESTATE_MEMBERS;
use tasklocal::http::{extract, Baggage, TraceParent, TraceState};
use tasklocal::mdc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A baggage with `members` inserted in order.
fn bag_of<K: Into<String>, V: Into<String>>(members: impl IntoIterator<Item = (K, V)>) -> Baggage {
    let mut bag = Baggage::new();
    for (key, value) in members {
        bag.insert(key, value);
    }
    bag
}

/// The members OpenTelemetry's baggage propagator reads from `header`, sorted.
fn otel_members(header: &str) -> Vec<(String, String)> {
    let mut members: Vec<_> = otel_extract_baggage(header)
        .baggage()
        .iter()
        .map(|(k, (v, _))| (k.to_string(), v.to_string()))
        .collect();
    members.sort();
    members
}

/// A `traceparent` of version `version` and flags `flags`, with the test's ids.
fn traceparent(version: &str, flags: &str) -> String {
    format!("{version}-{TRACE_ID}-{PARENT_ID}-{flags}")
}

/// `TraceParent::parse` accepts `header`.
fn parses(header: &str) -> bool {
    TraceParent::parse(header).is_some()
}

// baggage: parsing.

#[test]
fn an_empty_baggage_value_is_a_member() {
    // W3C: value = *baggage-octet.
    let bag = Baggage::parse("a=,b=2");
    assert_eq!(bag.get("a"), Some(""));
    assert_eq!(bag.get("b"), Some("2"));
    assert_eq!(bag.len(), 2);
}

#[test]
fn each_malformed_baggage_member_is_dropped_alone() {
    let header = "a=1,noequals,=novalue,b c=3,d=\"q\",e=x y,f=4,g=v;=bad,h=5;p;q=r";
    let bag = Baggage::parse(header);
    let members: Vec<_> = bag.iter().collect();
    assert_eq!(members, [("a", "1"), ("f", "4"), ("h", "5")], "{header}");
    assert_eq!(
        bag.properties("h"),
        Some(&["p".to_string(), "q=r".to_string()][..])
    );
}

#[test]
fn tabs_in_baggage_are_optional_whitespace_like_spaces() {
    let bag = Baggage::parse("\ta\t=\tb\t;\tp\t=\tq\t,\tc=d");
    assert_eq!(bag.get("a"), Some("b"));
    assert_eq!(bag.properties("a"), Some(&["p=q".to_string()][..]));
    assert_eq!(bag.get("c"), Some("d"));
}

/// `header` parses to exactly the given values: `None` for a key it must not hold.
#[track_caller]
fn assert_values(header: &str, expected: &[(&str, Option<&str>)]) {
    let bag = Baggage::parse(header);
    for (key, value) in expected {
        assert_eq!(bag.get(key), *value, "{key:?} in {header:?}");
    }
}

#[test]
fn baggage_percent_escapes_decode_and_broken_ones_stay_as_they_are() {
    assert_values(
        "a=%zz,b=%4,c=%41%42,d=%FF,e=%e6%97%a5,f=100%25,g=%",
        &[
            ("a", Some("%zz")),
            ("b", Some("%4")),
            ("c", Some("AB")),
            // A byte sequence that is not UTF-8 decodes to the replacement character.
            ("d", Some("\u{FFFD}")),
            ("e", Some("日")),
            ("f", Some("100%")),
            ("g", Some("%")),
        ],
    );
}

#[test]
fn baggage_keys_are_case_sensitive_and_never_percent_decoded() {
    assert_values(
        "Key=1,key=2,a%41=3",
        &[
            ("Key", Some("1")),
            ("key", Some("2")),
            ("a%41", Some("3")),
            ("aA", None),
        ],
    );
}

#[test]
fn a_repeated_baggage_key_replaces_the_value_and_properties_in_place() {
    let bag = Baggage::parse("a=1;p,b=2,a=3");
    assert_eq!(bag.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
    assert_eq!(bag.properties("a").map(<[String]>::len), Some(0));
    assert_eq!(bag.to_string(), "a=3,b=2");
}

#[test]
fn baggage_parsing_keeps_the_first_64_keys_and_still_applies_later_repeats_of_them() {
    let mut header: Vec<String> = (0..70).map(|i| format!("k{i}=v{i}")).collect();
    header.push("k0=last".to_string());
    let bag = Baggage::parse(&header.join(","));
    assert_eq!(bag.len(), MAX_MEMBERS);
    assert_eq!(bag.get("k63"), Some("v63"));
    assert_eq!(bag.get("k64"), None);
    assert_eq!(bag.get("k0"), Some("last"));
}

#[test]
fn a_baggage_header_exactly_at_both_limits_is_kept_whole() {
    // 64 members, 8,192 bytes with the commas.
    let n = MAX_MEMBERS;
    let per = (MAX_BYTES - (n - 1)) / n;
    let extra = (MAX_BYTES - (n - 1)) - per * n;
    let members: Vec<String> = (0..n)
        .map(|i| {
            let key = format!("k{i:02}");
            let len = per + usize::from(i < extra);
            format!("{key}={}", "v".repeat(len - key.len() - 1))
        })
        .collect();
    let header = members.join(",");
    assert_eq!(header.len(), MAX_BYTES);
    let bag = Baggage::parse(&header);
    assert_eq!(bag.len(), n);
    assert_eq!(bag.to_header_value(), (header.clone(), 0));
    // Whitespace around the members does not count towards the limit.
    let spaced = members.join(" , ");
    assert_eq!(Baggage::parse(&spaced).len(), n);
}

#[test]
fn baggage_parsing_skips_what_does_not_fit_and_reads_on() {
    // A member longer than MAX_BYTES is malformed; a valid member that no longer fits
    // is skipped; a later one that fits is kept.
    let too_long = format!("huge={}", "h".repeat(MAX_BYTES));
    let big = format!("big={}", "b".repeat(8000));
    let mid = format!("mid={}", "m".repeat(500));
    let bag = Baggage::parse(&format!("{too_long},{big},{mid},small=1"));
    assert_eq!(bag.get("huge"), None);
    assert_eq!(bag.get("big").map(str::len), Some(8000));
    assert_eq!(bag.get("mid"), None);
    assert_eq!(bag.get("small"), Some("1"));
    // Malformed members use none of the 64-member budget.
    let members: Vec<String> = (0..64)
        .flat_map(|i| [format!("k{i}=v"), "bad member".to_string()])
        .collect();
    let bag = Baggage::parse(&members.join(","));
    assert_eq!(bag.len(), 64);
    assert_eq!(bag.get("k63"), Some("v"));
}

// baggage: writing.

#[test]
fn each_special_byte_of_a_baggage_value_is_percent_encoded_and_reads_back() {
    for (value, encoded) in [
        ("\\", "%5C"),
        ("\"", "%22"),
        (",", "%2C"),
        (";", "%3B"),
        (" ", "%20"),
        ("%", "%25"),
        ("=", "%3D"),
        ("\t", "%09"),
        ("\u{7f}", "%7F"),
        ("\0", "%00"),
        ("é", "%C3%A9"),
        ("a+b/c?d:e", "a+b/c?d:e"),
    ] {
        let written = bag_of([("k", value)]).to_string();
        // The hex digits of an escape may be of either case.
        assert_eq!(
            written.to_ascii_uppercase(),
            format!("K={}", encoded.to_ascii_uppercase()),
            "{value:?}"
        );
        assert_eq!(Baggage::parse(&written).get("k"), Some(value));
    }
}

#[test]
fn a_header_of_exactly_8192_bytes_drops_nothing_one_byte_more_drops_a_member() {
    let a_len = MAX_BYTES - "a=".len() - ",b=y".len();
    let (written, dropped) =
        bag_of([("a", "x".repeat(a_len)), ("b", "y".into())]).to_header_value();
    assert_eq!(written.len(), MAX_BYTES);
    assert_eq!(dropped, 0);
    let (written, dropped) =
        bag_of([("a", "x".repeat(a_len + 1)), ("b", "y".into())]).to_header_value();
    assert_eq!((written.as_str(), dropped), ("b=y", 1));
}

#[test]
fn the_byte_limit_counts_bytes_after_percent_encoding() {
    // Each space becomes 3 bytes: 2,800 spaces are 8,400 bytes written.
    let spaces = " ".repeat(2800);
    let (written, dropped) =
        bag_of([("a", "1"), ("sp", spaces.as_str()), ("b", "2")]).to_header_value();
    assert_eq!((written.as_str(), dropped), ("a=1,b=2", 1));
    // 2,729 spaces: 3 + 8,187 = 8,190 bytes, which fit.
    let (written, dropped) = bag_of([("sp", " ".repeat(2729))]).to_header_value();
    assert_eq!(dropped, 0);
    assert_eq!(written.len(), 3 + 2729 * 3);
}

#[test]
fn over_64_members_the_last_ones_are_dropped() {
    let (written, dropped) =
        bag_of((0..70).map(|i| (format!("k{i}"), i.to_string()))).to_header_value();
    assert_eq!(dropped, 6);
    let bag = Baggage::parse(&written);
    assert_eq!(bag.len(), 64);
    assert_eq!(bag.get("k63"), Some("63"));
    assert_eq!(bag.get("k64"), None);
}

#[test]
fn over_both_limits_only_as_many_members_as_needed_are_dropped() {
    // 66 members, two of them huge: two drops are needed, and enough.
    let mut members: Vec<_> = (0..64)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    members.insert(3, ("huge1".to_string(), "x".repeat(5000)));
    members.insert(40, ("huge2".to_string(), "y".repeat(5000)));
    let (written, dropped) = bag_of(members).to_header_value();
    assert_eq!(dropped, 2, "{}", &written[..60]);
    assert_eq!(Baggage::parse(&written).len(), 64);
    assert!(written.len() <= MAX_BYTES);
}

#[test]
fn parsed_properties_count_towards_the_byte_limit() {
    let props = "p".repeat(8000);
    let mut bag = Baggage::parse(&format!("a=1;{props},b=2"));
    assert_eq!(bag.len(), 2);
    bag.insert("c", "x".repeat(300));
    let (written, dropped) = bag.to_header_value();
    assert!(written.len() <= MAX_BYTES, "{}", written.len());
    assert_eq!(dropped, 1);
    assert_eq!(Baggage::parse(&written).get("b"), Some("2"));
}

#[test]
fn baggage_keys_that_are_not_tokens_are_not_written_and_count_as_dropped() {
    let bag = bag_of([
        ("ok", "1"),
        ("", "empty key"),
        ("a b", "2"),
        ("é", "3"),
        ("a=b", "4"),
        ("a,b", "5"),
        ("ok2", "6"),
    ]);
    let (written, dropped) = bag.to_header_value();
    assert_eq!((written.as_str(), dropped), ("ok=1,ok2=6", 5));
}

// traceparent.

#[test]
fn traceparent_version_00_is_exactly_55_bytes_and_a_future_version_may_go_on_after_a_dash() {
    assert!(parses(&traceparent("00", "01")));
    assert!(!parses(&format!("{}x", traceparent("00", "01"))));
    assert!(!parses(&format!("{}-x", traceparent("00", "01"))));
    for version in ["01", "fe"] {
        assert!(parses(&traceparent(version, "01")));
    }
    assert!(parses(&format!("{}-anything", traceparent("01", "01"))));
    assert!(parses(&format!("{}-", traceparent("01", "01"))));
    assert!(!parses(&format!("{}x", traceparent("01", "01"))));
    assert!(!parses(&format!("{}0", traceparent("01", "01"))));
    // ff is invalid; a version is two lowercase hex digits.
    for version in ["ff", "0A", "0g", "0", "000"] {
        assert!(!parses(&traceparent(version, "01")), "version {version:?}");
    }
}

#[test]
fn traceparent_zero_ids_uppercase_hex_bad_flags_separators_or_inner_spaces_are_invalid() {
    let zero_trace = "0".repeat(32);
    let zero_parent = "0".repeat(16);
    for header in [
        format!("00-{zero_trace}-{PARENT_ID}-01"),
        format!("00-{TRACE_ID}-{zero_parent}-01"),
        format!("01-{zero_trace}-{PARENT_ID}-01"),
        format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()),
        format!("00-{TRACE_ID}-{}-01", PARENT_ID.to_uppercase()),
        traceparent("00", "0A"),
        traceparent("00", "0g"),
        traceparent("00", "1"),
        format!("00_{TRACE_ID}-{PARENT_ID}-01"),
        format!("00-{TRACE_ID}_{PARENT_ID}-01"),
        format!("00-{TRACE_ID}-{PARENT_ID}_01"),
        // Spaces inside are not optional whitespace.
        format!("00 -{TRACE_ID}-{PARENT_ID}-01"),
        format!("00-{TRACE_ID}-{PARENT_ID}- 1"),
        // Non-ASCII, where a slice by bytes would panic.
        format!("00-{}é-{PARENT_ID}-01", &TRACE_ID[..30]),
        String::new(),
        "é".repeat(30),
    ] {
        assert!(!parses(&header), "{header:?} was accepted");
    }
}

#[test]
fn traceparent_undefined_flag_bits_are_zeroed_and_any_version_is_written_as_00() {
    let parsed = TraceParent::parse(&traceparent("00", "ff")).unwrap();
    assert_eq!(parsed.flags(), 0x03);
    assert!(parsed.sampled() && parsed.random());
    assert_eq!(parsed.to_string(), traceparent("00", "03"));
    let parsed = TraceParent::parse(&format!("{}-extra-fields", traceparent("7f", "fe"))).unwrap();
    assert_eq!(parsed.flags(), 0x02);
    assert_eq!(parsed.to_string(), traceparent("00", "02"));
    assert_eq!(parsed.trace_id(), TRACE_ID);
    assert_eq!(parsed.parent_id(), PARENT_ID);
}

// tracestate.

#[test]
fn tracestate_keys_follow_the_w3c_grammar_and_one_bad_key_voids_the_list() {
    let longest = format!("a{}", "b".repeat(255));
    let too_long = format!("a{}", "b".repeat(256));
    for key in [
        "a",
        "0",
        "a_-*/@",
        "foo@",
        "foo@@bar",
        "foo@bar@baz",
        "1abc",
        longest.as_str(),
        "t@sssssssssssssss",
    ] {
        let state = TraceState::parse(&format!("{key}=v"));
        assert_eq!(state.get(key), Some("v"), "key {key:?}");
    }
    for key in [
        "",
        "@a",
        "A",
        "aB",
        "_a",
        "-a",
        "*a",
        "/a",
        "a.b",
        "a b",
        "a\"b",
        too_long.as_str(),
        "é",
    ] {
        let state = TraceState::parse(&format!("ok=1,{key}=v"));
        assert!(state.is_empty(), "key {key:?} was accepted: {state}");
    }
}

#[test]
fn tracestate_values_follow_the_w3c_grammar_and_one_bad_value_voids_the_list() {
    let longest = "v".repeat(256);
    let too_long = "v".repeat(257);
    for value in ["v", "a b", "!", "~", longest.as_str(), " x"] {
        let state = TraceState::parse(&format!("k={value}"));
        assert_eq!(state.get("k"), Some(value), "value {value:?}");
    }
    for value in ["", "a,b", "a=b", "é", "\u{7f}", too_long.as_str(), "a\tb"] {
        let state = TraceState::parse(&format!("ok=1,k={value}"));
        assert!(state.is_empty(), "value {value:?} was accepted: {state}");
    }
}

#[test]
fn tracestate_insert_puts_the_member_first_and_drops_the_last_over_32() {
    let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
    let mut state = TraceState::parse(&members.join(","));
    assert!(state.insert("new", "1"));
    assert_eq!(state.len(), 32);
    assert_eq!(state.iter().next(), Some(("new", "1")));
    assert_eq!(state.get("k31"), None);
    assert_eq!(state.get("k30"), Some("v"));
    // A key already there moves to the front; nothing is dropped.
    assert!(state.insert("k30", "2"));
    assert_eq!(state.len(), 32);
    assert_eq!(state.iter().next(), Some(("k30", "2")));
    assert_eq!(state.get("k29"), Some("v"));
    // An invalid key or value changes nothing.
    let before = state.to_string();
    assert!(!state.insert("k0", ""));
    assert!(!state.insert("k0", "a,b"));
    assert!(!state.insert("k0", "a "));
    assert!(!state.insert("@k", "v"));
    assert_eq!(state.to_string(), before);
}

// Any input.

/// W3C's baggage-octet: printable ASCII but `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_codec_panics_on_any_bytes_and_baggage_reads_back_what_it_writes(
        bytes in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let bag = Baggage::parse(&text);
        prop_assert!(bag.len() <= MAX_MEMBERS);
        let (written, _) = bag.to_header_value();
        prop_assert!(written.len() <= MAX_BYTES);
        let again = Baggage::parse(&written);
        prop_assert_eq!(again.iter().collect::<Vec<_>>(), bag.iter().collect::<Vec<_>>());
        let _ = TraceParent::parse(&text);
        prop_assert!(TraceState::parse(&text).len() <= MAX_TRACESTATE_MEMBERS);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            for name in ["baggage", "traceparent", "tracestate"] {
                headers.append(name, value.clone());
            }
        }
        let _ = extract(&headers).run(mdc::to_vec);
    }

    #[test]
    fn any_value_is_written_as_baggage_octets_and_read_back_exactly_here_and_by_opentelemetry(
        no_nul in "[^\\u{0}]{0,40}",
        any_text in any::<String>(),
    ) {
        for value in [no_nul.as_str(), any_text.as_str()] {
            let header = bag_of([("k", value), ("z", "after")]).to_string();
            // Only baggage-octets other than `%` and `=` are written as they are.
            let raw_value = header.strip_prefix("k=").unwrap().split(',').next().unwrap();
            for b in raw_value.bytes() {
                prop_assert!(is_baggage_octet(b), "byte {b:#x} written raw in {header:?}");
                prop_assert!(b != b'=', "raw = in {header:?}");
            }
            let back = Baggage::parse(&header);
            prop_assert_eq!(back.get("k"), Some(value));
            // OpenTelemetry trims values (a documented deviation from W3C).
            if value.trim() == value {
                let expected = pairs(&[("k", value), ("z", "after")]);
                prop_assert_eq!(otel_members(&header), expected, "{}", header);
            }
        }
    }
}
