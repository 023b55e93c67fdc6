//! The reads of `Local<T>`: `get`, `with`, `is_set`, each with its `try_` twin.

use crate::current;
use crate::error::{panic_access, AccessError, Kind};
use crate::storage::{Entry, Storage};

use super::key_index::Place;
use super::slot::Visit;
use super::Local;

impl<T: Send + 'static> Local<T> {
    /// Whether a value is present (an initial value counts once computed).
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 0);
    /// assert!(!N.is_set());
    /// N.get();
    /// assert!(N.is_set());
    /// ```
    pub fn is_set(&'static self) -> bool {
        // A value lent to an enclosing `with_mut` is present too.
        matches!(self.visit(|_| ()), Ok(Visit::Ran(())) | Err(_))
    }

    /// Calls `f` with a reference to the value: the value, or the initial value, or
    /// `None`.
    ///
    /// ```
    /// static NAME: tasklocal::Local<String> = tasklocal::Local::new();
    /// NAME.set("ada".into());
    /// assert_eq!(NAME.with(|n| n.map(|n| n.len())), Some(3));
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_with`](Self::try_with) returns an error: see [`Local`].
    #[inline]
    #[track_caller]
    pub fn with<R>(&'static self, f: impl FnOnce(Option<&T>) -> R) -> R {
        self.try_with(f).unwrap_or_else(|err| panic_access(err))
    }

    /// Like [`with`](Self::with), returning an error instead of panicking (when the
    /// value is being mutated by an enclosing [`with_mut`](Self::with_mut)).
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 1);
    /// assert_eq!(N.try_with(|n| n.copied()), Ok(Some(1)));
    /// ```
    #[inline]
    pub fn try_with<R>(&'static self, f: impl FnOnce(Option<&T>) -> R) -> Result<R, AccessError> {
        let mut f = Some(f);
        if let Place::Inline(index) = self.index.place() {
            // Fast path: a non-inheritable value is read in place, under the borrow.
            let fast = current::with_storage(|storage| {
                let slot = storage.locals().get_inline(index)?.try_borrow().ok()?;
                let value = slot.as_ref()?.downcast_ref::<T>()?;
                Some(f.take()?(Some(value)))
            });
            if let Some(r) = fast {
                return Ok(r);
            }
        }
        match f {
            Some(f) => self.with_slow(f),
            None => Err(AccessError::new(Kind::Borrowed)),
        }
    }

    /// [`try_with`](Self::try_with) of an inheritable key inside a scoped owner, read
    /// in place under the borrow of the owner's inheritable entries (or its seed), with
    /// no clone of the entry: for crate code whose `f` runs no user code and never
    /// writes (`mdc::get`). Anything else — a thread owner, a value to fork, an unset
    /// key, a value lent out — takes `try_with`.
    #[inline]
    pub(crate) fn with_in_place<R>(
        &'static self,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, AccessError> {
        debug_assert!(
            self.is_inheritable(),
            "`with_in_place` of a non-inheritable key"
        );
        let mut f = Some(f);
        // With no index yet, one beyond any table: a miss, to `try_with`.
        let index = self.index.assigned_or_beyond();
        let fast = self.with_direct_entry(index, |entry| {
            // Looked at before `f` is taken: with no value, `f` goes to `try_with`.
            let value = entry.get::<T>()?;
            Some(f.take()?(Some(value)))
        });
        if let Some(r) = fast {
            return Ok(r);
        }
        match f {
            Some(f) => self.try_with(f),
            None => Err(AccessError::new(Kind::Borrowed)),
        }
    }

    /// [`try_with`](Self::try_with) of an inheritable key inside a scoped owner, with
    /// no borrow held while `f` runs: `f` reads a clone of the owner's entry (a
    /// reference count increment, not a copy of the value), taken with no call on the
    /// way. `f` may run user code and use the whole API (`MdcLogger` hands
    /// the MDC to an inner logger). Anything else — a thread owner, a value to fork,
    /// an unset key, a value lent out — takes `try_with`.
    #[inline]
    pub(crate) fn with_shared<R>(
        &'static self,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, AccessError> {
        debug_assert!(
            self.is_inheritable(),
            "`with_shared` of a non-inheritable key"
        );
        // A value of this key, ready to read (not lent out, not to fork). With no index
        // yet, one beyond any table: a miss, to `try_with`.
        let index = self.index.assigned_or_beyond();
        let entry = self.with_direct_entry(index, |entry| entry.get::<T>().map(|_| entry.clone()));
        if let Some(entry) = entry {
            return Ok(f(entry.get::<T>()));
        }
        self.try_with(f)
    }

    /// `look` at this inheritable key's entry in the current direct owner (a scoped
    /// owner; without the `tokio` feature, also the thread): in its table of
    /// inheritable values, or, while it has no storage, in the seed it inherited.
    /// `None` when the owner is not direct, the table is borrowed, or there is no
    /// entry. The one way the in-place readers (`with_in_place`, `with_shared`,
    /// `try_get_miss`) find an entry.
    #[inline(always)]
    fn with_direct_entry<R>(
        &self,
        index: usize,
        look: impl FnOnce(&Entry) -> Option<R>,
    ) -> Option<R> {
        self.with_direct_slot(index, |entry| look(entry?))
    }

    /// [`with_direct_entry`](Self::with_direct_entry), also when the direct owner has
    /// no entry for this key (`look` gets `None`: beyond its table, or no seed), so
    /// that a miss can be told from an owner that is not direct.
    #[inline(always)]
    fn with_direct_slot<R>(
        &self,
        index: usize,
        look: impl FnOnce(Option<&Entry>) -> Option<R>,
    ) -> Option<R> {
        current::with_direct_frame(|frame| match frame {
            Ok(storage) => look(storage.inheritables().try_borrow().ok()?.get(index)),
            Err(seed) => look(seed.and_then(|seed| seed.get(index))),
        })
    }

    /// [`try_with`](Self::try_with) past its fast path: the value, else the initial
    /// value (stored now, when there is a storage to keep it in), else `None`.
    #[inline(never)]
    pub(super) fn with_slow<R>(
        &'static self,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, AccessError> {
        self.own_fork()?;
        let (f, found) = match self.with_present(f)? {
            Ok(r) => return Ok(r),
            Err(back) => back,
        };
        match found {
            Visit::Missing if self.init.is_some() => {
                self.store_initial()?;
                match self.with_present(f)? {
                    Ok(r) => Ok(r),
                    Err((f, _)) => Ok(f(None)),
                }
            }
            // No storage to keep it in: the initial value is computed, not stored.
            Visit::Detached(_) => Ok(f(self.initial_value()?.as_ref())),
            _ => Ok(f(None)),
        }
    }

    /// Calls `f` with the value if there is one, else hands `f` back with what was
    /// found instead. An inheritable value is read through a clone of its entry, so
    /// that `f` runs with no borrow held; any other under the borrow of its cell.
    #[allow(clippy::type_complexity)]
    fn with_present<R, F: FnOnce(Option<&T>) -> R>(
        &'static self,
        f: F,
    ) -> Result<Result<R, (F, Visit<()>)>, AccessError> {
        if self.is_inheritable() {
            return Ok(match self.entry_clone()? {
                Visit::Ran(entry) => Ok(f(entry.get_any::<T>())),
                Visit::Missing => Err((f, Visit::Missing)),
                Visit::Detached(err) => Err((f, Visit::Detached(err))),
            });
        }
        let mut f = Some(f);
        match (self.visit(|value| f.take().map(|f| f(Some(value))))?, f) {
            (Visit::Ran(Some(r)), _) => Ok(Ok(r)),
            (Visit::Missing, Some(f)) => Ok(Err((f, Visit::Missing))),
            (Visit::Detached(err), Some(f)) => Ok(Err((f, Visit::Detached(err)))),
            // `f` is only taken by the visit that ran it.
            _ => Err(AccessError::new(Kind::Borrowed)),
        }
    }
}

