//! `tasklocal::tracing`: what `tracing-subscriber`'s `fmt` really writes, text and
//! JSON, with the MDC of each request; and span fields that become MDC entries.
#![cfg(all(feature = "tracing", feature = "tokio", feature = "rayon"))]

mod support;

use std::sync::OnceLock;

use support::output::{fields, Buffer};
use support::pairs;
use support::runtime::{current_thread, multi_thread};
use tasklocal::tracing::{MdcExt, SpanToMdc};
use tasklocal::{mdc, Snapshot};
use tracing::Instrument;
use tracing_subscriber::fmt::{self, format::Writer, FmtContext};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::Registry;

impl Buffer {
    /// Every line, parsed as JSON.
    fn json(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// A text layer (no time, no colours) and a JSON layer, into two buffers.
fn layers<S>(text: &Buffer, json: &Buffer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (t, j) = (text.clone(), json.clone());
    fmt::layer()
        .without_time()
        .with_ansi(false)
        .with_writer(move || t.clone())
        .with_mdc()
        .and_then(
            fmt::layer()
                .json()
                .without_time()
                .with_writer(move || j.clone())
                .with_mdc(),
        )
}

/// The global subscriber, for the test whose events come from runtime workers.
fn global() -> &'static (Buffer, Buffer) {
    static GLOBAL: OnceLock<(Buffer, Buffer)> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let (text, json) = (Buffer::default(), Buffer::default());
        tracing_subscriber::registry()
            .with(layers(&text, &json))
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .init();
        (text, json)
    })
}

/// Runs `f` with a text and a JSON layer as this thread's subscriber, in a fresh
/// owner; returns the two outputs.
fn capture(f: impl FnOnce()) -> (Buffer, Buffer) {
    let (text, json) = (Buffer::default(), Buffer::default());
    let subscriber = Registry::default().with(layers(&text, &json));
    tracing::subscriber::with_default(subscriber, || Snapshot::empty().run(f));
    (text, json)
}

