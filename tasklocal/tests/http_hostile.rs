//! Hostile input: the codecs and `extract` never panic and stay bounded whatever the
//! bytes, bad members are dropped alone, no MDC value can forge a member or a header —
//! also against a running axum server on the loopback interface.
#![cfg(all(feature = "http", feature = "tokio"))]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use support::runtime::multi_thread;
use tasklocal::http::baggage::{Baggage, MAX_BYTES, MAX_MEMBERS};
use tasklocal::http::{extract, inject, TraceContext, TraceParent, TraceState};
use tasklocal::{mdc, Snapshot};

/// Strings dense in the characters the grammars care about.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[,;=% \r\n\t\"\\\\a-f0-9@*/éA日\u{0}-]{0,80}",
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        // Near-valid traceparents.
        "[0-9a-fA-F]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-fA-F-]{2,6}",
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn check_all_parsers(input: &str) {
    let bag = Baggage::parse(input);
    let (written, dropped) = bag.to_header_value();
    assert!(written.len() <= MAX_BYTES && bag.len() <= MAX_MEMBERS);
    if dropped == 0 {
        assert_eq!(Baggage::parse(&written), bag);
    }
    let ts = TraceState::parse(input);
    assert_eq!(TraceState::parse(&ts.to_string()), ts);
    if let Some(tp) = TraceParent::parse(input) {
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
        let _ = tp.with_new_parent_id();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn parsers_never_panic(input in nasty()) {
        check_all_parsers(&input);
    }

    #[test]
    fn parsers_never_panic_on_lists(parts in proptest::collection::vec(nasty(), 0..20), sep in "[,;= \t]{1,3}") {
        check_all_parsers(&parts.join(&sep));
    }

    #[test]
    fn baggage_round_trips(entries in proptest::collection::vec((token(), nasty()), 0..80)) {
        let mut bag = Baggage::new();
        for (k, v) in &entries {
            bag.insert(k.as_str(), v.as_str());
        }
        let (header, dropped) = bag.to_header_value();
        prop_assert!(header.len() <= MAX_BYTES);
        prop_assert!(header.split(',').count() <= MAX_MEMBERS);
        prop_assert!(!header.contains([' ', '\r', '\n', '\t', '"', ';']));
        // `len - dropped` entries come back, unchanged and in order: no value can
        // create, split or merge members.
        let back = Baggage::parse(&header);
        prop_assert_eq!(back.len(), bag.len() - dropped);
        let mut rest = bag.iter();
        for entry in back.iter() {
            prop_assert!(rest.any(|e| e == entry), "{:?} out of order or changed", entry);
        }
        prop_assert_eq!(back.to_string(), header);
        // And no fewer: the most members that fit in the limits.
        let mut sizes: Vec<usize> = bag
            .iter()
            .map(|(k, v)| {
                let mut one = Baggage::new();
                one.insert(k, v);
                one.to_string().len()
            })
            .collect();
        sizes.sort_unstable();
        let mut most = 0;
        let mut bytes = 0;
        for size in sizes {
            bytes += size + usize::from(most > 0);
            if most == MAX_MEMBERS || bytes > MAX_BYTES {
                break;
            }
            most += 1;
        }
        prop_assert_eq!(back.len(), most);
    }

    #[test]
    fn invalid_keys_are_skipped(key in nasty(), value in nasty()) {
        let mut bag = Baggage::new();
        bag.insert(key.as_str(), value.as_str());
        bag.insert("ok", "1");
        let back = Baggage::parse(&bag.to_string());
        prop_assert_eq!(back.get("ok"), Some("1"));
        prop_assert!(back.len() <= 2);
    }

    #[test]
    fn oversized_baggage_truncates_whole_members(
        count in 60usize..120,
        size in 0usize..400,
    ) {
        let mut bag = Baggage::new();
        for i in 0..count {
            bag.insert(format!("k{i}"), "é".repeat(size + i));
        }
        let (header, dropped) = bag.to_header_value();
        let kept = count - dropped;
        prop_assert!(header.len() <= MAX_BYTES && kept <= MAX_MEMBERS);
        let back = Baggage::parse(&header);
        prop_assert_eq!(back.len(), kept);
        prop_assert_eq!(back.iter().collect::<Vec<_>>(), bag.iter().take(kept).collect::<Vec<_>>());
        // Dropping fewer would break a limit.
        if dropped > 0 && kept < MAX_MEMBERS {
            let mut one_more = Baggage::new();
            for (k, v) in bag.iter().take(kept + 1) {
                one_more.insert(k, v);
            }
            prop_assert_eq!(one_more.to_header_value().1, 1);
        }
    }

    #[test]
    fn random_traceparents_are_valid(sampled in any::<bool>()) {
        let tp = TraceParent::new_random().with_sampled(sampled);
        prop_assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
        prop_assert_eq!(tp.sampled(), sampled);
        prop_assert!(tp.trace_id() != "0".repeat(32) && tp.parent_id() != "0".repeat(16));
    }
}

#[test]
fn hundred_members_truncate() {
    let mut bag = Baggage::new();
    for i in 0..100 {
        bag.insert(format!("key{i}"), format!("value{i}"));
    }
    let (header, dropped) = bag.to_header_value();
    assert_eq!((header.split(',').count(), dropped), (64, 36));
    assert!(header.ends_with(",key63=value63"));
}

#[test]
fn over_8192_bytes_truncates() {
    let mut bag = Baggage::new();
    for i in 0..20 {
        bag.insert(format!("k{i:02}"), ",".repeat(200)); // 604 bytes encoded
    }
    let (header, dropped) = bag.to_header_value();
    // 13 members: 13 * 604 + 12 commas = 7864; a 14th would be 8469.
    assert_eq!((header.len(), dropped), (7864, 7));
    assert_eq!(Baggage::parse(&header).len(), 13);
}

#[test]
fn crlf_cannot_inject() {
    let mut bag = Baggage::new();
    bag.insert("a", "x\r\nbaggage: evil=1,b=2;p");
    let header = bag.to_string();
    assert_eq!(header, "a=x%0D%0Abaggage:%20evil%3D1%2Cb%3D2%3Bp");
    let back = Baggage::parse(&header);
    assert_eq!(back.len(), 1);
    assert_eq!(back.get("a"), bag.get("a"));
}

// ---------------------------------------------------------------------------
// `extract` and `inject` on header maps.

/// Header value bytes: anything a `HeaderValue` accepts (also obs-text, which fails
/// `to_str`), dense in the characters the grammars care about.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        nasty().prop_map(String::into_bytes),
        // Near-valid baggage lists with stray bytes.
        proptest::collection::vec(
            prop_oneof![
                "[a-z]{1,6}=[a-zA-Z0-9%]{0,12}",
                "[a-z]{1,6}=[a-z]{0,4};[a-z]{1,4}(=[a-z]{0,4})?",
                proptest::collection::vec(0x80u8.., 1..4)
                    .prop_map(|b| b.iter().map(|&b| char::from(b)).collect()),
                "[ \t,;=%\\\"]{1,3}",
            ],
            0..30
        )
        .prop_map(|parts| parts.concat().into_bytes()),
    ]
}

