//! rayon: running parallel work with the caller's context.
//!
//! rayon's workers are plain threads shared by every caller, so each piece of work
//! must carry its context explicitly. Each function here captures a
//! [`Snapshot`] where the work is created and runs the work as a
//! new owner seeded from it (torn down when the work returns), exactly like
//! [`tasklocal::spawn`](crate::spawn) does for tokio.
//!
//! For parallel iterators, wrap the closure with [`wrap`]:
//!
//! ```
//! use rayon::prelude::*;
//! static REQUEST_ID: tasklocal::Local<u64> = tasklocal::Local::inheritable();
//!
//! REQUEST_ID.set(42);
//! let ids: Vec<Option<u64>> = (0..100)
//!     .into_par_iter()
//!     .map(tasklocal::rayon::wrap(|_| REQUEST_ID.get()))
//!     .collect();
//! assert!(ids.iter().all(|id| *id == Some(42)));
//! ```

use crate::snapshot::Snapshot;

/// Like [`rayon::spawn`], with the caller's context.
///
/// ```
/// static N: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// N.set(7);
/// let (tx, rx) = std::sync::mpsc::channel();
/// tasklocal::rayon::spawn(move || tx.send(N.get()).unwrap());
/// assert_eq!(rx.recv().unwrap(), Some(7));
/// ```
pub fn spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let snapshot = Snapshot::capture();
    ::rayon::spawn(move || snapshot.run(f));
}

/// Like [`rayon::join`], with the caller's context in both closures. Each closure
/// is an owner of its own: its writes are seen neither by the other nor by the
/// caller.
///
/// ```
/// static N: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// N.set(7);
/// let (a, b) = tasklocal::rayon::join(|| N.get(), || N.get());
/// assert_eq!((a, b), (Some(7), Some(7)));
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let snapshot = Snapshot::capture();
    ::rayon::join(|| snapshot.run(a), || snapshot.run(b))
}

/// Like [`rayon::ThreadPool::install`], with the caller's context.
///
/// ```
/// static N: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// N.set(7);
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
/// assert_eq!(tasklocal::rayon::install(&pool, || N.get()), Some(7));
/// ```
pub fn install<F, R>(pool: &::rayon::ThreadPool, f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let snapshot = Snapshot::capture();
    pool.install(|| snapshot.run(f))
}

/// Wraps a closure for a parallel iterator (`map`, `for_each`, `filter`, …) so that
/// every call runs with the context captured now, as an owner of its own.
///
/// ```
/// use rayon::prelude::*;
/// static N: tasklocal::Local<u64> = tasklocal::Local::inheritable();
/// N.set(7);
/// let sum: u64 = (0..10u64)
///     .into_par_iter()
///     .map(tasklocal::rayon::wrap(|x| x * N.get().unwrap()))
///     .sum();
/// assert_eq!(sum, 45 * 7);
/// ```
pub fn wrap<T, R, F>(f: F) -> impl Fn(T) -> R + Send + Sync
where
    F: Fn(T) -> R + Send + Sync,
{
    let snapshot = Snapshot::capture();
    move |item| snapshot.run(|| f(item))
}
