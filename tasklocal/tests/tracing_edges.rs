//! `tasklocal::tracing` at its edges (SPEC 7): JSON lines carry any MDC key and value
//! exactly, flattened or not; the pretty format carries the MDC once; an empty MDC
//! leaves text lines as `tracing` writes them; keys that need quoting cannot forge a
//! field. `SpanToMdc`: nested and re-entered spans restore the MDC in place, values
//! recorded later count from the next entry, and an instrumented task's span fields
//! follow into its children.
#![cfg(feature = "tracing")]

mod support;

use support::output::Buffer;
use support::{fresh, pairs};
use tasklocal::mdc;
use tasklocal::tracing::{MdcExt, SpanToMdc};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full};
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::prelude::*;

impl Buffer {
    /// A writer maker for `fmt` layers: every writer writes into this buffer.
    fn make(&self) -> impl for<'a> MakeWriter<'a> + 'static {
        let buffer = self.clone();
        move || buffer.clone()
    }

    /// Every line, parsed as JSON.
    fn json(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// A text layer without time or colours, writing into `out`.
fn text_layer<S>(
    out: &Buffer,
) -> fmt::Layer<S, DefaultFields, Format<Full, ()>, impl for<'a> MakeWriter<'a>> {
    fmt::layer()
        .without_time()
        .with_ansi(false)
        .with_writer(out.make())
}

/// Runs `f` in a fresh owner with `subscriber` as this thread's subscriber.
fn with_subscriber(subscriber: impl tracing::Subscriber + Send + Sync + 'static, f: impl FnOnce()) {
    tracing::subscriber::with_default(subscriber, || fresh(f));
}

// Formatted events.

#[test]
fn json_lines_carry_any_mdc_key_and_value_exactly_flattened_or_not() {
    let nasty = [
        ("k\"ey", "va\"lue"),
        ("back\\slash", "\\"),
        ("nl\n", "line\nbreak\r\n"),
        ("sep", "\u{2028}\u{2029}\u{85}"),
        ("ctl", "\u{0}\u{1}\u{1f}\u{7f}"),
        ("", ""),
        ("brace}", "{\"x\":1}"),
        ("日本", "🦀"),
    ];
    for flatten in [false, true] {
        let out = Buffer::default();
        let layer = fmt::layer()
            .json()
            .flatten_event(flatten)
            .with_current_span(true)
            .with_span_list(true)
            .without_time()
            .with_writer(out.make())
            .with_mdc();
        with_subscriber(tracing_subscriber::registry().with(layer), || {
            for (k, v) in nasty {
                mdc::insert(k, v);
            }
            let span = tracing::info_span!("outer", field = "}{");
            let _entered = span.enter();
            tracing::info!(x = "}\n", "message with }} brace");
        });
        let text = out.text();
        let lines = out.json();
        assert_eq!(lines.len(), 1, "{text}");
        let mdc = lines[0]["mdc"]
            .as_object()
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(mdc.len(), nasty.len(), "{text}");
        for (k, v) in nasty {
            assert_eq!(mdc[k].as_str(), Some(v), "{k:?} in {text}");
        }
        // One line, with no raw U+2028 or U+2029.
        assert_eq!(text.matches('\n').count(), 1);
        assert!(!text.contains('\u{2028}') && !text.contains('\u{2029}'));
    }
}

#[test]
fn the_pretty_format_carries_the_mdc_once() {
    let out = Buffer::default();
    let layer = fmt::layer()
        .pretty()
        .without_time()
        .with_ansi(false)
        .with_writer(out.make())
        .with_mdc();
    with_subscriber(tracing_subscriber::registry().with(layer), || {
        mdc::insert("request_id", "req-pretty");
        tracing::info!(amount = 5, "pretty event");
    });
    let text = out.text();
    assert_eq!(text.matches("req-pretty").count(), 1, "{text}");
    assert!(text.contains("amount"), "{text}");
}

#[test]
fn an_empty_mdc_leaves_text_lines_as_tracing_writes_them() {
    let (plain, with_mdc) = (Buffer::default(), Buffer::default());
    let subscriber = tracing_subscriber::registry()
        .with(text_layer(&plain))
        .with(text_layer(&with_mdc).with_mdc());
    with_subscriber(subscriber, || {
        let span = tracing::info_span!("s", n = 1);
        let _entered = span.enter();
        tracing::info!("no fields");
        tracing::info!(a = 1, b = "two", "with fields");
        tracing::info!(a = 1);
    });
    assert_eq!(plain.text(), with_mdc.text());
}

#[test]
fn mdc_keys_that_need_quoting_are_quoted_and_cannot_forge_a_field_or_a_line() {
    let out = Buffer::default();
    let subscriber = tracing_subscriber::registry().with(text_layer(&out).with_mdc());
    with_subscriber(subscriber, || {
        mdc::insert("a b=c d", "v");
        mdc::insert("x\ny", "v2");
        mdc::insert("", "empty");
        tracing::info!("m");
    });
    let text = out.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(r#" "a b=c d"="v" "x\ny"="v2" ""="empty""#),
        "{text}"
    );
}

// SpanToMdc.

#[test]
fn nested_and_reentered_spans_put_their_fields_in_the_mdc_and_restore_it() {
    let subscriber = tracing_subscriber::registry().with(SpanToMdc::fields(["rid", "n"]));
    with_subscriber(subscriber, || {
        mdc::insert("rid", "before");
        let outer = tracing::info_span!("outer", rid = "outer", n = 1);
        let inner = tracing::info_span!("inner", rid = %"inner", n = 2u64);
        outer.in_scope(|| {
            assert_eq!(mdc::to_vec(), pairs(&[("rid", "outer"), ("n", "1")]));
            inner.in_scope(|| {
                assert_eq!(mdc::get("rid").as_deref(), Some("inner"));
                assert_eq!(mdc::get("n").as_deref(), Some("2"));
            });
            assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
            assert_eq!(mdc::get("n").as_deref(), Some("1"));
            // Entering the same span again nests.
            outer.in_scope(|| assert_eq!(mdc::get("rid").as_deref(), Some("outer")));
            assert_eq!(mdc::get("rid").as_deref(), Some("outer"));
        });
        assert_eq!(mdc::to_vec(), pairs(&[("rid", "before")]));
    });
}

#[test]
fn leaving_a_span_restores_the_entries_its_fields_replaced_in_place_and_keeps_the_rest() {
    let subscriber = tracing_subscriber::registry().with(SpanToMdc::fields(["rid", "new"]));
    with_subscriber(subscriber, || {
        mdc::insert("a", "1");
        mdc::insert("rid", "0");
        mdc::insert("b", "2");
        let span = tracing::info_span!("s", rid = "s", new = true);
        span.in_scope(|| {
            assert_eq!(
                mdc::to_vec(),
                pairs(&[("a", "1"), ("rid", "s"), ("b", "2"), ("new", "true")])
            );
            // Overwritten by the restore on exit; a key of its own is kept.
            mdc::insert("rid", "user");
            mdc::insert("mine", "x");
        });
        assert_eq!(
            mdc::to_vec(),
            pairs(&[("a", "1"), ("rid", "0"), ("b", "2"), ("mine", "x")])
        );
    });
}

#[test]
fn a_value_recorded_later_is_in_the_mdc_from_the_next_entry_on() {
    let subscriber = tracing_subscriber::registry().with(SpanToMdc::fields(["rid"]));
    with_subscriber(subscriber, || {
        let span = tracing::info_span!("s", rid = tracing::field::Empty);
        span.in_scope(|| assert_eq!(mdc::get("rid"), None));
        span.record("rid", "late");
        span.in_scope(|| assert_eq!(mdc::get("rid").as_deref(), Some("late")));
        assert_eq!(mdc::get("rid"), None);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn an_instrumented_tasks_span_fields_follow_into_its_children() {
    use tracing::Instrument;
    let subscriber = tracing_subscriber::registry().with(SpanToMdc::all_fields());
    let rt = support::runtime::current_thread();
    let (inside, child, after) = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let span = tracing::info_span!("job", job = "j-1", attempt = 2);
            let (inside, child) = tasklocal::spawn(
                async {
                    let inside = mdc::to_vec();
                    let child = tasklocal::spawn(async { mdc::get("job") });
                    (inside, child.await.unwrap())
                }
                .instrument(span),
            )
            .await
            .unwrap();
            (inside, child, mdc::to_vec())
        })
    });
    assert_eq!(inside, pairs(&[("job", "j-1"), ("attempt", "2")]));
    assert_eq!(child.as_deref(), Some("j-1"));
    // The spawning side never had the span's fields.
    assert!(after.is_empty());
}
