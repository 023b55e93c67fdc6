//! [`tracing`]: events that carry the [MDC](crate::mdc), and span fields that become
//! MDC entries.
//!
//! **Into the log lines.** [`MdcExt::with_mdc`] makes `tracing-subscriber`'s `fmt`
//! subscriber or layer print the MDC of the task each event is emitted in, after the
//! event's own fields — text (`Full`, `Compact`) and JSON alike:
//!
//! ```
//! use tasklocal::{mdc, tracing::MdcExt};
//! # use std::sync::{Arc, Mutex};
//! # #[derive(Clone, Default)]
//! # struct Buffer(Arc<Mutex<Vec<u8>>>);
//! # impl std::io::Write for Buffer {
//! #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().extend_from_slice(b); Ok(b.len()) }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! # let buffer = Buffer::default();
//! # let writer = buffer.clone();
//!
//! let subscriber = tracing_subscriber::fmt()
//!     .without_time()
//!     .with_ansi(false)
//! #   .with_writer(move || writer.clone())
//!     .with_mdc() // last: it wraps the formatters configured so far
//!     .finish();
//!
//! tracing::subscriber::with_default(subscriber, || {
//!     mdc::insert("request_id", "req-7");
//!     tracing::info!(amount = 5, "charged card");
//! });
//! # let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
//! # assert_eq!(output, " INFO rust_out: charged card amount=5 request_id=\"req-7\"\n");
//! //  INFO my_app: charged card amount=5 request_id="req-7"
//! ```
//!
//! With `.json()` before `.with_mdc()`, every object gets an `"mdc"` member:
//! `{"timestamp":…,"level":"INFO","fields":{…},"target":"my_app","mdc":{"request_id":"req-7"}}`.
//! The same works for a layer: `fmt::layer().with_mdc()`, next to the user's own
//! layers and filters.
//!
//! **Out of the spans.** A [`SpanToMdc`] layer puts chosen fields of a span into the
//! MDC of the owner that enters it, for as long as it is entered; so code written
//! with `#[instrument]` and `.instrument(span)` gets what `tracing` alone does not
//! give: the fields follow into the tasks that [`tasklocal::spawn`](crate::spawn)
//! starts, which `tokio::spawn` does not do for spans.
//!
//! # Escaping
//!
//! Text output writes MDC values the way `tracing` writes string fields, quoted with
//! Rust's escapes (`user="a b\nc"`), and keys as they are unless they need quoting;
//! JSON output escapes per JSON and also escapes every control character and
//! U+2028/U+2029. No MDC key or value can start a new line or forge a field.
//!
//! # How it works, and its limits
//!
//! [`MdcFormat`] wraps the event formatter and [`MdcFields`] the field formatter;
//! they only work together, which the types enforce. Text formatters write the
//! event's fields last, through the field formatter: that is where the MDC goes, with
//! the writer's colours. JSON formatters do not use the field formatter for events:
//! there the event is formatted into a buffer and the `"mdc"` member is added before
//! the closing brace. A formatter of another kind gets the MDC appended to its line.
//! The formatters run on the thread that emits the event, so they see the MDC of the
//! task, thread or [`Snapshot::run`](crate::Snapshot::run) that emitted it; a
//! non-blocking writer only defers the writing.

use std::cell::{Cell, RefCell};
use std::fmt;

use ::tracing::span::Record;
use ::tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{
    FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter, SubscriberBuilder,
};
use tracing_subscriber::registry::LookupSpan;

use crate::mdc::escape::{Json, Text};
use crate::mdc::{self, Map};
use crate::once::Once;

/// An event formatter that adds the [MDC](crate::mdc) to the events `inner` formats;
/// used together with [`MdcFields`], most easily through [`MdcExt::with_mdc`].
///
/// ```
/// use tasklocal::tracing::{MdcFields, MdcFormat};
///
/// let subscriber = tracing_subscriber::fmt()
///     .json()
///     .map_fmt_fields(MdcFields::new)
///     .map_event_format(MdcFormat::new)
///     .finish();
/// # let _ = subscriber;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MdcFormat<E> {
    inner: E,
}

impl<E> MdcFormat<E> {
    /// Wraps the event formatter `inner`.
    ///
    /// ```
    /// let format = tasklocal::tracing::MdcFormat::new(tracing_subscriber::fmt::format().compact());
    /// # let _ = format;
    /// ```
    pub fn new(inner: E) -> Self {
        MdcFormat { inner }
    }

