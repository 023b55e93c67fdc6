//! OpenTelemetry's `Context::current()` follows every owner.
//!
//! OpenTelemetry keeps the current [`Context`] in a thread-local: in async code it is
//! lost at the next `.await` or bleeds into the next task polled on the worker
//! (opentelemetry-rust #1571, #2420). After [`install`], a [bridge]
//! attaches the running owner's context around each of its polls, so that inside any
//! owner — a [`Task`](crate::Task), a task in automatic mode, `spawn_blocking`, rayon
//! work, a thread, a [`Snapshot::run`](crate::Snapshot::run) — `Context::current()`
//! is that owner's context, across `.await`s and worker migration:
//!
//! * [`set_current`] sets the current owner's context. It is inherited like the
//!   [MDC](crate::mdc): children start with it, their writes never flow back. An owner
//!   that has none sees an empty context (never the thread's or another task's), also
//!   right after [`reset`](crate::reset) or [`unload`](crate::unload) dropped it.
//! * `cx.attach()` inside a poll nests as OpenTelemetry documents and is undone when
//!   its guard drops. (A `ContextGuard` is not `Send`: it cannot be held across an
//!   `.await` in a spawned task; [`set_current`] is the way to change a task's context
//!   for good.) What children inherit is the owner's context, not one attached on top
//!   of it: to start a child in an attached context, [`set_current`] it first, or
//!   give the child's future OpenTelemetry's `.with_context(cx)`.
//! * When an owner's poll returns — or unwinds — the thread's `Context::current()` is
//!   what it was before.
//! * With feature `http`, [`extract`](crate::http::extract) and
//!   [`ServerLayer`](crate::http::ServerLayer) make the incoming trace the request's
//!   context (a remote [`SpanContext`](::opentelemetry::trace::SpanContext)), so spans started in the handler are its
//!   children; [`inject`](crate::http::inject) and
//!   [`ClientLayer`](crate::http::ClientLayer) write the active span's trace-id and
//!   span-id when there is one. [`TraceContext`](crate::http::TraceContext) and
//!   [`SpanContext`](::opentelemetry::trace::SpanContext), and tasklocal's and OpenTelemetry's baggage, convert both ways.
//!
//! ```
//! use opentelemetry::{Context, KeyValue};
//!
//! tasklocal::opentelemetry::install();
//!
//! #[derive(Debug, PartialEq)]
//! struct RequestId(u32);
//!
//! tasklocal::Snapshot::empty().run(|| {
//!     tasklocal::opentelemetry::set_current(Context::current_with_value(RequestId(7)));
//!     let child = tasklocal::task(async {
//!         // The child's own context, inherited at creation.
//!         Context::map_current(|cx| cx.get::<RequestId>().map(|r| r.0))
//!     });
//!     assert_eq!(futures::executor::block_on(child), Some(7));
//! });
//! // The thread's context is back.
//! assert!(Context::current().get::<RequestId>().is_none());
//! ```

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use ::opentelemetry::{Context, ContextGuard};

use crate::bridge::{self, Bridge, RegisterError};
use crate::error::{panic_access, AccessError};
use crate::Local;

/// The current owner's OpenTelemetry context; inherited like the MDC.
static CONTEXT: Local<Context> = Local::inheritable();

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The guards of the contexts attached for the owners entered on this thread,
    /// innermost last. `ManuallyDrop`: this thread-local then has no destructor, so the
    /// bridge's two accesses per switch are plain thread-local reads, with no
    /// is-it-destroyed check and no lazy destructor registration. At thread exit the
    /// guards are forgotten (see [`Guards`]) and the buffer freed by `ATTACHED_EXIT`,
    /// registered when the buffer is first allocated ([`grow_attached`]).
    static ATTACHED: RefCell<ManuallyDrop<Vec<ContextGuard>>> =
        const { RefCell::new(ManuallyDrop::new(Vec::new())) };
    /// Frees `ATTACHED`'s buffer at thread exit.
    static ATTACHED_EXIT: AttachedExit = const { AttachedExit };
    /// The guard of the thread owner's context, set by [`set_current`] outside any
    /// entered owner.
    static THREAD: Guards<Option<ContextGuard>> = const { Guards(RefCell::new(None)) };
}

/// Guards kept in a thread-local. At thread exit they are forgotten, not dropped:
/// OpenTelemetry's own thread-local may be gone already, and a `ContextGuard`'s drop
/// would then panic (aborting the process). Forgetting one leaks nothing (it is a
/// position in that stack, which goes with the thread).
struct Guards<T: Default>(RefCell<T>);