impl<T: Send + Clone + 'static> Local<T> {
    /// A clone of the value, or the initial value, or `None`.
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.get(), None);
    /// N.set(3);
    /// assert_eq!(N.get(), Some(3));
    /// ```
    ///
    /// # Panics
    ///
    /// Where [`try_get`](Self::try_get) returns an error: see [`Local`].
    #[inline(always)]
    #[track_caller]
    pub fn get(&'static self) -> Option<T> {
        match self.get_direct() {
            Some(value) => Some(value),
            // A tail call: the hit path makes no call and needs no stack frame.
            None => self.get_miss(),
        }
    }

    /// [`get`](Self::get) when the direct fast path misses: to the fast path of the
    /// common miss of the key's kind. Only tail calls, so it needs no stack frame.
    #[inline(never)]
    #[track_caller]
    pub(super) fn get_miss(&'static self) -> Option<T> {
        // The kind from the key, not from `place()`: this function is out of line, and
        // a match on the three places compiled here to a chain of conditional moves 11
        // instructions longer on a child's first read of what it inherited.
        if self.is_inheritable() {
            // With no index yet, one beyond any seed: to `get_general` from there.
            return self.get_inherited_miss(self.index.assigned_or_beyond());
        }
        match self.index.place() {
            Place::Inline(index) => self.get_thread_miss(index),
            // Beyond the inline cells, or no index yet.
            _ => self.get_general(),
        }
    }

    /// [`get_miss`](Self::get_miss) of a non-inheritable key: a read outside any
    /// `Task`, from the thread's own storage (after asking tokio that no plain tokio
    /// task runs here), written out here rather than reached through `try_get_miss`;
    /// or a read of a key the current owner does not hold.
    #[inline(never)]
    #[track_caller]
    fn get_thread_miss(&'static self, index: usize) -> Option<T> {
        let thread =
            current::with_storage_outside_tokio(|storage| self.read_local_in(storage, index));
        if thread.is_some() {
            return thread;
        }
        // A key with no initial value that a direct owner does not hold: `None`, with
        // no trip through the general path.
        let absent = self.init.is_none()
            && current::with_direct_frame(|frame| match frame {
                Ok(storage) => Some(
                    storage
                        .locals()
                        .get_inline(index)?
                        .try_borrow()
                        .ok()?
                        .is_none(),
                ),
                // No storage yet: nothing set (a plain key is never inherited).
                Err(_) => Some(true),
            }) == Some(true);
        if absent {
            return None;
        }
        self.get_general()
    }

    /// [`get_miss`](Self::get_miss) of an inheritable key. A child that reads what it
    /// inherited, before it has a storage of its own (the common miss inside a task),
    /// finds it straight in its seed, without asking tokio anything. A key with no
    /// initial value that the owner does not hold (not set, or not inherited) is
    /// answered here too: `None`, with no trip through the general path.
    #[inline(never)]
    #[track_caller]
    fn get_inherited_miss(&'static self, index: usize) -> Option<T> {
        let found = self.with_direct_slot(index, |entry| Some(self.look_up(entry)));
        match found {
            Some(Found::Value(value)) => Some(value),
            Some(Found::Absent) => None,
            _ => self.get_general(),
        }
    }

    /// What `entry`, this key's entry in a direct owner (`None`: beyond its table),
    /// answers a `get`.
    #[inline(always)]
    fn look_up(&'static self, entry: Option<&Entry>) -> Found<T> {
        if let Some(value) = entry.and_then(Entry::get::<T>) {
            return Found::Value(value.clone());
        }
        match entry {
            // No value, and none to compute: what `get_general` would answer.
            None | Some(Entry::Empty) if self.init.is_none() => Found::Absent,
            // Lent out, to fork, or an initial value to compute and store.
            _ => Found::Elsewhere,
        }
    }

    /// [`get`](Self::get) past its fast paths: [`try_get_miss`](Self::try_get_miss),
    /// panicking on an error. Out of line, so that the misses above reach it by a tail
    /// call and need no stack of their own for its result.
    #[inline(never)]
    #[track_caller]
    fn get_general(&'static self) -> Option<T> {
        match self.try_get_miss() {
            Ok(value) => value,
            Err(err) => panic_access(err),
        }
    }

    /// The value, if the current owner is a `Task` (or any [direct](crate::current)
    /// owner: any scoped owner, and without the `tokio` feature the thread) whose
    /// storage holds it.
    #[inline(always)]
    pub(super) fn get_direct(&'static self) -> Option<T> {
        // The key's kind comes with its index (one load, see `KeyIndex::place`).
        match self.index.place() {
            Place::Inline(index) => {
                current::with_direct_storage(|storage| self.read_local_in(storage, index))
            }
            Place::Inheritable(index) => {
                current::with_direct_storage(|storage| read_inheritable_in(storage, index))
            }
            Place::Elsewhere => None,
        }
    }

    /// Like [`get`](Self::get), returning an error instead of panicking (when the value
    /// is being mutated by an enclosing [`with_mut`](Self::with_mut)).
    ///
    /// ```
    /// static N: tasklocal::Local<u64> = tasklocal::Local::new();
    /// assert_eq!(N.try_get(), Ok(None));
    /// ```
    #[inline(always)]
    pub fn try_get(&'static self) -> Result<Option<T>, AccessError> {
        match self.get_direct() {
            Some(value) => Ok(Some(value)),
            None => self.try_get_miss(),
        }
    }

    /// [`try_get`](Self::try_get) past the direct fast path: the fast path of any
    /// owner (a thread's storage, after checking that no plain tokio task runs), then
    /// the general path.
    #[inline(never)]
    pub(super) fn try_get_miss(&'static self) -> Result<Option<T>, AccessError> {
        let index = self.index();
        if self.is_inheritable() {
            // A scoped owner with no storage yet (a child that only reads what it
            // inherited): straight from its seed.
            // A value to fork, or none: the general path.
            let seeded = self.with_direct_entry(index, |entry| entry.get::<T>().cloned());
            if let Some(value) = seeded {
                return Ok(Some(value));
            }
        }
        match current::with_storage(|storage| self.read_in(storage, index)) {
            Some(value) => Ok(Some(value)),
            None => self.get_slow(),
        }
    }

    /// A clone of the value at `index` in `storage`, if present (and, for a
    /// non-inheritable key, among the first cells).
    #[inline(always)]
    pub(super) fn read_in(&self, storage: &Storage, index: usize) -> Option<T> {
        if self.is_inheritable() {
            read_inheritable_in(storage, index)
        } else {
            self.read_local_in(storage, index)
        }
    }

    /// [`read_in`](Self::read_in) of a key known not to be inheritable.
    #[inline(always)]
    fn read_local_in(&self, storage: &Storage, index: usize) -> Option<T> {
        let slot = storage.locals().get_inline(index)?.try_borrow().ok()?;
        slot.as_ref()?.downcast_ref::<T>().cloned()
    }

    #[inline(never)]
    pub(super) fn get_slow(&'static self) -> Result<Option<T>, AccessError> {
        self.own_fork()?;
        match self.visit(T::clone)? {
            Visit::Ran(value) => Ok(Some(value)),
            _ => self.with_slow(|value| value.cloned()),
        }
    }
}

/// A clone of the inheritable value at `index` in `storage`, if present.
#[inline(always)]
fn read_inheritable_in<T: Clone + 'static>(storage: &Storage, index: usize) -> Option<T> {
    let inherited = storage.inheritables().try_borrow().ok()?;
    inherited.get(index)?.get::<T>().cloned()
}

/// What a direct owner's entry answers a `get`: [`Local::get_inherited_miss`]'s fast
/// path.
enum Found<T> {
    /// The value.
    Value(T),
    /// Nothing set, no initial value: `None`.
    Absent,
    /// Ask the general path (lent out, to fork, an initial value to compute).
    Elsewhere,
}
