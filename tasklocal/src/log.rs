//! The [`log`] crate: records that carry the [MDC](crate::mdc) as key-values.
//!
//! [`MdcLogger`] wraps any [`log::Log`] — env_logger, fern, log4rs, … — and hands
//! it every record with the current owner's MDC added as structured key-values
//! (the `log` crate's `kv` API). A plain `log::info!("charged card")` inside a
//! request then prints `request_id=… tenant=…` with no change at the call site:
//!
//! ```
//! use tasklocal::{log::MdcLogger, mdc};
//!
//! // Any logger; env_logger prints key-values with its `kv` feature.
//! let inner = env_logger::Builder::new()
//!     .filter_level(log::LevelFilter::Info)
//!     .build();
//! let max_level = inner.filter();
//! MdcLogger::new(inner).init(max_level).unwrap();
//!
//! mdc::insert("request_id", "req-7");
//! log::info!("charged card"); // [.. INFO ..] charged card request_id=req-7
//! ```
//!
//! # What the inner logger gets
//!
//! * The MDC entries in insertion order, then the record's own key-values. A key the
//!   record carries itself is not repeated from the MDC: the record's value wins.
//! * The MDC of the owner the `log!` call runs in — the task, the
//!   [`Snapshot::run`](crate::Snapshot::run) closure, the thread — since loggers
//!   format synchronously on the calling thread.
//! * Keys and values that are not plain text (empty, or with spaces, `=`, quotes,
//!   backslashes, control characters, line separators, invisible or bidirectional
//!   formatting characters) come quoted with Rust's escapes: `user="a b\nc"`. Text
//!   loggers such as env_logger write key-values as they are, so this is what stops
//!   a value from forging a field or a line. For a logger that escapes for itself
//!   (a JSON logger), turn it off with [`MdcLogger::escape`]: every value then
//!   arrives exactly as it was inserted.
//! * With an empty MDC, the record passes through untouched.

use std::borrow::Cow;

use ::log::kv::{self, Key, Source, Value, VisitSource};
use ::log::{LevelFilter, Log, Metadata, Record, SetLoggerError};

use crate::mdc::escape::{is_plain, Text};
use crate::mdc::{self, Map};

/// A [`log::Log`] that adds the [MDC](crate::mdc) to every record as key-values and
/// passes it on to the logger it wraps. See [the module](self).
///
/// ```
/// use tasklocal::log::MdcLogger;
/// let logger = MdcLogger::new(env_logger::Builder::new().build());
/// assert!(logger.escapes());
/// ```
#[derive(Debug)]
pub struct MdcLogger<L> {
    inner: L,
    escape: bool,
}

impl<L: Log> MdcLogger<L> {
    /// Wraps `inner`. Keys and values are escaped for a text logger (see
    /// [`escape`](Self::escape)).
    ///
    /// ```
    /// let logger = tasklocal::log::MdcLogger::new(env_logger::Builder::new().build());
    /// # let _ = logger;
    /// ```
    pub fn new(inner: L) -> Self {
        MdcLogger {
            inner,
            escape: true,
        }
    }

    /// Whether keys and values that are not plain text are quoted and escaped before
    /// the inner logger sees them (the default). Turn it off for a logger that
    /// escapes key-values itself, such as one that writes JSON.
    ///
    /// ```
    /// let logger = tasklocal::log::MdcLogger::new(env_logger::Builder::new().build())
    ///     .escape(false);
    /// assert!(!logger.escapes());
    /// ```
    #[must_use]
    pub fn escape(mut self, escape: bool) -> Self {
        self.escape = escape;
        self
    }

    /// Whether this logger escapes keys and values (see [`escape`](Self::escape)).
    ///
    /// ```
    /// let logger = tasklocal::log::MdcLogger::new(env_logger::Builder::new().build());
    /// assert!(logger.escapes());
    /// ```
    pub fn escapes(&self) -> bool {
        self.escape
    }

