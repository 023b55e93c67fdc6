//! [`inject`] and [`extract`]: the current context to and from headers — an
//! `http::HeaderMap` or any other [`Carrier`].

use std::fmt::{self, Display};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::baggage::{is_token, write_members, Baggage};
use super::carrier::Carrier;
use super::traceparent::{TraceParent, TraceState};
use crate::error::{panic_access, AccessError};
use crate::mdc::{self, Map};
use crate::{Local, Snapshot};

/// The current owner's trace context; inherited like the MDC.
static TRACE: Local<TraceContext> = Local::inheritable();

/// The properties of the incoming baggage members that had some, so that a member
/// passed on unchanged keeps them.
static PROPERTIES: Local<Arc<Baggage>> = Local::inheritable();

/// Baggage members `inject` could not write, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

const BAGGAGE: &str = "baggage";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The context a request carries: everything [`inject`] writes, read back from the
/// headers into a [`Snapshot`] that a new owner (the request's task) starts from.
///
/// * The [MDC](crate::mdc) is filled from the `baggage` header — every member but
///   those whose name is [registered](propagate) for a [`Local`], which go to their
///   key instead (a value that does not parse is dropped).
/// * The [`TraceContext`] comes from `traceparent` and `tracestate`. A missing,
///   repeated or invalid `traceparent` starts a new trace ([`TraceContext::new_trace`]),
///   and `tracestate` is then ignored.
/// * Nothing else: the snapshot holds no other value of any owner.
///
/// Parsing never fails and never panics, whatever the bytes: a malformed `baggage`
/// member is dropped alone (an invalid `tracestate` whole, a repeated `tracestate` key's
/// later members alone), and what is kept is bounded by the W3C limits (see
/// [`baggage`](super::baggage) and [`traceparent`](super::traceparent)). Header lines
/// that are not UTF-8 lose only their bad members. A `baggage` or `tracestate` list may
/// be split over several header lines.
///
/// `headers` is any [`Carrier`]: an `http::HeaderMap` (as here), a
/// `HashMap<String, String>`, a message queue's headers (lapin's `FieldTable` with
/// feature `amqp`) — the same rules hold for each.
///
/// ```
/// use http::HeaderMap;
/// use tasklocal::http::{extract, TraceContext};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("baggage", "request_id=r-7,tenant=acme%20corp".parse().unwrap());
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
///
/// let request = extract(&headers);
/// request.run(|| {
///     assert_eq!(tasklocal::mdc::get("tenant").as_deref(), Some("acme corp"));
///     let trace = TraceContext::current().unwrap();
///     assert_eq!(trace.traceparent().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// });
/// ```
pub fn extract<C: Carrier + ?Sized>(headers: &C) -> Snapshot {
    let baggage = Baggage::parse_all(headers.get_all(BAGGAGE).map(lossy));
    let trace = extract_trace(headers);
    let codecs = codecs();

    let mut snapshot = Snapshot::empty();
    let mut to_locals = Vec::new();
    let mut with_properties = Baggage::new();
    if codecs.is_empty() && !baggage.has_properties() {
        // Nothing registered, no properties (the common case): every member goes to
        // the MDC as it is, with no list in between.
        if !baggage.is_empty() {
            mdc::seed(
                &mut snapshot,
                baggage.into_members().map(|(k, v, _)| (k, v)),
            );
        }
    } else {
        let mut to_mdc = Vec::with_capacity(baggage.len());
        for (name, value, properties) in baggage.into_members() {
            if !properties.is_empty() {
                with_properties.insert(name.as_str(), value.as_str());
                with_properties.set_properties(&name, &properties);
            }
            match codecs.iter().find(|codec| codec.name == name) {
                Some(codec) => to_locals.push((codec, value)),
                None => to_mdc.push((name, value)),
            }
        }
        if !to_mdc.is_empty() {
            // Written into the seed directly: no owner runs. The strings move as they are.
            mdc::seed(&mut snapshot, to_mdc.into_iter());
        }
    }
    #[cfg(feature = "opentelemetry")]
    if crate::opentelemetry::is_installed() {
        snapshot = crate::opentelemetry::seed(snapshot, crate::opentelemetry::remote(&trace));
    }
    snapshot.set_value(&TRACE, trace);
    for (codec, value) in to_locals {
        snapshot = (codec.read)(snapshot, &value);
    }
    if !with_properties.is_empty() {
        snapshot.set_value(&PROPERTIES, Arc::new(with_properties));
    }
    snapshot
}

