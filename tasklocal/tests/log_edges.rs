//! `tasklocal::log::MdcLogger` at its edges (SPEC 7), seen from the inner logger: the
//! record passed on whole with the MDC first and its own key-values winning, a visitor
//! that stops early, every invisible or line-breaking character escaped (and nothing
//! changed without escaping), and each record carrying the MDC of the task that
//! logged it.
#![cfg(feature = "log")]

mod support;

use std::sync::{Arc, Mutex};

use log::kv::{self, Key, Value, VisitSource};
use log::{Level, Log, Metadata, Record};
use support::{fresh, pairs};
use tasklocal::log::MdcLogger;
use tasklocal::mdc;

/// What the inner logger was given in one record.
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    target: String,
    args: String,
    file: Option<String>,
    line: Option<u32>,
    module: Option<String>,
    key_values: Vec<(String, String)>,
    count: usize,
    /// The answers of `key_values().get(..)` for [`Capture`]'s `lookups`.
    lookups: Vec<(String, Option<String>)>,
}

/// An inner logger that records what it is given; disabled for the target
/// `disabled`.
#[derive(Default)]
struct Capture {
    seen: Arc<Mutex<Vec<Seen>>>,
    lookups: Vec<&'static str>,
}

/// Collects key-values as strings.
struct Collect(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        self.0.push((key.as_str().to_string(), value.to_string()));
        Ok(())
    }
}

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target() != "disabled"
    }
    fn log(&self, record: &Record) {
        let mut key_values = Collect(Vec::new());
        record.key_values().visit(&mut key_values).unwrap();
        let lookups = self
            .lookups
            .iter()
            .map(|k| {
                let value = record.key_values().get(Key::from_str(k));
                (k.to_string(), value.map(|v| v.to_string()))
            })
            .collect();
        self.seen.lock().unwrap().push(Seen {
            level: record.level(),
            target: record.target().to_string(),
            args: record.args().to_string(),
            file: record.file().map(str::to_string),
            line: record.line(),
            module: record.module_path().map(str::to_string),
            key_values: key_values.0,
            count: record.key_values().count(),
            lookups,
        });
    }
    fn flush(&self) {}
}

/// Logs one record with every field set and `key_values` through `logger`; returns
/// what the inner logger was given.
fn log_through(logger: &MdcLogger<Capture>, key_values: &[(&str, &str)]) -> Seen {
    let args = format_args!("hello {}", 7);
    let record = Record::builder()
        .level(Level::Warn)
        .target("my::target")
        .args(args)
        .file(Some("src/x.rs"))
        .line(Some(42))
        .module_path(Some("my::module"))
        .key_values(&key_values)
        .build();
    logger.log(&record);
    logger.inner().seen.lock().unwrap().pop().unwrap()
}

#[test]
fn the_record_is_passed_on_whole_with_the_mdc_first_and_its_own_key_values_winning() {
    let capture = Capture {
        lookups: vec!["request_id", "own", "user"],
        ..Capture::default()
    };
    let logger = MdcLogger::new(capture);
    let seen = fresh(|| {
        mdc::insert("request_id", "r-7");
        mdc::insert("user", "ada");
        log_through(&logger, &[("own", "1"), ("user", "record")])
    });
    assert_eq!(seen.level, Level::Warn);
    assert_eq!(seen.target, "my::target");
    assert_eq!(seen.args, "hello 7");
    assert_eq!(seen.file.as_deref(), Some("src/x.rs"));
    assert_eq!(seen.line, Some(42));
    assert_eq!(seen.module.as_deref(), Some("my::module"));
    assert_eq!(
        seen.key_values,
        pairs(&[("request_id", "r-7"), ("own", "1"), ("user", "record")])
    );
    assert_eq!(seen.count, 3);
    assert_eq!(
        seen.lookups,
        [
            ("request_id".to_string(), Some("r-7".to_string())),
            ("own".to_string(), Some("1".to_string())),
            ("user".to_string(), Some("record".to_string())),
        ]
    );
    // An empty MDC: the record as it was.
    let seen = fresh(|| log_through(&logger, &[("own", "1")]));
    assert_eq!(seen.key_values, pairs(&[("own", "1")]));
    assert_eq!(seen.args, "hello 7");
    // `enabled` is the inner logger's.
    assert!(!logger.enabled(&Metadata::builder().target("disabled").build()));
    assert!(logger.enabled(&Metadata::builder().target("other").build()));
}