    /// The wrapped formatter.
    ///
    /// ```
    /// let format = tasklocal::tracing::MdcFormat::new(tracing_subscriber::fmt::format());
    /// let _inner: &tracing_subscriber::fmt::format::Format = format.inner();
    /// ```
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

/// A field formatter that writes the [MDC](crate::mdc) after an event's own fields
/// when [`MdcFormat`] asks it to, and formats everything else exactly as `inner`
/// does.
///
/// ```
/// use tasklocal::tracing::{MdcFields, MdcFormat};
///
/// let layer = tracing_subscriber::fmt::layer::<tracing_subscriber::Registry>()
///     .map_fmt_fields(MdcFields::new)
///     .map_event_format(MdcFormat::new);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MdcFields<N> {
    inner: N,
}

impl<N> MdcFields<N> {
    /// Wraps the field formatter `inner`.
    ///
    /// ```
    /// let fields = tasklocal::tracing::MdcFields::new(tracing_subscriber::fmt::format::DefaultFields::new());
    /// # let _ = fields;
    /// ```
    pub fn new(inner: N) -> Self {
        MdcFields { inner }
    }

    /// The wrapped formatter.
    ///
    /// ```
    /// use tracing_subscriber::fmt::format::DefaultFields;
    /// let fields = tasklocal::tracing::MdcFields::new(DefaultFields::new());
    /// let _inner: &DefaultFields = fields.inner();
    /// ```
    pub fn inner(&self) -> &N {
        &self.inner
    }
}

thread_local! {
    /// Set by `MdcFormat` while it formats an event: the next event fields formatted
    /// on this thread get the MDC appended, and clear it.
    static PENDING: Cell<bool> = const { Cell::new(false) };
    /// Where `MdcFormat` formats events it must edit (JSON, unknown formats).
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Arms [`PENDING`] for one event; disarms it again on drop, also by unwinding.
struct Armed {
    previous: bool,
}

impl Armed {
    fn new() -> Armed {
        // During thread teardown the flag is gone: nothing is consumed then, and the
        // fallback appends the MDC.
        let previous = PENDING.try_with(|p| p.replace(true)).unwrap_or(false);
        Armed { previous }
    }

    /// Whether [`MdcFields`] wrote the MDC.
    fn consumed(&self) -> bool {
        PENDING.try_with(|p| !p.get()).unwrap_or(false)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let _ = PENDING.try_with(|p| p.set(self.previous));
    }
}

/// Runs `f` with the thread's buffer, emptied; a fresh one when it is in use
/// (an event emitted while an event is formatted) or gone (thread teardown).
fn with_buffer<R>(f: impl FnOnce(&mut String) -> R) -> R {
    let mut f = Once::new(f);
    let result = BUFFER.try_with(|buffer| {
        let mut buffer = buffer.try_borrow_mut().ok()?;
        buffer.clear();
        let result = (f.take()?)(&mut buffer);
        buffer.clear();
        if buffer.capacity() > 64 * 1024 {
            buffer.shrink_to(1024); // one huge event must not pin its memory
        }
        Some(result)
    });
    f.or(result.ok().flatten(), |f| f(&mut String::new()))
}

/// Writes ` key="value"` for every entry, the way `tracing` writes string fields.
fn write_text(writer: &mut Writer<'_>, map: &Map) -> fmt::Result {
    let ansi = writer.has_ansi_escapes();
    for (key, value) in map.iter() {
        if ansi {
            // Like `tracing-subscriber`'s own fields: italic name, dimmed `=`.
            write!(
                writer,
                " \x1b[3m{}\x1b[0m\x1b[2m=\x1b[0m{value:?}",
                Text(key)
            )?;
        } else {
            write!(writer, " {}={value:?}", Text(key))?;
        }
    }
    Ok(())
}

/// Writes `"mdc":{"key":"value",…}`.
fn write_json(writer: &mut Writer<'_>, map: &Map) -> fmt::Result {
    writer.write_str("\"mdc\":{")?;
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            writer.write_char(',')?;
        }
        write!(writer, "{}:{}", Json(key), Json(value))?;
    }
    writer.write_char('}')
}

/// The object of a one-line JSON event without its closing brace.
fn json_object_body(line: &str) -> Option<&str> {
    let object = line.strip_suffix('\n').unwrap_or(line);
    let body = object.strip_prefix('{')?.strip_suffix('}')?;
    (!body.contains('\n')).then(|| &object[..object.len() - 1])
}

