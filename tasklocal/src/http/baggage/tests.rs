//! Unit tests of `http/baggage.rs`.

use super::*;

fn pairs(b: &Baggage) -> Vec<(&str, &str)> {
    b.iter().collect()
}

#[test]
fn w3c_examples() {
    let b = Baggage::parse("key1=value1,key2=value2");
    assert_eq!(pairs(&b), [("key1", "value1"), ("key2", "value2")]);
    let b = Baggage::parse("key1 = value1, key2 = value2");
    assert_eq!(pairs(&b), [("key1", "value1"), ("key2", "value2")]);
    let b = Baggage::parse("userId=alice,serverNode=DF%2028,isProduction=false");
    assert_eq!(
        pairs(&b),
        [
            ("userId", "alice"),
            ("serverNode", "DF 28"),
            ("isProduction", "false")
        ]
    );
    let b = Baggage::parse(
        "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue",
    );
    assert_eq!(
        pairs(&b),
        [("key1", "value1"), ("key2", "value2"), ("key3", "value3")]
    );
    assert_eq!(
        b.properties("key1"),
        Some(&["property1".to_owned(), "property2".to_owned()][..])
    );
    assert_eq!(
        b.properties("key3"),
        Some(&["propertyKey=propertyValue".to_owned()][..])
    );
    assert_eq!(
        b.to_string(),
        "key1=value1;property1;property2,key2=value2,key3=value3;propertyKey=propertyValue"
    );
}

/// The cases of the W3C test suite (`w3c/baggage`, `test/test_baggage.py`).
#[test]
fn w3c_test_suite() {
    let b = Baggage::parse(
        "SomeKey \t = \t SomeValue \t ; \t SomeProp \t , \t SomeKey2 \t = \t SomeValue2 \t ; \t ValueProp \t = \t PropVal",
    );
    assert_eq!(
        pairs(&b),
        [("SomeKey", "SomeValue"), ("SomeKey2", "SomeValue2")]
    );
    assert_eq!(b.properties("SomeKey"), Some(&["SomeProp".to_owned()][..]));
    assert_eq!(
        b.properties("SomeKey2"),
        Some(&["ValueProp=PropVal".to_owned()][..])
    );
    let b = Baggage::parse("SomeKey=SomeValue=equals");
    assert_eq!(b.get("SomeKey"), Some("SomeValue=equals"));
    // urllib.parse.quote("\t \"';=asdf!@#$%^&*()"), with and without OWS around it.
    let encoded = "%09%20%22%27%3B%3Dasdf%21%40%23%24%25%5E%26%2A%28%29";
    for header in [
        format!("SomeKey={encoded}"),
        format!("SomeKey \t = \t {encoded} \t "),
    ] {
        assert_eq!(
            Baggage::parse(&header).get("SomeKey"),
            Some("\t \"';=asdf!@#$%^&*()")
        );
    }
    // Limits: 64 members, and one member of exactly 8192 bytes.
    let mut b = Baggage::new();
    for i in 0..64 {
        b.insert(format!("key{i}"), "value");
    }
    assert_eq!(b.to_string().split(',').count(), 64);
    let mut b = Baggage::new();
    b.insert("a", "0123456789".repeat(819));
    assert_eq!(b.to_string().len(), 8192);
}

#[test]
fn malformed_members_dropped_alone() {
    let b = Baggage::parse(
        "a=1,,noequals, =x,b c=2,d=x y,e=\"q\",f=1;bad prop,g=2;=v, h = ,i=é,j=ok\r\n",
    );
    assert_eq!(pairs(&b), [("a", "1"), ("h", "")]);
    let b = Baggage::parse("k=v\t;\tp\t=\tq\t");
    assert_eq!(b.properties("k"), Some(&["p=q".to_owned()][..]));
    assert_eq!(Baggage::parse("").len(), 0);
    assert_eq!(Baggage::parse(" , ,").len(), 0);
}

