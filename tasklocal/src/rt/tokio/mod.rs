//! tokio: tasks that own a storage — each one wrapped ([`spawn`], [`spawn_blocking`],
//! [`spawn_local`], or [`task`](crate::task) with any spawner), or every task of a
//! runtime at once in [automatic mode](#automatic-mode).
//!
//! A task spawned with plain `tokio::spawn` on a runtime without automatic mode has
//! no storage of its own, and never falls back to the worker thread's (values would
//! bleed between the tasks of a worker): reads there see nothing set, writes panic
//! with a message naming the fix, and the `try_` forms return an
//! [`AccessError`](crate::AccessError).
//!
//! # Automatic mode
//!
//! `tasklocal::tokio::install(&mut Builder)` gives every task of a runtime its own
//! storage with no wrapper — also the tasks that hyper, axum, tonic or any other crate
//! spawns: created at spawn with the spawner's inheritable values, current during
//! each poll, torn down when the task terminates (completion, abort, panic, runtime
//! shutdown): exit handlers last-registered first with values readable, then values
//! dropped. This is go-tls's promise, "TLS for any goroutine", on tokio.
//!
//! ```
//! # #[cfg(tokio_unstable)] {
//! static REQUEST_ID: tasklocal::Local<u64> = tasklocal::Local::inheritable();
//!
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! tasklocal::tokio::install(builder.enable_all());
//! let rt = builder.build().unwrap();
//! rt.block_on(async {
//!     let tasks: Vec<_> = (0..100)
//!         .map(|i| {
//!             tokio::spawn(async move {
//!                 REQUEST_ID.set(i); // every task its own value
//!                 tokio::task::yield_now().await;
//!                 assert_eq!(REQUEST_ID.get(), Some(i));
//!                 tokio::spawn(async { REQUEST_ID.get() }).await.unwrap() // inherited
//!             })
//!         })
//!         .collect();
//!     for (i, task) in tasks.into_iter().enumerate() {
//!         assert_eq!(task.await.unwrap(), Some(i as u64));
//!     }
//! });
//! # }
//! ```
//!
//! ## Enabling it
//!
//! Automatic mode rests on tokio's task hooks (`on_task_spawn`,
//! `on_before_task_poll`, `on_after_task_poll`, `on_task_terminate`), which tokio
//! ships as an unstable API, compiled only when the whole build has
//! `--cfg tokio_unstable`. Without that cfg, `install`, `install_with` and `Hooks`
//! do not exist. To enable it:
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" cargo build
//! ```
//!
//! or, for a project, in `.cargo/config.toml`:
//!
//! ```toml
//! [build]
//! rustflags = ["--cfg", "tokio_unstable"]
//! ```
//!
//! (and `RUSTDOCFLAGS="--cfg tokio_unstable"` for `cargo doc` and doctests). tokio
//! may change its unstable API in any 1.x release; automatic mode is tested against
//! tokio 1.54. The wrappers ([`spawn`], [`spawn_blocking`], [`spawn_local`],
//! [`task`](crate::task)) are the stable path: they need no cfg, work on every
//! runtime, and keep working inside a runtime in automatic mode.
//!
//! tokio keeps one callback per hook, and a later call replaces an earlier one: call
//! `install` last, or hand your own callbacks to `install_with` (see `Hooks`).
//!
//! ## What has which storage
//!
//! | code | storage in automatic mode |
//! |---|---|
//! | a task spawned by `tokio::spawn`, `Handle::spawn`, `JoinSet`, or inside any crate | its own, seeded from the spawner's inheritable values |
//! | the future given to `Runtime::block_on` | not a task: the calling thread's |
//! | a `tasklocal::spawn`/`task` future | its own, innermost: while it is polled, it is current, and the enclosing task's storage is current again around it |
//! | a `block_in_place` closure | the calling task's (it runs inside that task's poll) |
//! | a plain `tokio::task::spawn_blocking` closure | none: tokio calls no spawn hook for blocking tasks, so there is nothing to inherit from. Reads see nothing set, writes panic (`try_` forms return `Err`) — never a value left on the reused blocking thread. Use [`spawn_blocking`] to run with the spawner's context |
//! | a task spawned on a `LocalSet` with plain `spawn_local` | tokio calls no hooks for `LocalSet` tasks: they have no storage of their own and run in the storage of whatever polls the `LocalSet`. Use [`spawn_local`] |
//!
//! ## Things to know
//!
//! * **A storage per task, not per request.** hyper serves the requests of one HTTP/1
//!   keep-alive connection one after another in the connection's task, so those
//!   requests share a storage: set per-request values at the start of the request
//!   (`set` replaces), or bind them with `Local::scope`.
//! * **`JoinHandle` may resolve before the teardown.** tokio wakes the `JoinHandle`
//!   before it calls the terminate hook, so `handle.await` can return while the
//!   task's exit handlers still run on its worker. Wait for what a handler signals,
//!   not for the handle, when you need the teardown done (a `Task` tears down before
//!   it completes).
//! * **Shutdown drops futures outside any poll.** When the runtime shuts down with
//!   pending tasks, tokio drops their futures before calling the terminate hook: a
//!   `Drop` in such a future runs without the task's storage (it sees nothing set; or
//!   the task's own values, when the shutdown overtakes the end of the task's last
//!   poll — never another owner's).
//!   The exit handlers and values are torn down right after, with the storage current.
//! * **Cost.** The task's frame is swapped in lazily: a poll that never touches the
//!   API only marks the thread's owner pending (no lock, no switch, about 80
//!   instructions over a runtime without hooks, where a bare `yield_now` poll of a
//!   current-thread runtime takes about 930; callgrind). The first access of a poll
//!   swaps the task's frame in from its cell in a table indexed by task id, whose lock
//!   the poll then holds: one atomic lock and one unlock, no allocation. The next
//!   few polls of a task that did so switch at their start, as a task that touches
//!   the API once tends to touch it again: a task that reads a value in every poll
//!   pays about 320 instructions a poll in all. Tasks whose cell (task id
//!   modulo 4096) is taken by another live task go to a sharded map, switched at the
//!   start of each poll: two lock round trips a poll. With [bridges](crate::bridge)
//!   registered, every poll switches at its start (the bridged library's
//!   thread-local must follow the task even when it never calls tasklocal). Spawning
//!   adds a try-lock of the child's cell and the O(1) capture of the spawner's
//!   inheritable values (read in the spawner's cell, under its lock, when its window
//!   is pending); a task that never touched its storage ends for the price of a lock
//!   round trip and a reference count. The `automatic` benchmark of the
//!   `tasklocal-benches` crate measures it side by side with a runtime without hooks,
//!   and `benches/examples/hotpath_auto.rs` counts the instructions.

