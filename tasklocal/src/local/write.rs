//! The writes of `Local<T>`: `set`, `replace`, `take`, `with_mut`, `scope`, each with
//! its `try_` twin.

use std::sync::Arc;

use crate::current;
use crate::error::{panic_access, AccessError, Kind};
use crate::storage::{Entry, Value};

use super::inheritable::{replace_inheritable, unique_mut};
use super::key_index::Place;
use super::slot::{lend_out, replace_local, LentBack, Raw, Visit};
use super::Local;

impl<T: Send + 'static> Local<T> {
    /// Sets the value, dropping the old one. Writing over a present value of a key
    /// allocates nothing.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// N.set(1);
    /// N.set(2);
    /// assert_eq!(N.get(), Some(2));
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_set`](Self::try_set) returns an error: see [`Local`].
    #[inline(always)]
    #[track_caller]
    pub fn set(&'static self, value: T) {
        match self.set_scoped(value) {
            // The old value is dropped with no borrow held: its `Drop` may use the API.
            Ok(old) => drop(old),
            // A tail call: the hit path makes no call and needs no stack frame.
            Err(value) => self.set_miss(value),
        }
    }

    /// Like [`set`](Self::set), returning an error instead of panicking.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert!(N.try_set(1).is_ok());
    /// ```
    #[inline(always)]
    pub fn try_set(&'static self, value: T) -> Result<(), AccessError> {
        match self.set_scoped(value) {
            // The old value is dropped with no borrow held: its `Drop` may use the API.
            Ok(old) => {
                drop(old);
                Ok(())
            }
            Err(value) => self.try_set_miss(value),
        }
    }

    /// [`set`](Self::set) when the direct fast path misses.
    #[inline(never)]
    #[track_caller]
    pub(super) fn set_miss(&'static self, value: T) {
        if let Err(err) = self.try_set_miss(value) {
            panic_access(err)
        }
    }

    /// Overwrites a present value in place, if the current owner is a scoped owner whose
    /// storage holds one (for an inheritable key: not captured since its last write): the
    /// old value, or `value` back.
    #[inline(always)]
    pub(super) fn set_scoped(&'static self, value: T) -> Result<T, T> {
        let mut value = Some(value);
        // Two closures, the key's kind decided outside them (from its index, one load:
        // see `KeyIndex::place`): one closure with the branch inside compiled to a
        // path 24 instructions longer.
        let old = match self.index.place() {
            Place::Inline(index) => {
                current::with_direct_storage(|storage| replace_local(storage, index, &mut value))
            }
            Place::Inheritable(index) => current::with_direct_storage(|storage| {
                replace_inheritable(storage, index, &mut value)
            }),
            Place::Elsewhere => None,
        };
        // Not `Once`: its `or` here compiled to 8 more instructions a `set`.
        match (old, value) {
            (Some(old), _) => Ok(old),
            (None, Some(value)) => Err(value),
            // `value` is only taken by the replace that produced `Some`.
            (None, None) => unreachable!(),
        }
    }

    /// [`try_set`](Self::try_set) past the direct fast path: the fast path of any owner,
    /// then the general path.
    #[inline(never)]
    pub(super) fn try_set_miss(&'static self, value: T) -> Result<(), AccessError> {
        let index = self.index();
        let mut value = Some(value);
        let old = if self.is_inheritable() {
            current::with_storage(|storage| replace_inheritable(storage, index, &mut value))
        } else {
            current::with_storage(|storage| replace_local(storage, index, &mut value))
        };
        drop(old);
        match value {
            Some(value) => self.try_set_slow(value),
            None => Ok(()),
        }
    }

    #[inline(never)]
    pub(super) fn try_set_slow(&'static self, value: T) -> Result<(), AccessError> {
        drop(self.swap_raw(self.wrap(value))?);
        Ok(())
    }

    /// Sets the value and returns the old one.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.replace(1), None);
    /// assert_eq!(N.replace(2), Some(1));
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_replace`](Self::try_replace) returns an error: see [`Local`].
    #[track_caller]
    pub fn replace(&'static self, value: T) -> Option<T> {
        self.try_replace(value)
            .unwrap_or_else(|err| panic_access(err))
    }

    /// Like [`replace`](Self::replace), returning an error instead of panicking.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.try_replace(1), Ok(None));
    /// ```
    pub fn try_replace(&'static self, value: T) -> Result<Option<T>, AccessError> {
        self.own_fork()?;
        let old = self.swap_raw(self.wrap(value))?;
        Ok(self.unwrap_raw(old))
    }

    /// Removes the value and returns it (Java's `remove`). An initial value not yet
    /// computed is not computed: the result is `None`, and the next read computes it.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 7);
    /// N.set(1);
    /// assert_eq!(N.take(), Some(1));
    /// assert_eq!(N.take(), None);
    /// assert_eq!(N.get(), Some(7));
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_take`](Self::try_take) returns an error: see [`Local`].
    #[track_caller]
    pub fn take(&'static self) -> Option<T> {
        self.try_take().unwrap_or_else(|err| panic_access(err))
    }

    /// Like [`take`](Self::take), returning an error instead of panicking.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.try_take(), Ok(None));
    /// ```
    pub fn try_take(&'static self) -> Result<Option<T>, AccessError> {
        self.own_fork()?;
        match self.visit(|_| ())? {
            Visit::Ran(()) => {}
            // Nothing to take: do not create a storage for it.
            Visit::Missing => return Ok(None),
            Visit::Detached(err) => return Err(err),
        }
        let old = self.swap_raw(self.empty())?;
        Ok(self.unwrap_raw(old))
    }

    /// Calls `f` with a mutable reference to the value, computing the initial value
    /// first if needed; `None` when there is neither a value nor an initial value. An
    /// inherited value is copied on the first write.
    ///
    /// While `f` runs, the value is lent out: other keys work as usual, but this key
    /// cannot be read or written (see [`Local`]'s `# Panics`), and a child created
    /// inside `f` (a spawn, a [`Snapshot`](crate::Snapshot)) does not inherit this key —
    /// it sees neither a half-changed value nor a stale one.
    ///
    /// ```
    /// static HITS: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 0);
    /// HITS.with_mut(|n| *n += 1);
    /// assert_eq!(HITS.with_mut(|n| *n), Some(1));
    ///
    /// static UNSET: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(UNSET.with_mut(|n| *n += 1), None);
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_with_mut`](Self::try_with_mut) returns an error: see [`Local`].
    #[track_caller]
    pub fn with_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.try_with_mut(f).unwrap_or_else(|err| panic_access(err))
    }

    /// Like [`with_mut`](Self::with_mut), returning an error instead of panicking.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.try_with_mut(|n| *n), Ok(None));
    /// ```
    pub fn try_with_mut<R>(
        &'static self,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<Option<R>, AccessError> {
        self.own_fork()?;
        match self.visit(|_| ())? {
            Visit::Ran(()) => {}
            Visit::Missing if self.init.is_some() => self.store_initial()?,
            Visit::Missing => return Ok(None),
            Visit::Detached(err) => return Err(err),
        }
        let index = self.index();
        let Some(ops) = self.inheritable else {
            let mut f = Some(f);
            return current::write(|storage| {
                let cell = storage.locals().get_or_create(index);
                let mut slot = cell
                    .try_borrow_mut()
                    .map_err(|_| AccessError::new(Kind::Borrowed))?;
                let value = slot.as_mut().and_then(Value::downcast_mut::<T>);
                Ok(value.zip(f.take()).map(|(value, f)| f(value)))
            })?;
        };
        // Take the entry out, leaving `Lent` so that reentrant access to this key fails
        // cleanly; `f` runs with no borrow held; the guard puts the entry back.
        let entry = current::write(|storage| {
            Ok::<_, AccessError>((lend_out(storage, index)?, storage.captures()))
        })??;
        let (entry, captures) = entry;
        let mut lent = LentBack { index, entry };
        if let (Some(fork), Some(Entry::Fork(forked))) = (self.fork, lent.entry.as_mut()) {
            if forked.epoch != captures || Arc::get_mut(forked).is_none() {
                // Captured since it was stored: the captured context keeps it as it
                // was, the owner's copy is a fork (the key has no other way to copy).
                if let Some(value) = forked.value.downcast_ref::<T>() {
                    let copy = fork(value);
                    // Read after `fork`, which may capture.
                    let epoch = current::write(|storage| storage.stored_fork()).unwrap_or(captures);
                    let copy = self.owned_entry(copy, forked.owner, epoch);
                    if let Entry::Fork(copy) = copy {
                        *forked = copy;
                    }
                }
            }
        }
        Ok(lent.entry.as_mut().and_then(ops.make_mut).map(f))
    }

    /// Binds `value` for the duration of `f`, then restores the previous state —
    /// including "unset" — also when `f` panics.
    ///
    /// ```
    /// static USER: tasklocal::Local<&str> = tasklocal::Local::new();
    /// USER.scope("ada", || assert_eq!(USER.get(), Some("ada")));
    /// assert_eq!(USER.get(), None);
    /// ```
    ///
    /// # Panics
    ///
    /// When the value cannot be bound (see [`Local`]), and when `f` panics.
    #[track_caller]
    #[inline]
    pub fn scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        match self.bind_scoped(value) {
            Ok((index, old)) => self.run_bound(index, old, f),
            Err(value) => self.scope_slow(value, f),
        }
    }

    /// Like [`scope`](Self::scope), returning an error instead of panicking when the
    /// value cannot be bound; `f` then does not run (and `value` is dropped).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::new();
    /// N.set(1);
    /// // Inside a borrow of the same key: refused, and `f` does not run.
    /// let err = N.with(|_| N.try_scope(2, || unreachable!())).unwrap_err();
    /// assert!(err.is_borrowed());
    /// assert_eq!(N.try_scope(2, || N.get()).unwrap(), Some(2));
    /// assert_eq!(N.get(), Some(1));
    /// ```
    ///
    /// # Errors
    ///
    /// [`AccessError`] where [`scope`](Self::scope) panics before running `f`.
    ///
    /// # Panics
    ///
    /// When `f` panics (the previous state restored first).
    pub fn try_scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> Result<R, AccessError> {
        match self.bind_scoped(value) {
            Ok((index, old)) => Ok(self.run_bound(index, old, f)),
            Err(value) => self.try_scope_slow(value, f),
        }
    }

    /// Runs `f` with a value [bound in place](Self::bind_scoped) at `index`, then puts
    /// `old` back.
    #[inline(always)]
    fn run_bound<R>(&'static self, index: usize, old: Option<T>, f: impl FnOnce() -> R) -> R {
        let mut restore = RestoreScoped {
            key: self,
            index,
            old: Some(old),
        };
        let result = f();
        // Restored here, and the guard (now empty) forgotten: its drop glue would be
        // a call. The guard's `Drop` restores when `f` unwinds.
        restore.restore();
        std::mem::forget(restore);
        result
    }

    /// [`scope`](Self::scope) past its fast path: any key, any owner.
    #[inline(never)]
    #[track_caller]
    fn scope_slow<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        self.try_scope_slow(value, f)
            .unwrap_or_else(|err| panic_access(err))
    }

    /// [`try_scope`](Self::try_scope) past its fast path.
    fn try_scope_slow<R>(&'static self, value: T, f: impl FnOnce() -> R) -> Result<R, AccessError> {
        let old = self.swap_raw(self.wrap(value))?;
        let _restore = Restore {
            key: self,
            old: Some(old),
        };
        Ok(f())
    }

    /// The fast path of [`scope`](Self::scope): a non-inheritable key among the first
    /// cells, in a scoped owner that has a storage. Binds `value` in place and returns
    /// the key's index and what the slot held (`None`: unset), for [`RestoreScoped`];
    /// else `value` back. A present value is exchanged as a `T` (for a primitive, a
    /// one-word move: the slot's `Value` wrapper stays), an unset slot gets a new
    /// `Value` (inline for a primitive).
    #[inline(always)]
    fn bind_scoped(&'static self, value: T) -> Result<(usize, Option<T>), T> {
        let Place::Inline(index) = self.index.place() else {
            return Err(value);
        };
        let mut value = Some(value);
        let old = current::with_direct_storage(|storage| {
            let mut slot = storage.locals().get_inline(index)?.try_borrow_mut().ok()?;
            match slot.as_mut() {
                Some(present) => {
                    let present = present.downcast_mut::<T>()?;
                    Some(Some(std::mem::replace(present, value.take()?)))
                }
                None => {
                    *slot = Some(Value::new(value.take()?));
                    Some(None)
                }
            }
        });
        match (old, value) {
            (Some(old), _) => Ok((index, old)),
            (None, Some(value)) => Err(value),
            // `value` is only taken by the replace that produced `Some`.
            (None, None) => unreachable!(),
        }
    }
}

