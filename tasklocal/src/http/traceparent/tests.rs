//! Unit tests of `http/traceparent.rs`.

use super::*;

const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn spec_examples() {
    for (flags, sampled, random) in [
        ("00", false, false),
        ("01", true, false),
        ("02", false, true),
        ("03", true, true),
    ] {
        let header = format!("00-{ID}-{PARENT}-{flags}");
        let tp = TraceParent::parse(&header).unwrap();
        assert_eq!((tp.sampled(), tp.random()), (sampled, random));
        assert_eq!((tp.trace_id(), tp.parent_id()), (ID.into(), PARENT.into()));
        assert_eq!(tp.to_string(), header);
    }
}

#[test]
fn invalid_traceparents() {
    let ok = format!("00-{ID}-{PARENT}-01");
    assert!(TraceParent::parse(&ok).is_some());
    let zero_trace = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let zero_parent = format!("00-{ID}-{}-01", "0".repeat(16));
    for bad in [
        "",
        "00",
        &ok[..54],
        &format!("{ok}0"),
        &format!("{ok}-"),
        &format!("ff-{ID}-{PARENT}-01"),
        &format!("0-{ID}-{PARENT}-01"),
        &format!("0A-{ID}-{PARENT}-01"),
        &format!("00-{}-{PARENT}-01", ID.to_uppercase()),
        &format!("00-{ID}-{}-01", PARENT.to_uppercase()),
        &format!("00-{ID}-{PARENT}-0A"),
        &format!("00-{ID}-{PARENT}-0g"),
        &format!("00_{ID}-{PARENT}-01"),
        &format!("00-{ID}_{PARENT}-01"),
        &format!("00-{ID}-{PARENT}_01"),
        &format!("00-+{}-{PARENT}-01", &ID[1..]),
        &format!("00-{ID}-{PARENT}-+1"),
        &zero_trace,
        &zero_parent,
        &format!("00-{ID}-{PARENT}-01\r\n"),
        &format!("00-{ID}-{PARENT}-0é"),
        &format!("01-{ID}-{PARENT}-01x"),
    ] {
        assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn ows_and_future_versions() {
    let tp = TraceParent::parse(&format!(" \t00-{ID}-{PARENT}-01 \t")).unwrap();
    assert!(tp.sampled());
    let tp = TraceParent::parse(&format!("01-{ID}-{PARENT}-ff-extra")).unwrap();
    assert_eq!(tp.flags(), 0x03);
    assert_eq!(tp.to_string(), format!("00-{ID}-{PARENT}-03"));
    assert!(TraceParent::parse(&format!("fe-{ID}-{PARENT}-00")).is_some());
}

#[test]
fn random_ids() {
    let tp = TraceParent::new_random();
    let child = tp.with_new_parent_id().with_sampled(true);
    assert_eq!(child.trace_id(), tp.trace_id());
    assert_eq!(child.flags(), SAMPLED | RANDOM);
    assert_eq!(child.with_sampled(false).flags(), RANDOM);
    let ids: std::collections::HashSet<_> = (0..1000)
        .map(|_| TraceParent::new_random().trace_id())
        .collect();
    assert_eq!(ids.len(), 1000);
}

#[test]
fn tracestate_spec_examples() {
    let ts = TraceState::parse("congo=t61rcWkgMzE");
    assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
    let ts = TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(ts.len(), 2);
    let ts = TraceState::parse("fw529a3039@dt=abc , 0tenant@vendor=x y, a*b/c_d-e=1");
    assert_eq!(
        ts.to_string(),
        "fw529a3039@dt=abc,0tenant@vendor=x y,a*b/c_d-e=1"
    );
}

#[test]
fn tracestate_invalid_members_discard_the_whole_state() {
    let long = "a".repeat(257);
    for bad in [
        "Abc=x",
        "a b=x",
        "a=",
        "a= ",
        "@v=x",
        "@=x",
        "=x",
        "t@V=x",
        "_a=x",
        "a=b=c",
        "a=é",
        "a=x\t y",
        "noequals",
        "foo =1",
        "foo.bar=1",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("{long}=x"), format!("k={long}")])
    {
        let header = format!("ok=1,{bad},other=2");
        assert!(TraceState::parse(&header).is_empty(), "{header:?}");
    }
    assert_eq!(TraceState::parse("ok= lead").get("ok"), Some(" lead"));
}

/// The key grammar of the current W3C draft and test suite: `@` anywhere
/// after the first character, a digit may come first, 256 characters in all.
#[test]
fn tracestate_keys_with_at_signs() {
    for key in [
        "0abc".to_owned(),
        "foo@".to_owned(),
        "foo@@bar".to_owned(),
        "foo@bar@baz".to_owned(),
        "t@v@w".to_owned(),
        "t@_x".to_owned(),
        "a*b/c_d-e@0".to_owned(),
        "a".repeat(256),
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
        format!("{}@", "t".repeat(255)),
    ] {
        let ts = TraceState::parse(&format!("{key}=1,bar=2"));
        assert_eq!(ts.get(&key), Some("1"), "{key:?}");
        assert_eq!(ts.get("bar"), Some("2"), "{key:?}");
        let mut ts = TraceState::default();
        assert!(ts.insert(&key, "v"), "{key:?}");
    }
    assert!(TraceState::parse(&format!("{}@=1", "t".repeat(256))).is_empty());
    assert!(!TraceState::default().insert("@v", "1"));
}

#[test]
fn tracestate_repeated_keys_keep_the_first() {
    assert_eq!(TraceState::parse("foo=1,foo=1").to_string(), "foo=1");
    assert_eq!(TraceState::parse("foo=1,foo=2").to_string(), "foo=1");
    assert_eq!(
        TraceState::parse_all(["foo=1", "foo=2"]).to_string(),
        "foo=1"
    );
    assert_eq!(
        TraceState::parse_all(["a=1,foo=1,b=2", "foo=2,c=3"]).to_string(),
        "a=1,foo=1,b=2,c=3"
    );
    // A repeat still counts towards the 32 members of the list as received.
    let mut members: Vec<_> = (1..=32).map(|i| format!("bar{i:02}={i:02}")).collect();
    members.push("bar01=again".into());
    assert!(TraceState::parse(&members.join(",")).is_empty());
}

#[test]
fn tracestate_limits() {
    let header: Vec<_> = (1..=32).map(|i| format!("bar{i:02}={i:02}")).collect();
    let ts = TraceState::parse_all(header.chunks(10).map(|c| c.join(",")));
    assert_eq!(ts.len(), 32);
    assert_eq!(ts.get("bar01"), Some("01"));
    let mut ts = ts;
    assert!(ts.insert("new", "v"));
    assert_eq!(ts.len(), 32);
    assert_eq!(ts.iter().next(), Some(("new", "v")));
    assert_eq!(ts.get("bar32"), None);
    // 33 members: discarded.
    let header: Vec<_> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
    assert!(TraceState::parse(&header.join(",")).is_empty());
    // Empty lines and members are fine.
    let ts = TraceState::parse_all(["", "foo=1", " , "]);
    assert_eq!(ts.to_string(), "foo=1");
}

#[test]
fn encoding_is_lowercase_hex() {
    let mut values = vec![0, 1, 9, 10, 15, 16, 0xff, u64::MAX, 0x0123_4567_89ab_cdef];
    values.extend((0..1000).map(|_| random_u64()));
    for n in values {
        assert_eq!(hex16(n), format!("{n:016x}").as_bytes(), "{n:#x}");
    }
    for _ in 0..1000 {
        let tp = TraceParent::new_random().with_sampled(random_u64() % 2 == 0);
        let expected = format!(
            "00-{:032x}-{:016x}-{:02x}",
            tp.trace_id, tp.parent_id, tp.flags
        );
        assert_eq!(tp.encode(), expected.as_bytes());
        assert_eq!(TraceParent::parse(&expected), Some(tp));
    }
}

#[test]
fn byte_tables_match_the_grammar() {
    for b in 0..=255u8 {
        let digit = match b {
            b'0'..=b'9' => Some(u64::from(b - b'0')),
            b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
            _ => None,
        };
        assert_eq!(hex64(&[b]), digit, "{b:#x}");
        let keychar = b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b);
        assert_eq!(KEY_CHARS[usize::from(b)], keychar, "{b:#x}");
        let chr = (0x20..=0x7e).contains(&b) && b != b',' && b != b'=';
        assert_eq!(VALUE_CHARS[usize::from(b)], chr, "{b:#x}");
    }
}