/// The trace context of the headers, or a new trace.
/// A header line as text: borrowed when it is UTF-8 (checked with `from_utf8`'s ASCII
/// fast path), else with U+FFFD for the invalid bytes.
fn lossy(line: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    }
}

fn extract_trace<C: Carrier + ?Sized>(headers: &C) -> TraceContext {
    let mut lines = headers.get_all(TRACEPARENT);
    let parent = match (lines.next(), lines.next()) {
        // W3C: more than one `traceparent` is invalid.
        (Some(line), None) => TraceParent::parse_bytes(line),
        _ => None,
    };
    match parent {
        Some(parent) => TraceContext {
            parent,
            state: TraceState::parse_all(headers.get_all(TRACESTATE).map(lossy)),
        },
        None => TraceContext::new_trace(),
    }
}

/// Writes the current context into `headers`, for an outgoing request: what
/// [`extract`] reads on the other side.
///
/// * `traceparent`: the current [`TraceContext`] with a new parent id (the outgoing
///   call is a new span of the same trace), its `sampled` and Level 2 `random` flags,
///   version `00`. With no current trace context, a new trace
///   ([`TraceContext::new_trace`]) for this call alone. With feature `opentelemetry`
///   [installed](crate::opentelemetry::install), the active OpenTelemetry span of
///   `Context::current()`, when there is one, wins: its trace-id, its span-id as the
///   parent id, its flags and its `tracestate`.
/// * `tracestate`: the current one, only alongside a `traceparent` continuing its
///   trace, and only when not empty.
/// * `baggage`: [`Baggage::current`] — the MDC and the [registered](propagate) keys,
///   nothing else; incoming members passed on unchanged keep their properties. Within
///   64 members and 8,192 bytes everything is written; over the limits whole members
///   are dropped (see [`Baggage::to_header_value`]), counted by [`dropped_members`] and,
///   with feature `log`, logged as a warning.
///
/// Headers of these names already in `headers` are replaced, or removed when the
/// context has nothing to write. `inject` never panics; in a tokio task without
/// storage of its own it sees an empty context.
///
/// `headers` is any [`Carrier`]: an `http::HeaderMap` (as here), a
/// `HashMap<String, String>`, a message queue's headers (lapin's `FieldTable` with
/// feature `amqp`) — written by the same rules.
///
/// ```
/// use http::HeaderMap;
/// use tasklocal::http::{extract, inject, TraceParent};
///
/// let mut incoming = HeaderMap::new();
/// incoming.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
///
/// let outgoing = extract(&incoming).run(|| {
///     tasklocal::mdc::insert("request_id", "r-7");
///     let mut outgoing = HeaderMap::new();
///     inject(&mut outgoing);
///     outgoing
/// });
/// assert_eq!(outgoing["baggage"], "request_id=r-7");
/// let parent = TraceParent::parse(outgoing["traceparent"].to_str().unwrap()).unwrap();
/// assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_ne!(parent.parent_id(), "00f067aa0ba902b7");
/// assert!(parent.sampled());
/// ```
pub fn inject<C: Carrier + ?Sized>(headers: &mut C) {
    #[cfg(feature = "opentelemetry")]
    let active = crate::opentelemetry::is_installed()
        .then(crate::opentelemetry::active_span)
        .flatten()
        .map(|span| (span.parent, span.state.to_header_value()));
    #[cfg(not(feature = "opentelemetry"))]
    let active = None;
    let current = active.or_else(|| {
        // Read in place: cloning the header line is all `f` does.
        TRACE
            .with_in_place(|trace| {
                trace.map(|t| (t.parent.with_new_parent_id(), t.state.to_header_value()))
            })
            .ok()
            .flatten()
    });
    let (parent, state) = current.unwrap_or_else(|| (TraceParent::new_random(), String::new()));
    // The encoding is ASCII hex and dashes: `from_utf8` cannot fail (and checks 55
    // bytes a word at a time).
    match String::from_utf8(parent.encode().to_vec()) {
        Ok(value) => {
            headers.set(TRACEPARENT, value);
            set(headers, TRACESTATE, state);
        }
        // Not reached.
        Err(_) => {
            headers.remove(TRACEPARENT);
            headers.remove(TRACESTATE);
        }
    }

    let (baggage, dropped) = write_baggage();
    if dropped > 0 {
        DROPPED.fetch_add(dropped as u64, Ordering::Relaxed);
        #[cfg(feature = "log")]
        ::log::warn!(
            target: "tasklocal::http",
            "{dropped} baggage member(s) not propagated: over the W3C limits \
             (64 members, 8192 bytes) or a key that is not an HTTP token"
        );
    }
    set(headers, BAGGAGE, baggage);
}

