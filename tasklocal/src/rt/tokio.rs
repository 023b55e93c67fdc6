//! tokio: spawning tasks that own a storage.

use std::future::Future;

use ::tokio::task::JoinHandle;

use crate::snapshot::Snapshot;
use crate::task::task;

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
