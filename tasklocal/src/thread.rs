//! Threads that inherit their creator's context.

use std::thread::JoinHandle;

use crate::snapshot::Snapshot;

/// Spawns a thread like [`std::thread::spawn`], running `f` as an owner that starts
/// with the caller's inheritable values. The owner ends when `f` returns or panics:
/// its exit handlers run and its values are dropped, before the thread exits.
///
/// ```
/// static USER: tasklocal::Local<&str> = tasklocal::Local::inheritable();
/// USER.set("ada");
/// let seen = tasklocal::thread::spawn(|| USER.get()).join().unwrap();
/// assert_eq!(seen, Some("ada"));
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let snapshot = Snapshot::capture();
    std::thread::spawn(move || snapshot.run(f))
}

/// Spawns a scoped thread like [`std::thread::Scope::spawn`], inheriting the
/// caller's inheritable values.
///
/// ```
/// static USER: tasklocal::Local<&str> = tasklocal::Local::inheritable();
/// USER.set("ada");
/// let mut seen = None;
/// std::thread::scope(|s| {
///     tasklocal::thread::spawn_scoped(s, || seen = USER.get());
/// });
/// assert_eq!(seen, Some("ada"));
/// ```
pub fn spawn_scoped<'scope, 'env, F, T>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: F,
) -> std::thread::ScopedJoinHandle<'scope, T>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    let snapshot = Snapshot::capture();
    scope.spawn(move || snapshot.run(f))
}