/// The `baggage` header value of the current context and the number of members left
/// out, written straight from the MDC (what [`Baggage::current`] holds, without
/// building it).
fn write_baggage() -> (String, usize) {
    let codecs = codecs();
    // User code (`Display`) runs here, before the MDC is looked at.
    let registered: Vec<(&str, String)> = codecs
        .iter()
        .filter_map(|codec| Some((codec.name.as_str(), (codec.write)()?)))
        .collect();
    let incoming = PROPERTIES.with_in_place(|p| p.cloned()).ok().flatten();
    let properties = |key: &str, value: &str| -> &[String] {
        incoming
            .as_deref()
            .filter(|incoming| incoming.get(key) == Some(value))
            .and_then(|incoming| incoming.properties(key))
            .unwrap_or_default()
    };
    // From here on no user code runs and nothing is written: the MDC is read in place.
    mdc::with_map_in_place(|map| {
        // A slice iterator, not a flattened `Option`: it is walked twice per member.
        let empty = Map::default();
        let from_mdc = map.unwrap_or(&empty).iter();
        if codecs.is_empty() && incoming.is_none() {
            // No registered key, no incoming properties (the common case): the MDC
            // alone, without the filter, the chain and the look-ups, which cost more
            // per member than writing it.
            return write_members(from_mdc.map(|(key, value)| (key, value, &[][..])));
        }
        let members = from_mdc
            .filter(|(key, _)| !codecs.iter().any(|codec| codec.name == *key))
            .chain(registered.iter().map(|(key, value)| (*key, value.as_str())))
            .map(|(key, value)| (key, value, properties(key, value)));
        write_members(members)
    })
}

/// Sets `name` to `value`, replacing every line of it; removes it for an empty value.
/// (The codecs write visible ASCII only, which every carrier accepts.)
fn set<C: Carrier + ?Sized>(headers: &mut C, name: &str, value: String) {
    if value.is_empty() {
        headers.remove(name);
    } else {
        headers.set(name, value);
    }
}

/// The number of baggage members [`inject`] could not write since the process started:
/// over the W3C limits (64 members, 8,192 bytes), or with a key that is not an HTTP
/// token (`request id`, `é`). A growing count means requests lose context on the way
/// out.
///
/// ```
/// use tasklocal::http::{dropped_members, inject};
///
/// let before = dropped_members();
/// tasklocal::mdc::scope([("not a token", "x")], || inject(&mut http::HeaderMap::new()));
/// assert!(dropped_members() > before);
/// ```
pub fn dropped_members() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

impl Baggage {
    /// The baggage of the current context, as [`inject`] writes it: the
    /// [MDC](crate::mdc) in insertion order, then each [registered](propagate) key that
    /// has a value (a registered name wins over an MDC key of the same name). Members
    /// received by [`extract`] and still unchanged keep their properties.
    ///
    /// For transports other than HTTP, write its [`Display`] form into the message
    /// headers.
    ///
    /// ```
    /// use tasklocal::http::Baggage;
    ///
    /// tasklocal::mdc::scope([("request_id", "r 1")], || {
    ///     assert_eq!(Baggage::current().to_string(), "request_id=r%201");
    /// });
    /// ```
    pub fn current() -> Baggage {
        let codecs = codecs();
        let mut baggage = Baggage::new();
        mdc::for_each(|key, value| {
            if !codecs.iter().any(|codec| codec.name == key) {
                baggage.insert(key, value);
            }
        });
        for codec in codecs.iter() {
            if let Some(value) = (codec.write)() {
                baggage.insert(codec.name.as_str(), value);
            }
        }
        let _ignored: Result<(), AccessError> = PROPERTIES.try_with(|incoming| {
            for (key, value) in incoming.into_iter().flat_map(|bag| bag.iter()) {
                if baggage.get(key) == Some(value) {
                    let properties = incoming.and_then(|bag| bag.properties(key));
                    baggage.set_properties(key, properties.unwrap_or_default());
                }
            }
        });
        baggage
    }
}