/// The three header names `extract` reads, and one it must ignore.
fn header_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("baggage"),
        Just("traceparent"),
        Just("tracestate"),
        Just("x-other")
    ]
}

fn header_map(lines: &[(&'static str, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, bytes) in lines {
        // What a server could receive: hyper hands over any bytes a value allows.
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// The MDC and trace context `extract` seeds, and what `inject` writes from them.
fn extract_and_inject(headers: &HeaderMap) -> (Vec<(String, String)>, TraceContext, HeaderMap) {
    extract(headers).run(|| {
        let mut out = HeaderMap::new();
        inject(&mut out);
        (mdc::to_vec(), TraceContext::current().unwrap(), out)
    })
}

/// A member `Baggage::parse` must reject, with no comma in it.
fn bad_member() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,5}",                               // no `=`
        "=[a-z]{0,5}",                              // no key
        "[a-z]{1,3}[ \"()/:@\\[\\]{}][a-z]{1,3}=v", // not a token
        "[a-z]{1,5}=[a-z]{1,3}[ \t\"][a-z]{1,3}",   // value with a space, tab or quote inside
        "[a-z]{1,5}=v;[a-z]{1,2} [a-z]{1,2}",       // bad property
        "[a-z]{1,5}=v;=x",                          // property without a name
        "[a-z]{1,5}=\u{80}\u{e9}",                  // non-ASCII value
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn extract_never_panics_and_stays_bounded(
        lines in proptest::collection::vec((header_name(), header_bytes()), 0..8)
    ) {
        let (seen, trace, out) = extract_and_inject(&header_map(&lines));
        prop_assert!(seen.len() <= MAX_MEMBERS);
        prop_assert!(seen.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= MAX_BYTES);
        prop_assert!(trace.tracestate().len() <= 32);
        // What goes out is well-formed and reads back to the same MDC.
        let back = extract(&out).run(mdc::to_vec);
        prop_assert_eq!(back, seen);
        let parent = TraceParent::parse(out["traceparent"].to_str().unwrap()).unwrap();
        prop_assert_eq!(parent.trace_id(), trace.traceparent().trace_id());
        prop_assert!(out.keys().all(|k| ["baggage", "traceparent", "tracestate"].contains(&k.as_str())));
    }

    #[test]
    fn bad_members_are_dropped_alone(
        members in proptest::collection::vec(
            prop_oneof![
                ("[a-zA-Z0-9_.-]{1,8}", "[a-zA-Z0-9%]{0,10}").prop_map(|(k, v)| Ok((k, v))),
                bad_member().prop_map(Err),
            ],
            0..40,
        ),
        ows in "[ \t]{0,2}",
    ) {
        let header: Vec<String> = members
            .iter()
            .map(|m| match m {
                Ok((k, v)) => format!("{ows}{k}{ows}={ows}{v}{ows}"),
                Err(bad) => bad.clone(),
            })
            .collect();
        // The model: every good member, a repeated key replacing the value in place.
        let mut expected: Vec<(String, String)> = Vec::new();
        for (k, v) in members.iter().flatten() {
            let v = Baggage::parse(&format!("k={v}")).get("k").unwrap().to_owned();
            match expected.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => expected.push((k.clone(), v)),
            }
        }
        let headers = header_map(&[("baggage", header.join(",").into_bytes())]);
        let seen = extract(&headers).run(mdc::to_vec);
        prop_assert_eq!(seen, expected, "{:?}", header);
    }

    #[test]
    fn mdc_values_cannot_forge_members_or_headers(
        entries in proptest::collection::vec(("[a-z_]{1,8}", nasty()), 1..20)
    ) {
        let headers = Snapshot::empty().run(|| {
            for (k, v) in &entries {
                mdc::insert(k.as_str(), v.as_str());
            }
            let mut headers = HeaderMap::new();
            inject(&mut headers);
            headers
        });
        // Two headers, one line each; no CR, LF, space, quote or semicolon anywhere.
        prop_assert_eq!(headers.len(), 2);
        prop_assert_eq!(headers.keys_len(), 2);
        let baggage = headers["baggage"].as_bytes();
        prop_assert!(!baggage.iter().any(|b| b" \r\n\t\";".contains(b)));
        // Exactly the entries come back: none split, merged or added.
        let mut expected: Vec<(String, String)> = Vec::new();
        for (k, v) in &entries {
            match expected.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => expected.push((k.clone(), v.clone())),
            }
        }
        prop_assert_eq!(extract(&headers).run(mdc::to_vec), expected);
    }
}

