//! [`isolated`]: starting owners that inherit nothing (.NET's `SuppressFlow`).

use crate::current::{self, Here};

/// Runs `f` so that every owner created while it runs starts empty: tasks made by
/// [`spawn`](crate::spawn), [`task`](crate::task), [`spawn_blocking`](crate::spawn_blocking),
/// [`thread::spawn`](crate::thread::spawn), [`rayon`](crate::rayon), tasks spawned
/// in [automatic mode](crate::tokio#automatic-mode), and every
/// [`Snapshot::capture`](crate::Snapshot::capture) (so also a
/// [`Carried`](crate::Carried)) inherit nothing. .NET's `ExecutionContext.SuppressFlow`:
/// it keeps request data out of long-lived background work started during a request.
///
/// The caller's own reads and writes are unaffected, and so are owners entered while
/// `f` runs (a [`Task`](crate::Task) polled inside `f` spawns with its own values).
/// Calls nest; the previous state comes back when `f` returns or panics. An
/// [`unload`](crate::unload) inside `f` does not end it.
///
/// ```
/// use tasklocal::Local;
/// static REQUEST_ID: Local<u64> = Local::inheritable();
///
/// REQUEST_ID.set(7);
/// let background = tasklocal::isolated(|| {
///     assert_eq!(REQUEST_ID.get(), Some(7)); // the caller still sees its values
///     tasklocal::thread::spawn(|| REQUEST_ID.get())
/// });
/// assert_eq!(background.join().unwrap(), None); // the child inherited nothing
/// assert_eq!(tasklocal::thread::spawn(|| REQUEST_ID.get()).join().unwrap(), Some(7));
/// ```
///
/// With tokio:
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// static USER: tasklocal::Local<&str> = tasklocal::Local::inheritable();
/// tasklocal::spawn(async {
///     USER.set("ada");
///     // A cache refresher outlives the request: it must not carry the request's user.
///     let refresher = tasklocal::isolated(|| tasklocal::spawn(async { USER.get() }));
///     assert_eq!(refresher.await.unwrap(), None);
///     assert_eq!(USER.get(), Some("ada"));
/// })
/// .await
/// .unwrap();
/// # }
/// # #[cfg(not(feature = "tokio"))] fn main() {}
/// ```
///
/// # Panics
///
/// When `f` panics (the isolation ends first).
pub fn isolated<R>(f: impl FnOnce() -> R) -> R {
    /// Ends this isolation, also when `f` unwinds: the owner current again after `f`
    /// is the one that called `isolated`.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            current::read(|here| {
                if let Here::Storage(storage) = here {
                    storage.set_isolated(self.0);
                }
            });
        }
    }
    // A mark in the current owner's storage (created for it), so that another owner
    // entered while `f` runs is not affected, and capture's fast path pays nothing.
    // Where there is no storage (a plain tokio task, a thread being torn down),
    // children inherit nothing anyway.
    let Ok(previous) = current::write(|storage| storage.set_isolated(true)) else {
        return f();
    };
    let _restore = Restore(previous);
    f()
}