/// A registered key: how it goes into and out of the baggage.
struct Codec {
    name: String,
    /// The current value as text, if set.
    write: Box<dyn Fn() -> Option<String> + Send + Sync>,
    /// The snapshot with the key set from a member's value, if it parses.
    read: Box<ReadFn>,
}

type ReadFn = dyn Fn(Snapshot, &str) -> Snapshot + Send + Sync;

/// The registered keys, in registration order; replaced whole on registration so
/// that readers hold no lock while running user code.
static CODECS: RwLock<Option<Arc<[Arc<Codec>]>>> = RwLock::new(None);

fn codecs() -> Arc<[Arc<Codec>]> {
    // No codec registered (the common case): one shared empty list, no allocation.
    static NONE: std::sync::OnceLock<Arc<[Arc<Codec>]>> = std::sync::OnceLock::new();
    // A panic cannot leave the list half-written: it is replaced whole.
    let codecs = CODECS.read().unwrap_or_else(PoisonError::into_inner);
    match &*codecs {
        Some(list) => list.clone(),
        None => NONE.get_or_init(|| Arc::new([])).clone(),
    }
}

/// Sends an inheritable [`Local`] across services as the baggage member `name`:
/// [`inject`] writes its current value with [`Display`], [`extract`] reads it back with
/// [`FromStr`] into the key (a value that does not parse is dropped; the member does
/// not go into the MDC either).
///
/// Only what is registered here, and the MDC, ever leaves the process. A registered
/// name wins over an MDC key of the same name. Registering a name again replaces the
/// earlier registration. The key must be [inheritable](Local::inheritable): another
/// one is never part of a [`Snapshot`], so `extract` could not seed it.
///
/// ```
/// use tasklocal::http::{extract, inject, propagate};
/// use tasklocal::Local;
///
/// static USER_ID: Local<u64> = Local::inheritable();
/// propagate(&USER_ID, "user_id");
///
/// let mut headers = http::HeaderMap::new();
/// tasklocal::Snapshot::empty().run(|| {
///     USER_ID.set(42);
///     inject(&mut headers);
/// });
/// assert_eq!(headers["baggage"], "user_id=42");
/// assert_eq!(extract(&headers).run(|| USER_ID.get()), Some(42));
/// ```
///
/// # Panics
///
/// When `name` is not an HTTP token (`A-Z a-z 0-9 !#$%&'*+-.^_`|~`), the only keys the
/// W3C baggage allows.
pub fn propagate<T>(key: &'static Local<T>, name: impl Into<String>)
where
    T: Clone + Send + Sync + Display + FromStr + 'static,
{
    let name = name.into();
    assert!(
        is_token(&name),
        "tasklocal::http::propagate: {name:?} is not a valid baggage key (an HTTP token)"
    );
    let codec = Arc::new(Codec {
        name,
        write: Box::new(move || key.try_with(|value| value.map(T::to_string)).ok().flatten()),
        read: Box::new(move |snapshot, text| match text.parse::<T>() {
            Ok(value) => snapshot.with_value(key, value),
            Err(_) => snapshot,
        }),
    });
    let mut codecs = CODECS.write().unwrap_or_else(PoisonError::into_inner);
    let mut list: Vec<Arc<Codec>> = codecs.iter().flat_map(|c| c.iter().cloned()).collect();
    list.retain(|old| old.name != codec.name);
    list.push(codec);
    *codecs = Some(list.into());
}

/// The W3C trace context of the current owner: the `traceparent` it received (or a new
/// trace) and the `tracestate` that goes with it. [`extract`] puts it into the request's
/// snapshot; like the MDC, it is inherited by every task, thread and pool job the
/// request spawns through tasklocal, and [`inject`] continues it in outgoing calls.
///
/// tasklocal propagates the trace; it does not record spans. The `traceparent` here is
/// the caller's: its parent id is the caller's span.
///
/// ```
/// use tasklocal::http::{TraceContext, TraceParent, TraceState};
///
/// let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let trace = TraceContext::new(parent, TraceState::parse("rojo=00f067aa0ba902b7"));
/// tasklocal::Snapshot::empty().run(|| {
///     trace.clone().set_current();
///     let child = tasklocal::thread::spawn(TraceContext::current).join().unwrap();
///     assert_eq!(child, Some(trace));
/// });
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    parent: TraceParent,
    state: TraceState,
}