#[test]
fn a_thousand_concurrent_requests_each_log_only_their_own_id() {
    let (text, json) = global();
    let rt = multi_thread(4);
    const REQUESTS: usize = 1_000;
    rt.block_on(async {
        let requests: Vec<_> = (0..REQUESTS)
            .map(|i| {
                tasklocal::spawn(async move {
                    let id = format!("req-{i}");
                    mdc::insert("request_id", id.as_str());
                    mdc::insert("tenant", format!("tenant-{}", i % 7));
                    tracing::info!(test = "stress", "handler {id}");
                    tokio::task::yield_now().await;

                    let child = tasklocal::spawn({
                        let id = id.clone();
                        async move {
                            tokio::task::yield_now().await;
                            tracing::info!(test = "stress", "child {id}");
                        }
                    });
                    let blocking = tasklocal::spawn_blocking({
                        let id = id.clone();
                        move || tracing::info!(test = "stress", "blocking {id}")
                    });
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    tasklocal::rayon::spawn({
                        let id = id.clone();
                        move || {
                            tracing::info!(test = "stress", "rayon {id}");
                            tx.send(()).unwrap();
                        }
                    });
                    child.await.unwrap();
                    blocking.await.unwrap();
                    rx.await.unwrap();
                    tracing::info!(test = "stress", "handler-end {id}");
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
    });

    // Text: " INFO tracing: handler req-N test=\"stress\" request_id=\"req-N\" tenant=\"tenant-M\""
    let lines: Vec<String> = text
        .lines()
        .into_iter()
        .filter(|l| l.contains("test=\"stress\""))
        .collect();
    assert_eq!(lines.len(), 5 * REQUESTS);
    let mut per_request = vec![0; REQUESTS];
    for line in &lines {
        let message = line.split_once("tracing: ").unwrap().1;
        let id = message.split(' ').nth(1).unwrap();
        let i: usize = id.strip_prefix("req-").unwrap().parse().unwrap();
        assert_eq!(fields(line, "request_id"), [format!("{id:?}")], "{line}");
        assert_eq!(
            fields(line, "tenant"),
            [format!("\"tenant-{}\"", i % 7)],
            "{line}"
        );
        assert_eq!(line.matches("req-").count(), 2, "{line}");
        per_request[i] += 1;
    }
    assert!(per_request.iter().all(|&n| n == 5));

    // JSON: the same, as objects with an "mdc" member.
    let events: Vec<serde_json::Value> = json
        .json()
        .into_iter()
        .filter(|e| e["fields"]["test"] == "stress")
        .collect();
    assert_eq!(events.len(), 5 * REQUESTS);
    let mut per_request = vec![0; REQUESTS];
    for event in &events {
        let message = event["fields"]["message"].as_str().unwrap();
        let id = message.split(' ').nth(1).unwrap();
        let i: usize = id.strip_prefix("req-").unwrap().parse().unwrap();
        assert_eq!(
            event["mdc"],
            serde_json::json!({"request_id": id, "tenant": format!("tenant-{}", i % 7)}),
            "{event}"
        );
        per_request[i] += 1;
    }
    assert!(per_request.iter().all(|&n| n == 5));
}

#[test]
fn text_and_json_lines_look_as_a_tracing_user_expects() {
    let (text, json) = capture(|| {
        tracing::info!("no mdc yet");
        mdc::insert("request_id", "r1");
        mdc::insert("tenant", "acme");
        tracing::warn!(amount = 5, "charged card");
    });
    assert_eq!(
        text.text(),
        " INFO tracing: no mdc yet\n \
         WARN tracing: charged card amount=5 request_id=\"r1\" tenant=\"acme\"\n"
    );
    assert_eq!(
        json.text(),
        "{\"level\":\"INFO\",\"fields\":{\"message\":\"no mdc yet\"},\"target\":\"tracing\"}\n\
         {\"level\":\"WARN\",\"fields\":{\"message\":\"charged card\",\"amount\":5},\"target\":\"tracing\",\
         \"mdc\":{\"request_id\":\"r1\",\"tenant\":\"acme\"}}\n"
    );
}

#[test]
fn an_mdc_value_cannot_forge_a_line_or_a_field() {
    let evil_value = "x\nrequest_id=other \"q\" \\ \t\r\u{1b}[31m\u{2028}\u{202e}\u{85}";
    let evil_key = "k=v \"evil\"\n";
    let (text, json) = capture(|| {
        mdc::insert("request_id", evil_value);
        mdc::insert(evil_key, "v");
        tracing::info!("forge-test");
    });
    let lines = text.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        lines[0],
        r#" INFO tracing: forge-test request_id="x\nrequest_id=other \"q\" \\ \t\r\u{1b}[31m\u{2028}\u{202e}\u{85}" "k=v \"evil\"\n"="v""#
    );
    assert!(!lines[0].chars().any(|c| c.is_control() || c == '\u{2028}'));

    let raw = json.text();
    assert_eq!(raw.matches('\n').count(), 1, "{raw}");
    assert!(!raw
        .trim_end()
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}'));
    let events = json.json();
    assert_eq!(events.len(), 1);
    let mdc = events[0]["mdc"].as_object().unwrap();
    assert_eq!(mdc.len(), 2);
    assert_eq!(mdc["request_id"], evil_value);
    assert_eq!(mdc[evil_key], "v");
}

#[test]
fn colours_are_kept_and_fields_stay_styled_like_tracings_own() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = Registry::default().with(
        fmt::layer()
            .without_time()
            .with_ansi(true)
            .with_target(false)
            .with_writer(move || writer.clone())
            .with_mdc(),
    );
    tracing::subscriber::with_default(subscriber, || {
        Snapshot::empty().run(|| {
            mdc::insert("request_id", "r1\nforged");
            tracing::info!(amount = 5, "paid");
        })
    });
    let out = buffer.text();
    assert_eq!(out.matches('\n').count(), 1, "{out:?}");
    assert!(out.contains("\x1b[32m INFO\x1b[0m"), "{out:?}"); // the level's colour
    assert!(
        out.ends_with(
            "\x1b[3mamount\x1b[0m\x1b[2m=\x1b[0m5 \
             \x1b[3mrequest_id\x1b[0m\x1b[2m=\x1b[0m\"r1\\nforged\"\n"
        ),
        "{out:?}"
    );
}

#[test]
fn compact_and_spans_keep_their_shape() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let json_buffer = Buffer::default();
    let json_writer = json_buffer.clone();
    let subscriber = Registry::default()
        .with(
            fmt::layer()
                .compact()
                .without_time()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_mdc(),
        )
        .with(
            fmt::layer()
                .json()
                .without_time()
                .with_writer(move || json_writer.clone())
                .with_mdc(),
        );
    tracing::subscriber::with_default(subscriber, || {
        Snapshot::empty().run(|| {
            mdc::insert("request_id", "r1");
            let span = tracing::info_span!("request", method = "GET", user = tracing::field::Empty);
            span.record("user", "ada"); // recorded later: JSON merges, text appends
            span.in_scope(|| tracing::info!(amount = 5, "paid"));
        })
    });
    assert_eq!(
        buffer.text(),
        " INFO request: tracing: paid amount=5 request_id=\"r1\" method=\"GET\" user=\"ada\"\n"
    );
    let events = json_buffer.json();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["span"],
        serde_json::json!({"method": "GET", "user": "ada", "name": "request"})
    );
    assert_eq!(events[0]["mdc"], serde_json::json!({"request_id": "r1"}));
}

