//! [`TaskId`]: the identity of one storage.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// The identity of one storage (one task, one `Snapshot::run`, one thread), as
/// returned by [`id()`](crate::id) — go-tls's `ID()`.
///
/// Ids are unique among all storages for the life of the process and never reused;
/// [`unload`](crate::unload) gives the owner a new storage and so a new id.
///
/// # Examples
///
/// ```
/// let a = tasklocal::id();
/// assert_eq!(a, tasklocal::id());
/// let b = std::thread::spawn(tasklocal::id).join().unwrap();
/// assert_ne!(a, b);
/// println!("{a} {}", a.as_u64());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(NonZeroU64);

impl TaskId {
    /// A fresh id, never handed out before.
    pub(crate) fn next() -> TaskId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed is enough: only uniqueness matters. 2^64 ids are never exhausted.
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        TaskId(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN))
    }

    /// The id as a number (never zero).
    ///
    /// ```
    /// assert!(tasklocal::id().as_u64() > 0);
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