#[test]
fn crlf_in_an_mdc_value_stays_inside_its_member() {
    let headers = Snapshot::empty().run(|| {
        mdc::insert("request_id", "r-1\r\nX-Evil: 1\r\nbaggage: admin=true");
        mdc::insert("note", "a,admin=true;p=1");
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        headers
    });
    assert_eq!(
        headers["baggage"],
        "request_id=r-1%0D%0AX-Evil:%201%0D%0Abaggage:%20admin%3Dtrue,note=a%2Cadmin%3Dtrue%3Bp%3D1"
    );
    assert!(!headers.contains_key("x-evil"));
    let seen = extract(&headers).run(mdc::to_vec);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, "r-1\r\nX-Evil: 1\r\nbaggage: admin=true");
    assert_eq!(mdc_get(&headers, "admin"), None);
}

fn mdc_get(headers: &HeaderMap, key: &str) -> Option<String> {
    extract(headers).run(|| mdc::get(key))
}

#[test]
fn huge_headers_are_read_within_the_limits() {
    // 1 MiB in one line: 100,000 members.
    let line: Vec<String> = (0..100_000).map(|i| format!("k{i}=v{i}")).collect();
    let mut headers = header_map(&[("baggage", line.join(",").into_bytes())]);
    // And 100 more lines of 8 KiB each, one member apiece.
    for i in 0..100 {
        let value = HeaderValue::try_from(format!("x{i}={}", "y".repeat(8_000))).unwrap();
        headers.append("baggage", value);
    }
    let seen = extract(&headers).run(mdc::to_vec);
    assert_eq!(seen.len(), MAX_MEMBERS);
    assert_eq!(seen[0], ("k0".to_owned(), "v0".to_owned()));
    assert_eq!(seen[63], ("k63".to_owned(), "v63".to_owned()));
    // A huge tracestate is over 32 members: discarded, and read no further.
    let state: Vec<String> = (0..10_000).map(|i| format!("k{i}=v")).collect();
    let headers = header_map(&[
        (
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
        ),
        ("tracestate", state.join(",").into_bytes()),
    ]);
    let trace = extract(&headers).run(TraceContext::current).unwrap();
    assert_eq!(
        trace.traceparent().trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(trace.tracestate().is_empty());
}

#[test]
fn a_bad_line_spoils_only_its_own_members() {
    let headers = header_map(&[
        ("baggage", b"request_id=r-1".to_vec()),
        ("baggage", b"bad=\xff\xfe,tenant=acme,\xe9=1".to_vec()),
    ]);
    assert!(headers
        .get_all("baggage")
        .iter()
        .nth(1)
        .unwrap()
        .to_str()
        .is_err());
    let seen = extract(&headers).run(mdc::to_vec);
    let expected =
        [("request_id", "r-1"), ("tenant", "acme")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------------------
// A running axum server receiving hostile headers (loopback only, bounded count).

mod server {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The handler: the request's MDC and trace id as JSON.
    async fn context() -> String {
        // Spawned work sees the same context.
        let (seen, trace) = tasklocal::spawn(async {
            (
                mdc::to_vec(),
                TraceContext::current().map(|t| t.traceparent().trace_id()),
            )
        })
        .await
        .unwrap();
        serde_json::json!({ "mdc": seen, "trace_id": trace }).to_string()
    }

    async fn start() -> SocketAddr {
        let app = axum::Router::new()
            .route("/", get(context))
            .layer(tasklocal::http::ServerLayer);
        support::loopback::serve(app).await
    }

    /// Sends `head` as it is and returns the status code and body.
    async fn raw(addr: SocketAddr, head: &[u8]) -> (u16, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head).await.unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.unwrap();
            reply
        };
        // A guard against a hung test, not a timing assertion.
        let reply = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    fn request(i: usize, hostile: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_vec();
        head.extend_from_slice(format!("baggage: request_id=ok-{i}\r\n").as_bytes());
        for (name, value) in hostile {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    #[test]
    fn a_running_server_survives_hostile_headers() {
        let rt = multi_thread(2);
        rt.block_on(async {
            let addr = start().await;
            // Hostile header lines: any bytes but CR and LF (those end the line at the
            // HTTP level, before tasklocal sees anything). Every fourth request keeps
            // the control characters a field value may not hold (hyper answers 400);
            // the others only have bytes a field value may hold, obs-text included.
            let line =
                prop_oneof![header_bytes(), nasty().prop_map(String::into_bytes)].prop_map(|b| {
                    b.into_iter()
                        .filter(|&b| b != b'\r' && b != b'\n')
                        .collect::<Vec<u8>>()
                });
            let lines = proptest::collection::vec((header_name(), line), 1..6);
            let mut runner = TestRunner::deterministic();
            let requests: Vec<(bool, Vec<u8>)> = (0..200)
                .map(|i| {
                    let mut lines = lines.new_tree(&mut runner).unwrap().current();
                    if i % 4 != 0 {
                        for (_, bytes) in &mut lines {
                            bytes.retain(|&b| b == b'\t' || b >= 0x20 && b != 0x7f);
                        }
                    }
                    let valid = lines
                        .iter()
                        .all(|(_, b)| HeaderValue::from_bytes(b).is_ok());
                    (valid, request(i, &lines))
                })
                .collect();

            let replies: Vec<(usize, (u16, String))> =
                futures::stream::iter(requests.iter().enumerate())
                    .map(|(i, (_, head))| async move { (i, raw(addr, head).await) })
                    .buffer_unordered(8)
                    .collect()
                    .await;

            let mut served = 0;
            for (i, (status, body)) in replies {
                // hyper itself refuses a head with bytes no field value may hold (400);
                // every other request is served.
                let (valid, head) = &requests[i];
                if *valid {
                    assert_eq!(
                        status,
                        200,
                        "request {i}: {}",
                        String::from_utf8_lossy(head)
                    );
                } else {
                    assert!(
                        status == 200 || status == 400,
                        "request {i}: status {status}"
                    );
                }
                if status != 200 {
                    continue;
                }
                served += 1;
                let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
                let seen: Vec<(String, String)> =
                    serde_json::from_value(reply["mdc"].clone()).unwrap();
                assert!(seen.len() <= MAX_MEMBERS);
                // The good member, in its own line before the hostile ones, is kept —
                // unless a hostile line repeats its key.
                let id = seen
                    .iter()
                    .find(|(k, _)| k == "request_id")
                    .map(|(_, v)| v.as_str());
                let repeated = head.windows(10).filter(|w| w == b"request_id").count() > 1;
                assert!(
                    repeated || id == Some(format!("ok-{i}").as_str()),
                    "request {i}: {seen:?}"
                );
                assert_eq!(reply["trace_id"].as_str().map(str::len), Some(32));
            }
            assert!(
                served >= 150,
                "every request with valid field values is served: {served}"
            );

            // Still serving ordinary requests, each with its own context.
            let (status, body) = raw(addr, &request(7, &[])).await;
            assert_eq!(status, 200);
            assert!(body.contains("\"ok-7\""), "{body}");
        });
    }
}
