//! `tasklocal::log::MdcLogger` in front of a real env_logger whose output the tests
//! read back: every line carries its own request's MDC and nothing else, and no MDC
//! key or value can forge a field or a line.
#![cfg(all(feature = "log", feature = "tokio", feature = "rayon"))]

mod support;

use std::sync::{Mutex, OnceLock};

use log::kv::{self, Key, Value, VisitSource};
use log::{Level, Log, Record};
use support::output::{fields, Buffer};
use support::runtime::{current_thread, multi_thread};
use tasklocal::log::MdcLogger;
use tasklocal::{mdc, Snapshot};

impl Buffer {
    /// The env_logger lines whose message starts with `marker`.
    fn lines_of(&self, marker: &str) -> Vec<String> {
        let needle = format!("] {marker}");
        self.lines()
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect()
    }
}

/// The global logger of this test binary: env_logger, with `MdcLogger` in front, into
/// an in-memory pipe.
fn output() -> &'static Buffer {
    static OUTPUT: OnceLock<Buffer> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        let captured = Buffer::default();
        let inner = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Info)
            .format_timestamp(None)
            .target(env_logger::Target::Pipe(Box::new(captured.clone())))
            .build();
        let max_level = inner.filter();
        MdcLogger::new(inner).init(max_level).unwrap();
        captured
    })
}

#[test]
fn a_thousand_concurrent_requests_each_log_only_their_own_id() {
    let output = output();
    let rt = multi_thread(4);
    const REQUESTS: usize = 1_000;
    rt.block_on(async {
        let requests: Vec<_> = (0..REQUESTS)
            .map(|i| {
                tasklocal::spawn(async move {
                    let id = format!("req-{i}");
                    mdc::insert("request_id", id.as_str());
                    mdc::insert("tenant", format!("tenant-{}", i % 7));
                    log::info!("stress handler {id}");
                    tokio::task::yield_now().await;

                    let child = tasklocal::spawn({
                        let id = id.clone();
                        async move {
                            tokio::task::yield_now().await;
                            log::info!("stress child {id}");
                        }
                    });
                    let blocking = tasklocal::spawn_blocking({
                        let id = id.clone();
                        move || log::info!("stress blocking {id}")
                    });
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    tasklocal::rayon::spawn({
                        let id = id.clone();
                        move || {
                            log::info!("stress rayon {id}");
                            tx.send(()).unwrap();
                        }
                    });
                    child.await.unwrap();
                    blocking.await.unwrap();
                    rx.await.unwrap();
                    log::info!("stress handler-end {id}");
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
    });

    let lines = output.lines_of("stress ");
    assert_eq!(lines.len(), 5 * REQUESTS);
    let mut per_request = vec![0; REQUESTS];
    for line in &lines {
        // "[INFO  log] stress <where> req-N request_id=req-N tenant=tenant-M"
        let message = line.split_once("] ").unwrap().1;
        let message_id = message.split(' ').nth(2).unwrap();
        let i: usize = message_id.strip_prefix("req-").unwrap().parse().unwrap();
        assert_eq!(fields(line, "request_id"), [message_id], "{line}");
        assert_eq!(
            fields(line, "tenant"),
            [format!("tenant-{}", i % 7)],
            "{line}"
        );
        assert_eq!(line.matches("req-").count(), 2, "{line}");
        per_request[i] += 1;
    }
    assert!(per_request.iter().all(|&n| n == 5));
}

#[test]
fn an_mdc_value_cannot_forge_a_line_or_a_field() {
    let output = output();
    Snapshot::empty().run(|| {
        mdc::insert("request_id", "x\nrequest_id=other");
        mdc::insert("user", "ada lovelace");
        mdc::insert("k=v evil", "\"quoted\" \\ \t\r\u{1b}[31m\u{2028}\u{202e}");
        mdc::insert("empty", "");
        log::info!("forge-test");
    });
    let all = output.lines();
    assert!(
        !all.iter().any(|l| l.starts_with("request_id")),
        "a forged line"
    );
    let lines = output.lines_of("forge-test");
    assert_eq!(lines.len(), 1, "{all:#?}");
    let line = &lines[0];
    assert_eq!(
        line,
        r#"[INFO  log] forge-test request_id="x\nrequest_id=other" user="ada lovelace" "k=v evil"="\"quoted\" \\ \t\r\u{1b}[31m\u{2028}\u{202e}" empty="""#
    );
    assert_eq!(line.matches("request_id=").count(), 2); // the field, and inside its quotes
    assert!(!line.chars().any(|c| c.is_control()));
}

#[test]
fn the_records_own_key_values_come_after_and_win() {
    let output = output();
    Snapshot::empty().run(|| {
        mdc::insert("request_id", "from-mdc");
        mdc::insert("tenant", "acme");
        log::info!(request_id = "own", amount = 5; "own-kv-test");
    });
    let lines = output.lines_of("own-kv-test");
    assert_eq!(
        lines,
        ["[INFO  log] own-kv-test tenant=acme request_id=own amount=5"]
    );
}

#[test]
fn a_record_key_that_needs_quoting_wins_too() {
    // `log` takes any string literal as a key: the record's `"user id"` shadows the
    // MDC's, which would otherwise be written quoted beside it.
    let output = output();
    Snapshot::empty().run(|| {
        mdc::insert("user id", "from-mdc");
        mdc::insert("tenant", "acme");
        log::info!("user id" = "own"; "quoted-kv-test");
    });
    let lines = output.lines_of("quoted-kv-test");
    assert_eq!(
        lines,
        ["[INFO  log] quoted-kv-test tenant=acme user id=own"]
    );
}

#[test]
fn an_empty_mdc_leaves_the_record_alone() {
    let output = output();
    Snapshot::empty().run(|| {
        log::info!("empty-mdc-test");
        mdc::insert("k", "v");
        mdc::remove("k");
        log::info!("empty-mdc-test again");
        log::debug!("empty-mdc-test filtered out");
    });
    assert_eq!(
        output.lines_of("empty-mdc-test"),
        [
            "[INFO  log] empty-mdc-test",
            "[INFO  log] empty-mdc-test again"
        ]
    );
}

#[test]
fn a_plain_tokio_task_logs_without_an_mdc() {
    let output = output();
    let rt = current_thread();
    rt.block_on(async {
        tasklocal::spawn(async {
            mdc::insert("request_id", "in-task");
            // A plain task has no storage: it sees no MDC, and logging still works.
            tokio::spawn(async { log::info!("plain-task-test") })
                .await
                .unwrap();
        })
        .await
        .unwrap();
    });
    assert_eq!(
        output.lines_of("plain-task-test"),
        ["[INFO  log] plain-task-test"]
    );
}

/// A structured logger: collects every record's key-values as strings.
#[derive(Default)]
struct Collect(Mutex<Vec<Vec<(String, String)>>>);

impl Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        struct Pairs(Vec<(String, String)>);
        impl<'kvs> VisitSource<'kvs> for Pairs {
            fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
                self.0.push((key.to_string(), value.to_string()));
                Ok(())
            }
        }
        let mut pairs = Pairs(Vec::new());
        record.key_values().visit(&mut pairs).unwrap();
        self.0.lock().unwrap().push(pairs.0);
    }
    fn flush(&self) {}
}

fn log_one(logger: &impl Log) {
    logger.log(
        &Record::builder()
            .level(Level::Info)
            .args(format_args!("collected"))
            .build(),
    );
}

#[test]
fn without_escaping_a_structured_logger_gets_the_exact_values() {
    let evil = "x\nrequest_id=other \"q\"";
    let collected = Snapshot::empty().run(|| {
        mdc::insert("request_id", evil);
        mdc::insert("a b", "plain");
        let raw = MdcLogger::new(Collect::default()).escape(false);
        log_one(&raw);
        let escaped = MdcLogger::new(Collect::default());
        log_one(&escaped);
        (
            raw.into_inner().0.into_inner().unwrap(),
            escaped.into_inner().0.into_inner().unwrap(),
        )
    });
    let (raw, escaped) = collected;
    assert_eq!(
        raw,
        [vec![
            ("request_id".to_string(), evil.to_string()),
            ("a b".to_string(), "plain".to_string())
        ]]
    );
    // The same record as JSON, as a JSON logger would write it: one line, and the
    // value reads back exactly.
    let json = serde_json::to_string(&serde_json::Map::from_iter(
        raw[0]
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))),
    ))
    .unwrap();
    assert!(!json.contains('\n'));
    let back: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back["request_id"], evil);
    assert_eq!(
        escaped,
        [vec![
            (
                "request_id".to_string(),
                r#""x\nrequest_id=other \"q\"""#.to_string()
            ),
            ("\"a b\"".to_string(), "plain".to_string())
        ]]
    );
}