#[test]
fn traceparent_lines_that_are_not_utf8() {
    let mut line = format!("00-{ID}-{PARENT}-01").into_bytes();
    assert!(TraceParent::parse_bytes(&line).is_some());
    line[10] = 0xff;
    assert_eq!(TraceParent::parse_bytes(&line), None);
    assert_eq!(TraceParent::parse_bytes(b"\xff\xfe"), None);
}

#[test]
fn tracestate_insert_and_remove_keep_the_canonical_form() {
    let mut ts = TraceState::parse("a=1,b=2,c=3");
    assert_eq!(ts.remove("b"), Some("2".into()));
    assert_eq!(ts.to_string(), "a=1,c=3");
    assert_eq!(ts.remove("c"), Some("3".into()));
    assert_eq!(ts.to_string(), "a=1");
    assert_eq!(ts.remove("x"), None);
    assert_eq!(ts.remove("a"), Some("1".into()));
    assert!(ts.is_empty() && ts.to_string().is_empty());
    assert_eq!(ts.len(), 0);
    assert_eq!(ts, TraceState::default());
    // A key that is a prefix of another is not that key.
    let mut ts = TraceState::parse("ab=1,a=2");
    assert_eq!(ts.get("a"), Some("2"));
    assert_eq!(ts.remove("a"), Some("2".into()));
    assert_eq!(ts.to_string(), "ab=1");
    assert!(ts.insert("a", "3") && ts.insert("ab", "4"));
    assert_eq!(ts.to_string(), "ab=4,a=3");
    assert_eq!(ts, TraceState::parse(" ab=4 ,, a=3"));
    assert_eq!(format!("{ts:?}"), r#"{"ab": "4", "a": "3"}"#);
    // The 33rd insert drops the right-most member.
    let mut ts = TraceState::default();
    for i in 0..40 {
        assert!(ts.insert(&format!("k{i}"), "v"));
        assert_eq!(ts.len(), (i + 1).min(32));
        assert_eq!(ts, TraceState::parse(&ts.to_string()));
    }
    assert_eq!(ts.iter().next(), Some(("k39", "v")));
    assert_eq!(ts.iter().last(), Some(("k8", "v")));
}
