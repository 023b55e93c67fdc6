//! [`TaskId`]: the identity of one storage.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::num::NonZeroU64;

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

/// The next id to hand out.
#[cfg(not(all(test, tasklocal_loom)))]
static NEXT: AtomicU64 = AtomicU64::new(1);
// loom's atomics are not `const`; its `lazy_static` starts afresh in every execution.
#[cfg(all(test, tasklocal_loom))]
::loom::lazy_static! {
    static ref NEXT: AtomicU64 = AtomicU64::new(1);
}

impl TaskId {
    /// A fresh id, never handed out before.
    pub(crate) fn next() -> TaskId {
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

#[cfg(all(test, tasklocal_loom))]
mod loom_models {
    use super::TaskId;
    use ::loom::thread;

    /// Ids drawn at once on three threads are all distinct and never zero.
    #[test]
    fn loom_ids_are_unique_across_threads() {
        ::loom::model(|| {
            let draw = || [TaskId::next(), TaskId::next()];
            let a = thread::spawn(draw);
            let b = thread::spawn(draw);
            let mut ids: Vec<TaskId> = draw().to_vec();
            ids.extend(a.join().unwrap());
            ids.extend(b.join().unwrap());
            assert!(ids.iter().all(|id| id.as_u64() > 0));
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 6, "an id was handed out twice");
        });
    }
}