#[test]
fn value_decoding() {
    let b = Baggage::parse(r"a=%zz%4,b=%ff%41,c=100%25,d=x=y,e=a\b,f=%e6%97%a5");
    assert_eq!(b.get("a"), Some("%zz%4"));
    assert_eq!(b.get("b"), Some("\u{FFFD}A"));
    assert_eq!(b.get("c"), Some("100%"));
    assert_eq!(b.get("d"), Some("x=y"));
    assert_eq!(b.get("e"), Some(r"a\b"));
    assert_eq!(b.get("f"), Some("日"));
    // `%+f` must not be read as a hex escape.
    assert_eq!(Baggage::parse("a=%+f").get("a"), Some("%+f"));
    // Keys are not decoded.
    assert_eq!(Baggage::parse("a%41=1").get("a%41"), Some("1"));
}

#[test]
fn duplicates_replace_in_place() {
    let b = Baggage::parse("a=1;p,b=2,a=3");
    assert_eq!(pairs(&b), [("a", "3"), ("b", "2")]);
    assert_eq!(b.properties("a"), Some(&[][..]));
}

#[test]
fn insert_remove() {
    let mut b = Baggage::new();
    assert_eq!(b.insert("a", "1"), None);
    b.insert("b", "2");
    assert_eq!(b.insert("a", "3"), Some("1".into()));
    assert_eq!(pairs(&b), [("a", "3"), ("b", "2")]);
    assert_eq!(b.remove("a"), Some("3".into()));
    assert_eq!(b.remove("a"), None);
    assert_eq!(pairs(&b), [("b", "2")]);
}

#[test]
fn encoding() {
    let mut b = Baggage::new();
    b.insert("k", " \"%,;=\\\u{7f}\té");
    b.insert("", "skipped");
    b.insert("k@y", "skipped");
    b.insert("e", "");
    let (s, dropped) = b.to_header_value();
    assert_eq!(s, "k=%20%22%25%2C%3B%3D%5C%7F%09%C3%A9,e=");
    assert_eq!(dropped, 2);
    let back = Baggage::parse(&s);
    assert_eq!(back.get("k"), b.get("k"));
    assert_eq!(back.get("e"), Some(""));
}

#[test]
fn write_limits() {
    let mut b = Baggage::new();
    for i in 0..100 {
        b.insert(format!("k{i}"), "v");
    }
    let (s, dropped) = b.to_header_value();
    assert_eq!(s.split(',').count(), MAX_MEMBERS);
    assert_eq!(dropped, 100 - MAX_MEMBERS);
    assert!(s.ends_with(",k63=v"));

    // 10 members of ~1000 encoded bytes: 8 fit (8 * 1003 + 7 = 8031).
    let mut b = Baggage::new();
    for i in 0..10 {
        b.insert(format!("k{i}"), "x".repeat(1000));
    }
    let (s, dropped) = b.to_header_value();
    assert!(s.len() <= MAX_BYTES);
    assert_eq!((s.split(',').count(), dropped), (8, 2));

    // Exactly MAX_BYTES fits; one more byte does not.
    let mut b = Baggage::new();
    b.insert("k", "x".repeat(MAX_BYTES - 2));
    assert_eq!(b.to_header_value().0.len(), MAX_BYTES);
    b.insert("k", "x".repeat(MAX_BYTES - 1));
    assert_eq!(b.to_header_value(), (String::new(), 1));
    // Encoding expands: 2731 * 3 + 2 = 8195 > 8192.
    b.insert("k", " ".repeat(2731));
    assert_eq!(b.to_header_value(), (String::new(), 1));

    // Over the bytes, the largest members go first: the fewest are dropped.
    let mut b = Baggage::new();
    b.insert("first", "1");
    b.insert("big", "x".repeat(5000));
    b.insert("bigger", "x".repeat(6000));
    b.insert("last", "2");
    assert_eq!(
        b.to_header_value().0,
        format!("first=1,big={},last=2", "x".repeat(5000))
    );
    // Over both: the bytes first, then the members from the end.
    let mut b = Baggage::new();
    for i in 0..70 {
        b.insert(format!("k{i:02}"), "v");
    }
    b.insert("k05", "x".repeat(8100));
    let (s, dropped) = b.to_header_value();
    assert_eq!(dropped, 6);
    assert!(!s.contains("k05=") && s.ends_with(",k64=v"));
}