use std::future::Future;

use ::tokio::task::JoinHandle;

use crate::snapshot::Snapshot;
use crate::task::task;

#[cfg(tokio_unstable)]
mod auto;
#[cfg(tokio_unstable)]
pub use auto::{install, install_with, Hooks};

/// Spawns `future` on the current tokio runtime as a [`Task`](crate::Task) that
/// inherits the caller's inheritable values: `tokio::spawn(tasklocal::task(future))`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// static REQUEST_ID: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// REQUEST_ID.set(1);
/// let seen = tasklocal::spawn(async { REQUEST_ID.get() }).await.unwrap();
/// assert_eq!(seen, Some(1));
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime, like `tokio::spawn`.
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    ::tokio::spawn(task(future))
}

/// Runs `f` on tokio's blocking pool as an owner that inherits the caller's
/// inheritable values: `tokio::task::spawn_blocking` with the context.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// static REQUEST_ID: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// REQUEST_ID.set(1);
/// let seen = tasklocal::spawn_blocking(|| REQUEST_ID.get()).await.unwrap();
/// assert_eq!(seen, Some(1));
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime, like `tokio::task::spawn_blocking`.
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let snapshot = Snapshot::capture();
    ::tokio::task::spawn_blocking(move || snapshot.run(f))
}

/// Spawns `future` on the current [`LocalSet`](::tokio::task::LocalSet) as a
/// [`Task`](crate::Task) that inherits the caller's inheritable values.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// static N: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// N.set(1);
/// let local = tokio::task::LocalSet::new();
/// let seen = local.run_until(async { tasklocal::spawn_local(async { N.get() }).await }).await;
/// assert_eq!(seen.unwrap(), Some(1));
/// # }
/// ```
///
/// # Panics
///
/// Outside a `LocalSet`, like `tokio::task::spawn_local`.
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    ::tokio::task::spawn_local(task(future))
}