impl<T: Default> std::ops::Deref for Guards<T> {
    type Target = RefCell<T>;
    fn deref(&self) -> &RefCell<T> {
        &self.0
    }
}

impl<T: Default> Drop for Guards<T> {
    fn drop(&mut self) {
        std::mem::forget(std::mem::take(self.0.get_mut()));
    }
}

/// The destructor of `ATTACHED`'s buffer.
struct AttachedExit;

impl Drop for AttachedExit {
    fn drop(&mut self) {
        let guards = ATTACHED.with(|attached| match attached.try_borrow_mut() {
            Ok(mut attached) => std::mem::take(&mut **attached),
            Err(_) => Vec::new(),
        });
        // Forgotten, not dropped, as in `Guards`.
        guards.into_iter().for_each(std::mem::forget);
    }
}

/// Pushes the guard of the context attached for an owner just entered.
#[inline(always)]
fn push_attached(guard: ContextGuard) {
    // (`try_with`, which cannot fail here: `with` is left out of line.)
    let _ = ATTACHED.try_with(|attached| {
        let mut attached = attached.borrow_mut();
        if attached.len() == attached.capacity() {
            grow_attached(&mut attached);
        }
        attached.push(guard);
    });
}

/// Pops the guard of the innermost owner entered.
#[inline(always)]
fn pop_attached() -> Option<ContextGuard> {
    ATTACHED
        .try_with(|attached| attached.borrow_mut().pop())
        .ok()
        .flatten()
}

/// Makes room in `ATTACHED`. Its first allocation on a thread registers
/// `ATTACHED_EXIT`, which frees it at thread exit. (An owner switched by another
/// thread-local's destructor after that one ran allocates again, and those few bytes
/// leak: the thread is gone.)
#[cold]
#[inline(never)]
fn grow_attached(attached: &mut Vec<ContextGuard>) {
    if attached.capacity() == 0 {
        let _ = ATTACHED_EXIT.try_with(|_| ());
    }
    attached.reserve(8);
}

/// Makes `opentelemetry::Context::current()` the current owner's context (see the
/// [module docs](self)). Idempotent. Call it at start-up, before runtimes run tasks:
/// owners running when it is called were entered without it.
///
/// # Panics
///
/// When [`bridge::MAX_BRIDGES`] other bridges are registered already; see
/// [`try_install`].
///
/// ```
/// tasklocal::opentelemetry::install();
/// tasklocal::opentelemetry::install(); // a second call changes nothing
/// assert!(tasklocal::opentelemetry::is_installed());
/// ```
#[track_caller]
pub fn install() {
    if let Err(err) = try_install() {
        panic!("tasklocal::opentelemetry::install: {err}");
    }
}

/// Like [`install`], returning an error instead of panicking.
///
/// # Errors
///
/// [`RegisterError`] when the bridge cannot be registered.
///
/// ```
/// assert!(tasklocal::opentelemetry::try_install().is_ok());
/// ```
pub fn try_install() -> Result<(), RegisterError> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = bridge::register(OpenTelemetry);
        INSTALLED.store(result.is_ok(), Ordering::Release);
    });
    result
}

/// Whether [`install`] has run.
///
/// ```
/// tasklocal::opentelemetry::install();
/// assert!(tasklocal::opentelemetry::is_installed());
/// ```
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Sets the current owner's OpenTelemetry context: `Context::current()` returns it at
/// once (once [installed](install)) and owners created from now on inherit it. (In an
/// owner that a [`bridge`]'s own call runs, entered with no bridge, it
/// is shown from the owner's next entry.)
///
/// ```
/// use opentelemetry::Context;
/// tasklocal::opentelemetry::install();
///
/// #[derive(Debug)]
/// struct Tenant(&'static str);
/// let seen = futures::executor::block_on(tasklocal::Task::isolated(async {
///     tasklocal::opentelemetry::set_current(Context::new().with_value(Tenant("acme")));
///     tokio::task::yield_now().await; // still there after an await
///     Context::map_current(|cx| cx.get::<Tenant>().map(|t| t.0))
/// }));
/// assert_eq!(seen, Some("acme"));
/// ```
///
/// # Panics
///
/// Where [`try_set_current`] returns an error: in a tokio task without storage of its
/// own.
#[track_caller]
pub fn set_current(cx: Context) {
    if let Err(err) = try_set_current(cx) {
        panic_access(err)
    }
}

