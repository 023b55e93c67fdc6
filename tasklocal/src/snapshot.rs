//! [`Snapshot`]: captured inheritable values, and how they seed new owners.

use std::fmt;
use std::future::Future;

use crate::current::{self, Frame};
use std::sync::Arc;

use crate::local::Local;
use crate::storage::{Entry, Inheritables};
use crate::task::Task;

/// The inheritable values of an owner, captured in O(1): how context crosses into
/// thread pools and executors, like TransmittableThreadLocal's capture/replay.
///
/// A snapshot is immutable: later writes by the owner it came from are not seen,
/// and owners seeded from it never write back (Python's `contextvars`, .NET's
/// `AsyncLocal`).
///
/// ```
/// use tasklocal::{Local, Snapshot};
/// static TENANT: Local<String> = Local::inheritable();
///
/// TENANT.set("acme".into());
/// let snapshot = Snapshot::capture();
/// TENANT.set("other".into());
///
/// // Any thread, any pool: run with the captured context.
/// let seen = std::thread::spawn(move || snapshot.run(|| TENANT.get()))
///     .join()
///     .unwrap();
/// assert_eq!(seen.as_deref(), Some("acme"));
/// ```
#[derive(Clone, Default)]
pub struct Snapshot {
    inherited: Option<Inheritables>,
}

impl Snapshot {
    /// Captures the inheritable values of the current owner: one reference-count
    /// increment, whatever their number (values are shared, copied on write).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let s = tasklocal::Snapshot::capture();
    /// assert_eq!(s.run(|| N.get()), Some(1));
    /// ```
    #[inline]
    pub fn capture() -> Snapshot {
        Snapshot {
            inherited: current::capture(),
        }
    }

    /// A snapshot with no values.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// assert_eq!(tasklocal::Snapshot::empty().run(|| N.get()), None);
    /// ```
    pub const fn empty() -> Snapshot {
        Snapshot { inherited: None }
    }

    /// Runs `f` as a new owner seeded from this snapshot. When `f` returns or
    /// panics, the owner ends: its exit handlers run and its values are dropped.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let s = tasklocal::Snapshot::capture();
    /// s.run(|| {
    ///     N.set(2);
    ///     assert_eq!(N.get(), Some(2));
    /// });
    /// assert_eq!(N.get(), Some(1));
    /// ```
    ///
    /// # Panics
    ///
    /// When called inside a `with`/`with_mut` closure of a non-inheritable key on this
    /// thread (see [`Local`](crate::Local#panics)), and when `f` panics.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        current::run_and_finish(Frame::new(self.inherited.clone()), f)
    }

    /// A copy of this snapshot in which the inheritable `key` has `value`: how a
    /// context that arrives from outside (an HTTP header, a message) is turned into the
    /// seed of the owner that handles it. A key that is not inheritable is never
    /// inherited, so it is left out.
    ///
    /// ```
    /// use tasklocal::{Local, Snapshot};
    /// static REQUEST_ID: Local<String> = Local::inheritable();
    ///
    /// let seed = Snapshot::empty().with_value(&REQUEST_ID, "req-7".to_string());
    /// assert_eq!(seed.get(&REQUEST_ID).as_deref(), Some("req-7"));
    /// assert_eq!(seed.run(|| REQUEST_ID.get()).as_deref(), Some("req-7"));
    /// ```
    #[must_use = "returns a new snapshot; `self` is unchanged"]
    pub fn with_value<T: Clone + Send + Sync + 'static>(
        &self,
        key: &'static Local<T>,
        value: T,
    ) -> Snapshot {
        let Some((index, entry)) = key.inheritable_entry(value) else {
            return self.clone();
        };
        let mut entries = self.inherited.as_deref().cloned().unwrap_or_default();
        if entries.len() <= index {
            entries.resize_with(index + 1, Entry::default);
        }
        entries[index] = entry;
        Snapshot {
            inherited: Some(Arc::new(entries)),
        }
    }

    /// [`with_value`](Snapshot::with_value) in place: when this snapshot is the only
    /// holder of its entries (a seed being built, as `http::extract` does), they are
    /// written without being copied.
    #[cfg(feature = "http")]
    pub(crate) fn set_value<T: Clone + Send + Sync + 'static>(
        &mut self,
        key: &'static Local<T>,
        value: T,
    ) {
        let Some((index, entry)) = key.inheritable_entry(value) else {
            return;
        };
        let entries = Arc::make_mut(self.inherited.get_or_insert_with(Default::default));
        if entries.len() <= index {
            entries.resize_with(index + 1, Entry::default);
        }
        entries[index] = entry;
    }

    /// The value of the inheritable `key` in this snapshot (initial values are not
    /// computed; the value of an [`inheritable_with`](Local::inheritable_with) key as
    /// captured, not forked).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(3);
    /// assert_eq!(tasklocal::Snapshot::capture().get(&N), Some(3));
    /// assert_eq!(tasklocal::Snapshot::empty().get(&N), None);
    /// ```
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &'static Local<T>) -> Option<T> {
        key.inheritable_value(self.inherited.as_deref()?)
    }

    /// Wraps `future` in a [`Task`] seeded from this snapshot.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let s = tasklocal::Snapshot::capture();
    /// N.set(2);
    /// assert_eq!(futures::executor::block_on(s.task(async { N.get() })), Some(1));
    /// ```
    pub fn task<F: Future>(&self, future: F) -> Task<F> {
        Task::with_frame(future, Frame::new(self.inherited.clone()))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.inherited.as_ref().map_or(0, |i| {
            i.iter()
                .filter(|e| matches!(e, Entry::Value(_) | Entry::Small(_) | Entry::Fork(_)))
                .count()
        });
        f.debug_struct("Snapshot").field("values", &values).finish()
    }
}
