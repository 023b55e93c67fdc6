//! `MdcExt::with_mdc` under a global subscriber (SPEC 7), which also dispatches an
//! event emitted while another event is being formatted (a `Debug` impl that logs):
//! each of the two events carries its own MDC, once, in text and in JSON. A binary of
//! its own, as the subscriber is global.
#![cfg(feature = "tracing")]

mod support;

use std::fmt;

use support::output::Buffer;
use tasklocal::mdc;
use tasklocal::tracing::MdcExt;
use tracing_subscriber::prelude::*;

/// A value whose `Debug` logs an event of its own, with an MDC entry of its own (a
/// common accident: logging in a `Debug` impl).
struct Chatty;

impl fmt::Debug for Chatty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        mdc::scope([("inner_only", "yes")], || tracing::info!("nested event"));
        f.write_str("chatty")
    }
}

#[test]
fn an_event_emitted_while_formatting_another_leaves_both_with_their_own_mdc() {
    let (text, json) = (Buffer::default(), Buffer::default());
    let (t, j) = (text.clone(), json.clone());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_writer(move || t.clone())
                .with_mdc(),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .without_time()
                .with_writer(move || j.clone())
                .with_mdc(),
        )
        .init();
    support::fresh(|| {
        mdc::insert("request_id", "r-1");
        tracing::info!(value = ?Chatty, "outer event");
    });
    let lines = text.lines();
    let outer: Vec<_> = lines.iter().filter(|l| l.contains("outer event")).collect();
    let nested: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("nested event"))
        .collect();
    assert_eq!(outer.len(), 1, "{lines:#?}");
    assert!(!nested.is_empty(), "{lines:#?}");
    assert_eq!(
        outer[0].matches("request_id=\"r-1\"").count(),
        1,
        "{lines:#?}"
    );
    assert!(!outer[0].contains("inner_only"), "{lines:#?}");
    for line in &nested {
        assert_eq!(line.matches("request_id=\"r-1\"").count(), 1, "{lines:#?}");
        assert_eq!(line.matches("inner_only=\"yes\"").count(), 1, "{lines:#?}");
    }
    for line in json.lines() {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(event["mdc"]["request_id"], "r-1", "{line}");
        let nested = event["fields"]["message"] == "nested event";
        assert_eq!(event["mdc"].get("inner_only").is_some(), nested, "{line}");
    }
}