    /// The wrapped logger.
    ///
    /// ```
    /// let logger = tasklocal::log::MdcLogger::new(env_logger::Builder::new().build());
    /// assert_eq!(logger.inner().filter(), log::LevelFilter::Error);
    /// ```
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Unwraps the inner logger.
    ///
    /// ```
    /// let logger = tasklocal::log::MdcLogger::new(env_logger::Builder::new().build());
    /// let env_logger: env_logger::Logger = logger.into_inner();
    /// # let _ = env_logger;
    /// ```
    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: Log + 'static> MdcLogger<L> {
    /// Installs this logger as the global logger and sets the maximum level, as
    /// `env_logger::init` would. Fails if a logger is installed already.
    ///
    /// ```
    /// let inner = env_logger::Builder::new().parse_filters("info").build();
    /// let max_level = inner.filter();
    /// tasklocal::log::MdcLogger::new(inner).init(max_level).unwrap();
    /// assert_eq!(log::max_level(), log::LevelFilter::Info);
    /// ```
    pub fn init(self, max_level: LevelFilter) -> Result<(), SetLoggerError> {
        ::log::set_boxed_logger(Box::new(self))?;
        ::log::set_max_level(max_level);
        Ok(())
    }
}

impl<L: Log> Log for MdcLogger<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        mdc::with_map(|map| match map {
            Some(map) if !map.is_empty() => {
                let escaped;
                let entries = if self.escape && !map.is_plain() {
                    // Rare: some entry needs quoting; make the quoted texts once.
                    escaped = map
                        .iter()
                        .map(|(k, v)| (k, quote(k), quote(v)))
                        .collect::<Vec<_>>();
                    Entries::Escaped(&escaped)
                } else {
                    Entries::Plain(map)
                };
                let source = WithMdc {
                    mdc: entries,
                    record: record.key_values(),
                    // Asked once: most records carry no key-values of their own, and
                    // then no MDC key needs looking up among them.
                    record_has_kvs: record.key_values().count() > 0,
                };
                self.inner
                    .log(&record.to_builder().key_values(&source).build());
            }
            _ => self.inner.log(record),
        })
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

fn quote(text: &str) -> Cow<'_, str> {
    if is_plain(text) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(Text(text).to_string())
    }
}

/// The MDC's entries, as they are or quoted (each with its key as it is, which the
/// record's keys are compared with).
enum Entries<'a> {
    Plain(&'a Map),
    Escaped(&'a [(&'a str, Cow<'a, str>, Cow<'a, str>)]),
}

/// The key-values a record is passed on with: the MDC's, then the record's own.
struct WithMdc<'a> {
    mdc: Entries<'a>,
    record: &'a dyn Source,
    record_has_kvs: bool,
}

impl WithMdc<'_> {
    /// Whether the MDC entry with this original key is shadowed by the record.
    fn shadowed(&self, key: &str) -> bool {
        self.record_has_kvs && self.record.get(Key::from_str(key)).is_some()
    }
}

impl Source for WithMdc<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        match &self.mdc {
            Entries::Plain(map) => {
                for (key, value) in map.iter() {
                    if !self.shadowed(key) {
                        visitor.visit_pair(Key::from_str(key), Value::from(value))?;
                    }
                }
            }
            Entries::Escaped(entries) => {
                for (key, quoted, value) in entries.iter() {
                    // A record's key is compared with the MDC's key as it is: `log`
                    // takes any string literal as a key (`"user id" = 7`).
                    if !self.shadowed(key) {
                        visitor.visit_pair(Key::from_str(quoted), Value::from(&**value))?;
                    }
                }
            }
        }
        self.record.visit(visitor)
    }

    fn count(&self) -> usize {
        let mdc = match &self.mdc {
            Entries::Plain(map) => map.iter().filter(|(k, _)| !self.shadowed(k)).count(),
            Entries::Escaped(entries) => entries.iter().filter(|(k, ..)| !self.shadowed(k)).count(),
        };
        mdc + self.record.count()
    }
}