#[test]
fn a_visitor_that_stops_early_is_not_called_again() {
    /// Stops at the first pair, counting the calls.
    struct StopAtTheFirst(usize);
    impl<'kvs> VisitSource<'kvs> for StopAtTheFirst {
        fn visit_pair(&mut self, _: Key<'kvs>, _: Value<'kvs>) -> Result<(), kv::Error> {
            self.0 += 1;
            Err(kv::Error::msg("stop"))
        }
    }
    /// Records whether the visit failed and how often its visitor was called.
    #[derive(Default)]
    struct Stopper(Mutex<Option<(bool, usize)>>);
    impl Log for Stopper {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, record: &Record) {
            let mut visitor = StopAtTheFirst(0);
            let failed = record.key_values().visit(&mut visitor).is_err();
            *self.0.lock().unwrap() = Some((failed, visitor.0));
        }
        fn flush(&self) {}
    }
    let logger = MdcLogger::new(Stopper::default());
    fresh(|| {
        mdc::insert("a", "1");
        mdc::insert("b c", "2");
        let key_values = [("own", "x")];
        let record = Record::builder()
            .args(format_args!("m"))
            .key_values(&key_values)
            .build();
        logger.log(&record);
    });
    assert_eq!(*logger.inner().0.lock().unwrap(), Some((true, 1)));
}

/// A control character, a line or paragraph separator, a bidirectional control or a
/// character that is not drawn (zero-width, BOM, soft hyphen).
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200b}'..='\u{200f}'
                | '\u{feff}'
                | '\u{ad}'
        )
}

#[test]
fn escaping_quotes_every_invisible_or_line_breaking_character_and_leaves_plain_text() {
    let logger = MdcLogger::new(Capture::default());
    let exact = MdcLogger::new(Capture::default()).escape(false);
    let nasty = [
        "a\nb",
        "a\rb",
        "a\u{2028}b",
        "a\u{2029}b",
        "a\u{85}b",
        "a\u{202e}b",
        "a\u{2066}b",
        "a\u{200b}b",
        "a\u{200e}b",
        "a\u{feff}b",
        "a\u{ad}b",
        "a\u{0}b",
        "a\u{1b}[31mb",
        "a b",
        "a=b",
        "a\"b",
        "a\\b",
        "",
        "a\tb",
        "a\u{a0}b",
        "a\u{3000}b",
    ];
    for value in nasty {
        let seen = fresh(|| {
            mdc::insert("k", value);
            mdc::insert(value, "v");
            log_through(&logger, &[])
        });
        assert_eq!(seen.key_values.len(), 2, "{value:?}");
        // As a value and as a key: quoted with Rust's escapes, so no raw control,
        // separator or format character, and no raw quote, is left inside.
        for text in [&seen.key_values[0].1, &seen.key_values[1].0] {
            assert!(
                text.starts_with('"') && text.ends_with('"'),
                "{value:?} -> {text:?}"
            );
            let inner = &text[1..text.len() - 1];
            for c in inner.chars() {
                assert!(!is_invisible(c), "{value:?} -> {text:?}");
            }
            assert!(
                !inner.replace("\\\"", "").contains('"'),
                "{value:?} -> {text:?}"
            );
        }
        // Without escaping, the value exactly.
        let seen = fresh(|| {
            mdc::insert("k", value);
            log_through(&exact, &[])
        });
        assert_eq!(seen.key_values, pairs(&[("k", value)]));
    }
    // Plain text, non-ASCII letters included, is written as it is.
    let seen = fresh(|| {
        mdc::insert("user", "José-日本_1.2/x");
        log_through(&logger, &[])
    });
    assert_eq!(seen.key_values, pairs(&[("user", "José-日本_1.2/x")]));
}

#[cfg(feature = "tokio")]
#[test]
fn each_record_carries_the_mdc_of_the_task_that_logged_it() {
    let logger = Arc::new(MdcLogger::new(Capture::default()));
    support::runtime::multi_thread(2).block_on(async {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let logger = logger.clone();
                tasklocal::spawn(async move {
                    mdc::insert("i", i.to_string());
                    tokio::task::yield_now().await;
                    logger.log(&Record::builder().args(format_args!("{i}")).build());
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    // Each task logged its own number as the message: the record's only key-value
    // is that task's `i`.
    let records = logger.inner().seen.lock().unwrap().clone();
    assert_eq!(records.len(), 50);
    for record in records {
        assert_eq!(record.key_values.len(), 1, "{record:?}");
        assert_eq!(record.key_values[0].0, "i");
        assert_eq!(record.key_values[0].1, record.args);
    }
}