/// Like [`set_current`], returning an error instead of panicking.
///
/// # Errors
///
/// [`AccessError`] in a tokio task without storage of its own (plain `tokio::spawn`
/// without automatic mode) and during the thread's teardown.
///
/// ```
/// assert!(tasklocal::opentelemetry::try_set_current(opentelemetry::Context::new()).is_ok());
/// ```
pub fn try_set_current(cx: Context) -> Result<(), AccessError> {
    CONTEXT.try_set(cx.clone())?;
    // Inside a bridge's call, the current owner was entered with no bridge (an owner
    // that the call runs): no guard of its own to replace, and the one on top is the
    // owner's the call runs for. Its context is shown when it is next entered.
    if is_installed() && !bridge::calling() {
        show(cx);
    }
    Ok(())
}

/// The current owner's context as [`set_current`] left it or it was inherited; `None`
/// when it has none. (`Context::current()` also shows what `attach` added on top.)
///
/// ```
/// assert!(tasklocal::opentelemetry::owner_context().is_none());
/// tasklocal::opentelemetry::set_current(opentelemetry::Context::new());
/// assert!(tasklocal::opentelemetry::owner_context().is_some());
/// ```
pub fn owner_context() -> Option<Context> {
    CONTEXT.try_with(|cx| cx.cloned()).ok().flatten()
}

/// Seeds `snapshot` with `cx` as the OpenTelemetry context of the owners it starts.
#[cfg(feature = "http")]
pub(crate) fn seed(snapshot: crate::Snapshot, cx: Context) -> crate::Snapshot {
    snapshot.with_value(&CONTEXT, cx)
}

/// The current owner's context may have changed other than by [`set_current`] (its
/// values were dropped by `reset` or `unload`): shows what it holds now, as
/// [`try_set_current`] does.
pub(crate) fn changed() {
    if is_installed() && !bridge::calling() {
        show(owner_context().unwrap_or_default());
    }
}

/// Replaces the context attached for the current owner on this thread with `cx`.
fn show(cx: Context) {
    // The old guard goes first, so that it is the top of OpenTelemetry's stack and
    // pops cleanly (a guard dropped out of order leaves a hole there).
    match pop_attached() {
        Some(old) => {
            drop(old);
            push_attached(cx.attach());
        }
        // The thread's own owner.
        None => {
            let old = THREAD.try_with(|thread| thread.borrow_mut().take());
            drop(old);
            let guard = cx.attach();
            let _ = THREAD.try_with(|thread| *thread.borrow_mut() = Some(guard));
        }
    }
}

/// The bridge.
struct OpenTelemetry;

impl Bridge for OpenTelemetry {
    #[inline]
    fn enter(&self) {
        // Read in place, under the borrow of the owner's entries: a clone of a
        // `Context` is two reference counts and runs no user code.
        let cx = CONTEXT
            .with_in_place(|cx| cx.map_or_else(Context::new, Context::clone))
            .unwrap_or_else(|_| Context::new());
        push_attached(cx.attach());
    }

    #[inline]
    fn exit(&self) {
        // Dropped outside the borrow: the context's values may run any code.
        drop(pop_attached());
    }
}

#[cfg(feature = "http")]
mod http {
    //! Conversions between tasklocal's W3C types and OpenTelemetry's.

    use std::fmt;