impl TraceContext {
    /// A trace context from its two headers.
    ///
    /// ```
    /// use tasklocal::http::{TraceContext, TraceParent, TraceState};
    /// let trace = TraceContext::new(TraceParent::new_random(), TraceState::default());
    /// assert!(trace.tracestate().is_empty());
    /// ```
    pub fn new(traceparent: TraceParent, tracestate: TraceState) -> TraceContext {
        TraceContext {
            parent: traceparent,
            state: tracestate,
        }
    }

    /// A new trace: random trace and parent ids, the Level 2 `random` flag set, not
    /// `sampled` (tasklocal records nothing), and no `tracestate`.
    ///
    /// ```
    /// use tasklocal::http::TraceContext;
    /// let trace = TraceContext::new_trace();
    /// assert!(trace.traceparent().random() && !trace.traceparent().sampled());
    /// assert_ne!(trace.traceparent().trace_id(), TraceContext::new_trace().traceparent().trace_id());
    /// ```
    pub fn new_trace() -> TraceContext {
        TraceContext::new(TraceParent::new_random(), TraceState::default())
    }

    /// The `traceparent`.
    ///
    /// ```
    /// use tasklocal::http::TraceContext;
    /// assert_eq!(TraceContext::new_trace().traceparent().trace_id().len(), 32);
    /// ```
    pub fn traceparent(&self) -> TraceParent {
        self.parent
    }

    /// The `tracestate`.
    ///
    /// ```
    /// use tasklocal::http::TraceContext;
    /// assert_eq!(TraceContext::new_trace().tracestate().len(), 0);
    /// ```
    pub fn tracestate(&self) -> &TraceState {
        &self.state
    }

    /// The current owner's trace context, if it has one (it was seeded by [`extract`],
    /// inherited, or [set](Self::set_current)).
    ///
    /// ```
    /// use tasklocal::http::TraceContext;
    /// assert_eq!(TraceContext::current(), None);
    /// ```
    pub fn current() -> Option<TraceContext> {
        TRACE.try_with(|trace| trace.cloned()).ok().flatten()
    }

    /// Makes this the current owner's trace context: [`inject`] continues it, and
    /// owners created from now on inherit it. Use it to give a job that did not come
    /// from a request one trace for all its calls.
    ///
    /// ```
    /// use tasklocal::http::{inject, TraceContext};
    ///
    /// tasklocal::Snapshot::empty().run(|| {
    ///     let trace = TraceContext::new_trace();
    ///     trace.clone().set_current();
    ///     let mut headers = http::HeaderMap::new();
    ///     inject(&mut headers);
    ///     assert!(headers["traceparent"].to_str().unwrap().contains(&trace.traceparent().trace_id()));
    /// });
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_set_current`](Self::try_set_current) returns an error: in a tokio
    /// task without storage of its own.
    #[track_caller]
    pub fn set_current(self) {
        if let Err(err) = self.try_set_current() {
            panic_access(err)
        }
    }

    /// Like [`set_current`](Self::set_current), returning an error instead of
    /// panicking.
    ///
    /// ```
    /// use tasklocal::http::TraceContext;
    /// assert!(TraceContext::new_trace().try_set_current().is_ok());
    /// ```
    pub fn try_set_current(self) -> Result<(), AccessError> {
        TRACE.try_set(self)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &format_args!("{}", self.parent))
            .field("tracestate", &format_args!("{}", self.state))
            .finish()
    }
}