/// Restores a key's previous state when `scope` ends, also by unwinding.
pub(super) struct Restore<T: Send + 'static> {
    key: &'static Local<T>,
    old: Option<Raw>,
}

impl<T: Send + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            drop(self.key.swap_raw(old));
        }
    }
}

/// [`Restore`] of a value bound by [`Local::bind_scoped`]: put back in place while
/// the owner still has the slot (the usual case; `f` may also have reset the storage
/// or borrowed the slot), else through the general path like [`Restore`].
struct RestoreScoped<T: Send + 'static> {
    key: &'static Local<T>,
    index: usize,
    /// The value before the scope (`Some(None)`: unset); `None` once restored.
    old: Option<Option<T>>,
}

impl<T: Send + 'static> RestoreScoped<T> {
    #[inline(always)]
    fn restore(&mut self) {
        let Some(mut old) = self.old.take() else {
            return;
        };
        let index = self.index;
        let mut put = false;
        // What the scope bound comes back out and is dropped after the closure, with
        // no borrow held: its `Drop` may use the API.
        let bound = current::with_direct_storage(|storage| {
            let mut slot = storage.locals().get_inline(index)?.try_borrow_mut().ok()?;
            put = true;
            Some(
                match (slot.as_mut().and_then(Value::downcast_mut::<T>), old.take()) {
                    (Some(present), Some(old)) => Ok(std::mem::replace(present, old)),
                    (_, old) => Err(std::mem::replace(&mut *slot, old.map(Value::new))),
                },
            )
        });
        match bound {
            // What the scope bound: for a primitive, nothing to drop.
            Some(Ok(bound)) => drop(bound),
            // The slot was emptied or replaced inside the scope: whatever it holds now
            // goes out of line, so that the path above keeps its registers.
            Some(Err(held)) => drop_outlined(held),
            None => {}
        }
        if !put {
            restore_outlined(self.key, old);
        }
    }

    #[cold]
    #[inline(never)]
    fn restore_unwinding(&mut self) {
        self.restore();
    }
}