    use ::opentelemetry::baggage::Baggage as OtelBaggage;
    use ::opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState as OtelTraceState,
    };
    use ::opentelemetry::Context;

    use crate::http::{Baggage, TraceContext, TraceParent, TraceState};

    impl From<&TraceContext> for SpanContext {
        /// A remote span context: the trace-id, the parent-id as span-id, the flags
        /// (OpenTelemetry keeps `sampled` and `random`), and the `tracestate`.
        ///
        /// ```
        /// use opentelemetry::trace::SpanContext;
        /// use tasklocal::http::{TraceContext, TraceParent, TraceState};
        ///
        /// let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        /// let trace = TraceContext::new(parent, TraceState::parse("rojo=1"));
        /// let span = SpanContext::from(&trace);
        /// assert_eq!(span.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        /// assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        /// assert!(span.is_sampled() && span.is_remote());
        /// assert_eq!(span.trace_state().get("rojo"), Some("1"));
        /// ```
        fn from(trace: &TraceContext) -> SpanContext {
            let parent = trace.traceparent();
            let (trace_id, span_id) = parent.ids();
            let state =
                OtelTraceState::from_key_value(trace.tracestate().iter()).unwrap_or_default();
            SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::new(parent.flags()),
                true,
                state,
            )
        }
    }

    impl TryFrom<&SpanContext> for TraceContext {
        type Error = InvalidSpanContext;

        /// The W3C trace context of a valid span context: its span-id becomes the
        /// parent-id. OpenTelemetry's `tracestate` entries that tasklocal's stricter
        /// parser refuses are left out.
        ///
        /// ```
        /// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        /// use tasklocal::http::TraceContext;
        ///
        /// let span = SpanContext::new(
        ///     TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
        ///     SpanId::from(0x00f067aa0ba902b7),
        ///     TraceFlags::SAMPLED,
        ///     false,
        ///     TraceState::default(),
        /// );
        /// let trace = TraceContext::try_from(&span).unwrap();
        /// assert_eq!(trace.traceparent().parent_id(), "00f067aa0ba902b7");
        /// assert!(TraceContext::try_from(&SpanContext::empty_context()).is_err());
        /// ```
        fn try_from(span: &SpanContext) -> Result<TraceContext, InvalidSpanContext> {
            let parent = TraceParent::from_parts(
                u128::from_be_bytes(span.trace_id().to_bytes()),
                u64::from_be_bytes(span.span_id().to_bytes()),
                span.trace_flags().to_u8(),
            )
            .ok_or(InvalidSpanContext { _private: () })?;
            Ok(TraceContext::new(
                parent,
                TraceState::parse(&span.trace_state().header()),
            ))
        }
    }

    /// A [`SpanContext`] with an all-zero trace-id or span-id has no W3C trace context.
    ///
    /// ```
    /// use opentelemetry::trace::SpanContext;
    /// let err = tasklocal::http::TraceContext::try_from(&SpanContext::empty_context()).unwrap_err();
    /// assert!(err.to_string().contains("invalid"));
    /// ```
    #[derive(Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct InvalidSpanContext {
        _private: (),
    }

    impl fmt::Debug for InvalidSpanContext {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("InvalidSpanContext").finish_non_exhaustive()
        }
    }

    impl fmt::Display for InvalidSpanContext {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("invalid span context: all-zero trace-id or span-id")
        }
    }

    impl std::error::Error for InvalidSpanContext {}

    impl From<&Baggage> for OtelBaggage {
        /// OpenTelemetry's baggage with the same members (properties are not carried).
        ///
        /// ```
        /// use tasklocal::http::Baggage;
        /// let ours = Baggage::parse("request_id=r-7,tenant=acme%20corp");
        /// let theirs = opentelemetry::baggage::Baggage::from(&ours);
        /// assert_eq!(theirs.get("tenant").map(|v| v.as_str()), Some("acme corp"));
        /// ```
        fn from(baggage: &Baggage) -> OtelBaggage {
            let mut otel = OtelBaggage::new();
            for (key, value) in baggage.iter() {
                otel.insert(key.to_owned(), value.to_owned());
            }
            otel
        }
    }

    impl From<&OtelBaggage> for Baggage {
        /// tasklocal's baggage with the same members, sorted by key (OpenTelemetry's
        /// baggage has no order).
        ///
        /// ```
        /// use tasklocal::http::Baggage;
        /// let mut theirs = opentelemetry::baggage::Baggage::new();
        /// theirs.insert("user", "ada");
        /// let ours = Baggage::from(&theirs);
        /// assert_eq!(ours.get("user"), Some("ada"));
        /// ```
        fn from(otel: &OtelBaggage) -> Baggage {
            let mut members: Vec<(&str, &str)> = otel
                .iter()
                .map(|(key, (value, _))| (key.as_str(), value.as_str()))
                .collect();
            members.sort_unstable();
            let mut baggage = Baggage::new();
            for (key, value) in members {
                baggage.insert(key, value);
            }
            baggage
        }
    }

    /// The OpenTelemetry context of a request that carried `trace`: a remote parent.
    pub(crate) fn remote(trace: &TraceContext) -> Context {
        Context::new().with_remote_span_context(SpanContext::from(trace))
    }

    /// The active span of `Context::current()`, when there is a valid one: what an
    /// outgoing request continues.
    pub(crate) fn active_span() -> Option<TraceContext> {
        Context::map_current(|cx| {
            if !cx.has_active_span() {
                return None;
            }
            let span = cx.span();
            let span = span.span_context();
            // A remote parent is the caller's span, not one of ours: the outgoing
            // call then gets a new parent-id, as without OpenTelemetry.
            if span.is_remote() {
                return None;
            }
            TraceContext::try_from(span).ok()
        })
    }
}

#[cfg(feature = "http")]
pub use self::http::InvalidSpanContext;
#[cfg(feature = "http")]
pub(crate) use self::http::{active_span, remote};