#[test]
fn another_kind_of_format_gets_the_mdc_at_the_end_of_its_line() {
    fn custom(
        _: &FmtContext<'_, Registry, tasklocal::tracing::MdcFields<fmt::format::DefaultFields>>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writeln!(writer, "custom {}", event.metadata().level())
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = Registry::default().with(
        fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .map_fmt_fields(tasklocal::tracing::MdcFields::new)
            .event_format(tasklocal::tracing::MdcFormat::new(
                custom as fn(&FmtContext<'_, _, _>, Writer<'_>, &tracing::Event<'_>) -> _,
            )),
    );
    tracing::subscriber::with_default(subscriber, || {
        Snapshot::empty().run(|| {
            mdc::insert("request_id", "r1");
            tracing::info!("ignored by the format");
        })
    });
    assert_eq!(buffer.text(), "custom INFO request_id=\"r1\"\n");
}

#[test]
fn span_fields_enter_the_mdc_and_leave_it_on_exit() {
    let subscriber = Registry::default().with(SpanToMdc::fields(["request_id", "tenant"]));
    tracing::subscriber::with_default(subscriber, || {
        Snapshot::empty().run(|| {
            mdc::insert("request_id", "before");
            mdc::insert("other", "kept");
            let outer = tracing::info_span!("outer", request_id = "r1", tenant = 7, skipped = 1);
            let inner = tracing::info_span!("inner", request_id = "r2");
            outer.in_scope(|| {
                assert_eq!(
                    mdc::to_vec(),
                    pairs(&[("request_id", "r1"), ("other", "kept"), ("tenant", "7")])
                );
                inner.in_scope(|| {
                    assert_eq!(mdc::get("request_id").as_deref(), Some("r2"));
                    assert_eq!(mdc::get("tenant").as_deref(), Some("7"));
                });
                assert_eq!(mdc::get("request_id").as_deref(), Some("r1"));
                outer.record("tenant", "acme"); // takes effect at the next enter
            });
            assert_eq!(
                mdc::to_vec(),
                pairs(&[("request_id", "before"), ("other", "kept")])
            );
            outer.in_scope(|| assert_eq!(mdc::get("tenant").as_deref(), Some("acme")));
            assert_eq!(mdc::get("tenant"), None);
        })
    });
}

#[test]
fn span_fields_follow_into_spawned_tasks_that_tracing_alone_loses() {
    let (text, json) = (Buffer::default(), Buffer::default());
    let subscriber = Registry::default()
        .with(SpanToMdc::fields(["request_id"]))
        .with(layers(&text, &json));
    let rt = current_thread();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let span = tracing::info_span!("request", request_id = "r1");
            let seen = tasklocal::spawn(
                async {
                    tokio::task::yield_now().await;
                    // Not instrumented: tracing's span context is gone in here,
                    // the MDC is inherited.
                    let child = tasklocal::spawn(async {
                        tokio::task::yield_now().await;
                        tracing::info!("in child");
                        mdc::get("request_id")
                    });
                    let child = child.await.unwrap();
                    (child, mdc::get("request_id"))
                }
                .instrument(span),
            )
            .await
            .unwrap();
            assert_eq!(seen, (Some("r1".into()), Some("r1".into())));
        });
    });
    assert_eq!(text.text(), " INFO tracing: in child request_id=\"r1\"\n");
}