#[test]
fn parse_limits() {
    let header: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
    let b = Baggage::parse(&header.join(","));
    assert_eq!(b.len(), MAX_MEMBERS);
    assert_eq!(b.iter().last(), Some(("k63", "v")));

    // A full-size W3C header is kept whole.
    let value = "x".repeat(MAX_BYTES - 2);
    assert_eq!(
        Baggage::parse(&format!("k={value}")).get("k"),
        Some(&*value)
    );
    // Oversized members are skipped, later ones still read.
    let huge = format!("a={}x,b=1", value);
    assert_eq!(pairs(&Baggage::parse(&huge)), [("b", "1")]);
    // Budget nearly exhausted: what does not fit is skipped, what fits is kept.
    let header = format!("a={},b=123456,c=1", "x".repeat(MAX_BYTES - 10));
    let keys: Vec<_> = Baggage::parse(&header)
        .iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    assert_eq!(keys, ["a", "c"]);
    // Several header lines share one budget.
    let b = Baggage::parse_all([format!("a={}", "x".repeat(MAX_BYTES - 2)), "b=1".into()]);
    assert_eq!(b.len(), 1);
    let b = Baggage::parse_all(["a=1", "b=2, a=3"]);
    assert_eq!(pairs(&b), [("a", "3"), ("b", "2")]);
}

#[test]
fn byte_tables_match_the_grammar() {
    for b in 0..=255u8 {
        let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(TCHAR[usize::from(b)], tchar, "{b:#x}");
        let octet = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        assert_eq!(is_baggage_octet(b), octet, "{b:#x}");
        assert_eq!(RAW_VALUE[usize::from(b)], octet || b == b'\\', "{b:#x}");
        assert_eq!(
            is_plain_value_byte(b),
            octet && b != b'%' && b != b'=',
            "{b:#x}"
        );
    }
}

/// The one-pass reading of plain members reads them as the full parser does, and
/// leaves everything else to it.
#[test]
fn plain_members_read_as_in_full() {
    for raw in [
        "k=v",
        "k=",
        "k=%41%zz%",
        "k=a=b",
        "k=a\\b",
        "a.b-c_d~e=1",
        "k==",
        "=v",
        "k",
        "k =v",
        "k= v",
        "k=v;p",
        "k=v;",
        "k=v w",
        "k=v\t",
        "k=\"v\"",
        "k=é",
        "é=v",
        "k,=v",
    ] {
        assert_eq!(parse_member(raw), parse_member_in_full(raw), "{raw:?}");
        if let Some((key, value, _)) = split_plain(raw) {
            assert_eq!(format!("{key}={value}"), raw);
        }
    }
    assert_eq!(split_plain("k=%41"), Some(("k", "%41", true)));
    assert_eq!(split_plain("k=v;p"), None);
}

/// The fast path of `write_members` writes what the general one does.
#[test]
fn writing_within_the_limits_takes_the_fast_path_unchanged() {
    let properties = vec!["p".to_owned(), "q=1".to_owned()];
    let members: Vec<(String, String, &[String])> = vec![
        ("a".into(), "1".into(), &[]),
        ("b".into(), "x y=z,%;é\\".into(), &properties),
        ("c".into(), String::new(), &[]),
        ("d".into(), "v".repeat(100), &[]),
    ];
    let all = || members.iter().map(|(k, v, p)| (k.as_str(), v.as_str(), *p));
    assert_eq!(write_members(all()), write_within_limits(all()));
    assert_eq!(
        write_members(all()).0,
        "a=1,b=x%20y%3Dz%2C%25%3B%C3%A9%5C;p;q=1,c=,d=".to_owned() + &"v".repeat(100)
    );
    // Exactly at the limits, and one over each.
    for (count, len) in [(MAX_MEMBERS, 1), (MAX_MEMBERS + 1, 1), (2, 4094), (2, 4095)] {
        let members: Vec<(String, String)> = (0..count)
            .map(|i| (format!("k{i:02}"), "v".repeat(len)))
            .collect();
        let all = || {
            members
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str(), &[][..]))
        };
        let (header, dropped) = write_members(all());
        assert_eq!((header.clone(), dropped), write_within_limits(all()));
        assert!(header.len() <= MAX_BYTES && dropped <= 1, "{count} {len}");
    }
}