impl<T: Send + 'static> Drop for RestoreScoped<T> {
    /// When `f` unwinds.
    #[inline(always)]
    fn drop(&mut self) {
        if self.old.is_some() {
            self.restore_unwinding();
        }
    }
}

/// Drops a slot's content, out of line (it may be a boxed value).
#[inline(never)]
fn drop_outlined(held: Option<Value>) {
    drop(held);
}

/// [`RestoreScoped`] past its fast path.
#[cold]
#[inline(never)]
fn restore_outlined<T: Send + 'static>(key: &'static Local<T>, old: Option<T>) {
    drop(key.swap_raw(Raw::Local(old.map(Value::new))));
}

impl<T: Send + 'static> Local<T> {
    /// [`try_with_mut`](Self::try_with_mut) of an inheritable key, in place: `f` runs
    /// on the current owner's value under the borrow of its inheritable entries, when
    /// the value is not shared with a child or a snapshot and the key is not
    /// `inheritable_with` (the storage is created, and the entries made the owner's
    /// own, first if need be). Otherwise `f` comes back and the caller takes
    /// `try_with_mut`. The same write in place as
    /// [`set`](Self::set)'s fast path, for crate code whose `f` runs no user code and
    /// touches no key (`mdc::insert`).
    #[inline]
    pub(crate) fn with_mut_in_place<R, F: FnOnce(&mut T) -> R>(
        &'static self,
        f: F,
    ) -> Result<R, F> {
        let mut f = Some(f);
        if let (Some(index), true, None) = (self.index.assigned(), self.is_inheritable(), self.fork)
        {
            let done = current::with_storage(|storage| {
                let mut inherited = storage.inheritables().try_borrow_mut().ok()?;
                let entries = inherited.own_uncaptured()?;
                let value = unique_mut::<T>(entries.get_mut(index)?)?;
                Some(f.take()?(value))
            });
            if let Some(r) = done {
                return Ok(r);
            }
            if let Some(r) = self.with_mut_in_place_owning(index, &mut f) {
                return Ok(r);
            }
        }
        match f {
            Some(f) => Err(f),
            // `f` is only taken by the call that returned `Some`.
            None => unreachable!(),
        }
    }

    /// [`with_mut_in_place`](Self::with_mut_in_place) past its fast path: the storage
    /// created if the owner has none yet, its inheritable entries made its own (moved
    /// from a seed nobody else holds, as a request's task's is, else copied), then `f`
    /// in place if the value is not shared. The first MDC write of a request, with no
    /// lending of the value and no copy of the map.
    #[inline(never)]
    fn with_mut_in_place_owning<R, F: FnOnce(&mut T) -> R>(
        &'static self,
        index: usize,
        f: &mut Option<F>,
    ) -> Option<R> {
        current::write(|storage| {
            storage.inheritables_mut(|entries| {
                let value = unique_mut::<T>(entries.get_mut(index)?)?;
                Some(f.take()?(value))
            })
        })
        .ok()
        .flatten()
        .flatten()
    }
}
