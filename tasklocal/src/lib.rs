//! Task-local and thread-local storage for Rust: every async task and every thread
//! gets its own values — typed keys with initial values, go-tls style dynamic keys,
//! inheritance into the tasks and threads it spawns, exit handlers and cleanup when
//! the task ends (also when it is cancelled or panics) — with no `unsafe` code.
//!
//! ```
//! use tasklocal::Local;
//!
//! static REQUEST_ID: Local<String> = Local::inheritable();
//!
//! # #[cfg(feature = "tokio")]
//! #[tokio::main]
//! async fn main() {
//!     let handle = tasklocal::spawn(async {
//!         REQUEST_ID.set("req-42".into()); // no scope, no wrapper at the call site
//!         let child = tasklocal::spawn(async { REQUEST_ID.get() }); // inherited
//!         tasklocal::at_exit(|| println!("request done")); // runs at task end
//!         child.await.unwrap()
//!     });
//!     assert_eq!(handle.await.unwrap().as_deref(), Some("req-42"));
//!     assert_eq!(REQUEST_ID.get(), None); // nothing leaks back
//! }
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! ```
//!
//! # Compared with
//!
//! | | tasklocal | go-tls / timandy/routine | Java `ThreadLocal` / `InheritableThreadLocal` | tokio `task_local!` | std `thread_local!` | Python `contextvars` |
//! |---|---|---|---|---|---|---|
//! | per async task | yes | per goroutine | per thread | yes | no: bleeds between tasks on a worker | yes |
//! | `set` anywhere, no scope | yes | yes | yes | no (`scope`/`sync_scope` only) | yes | yes |
//! | initial value | `with_initial` | no / `withInitial` | `withInitial` | no | yes | default |
//! | inherited by children | `inheritable`, O(1) capture | no / yes (copy) | `InheritableThreadLocal` (copy) | no (#2396) | no | yes (O(1)) |
//! | into `spawn_blocking`, rayon, threads | `spawn_blocking`, [`rayon`], [`thread`] | — | — | lost | — | `copy_context().run` |
//! | cleanup at end (cancel, panic) | handlers FILO, then values | `AtExit` (go-tls) | `remove()` by hand | value dropped | at thread exit | GC |
//! | dynamic keys | [`set`]/[`get`]/[`remove`] | yes | no | no | no | no |
//! | implementation | safe Rust | runtime patching / stack walk | JVM | safe Rust | compiler | interpreter |
//!
//! # go-tls → tasklocal
//!
//! | go-tls | tasklocal |
//! |---|---|
//! | `tls.Set(k, v)` | [`set(k, v)`](set), or [`Local::set`] for a typed key |
//! | `tls.Get(k)` | [`get(&k)`](get), [`with(&k, f)`](with) to borrow |
//! | `tls.Del(k)` | [`remove(&k)`](remove), [`take(&k)`](take) to get it back |
//! | `tls.Reset()` | [`reset()`] |
//! | `tls.Unload()` | [`unload()`] |
//! | `tls.ID()` | [`id()`] → [`TaskId`] |
//! | `tls.AtExit(f)` | [`at_exit(f)`](at_exit) |
//! | `go f()` | [`spawn(f)`](spawn), [`thread::spawn`], or plain `tokio::spawn` in [automatic mode](#automatic-mode) |
//!
//! # Owners
//!
//! Values belong to an *owner*: a [`Task`] (a future wrapped by [`task`], [`spawn`],
//! [`Snapshot::task`]), a [`Snapshot::run`] call, a task of a runtime in automatic
//! mode, and — as the fallback — the OS thread. Code reads and writes the storage of
//! the innermost owner it runs in; tasks that migrate between worker threads take
//! their storage with them. An owner that never touches the API allocates nothing.
//!
//! A child owner starts with the values of [inheritable](Local::inheritable) keys as
//! its creator had them at creation; afterwards neither sees the other's writes.
//! Dynamic keys and non-inheritable keys are never inherited.
//! [`isolated`] keeps the context out of children (long-lived background work),
//! [`Local::inheritable_with`] gives each child a fork of a value, and [`Carried`] takes
//! the context through a channel to a worker that was started before the request.
//!
//! When an owner ends, its [exit handlers](at_exit) run last-registered first, with
//! all values still readable; then the values are dropped. A handler or a `Drop` may
//! use the whole API; a panicking one does not stop the rest.
//!
//! # Automatic mode
//!
//! With tokio, code in a task spawned by plain `tokio::spawn` has no storage of its
//! own: it never falls back to the worker thread's storage (that would leak values
//! between tasks). Reads there see nothing set, writes panic with a message naming
//! the fix. Use [`spawn`]/[`task`], or give every task of a runtime its own storage
//! with `tasklocal::tokio::install` (requires `--cfg tokio_unstable`).
//!
//! A plain tokio task polled *inside* an owner's poll — by a `LocalSet`'s `run_until`
//! or a nested runtime's `block_on` inside a [`Task`] or a [`Snapshot::run`] — is code
//! of that poll, and runs in that owner, as tokio's own `task_local!` values are seen
//! by tasks polled inside their scope. (Telling it apart would take a call into tokio
//! on every access.) Spawn such tasks with [`spawn_local`]/[`spawn`] to give them
//! storage of their own.
//!
//! # Logging context and services
//!
//! * [`mdc`]: an inheritable, insertion-ordered string map for log lines (SLF4J's
//!   MDC), always available.
//! * Feature `log`: `log::MdcLogger` wraps any `log::Log` so every record carries the
//!   MDC as key-values. Feature `tracing`: `tracing::MdcExt::with_mdc` puts the MDC
//!   into every event `tracing-subscriber`'s `fmt` writes (text and JSON), and
//!   `tracing::SpanToMdc` puts span fields into the MDC.
//! * Feature `http`: `http::extract`/`http::inject` carry the MDC as W3C `baggage` and
//!   the trace context as `traceparent`/`tracestate`; `http::ServerLayer` and
//!   `http::ClientLayer` do it for tower services (axum, hyper, tonic).
//!
//! | transport | feature | out: client, publisher | in: server, consumer | example |
//! |---|---|---|---|---|
//! | HTTP: axum, hyper, tower | `http` | [`http::ClientLayer`] | [`http::ServerLayer`] (the response body too: streams, SSE) | `demo/` |
//! | reqwest | `reqwest` | [`reqwest::ContextMiddleware`] | — | `reqwest_client` |
//! | gRPC: tonic | `http` | `ClientLayer` on a `Channel` | `ServerLayer` on `Server::builder()` (server streams too) | `tonic_grpc` |
//! | message queues: lapin's `FieldTable` | `amqp` | [`http::inject`] into the headers | [`http::extract`]`(&headers).task(..)` | `amqp_headers` |
//! | any other header collection | `http` | `inject` into an [`http::Carrier`] | `extract` from it | — |
//!
//! The examples run with `cargo run -p tasklocal --example NAME --all-features`, on
//! 127.0.0.1 only.
//!
//! # Bridges: one current context for the whole stack
//!
//! Libraries that keep "current" in a thread-local of their own lose it at the next
//! `.await`, or show it to the next task on the worker. A [`bridge`] makes such a
//! thread-local follow tasklocal's owners: tasklocal calls it on every switch (each
//! poll, `Snapshot::run`, teardown), so it mirrors what the owner holds.
//!
//! | integration | feature | what follows the task |
//! |---|---|---|
//! | `opentelemetry::install` | `opentelemetry` | `opentelemetry::Context::current()`: set with `opentelemetry::set_current`, inherited; with `http`, `extract`/`ServerLayer` make the caller's span the parent and `inject`/`ClientLayer` continue the active span |
//! | `log_mdc::install` | `log-mdc` | the `log-mdc` map, so log4rs's `{X(key)}` prints the task's [`mdc`] |
//! | [`bridge::register`] | — | any library's thread-local, with a [`bridge::Bridge`] of your own |
//!
//! # Performance
//!
//! A read of a value in a task is one thread-local access, one `RefCell` borrow and
//! a few loads: about twice a std `thread_local!` `Cell::get`. Small primitive values
//! are kept inline (no allocation, no dynamic type check); capturing the context for a
//! child is one reference-count increment, whatever the number of values (the first
//! capture after a write copies the table of values once); a task that
//! never touches its storage allocates nothing and adds two pointers to its future.
//! `docs/BENCHMARKS.md` in the repository has the numbers, side by side with
//! `thread_local!` and `task_local!`.
//!
//! # `Send` and `Sync`
//!
//! Values move with their task between threads, so they must be `Send`; inheritable
//! values are shared with children, so they must also be `Sync` and `Clone` (copy on
//! write), or be forked for each child ([`Local::inheritable_with`]). A key holds no value itself and is `Sync` for any `T`. [`Snapshot`],
//! [`TaskId`] and [`AccessError`] are `Send + Sync`; a [`Task`] is `Send` when its
//! future is.
//!
//! ```
//! fn assert_send_sync<T: Send + Sync + 'static>() {}
//! assert_send_sync::<tasklocal::Snapshot>();
//! assert_send_sync::<tasklocal::AccessError>();
//! assert_send_sync::<tasklocal::TaskId>();
//! assert_send_sync::<tasklocal::Local<std::rc::Rc<u8>>>();
//! fn assert_send<T: Send>(_: &T) {}
//! assert_send(&tasklocal::task(async { std::future::ready(1).await }));
//! ```
//!
//! ```compile_fail
//! // A Task is not Send when its future is not.
//! fn assert_send<T: Send>(_: &T) {}
//! let task = tasklocal::task(async {
//!     let rc = std::rc::Rc::new(1);
//!     std::future::ready(()).await;
//!     drop(rc);
//! });
//! assert_send(&task);
//! ```
//!
//! ```compile_fail
//! // Values must be Send: a Local<Rc<_>> can be declared but not set.
//! static RC: tasklocal::Local<std::rc::Rc<u8>> = tasklocal::Local::new();
//! RC.set(std::rc::Rc::new(1));
//! ```
//!
//! ```compile_fail
//! // Inheritable values must be Sync: they are shared with children.
//! static FLAG: tasklocal::Local<std::cell::Cell<u8>> = tasklocal::Local::inheritable();
//! ```
//!
//! ```compile_fail
//! // Dynamic values must be Send, and so must exit handlers.
//! tasklocal::set("key", std::rc::Rc::new(1));
//! ```
//!
//! ```compile_fail
//! // A reference handed to `with` cannot escape the closure.
//! static NAME: tasklocal::Local<String> = tasklocal::Local::new();
//! let name: &String = NAME.with(|name| name.unwrap());
//! ```
//!
//! # How it is built
//!
//! Four layers; each file imports only from its own layer or the ones below it
//! (`ARCHITECTURE.md` in the repository has the map):
//!
//! 1. **API**: [`Local`] (`local/mod.rs`, its reads in `local/read.rs`, its writes in
//!    `local/write.rs`), the dynamic keys ([`set`], [`get`], … in `dynamic.rs`),
//!    [`Task`], [`Snapshot`], [`TaskId`], [`AccessError`].
//! 2. **Slot access**: `local/slot.rs`, where every accessor of a [`Local`] goes when
//!    its fast path misses (no storage yet, a seed inherited, an initial value, a
//!    borrow); `local/inheritable.rs` (copy-on-write and forks of inheritable values).
//! 3. **Current owner**: `current.rs`, one const thread-local holding the current
//!    owner's frame. One function, `decide`, says which owner is current and applies
//!    the isolation rule (a plain tokio task never gets the worker thread's storage);
//!    guards switch owners and restore them, also on unwind, and call the
//!    [bridges](bridge).
//! 4. **Storage**: `storage.rs`, one owner's values, inheritable values
//!    (`storage/table.rs`: written in place and copied once per change on capture, so
//!    a [`Snapshot`] is a reference count) and exit handlers, with its teardown;
//!    `cells.rs` and `key.rs` are its tables of cells.
//!
//! Integrations — [`tokio`] and [`rayon`] (in `rt/`),
//! [`thread`], [`mdc`], `log`, `tracing`, `http` — sit on top and only call down.
//!
//! The path of `Local::get` of a value inside a [`Task`]: the key's index and kind (one
//! relaxed atomic load, `KeyIndex::place`) → `current::with_direct_storage` (the
//! current owner is a `Task`: its storage) → the key's cell (one of 8 inline cells, or
//! the inheritable table's entry) → a clone. A hit makes no call. Without the `tokio` feature a thread owner's value
//! takes this same path. Anything else leaves the inlined path once: a child's
//! inherited value is read from its seed, and, with `tokio`, a thread owner's value
//! the same way as a `Task`'s after asking tokio whether a plain tokio task runs (the
//! isolation rule); what remains goes to `local/slot.rs`, which asks `current::read`
//! (built on `decide`) what the current owner has.
//!
//! # Limitations
//!
//! * **The main thread's storage is never torn down**: Rust runs no thread-local
//!   destructors for the main thread at process exit, so its exit handlers do not run
//!   and its values are not dropped. Do request work in tasks or [`Snapshot::run`].
//! * **Executors other than tokio** see the thread's storage unless futures are wrapped
//!   with [`task`] or [`Snapshot::task`]; thread pools need [`Snapshot`] (see
//!   [`rayon`] for rayon).
//! * While a `with`/`with_mut` closure of a non-inheritable key runs, another owner
//!   cannot be entered on the same thread (see [`Local`](Local#panics)).
//! * Exit handlers registered on a thread run when it exits, from a thread-local
//!   destructor; at that point other thread-locals may already be gone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// The library only (tests and examples have `pub` helpers of their own).
#![warn(missing_debug_implementations, unreachable_pub)]
// docs.rs documents every feature and marks what each item needs (`doc_cfg` shows
// the features of items on its own since it absorbed `doc_auto_cfg`).
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs describe every feature: a build without some of them cannot resolve the
// links to the items they gate (docs.rs and CI document with all features).
#![cfg_attr(
    not(all(
        feature = "tokio",
        feature = "rayon",
        feature = "log",
        feature = "tracing",
        feature = "http",
        feature = "amqp",
        feature = "reqwest"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod bridge;
mod carried;
mod cells;
mod current;
mod dynamic;
mod error;
mod flow;
#[cfg(feature = "http")]
pub mod http;
mod id;
mod key;
mod local;
#[cfg(feature = "log")]
pub mod log;
#[cfg(feature = "log-mdc")]
pub mod log_mdc;
pub mod mdc;
mod once;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
#[cfg(feature = "reqwest")]
pub mod reqwest;
mod rt;
mod snapshot;
mod storage;
mod sync;
mod task;
pub mod thread;
#[cfg(feature = "tracing")]
pub mod tracing;
mod value;

pub use carried::Carried;
pub use dynamic::{get, remove, set, take, try_remove, try_set, try_take, with, Key};
pub use error::AccessError;
pub use flow::isolated;
pub use id::TaskId;
pub use local::Local;
pub use snapshot::Snapshot;
pub use task::{task, Task};

#[cfg(feature = "rayon")]
pub use rt::rayon;
#[cfg(feature = "tokio")]
pub use rt::tokio;
#[cfg(feature = "tokio")]
pub use rt::tokio::{spawn, spawn_blocking, spawn_local};

use error::panic_access;

/// Drops every value of the current storage now — typed, inherited and dynamic (go-tls
/// `Reset`). Exit handlers and the id stay.
///
/// ```
/// static N: tasklocal::Local<u32> = tasklocal::Local::new();
/// N.set(1);
/// tasklocal::set("k", 2u32);
/// let id = tasklocal::id();
/// tasklocal::reset();
/// assert_eq!(N.get(), None);
/// assert_eq!(tasklocal::get::<_, u32>(&"k"), None);
/// assert_eq!(tasklocal::id(), id);
/// ```
///
/// # Panics
///
/// Where [`try_reset`] returns an error: inside a `with` closure that borrows a value
/// of the storage (that value cannot be dropped while it is borrowed).
#[track_caller]
pub fn reset() {
    try_reset().unwrap_or_else(|err| panic_access(err))
}

/// Like [`reset`], returning an error instead of panicking.
///
/// ```
/// static N: tasklocal::Local<u32> = tasklocal::Local::new();
/// N.set(1);
/// let err = N.with(|_| tasklocal::try_reset()).unwrap_err();
/// assert!(err.is_borrowed());
/// assert_eq!(N.get(), Some(1));
/// ```
pub fn try_reset() -> Result<(), AccessError> {
    let (values, seed) = current::empty()?;
    // Dropped with no borrow held: a `Drop` may use the API.
    drop(values);
    drop(seed);
    values_dropped();
    Ok(())
}

/// Drops every value and discards the exit handlers **without running them** (go-tls
/// `Unload`). The next access creates a new storage, with a new [`id`].
///
/// ```
/// let before = tasklocal::id();
/// tasklocal::at_exit(|| unreachable!("discarded by unload"));
/// tasklocal::unload();
/// assert_ne!(tasklocal::id(), before);
/// ```
///
/// # Panics
///
/// Where [`try_unload`] returns an error: inside a `with` closure that borrows a value
/// of the storage.
#[track_caller]
pub fn unload() {
    try_unload().unwrap_or_else(|err| panic_access(err))
}

/// Like [`unload`], returning an error instead of panicking.
///
/// ```
/// tasklocal::set("k", 1u8);
/// let err = tasklocal::with(&"k", |_: Option<&u8>| tasklocal::try_unload()).unwrap_err();
/// assert!(err.is_borrowed());
/// assert!(tasklocal::try_unload().is_ok());
/// ```
pub fn try_unload() -> Result<(), AccessError> {
    let detached = current::detach()?;
    // `isolated` marks the owner's storage: the new one keeps the mark, made now,
    // so that children created after the unload while `isolated` runs (a `Drop` of
    // the old values may create some) still start empty.
    if detached
        .0
        .as_ref()
        .is_some_and(|storage| storage.is_isolated())
    {
        let _ = current::write(|storage| storage.set_isolated(true));
    }
    drop(detached);
    values_dropped();
    Ok(())
}

/// After [`try_reset`] and [`try_unload`]: the built-in bridges show at once what the
/// owner holds now (its MDC and OpenTelemetry context are gone with its other values),
/// as they do after every write of those values.
fn values_dropped() {
    mdc::changed();
    #[cfg(feature = "opentelemetry")]
    opentelemetry::changed();
}

/// The [`TaskId`] of the current storage (go-tls `ID`).
///
/// ```
/// let id = tasklocal::id();
/// let other = futures::executor::block_on(tasklocal::Task::isolated(async { tasklocal::id() }));
/// assert_ne!(id, other);
/// ```
///
/// # Panics
///
/// Where [`try_id`] returns an error: in a tokio task without storage of its own.
#[inline(always)]
#[track_caller]
pub fn id() -> TaskId {
    match current::with_direct_storage(|storage| Some(storage.id())) {
        Some(id) => id,
        // A tail call: the hit path makes no call and needs no stack frame.
        None => id_miss(),
    }
}

/// [`id`] when the direct fast path misses.
#[inline(never)]
#[track_caller]
fn id_miss() -> TaskId {
    try_id().unwrap_or_else(|err| panic_access(err))
}

/// Like [`id`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::try_id().is_ok());
/// ```
#[inline(always)]
pub fn try_id() -> Result<TaskId, AccessError> {
    match current::with_storage(|storage| Some(storage.id())) {
        Some(id) => Ok(id),
        None => current::write(|storage| storage.id()),
    }
}

/// Registers `f` to run when the current owner ends (go-tls `AtExit`): handlers run
/// last-registered first, while the owner's values are still readable.
///
/// A task's handlers run when it completes, is cancelled or aborted, is dropped at
/// runtime shutdown, or unwinds from a panic; a thread's at thread exit (the main
/// thread's never: see [Limitations](crate#limitations)).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// static ORDER: AtomicU32 = AtomicU32::new(0);
///
/// futures::executor::block_on(tasklocal::Task::isolated(async {
///     tasklocal::at_exit(|| assert_eq!(ORDER.fetch_add(1, Ordering::SeqCst), 1));
///     tasklocal::at_exit(|| assert_eq!(ORDER.fetch_add(1, Ordering::SeqCst), 0));
/// }));
/// assert_eq!(ORDER.load(Ordering::SeqCst), 2);
/// ```
///
/// # Panics
///
/// Where [`try_at_exit`] returns an error: in a tokio task without storage of its own.
#[track_caller]
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    if let Err(err) = try_at_exit(f) {
        panic_access(err)
    }
}

/// Like [`at_exit`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::try_at_exit(|| ()).is_ok());
/// ```
pub fn try_at_exit(f: impl FnOnce() + Send + 'static) -> Result<(), AccessError> {
    current::write(|storage| storage.push_handler(Box::new(f)))
}