#[test]
fn the_mdc_of_each_owner_is_the_one_logged() {
    let output = output();
    Snapshot::empty().run(|| {
        mdc::insert("request_id", "parent");
        let snapshot = Snapshot::capture();
        mdc::insert("request_id", "parent-later");
        std::thread::spawn(move || {
            snapshot.run(|| log::info!("owner-test snapshot"));
            log::info!("owner-test plain-thread");
        })
        .join()
        .unwrap();
        tasklocal::thread::spawn(|| log::info!("owner-test tasklocal-thread"))
            .join()
            .unwrap();
    });
    assert_eq!(
        output.lines_of("owner-test"),
        [
            "[INFO  log] owner-test snapshot request_id=parent",
            "[INFO  log] owner-test plain-thread",
            "[INFO  log] owner-test tasklocal-thread request_id=parent-later",
        ]
    );
}

/// A logger that writes the MDC and switches owners while it logs.
struct Meddling(Collect);

impl Log for Meddling {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        static OTHER: tasklocal::Local<String> = tasklocal::Local::inheritable();
        mdc::insert("written", "by-logger");
        OTHER.set("by-logger".into());
        let child = Snapshot::capture().run(mdc::to_vec);
        assert_eq!(child.last().map(|(k, _)| k.as_str()), Some("written"));
        self.0.log(record);
    }
    fn flush(&self) {}
}

#[test]
fn the_inner_logger_may_use_the_whole_api_and_sees_the_mdc_as_logged() {
    let collected = Snapshot::empty().run(|| {
        mdc::insert("request_id", "r1");
        let logger = MdcLogger::new(Meddling(Collect::default()));
        log_one(&logger);
        assert_eq!(mdc::get("written").as_deref(), Some("by-logger"));
        logger.into_inner().0 .0.into_inner().unwrap()
    });
    assert_eq!(
        collected,
        [vec![("request_id".to_string(), "r1".to_string())]]
    );
}

#[test]
fn a_value_replaced_after_a_line_is_quoted_as_it_is_now() {
    let collected = Snapshot::empty().run(|| {
        let logger = MdcLogger::new(Collect::default());
        mdc::insert("user", "ada");
        log_one(&logger);
        mdc::insert("user", "ada lovelace");
        log_one(&logger);
        mdc::insert("user", "ada");
        log_one(&logger);
        logger.into_inner().0.into_inner().unwrap()
    });
    let user = |v: &str| vec![("user".to_string(), v.to_string())];
    assert_eq!(
        collected,
        [user("ada"), user("\"ada lovelace\""), user("ada")]
    );
}
