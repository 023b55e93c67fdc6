//! The logging context: `tasklocal::mdc` accessors side by side with a hand-rolled
//! `thread_local!` map, the cost of a child owner whatever the map's size, and what a
//! log line pays for carrying 4 MDC fields — env_logger behind `MdcLogger`, and
//! `tracing-subscriber`'s `fmt` (text and JSON) with `with_mdc()` — against the same
//! logger without them. Loggers format into `io::sink()`, so this measures formatting,
//! not I/O. Accessors are called through `black_box`ed function pointers.

use std::cell::RefCell;
use std::hint::black_box;
use std::io;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use log::Log;
use tasklocal::tracing::MdcExt;
use tasklocal::{mdc, Snapshot};

const FIELDS: [(&str, &str); 4] = [
    ("request_id", "4bf92f3577b34da6"),
    ("tenant", "acme"),
    ("user", "ada"),
    ("route", "/v1/charges"),
];

thread_local! {
    /// What a program without tasklocal would write: a per-thread map, not inherited.
    static STD_MAP: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

fn std_map_insert() {
    STD_MAP.with(|map| {
        let mut map = map.borrow_mut();
        match map.iter_mut().find(|(k, _)| k == "request_id") {
            Some(entry) => entry.1 = black_box("4bf92f3577b34da7").to_string(),
            None => map.push(("request_id".into(), "4bf92f3577b34da7".into())),
        }
    })
}
fn std_map_get() -> Option<String> {
    STD_MAP.with(|map| {
        map.borrow()
            .iter()
            .find(|(k, _)| k == "route")
            .map(|(_, v)| v.clone())
    })
}
fn mdc_insert() {
    mdc::insert("request_id", black_box("4bf92f3577b34da7"))
}
fn mdc_get() -> Option<String> {
    mdc::get("route")
}
fn mdc_for_each() -> usize {
    let mut n = 0;
    mdc::for_each(|k, v| n += k.len() + v.len());
    n
}

/// Runs `f` as an owner whose MDC holds [`FIELDS`].
fn with_fields<R>(f: impl FnOnce() -> R) -> R {
    Snapshot::empty().run(|| {
        mdc::extend(FIELDS);
        f()
    })
}

fn accessors(c: &mut Criterion) {
    let mut g = c.benchmark_group("mdc");
    STD_MAP.with(|m| {
        m.borrow_mut()
            .extend(FIELDS.map(|(k, v)| (k.to_string(), v.to_string())))
    });
    let f: fn() = black_box(std_map_insert);
    g.bench_function("insert_existing/std_thread_local_vec", |b| b.iter(f));
    let f: fn() -> Option<String> = black_box(std_map_get);
    g.bench_function("get/std_thread_local_vec", |b| b.iter(f));
    with_fields(|| {
        let f: fn() = black_box(mdc_insert);
        g.bench_function("insert_existing/tasklocal_mdc", |b| b.iter(f));
        let f: fn() -> Option<String> = black_box(mdc_get);
        g.bench_function("get/tasklocal_mdc", |b| b.iter(f));
        let f: fn() -> usize = black_box(mdc_for_each);
        g.bench_function("for_each_4/tasklocal_mdc", |b| b.iter(f));
    });
    g.finish();

    // A child owner (capture, run, first read) costs the same whatever the size.
    let mut g = c.benchmark_group("mdc_child");
    for size in [4usize, 256] {
        Snapshot::empty().run(|| {
            mdc::extend((0..size).map(|i| (format!("key-{i}"), format!("value-{i}"))));
            g.bench_with_input(BenchmarkId::new("capture_run_get", size), &size, |b, _| {
                b.iter(|| Snapshot::capture().run(|| mdc::get("key-0")))
            });
            g.bench_with_input(
                BenchmarkId::new("capture_run_first_insert", size),
                &size,
                |b, _| b.iter(|| Snapshot::capture().run(|| mdc::insert("key-0", "x"))),
            );
        });
    }
    g.finish();
}

fn env_logger_to_sink() -> env_logger::Logger {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .format_timestamp(None)
        .target(env_logger::Target::Pipe(Box::new(io::sink())))
        .build()
}

fn log_line(logger: &dyn Log) {
    logger.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .target("app::billing")
            .args(format_args!("charged card {}", black_box(42)))
            .build(),
    );
}

fn log_line_with_explicit_fields(logger: &dyn Log) {
    let fields: &[(&str, &str)] = &FIELDS;
    logger.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .target("app::billing")
            .args(format_args!("charged card {}", black_box(42)))
            .key_values(&fields)
            .build(),
    );
}

fn log_lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_line_env_logger");
    let plain = env_logger_to_sink();
    let wrapped = tasklocal::log::MdcLogger::new(env_logger_to_sink());
    g.bench_function("plain_no_fields", |b| b.iter(|| log_line(&plain)));
    g.bench_function("plain_4_explicit_kv_fields", |b| {
        b.iter(|| log_line_with_explicit_fields(&plain))
    });
    Snapshot::empty().run(|| {
        g.bench_function("mdc_logger_empty_mdc", |b| b.iter(|| log_line(&wrapped)));
    });
    with_fields(|| {
        g.bench_function("mdc_logger_4_mdc_fields", |b| b.iter(|| log_line(&wrapped)));
    });
    g.finish();
}

fn tracing_lines(c: &mut Criterion) {
    fn event() {
        tracing::info!(target: "app::billing", "charged card {}", black_box(42));
    }
    fn event_with_explicit_fields() {
        tracing::info!(
            target: "app::billing",
            request_id = "4bf92f3577b34da6",
            tenant = "acme",
            user = "ada",
            route = "/v1/charges",
            "charged card {}",
            black_box(42)
        );
    }
    for json in [false, true] {
        let name = if json {
            "tracing_line_json"
        } else {
            "tracing_line_text"
        };
        let mut g = c.benchmark_group(name);
        macro_rules! builder {
            () => {{
                let b = tracing_subscriber::fmt()
                    .without_time()
                    .with_ansi(false)
                    .with_writer(io::sink);
                b
            }};
        }
        let (plain, wrapped) = if json {
            (
                tracing::Dispatch::new(builder!().json().finish()),
                tracing::Dispatch::new(builder!().json().with_mdc().finish()),
            )
        } else {
            (
                tracing::Dispatch::new(builder!().finish()),
                tracing::Dispatch::new(builder!().with_mdc().finish()),
            )
        };
        tracing::dispatcher::with_default(&plain, || {
            g.bench_function("plain_no_fields", |b| b.iter(event));
            g.bench_function("plain_4_explicit_fields", |b| {
                b.iter(event_with_explicit_fields)
            });
        });
        tracing::dispatcher::with_default(&wrapped, || {
            Snapshot::empty().run(|| {
                g.bench_function("with_mdc_empty_mdc", |b| b.iter(event));
            });
            with_fields(|| {
                g.bench_function("with_mdc_4_mdc_fields", |b| b.iter(event));
            });
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = accessors, log_lines, tracing_lines
}
criterion_main!(benches);
