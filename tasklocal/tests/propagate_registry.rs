//! Keys registered with `tasklocal::http::propagate` (SPEC sections 7 and 11, the
//! function's docs), and `TraceContext` in a plain tokio task (SPEC 1): a registered
//! value that needs percent-encoding round-trips exactly and `Baggage::current` writes
//! what `inject` writes; an incoming member with properties still gives its value, one
//! that does not parse is dropped and kept out of the MDC; a registered value over the
//! byte limit is dropped whole and counted by `dropped_members`; a child injects what it
//! wrote to a registered key. `try_set_current` in a plain tokio task returns
//! `is_no_storage`, `set_current` panics naming the fix, and `inject` still writes a new
//! trace. Registration is process-wide: each test registers names of its own. The
//! registered name against the MDC, and registering a name again: `http_propagation.rs`,
//! `http_carrier_edges.rs`.
#![cfg(all(feature = "http", feature = "tokio"))]

mod support;

use http::{HeaderMap, HeaderValue};
use support::runtime::current_thread;
use support::{fresh, message};
use tasklocal::http::{dropped_members, extract, inject, propagate, Baggage, TraceContext};
use tasklocal::{mdc, Local};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

/// What `inject` writes in the current owner.
fn injected_here() -> HeaderMap {
    let mut out = HeaderMap::new();
    inject(&mut out);
    out
}

/// What `inject` writes in a fresh owner after `setup`.
fn injected(setup: impl FnOnce()) -> HeaderMap {
    fresh(|| {
        setup();
        injected_here()
    })
}

/// A registered `String` key whose value needs percent-encoding (or is empty)
/// round-trips exactly, without going into the MDC, and `Baggage::current` agrees with
/// what `inject` writes.
#[test]
fn registered_values_that_need_encoding_round_trip_exactly() {
    static NOTE: Local<String> = Local::inheritable();
    propagate(&NOTE, "adv_note");
    for value in [
        "a b,c=d;e%f",
        "100%",
        "é ü \u{1F600}",
        "=;,%",
        "tab\there",
        "",
        "quote\"back\\slash",
    ] {
        let (out, current) = fresh(|| {
            NOTE.set(value.to_string());
            (injected_here(), Baggage::current())
        });
        let header = out.get("baggage").map(|h| h.to_str().unwrap().to_string());
        assert_eq!(
            header.clone().unwrap_or_default(),
            current.to_string(),
            "inject and Baggage::current disagree for {value:?}"
        );
        let back = extract(&out).run(|| (NOTE.get(), mdc::get("adv_note")));
        assert_eq!(back, (Some(value.to_string()), None), "header {header:?}");
    }
}

/// "a value that does not parse is dropped; the member does not go into the MDC
/// either" (here, out of `u16`'s range); a member with properties still gives its
/// value, and `inject` passes the value read back on.
#[test]
fn registered_members_with_properties_and_bad_values() {
    static PORT: Local<u16> = Local::inheritable();
    propagate(&PORT, "adv_port");
    let seen = extract(&headers(&[("baggage", "adv_port=8080;meta=1,x=1")]))
        .run(|| (PORT.get(), mdc::to_vec()));
    assert_eq!(seen.0, Some(8080));
    assert_eq!(seen.1, [("x".to_string(), "1".to_string())]);
    let seen = extract(&headers(&[("baggage", "adv_port=70000,x=2")]))
        .run(|| (PORT.get(), mdc::get("adv_port"), mdc::get("x")));
    assert_eq!(seen, (None, None, Some("2".to_string())));
    let out = extract(&headers(&[("baggage", "adv_port=8080;meta=1")])).run(injected_here);
    let b = Baggage::parse(out["baggage"].to_str().unwrap());
    assert_eq!(b.get("adv_port"), Some("8080"));
}

/// A registered value too large for the byte limit is dropped whole, counted, and the
/// rest is written.
#[test]
fn an_oversized_registered_value_is_dropped_whole_and_counted() {
    static BIG: Local<String> = Local::inheritable();
    propagate(&BIG, "adv_big");
    let before = dropped_members();
    let out = injected(|| {
        mdc::insert("small", "1");
        BIG.set("x".repeat(9000));
    });
    assert!(dropped_members() > before);
    let header = out["baggage"].to_str().unwrap();
    assert!(header.len() <= 8192);
    let b = Baggage::parse(header);
    assert_eq!(b.get("small"), Some("1"));
    assert_eq!(b.get("adv_big"), None, "part of a member was written");
}

/// A registered key is inherited like any inheritable key, and what a child writes is
/// what the child injects, while the parent injects its own.
#[test]
fn registered_keys_follow_children() {
    static STEP: Local<u32> = Local::inheritable();
    propagate(&STEP, "adv_step");
    let (parent, child) = fresh(|| {
        STEP.set(1);
        let child = tasklocal::thread::spawn(|| {
            STEP.set(2);
            injected_here()
        })
        .join()
        .unwrap();
        (injected_here(), child)
    });
    assert_eq!(parent["baggage"], "adv_step=1");
    assert_eq!(child["baggage"], "adv_step=2");
}

/// `TraceContext::try_set_current` in a plain tokio task: `is_no_storage`;
/// `set_current` panics naming the fix; `current()` sees nothing; `inject` "never
/// panics" there and writes a new trace, with no baggage.
#[test]
fn trace_context_in_a_plain_task() {
    current_thread().block_on(async {
        tokio::spawn(async {
            let err = TraceContext::new_trace().try_set_current().unwrap_err();
            assert!(err.is_no_storage());
            let r = std::panic::catch_unwind(|| TraceContext::new_trace().set_current());
            let msg = message(r.unwrap_err());
            assert!(msg.contains("tasklocal::spawn"), "{msg}");
            assert_eq!(TraceContext::current(), None);
            let out = injected_here();
            assert!(out.contains_key("traceparent"));
            assert!(!out.contains_key("baggage"));
        })
        .await
        .unwrap();
    });
}