impl<S, N, E> FormatEvent<S, MdcFields<N>> for MdcFormat<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, MdcFields<N>>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, MdcFields<N>>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if mdc::with_map(|map| map.map_or(true, Map::is_empty)) {
            return self.inner.format_event(ctx, writer, event);
        }
        if writer.has_ansi_escapes() {
            // Colours are only for text: `MdcFields` writes the MDC in place, through
            // the writer that has them. (A buffer cannot: `tracing-subscriber` gives
            // no way to make a coloured writer for it.)
            let _armed = Armed::new();
            return self.inner.format_event(ctx, writer, event);
        }
        with_buffer(|buffer| {
            let armed = Armed::new();
            self.inner.format_event(ctx, Writer::new(buffer), event)?;
            if armed.consumed() {
                return writer.write_str(buffer);
            }
            drop(armed);
            mdc::with_map(|map| {
                let Some(map) = map else {
                    return writer.write_str(buffer);
                };
                if let Some(body) = json_object_body(buffer) {
                    writer.write_str(body)?;
                    if body.len() > 1 {
                        writer.write_char(',')?;
                    }
                    write_json(&mut writer, map)?;
                    return writer.write_str("}\n");
                }
                // Another kind of format: the MDC goes at the end of its line.
                let line = buffer.strip_suffix('\n');
                writer.write_str(line.unwrap_or(buffer))?;
                write_text(&mut writer, map)?;
                writer.write_str(if line.is_some() { "\n" } else { "" })
            })
        })
    }
}

impl<'w, N> FormatFields<'w> for MdcFields<N>
where
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        self.inner.format_fields(writer.by_ref(), fields)?;
        if PENDING.try_with(|p| p.replace(false)).unwrap_or(false) {
            mdc::with_map(|map| map.map_or(Ok(()), |map| write_text(&mut writer, map)))?;
        }
        Ok(())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if current.as_writer().has_ansi_escapes() {
            // Only text formatters use colours; they format added fields as below.
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            return self.format_fields(current.as_writer(), fields);
        }
        // The inner formatter's own way of adding fields (JSON merges objects).
        let mut theirs = FormattedFields::<N>::new(std::mem::take(&mut current.fields));
        let result = self.inner.add_fields(&mut theirs, fields);
        current.fields = theirs.fields;
        result
    }
}

/// Adds [`with_mdc`](MdcExt::with_mdc) to `tracing-subscriber`'s `fmt` builders.
pub trait MdcExt {
    /// The builder with MDC output.
    type WithMdc;

    /// Makes every event formatted by this subscriber or layer carry the
    /// [MDC](crate::mdc) of the task it was emitted in. Call it after the other
    /// format options (`.json()`, `.compact()`, `.with_target(..)`, …): it wraps the
    /// formatters they configured.
    ///
    /// ```
    /// use tasklocal::tracing::MdcExt;
    /// use tracing_subscriber::prelude::*;
    ///
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(tracing_subscriber::fmt::layer().compact().with_mdc())
    ///     .with(tracing_subscriber::fmt::layer().json().with_mdc())
    ///     .with(tracing_subscriber::filter::LevelFilter::INFO);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tasklocal::mdc::insert("request_id", "req-7");
    ///     tracing::info!("written twice, with request_id");
    /// });
    /// ```
    fn with_mdc(self) -> Self::WithMdc;
}

impl<N, E, F, W> MdcExt for SubscriberBuilder<N, E, F, W>
where
    N: for<'a> FormatFields<'a> + 'static,
    MdcFormat<E>: FormatEvent<tracing_subscriber::Registry, MdcFields<N>> + 'static,
    W: for<'a> MakeWriter<'a> + 'static,
{
    type WithMdc = SubscriberBuilder<MdcFields<N>, MdcFormat<E>, F, W>;

    fn with_mdc(self) -> Self::WithMdc {
        self.map_fmt_fields(MdcFields::new)
            .map_event_format(MdcFormat::new)
    }
}

impl<S, N, E, W> MdcExt for tracing_subscriber::fmt::Layer<S, N, E, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    MdcFormat<E>: FormatEvent<S, MdcFields<N>> + 'static,
    W: for<'a> MakeWriter<'a> + 'static,
{
    type WithMdc = tracing_subscriber::fmt::Layer<S, MdcFields<N>, MdcFormat<E>, W>;

    fn with_mdc(self) -> Self::WithMdc {
        self.map_fmt_fields(MdcFields::new)
            .map_event_format(MdcFormat::new)
    }
}

pub use span_to_mdc::SpanToMdc;

mod span_to_mdc;
