//! The slot-access layer of `Local<T>`: how an accessor reaches its key's slot in
//! the current owner's storage, past the fast paths — looking at a value ([`Visit`]),
//! swapping the slot's content ([`Raw`]), initial values and their reentrancy guard.

use std::cell::RefCell;
use std::sync::Arc;

use crate::current::{self, Here};
use crate::error::{AccessError, Kind};
use crate::storage::{Entry, Forked, Storage, Value};

use super::Local;

/// The content of a key's slot, in whichever form the key stores it.
pub(super) enum Raw {
    Local(Option<Value>),
    Inheritable(Entry),
}

/// What a look at a key found.
pub(super) enum Visit<R> {
    /// The value was there and the visitor ran on it, under the borrow.
    Ran(R),
    /// No value.
    Missing,
    /// No storage here: reads see no value and writes fail with this error.
    Detached(AccessError),
}

impl<T: Send + 'static> Local<T> {
    #[inline(always)]
    pub(super) fn index(&self) -> usize {
        self.index.get(self.is_inheritable())
    }

    /// Looks at the value: `f` runs on it under the borrow.
    pub(super) fn visit<R>(
        &'static self,
        f: impl FnOnce(&T) -> R,
    ) -> Result<Visit<R>, AccessError> {
        let index = self.index();
        let inheritable = self.is_inheritable();
        let borrowed = || AccessError::new(Kind::Borrowed);
        current::read(|here| match here {
            Here::Storage(storage) if !inheritable => match storage.locals().get(index) {
                Some(cell) => {
                    let slot = cell.try_borrow().map_err(|_| borrowed())?;
                    Ok(match slot.as_ref().and_then(Value::downcast_ref::<T>) {
                        Some(value) => Visit::Ran(f(value)),
                        None => Visit::Missing,
                    })
                }
                None => Ok(Visit::Missing),
            },
            Here::Storage(storage) => {
                let inherited = storage
                    .inheritables()
                    .try_borrow()
                    .map_err(|_| borrowed())?;
                visit_entry(inherited.get(index), f)
            }
            // Only inheritable keys have inherited values (the index spaces differ).
            Here::Seed(seed) if inheritable => {
                visit_entry(seed.and_then(|entries| entries.get(index)), f)
            }
            Here::Seed(_) => Ok(Visit::Missing),
            Here::Denied(Kind::Borrowed) => Err(borrowed()),
            Here::Denied(kind) => Ok(Visit::Detached(AccessError::new(kind))),
        })
    }

    /// A clone of the entry of this inheritable key, to be read with no borrow held
    /// (its value is shared, so the clone is a reference count): [`Visit::Ran`] with
    /// it, or why there is none.
    pub(super) fn entry_clone(&'static self) -> Result<Visit<Entry>, AccessError> {
        let index = self.index();
        let borrowed = || AccessError::new(Kind::Borrowed);
        let found = |entry: Option<&Entry>| match entry {
            Some(Entry::Lent) => Err(borrowed()),
            Some(Entry::Empty) | None => Ok(Visit::Missing),
            Some(entry) => Ok(Visit::Ran(entry.clone())),
        };
        current::read(|here| match here {
            Here::Storage(storage) => {
                let inherited = storage
                    .inheritables()
                    .try_borrow()
                    .map_err(|_| borrowed())?;
                found(inherited.get(index))
            }
            Here::Seed(seed) => found(seed.and_then(|entries| entries.get(index))),
            Here::Denied(Kind::Borrowed) => Err(borrowed()),
            Here::Denied(kind) => Ok(Visit::Detached(AccessError::new(kind))),
        })
    }

    /// Puts `raw` into this key's slot in the current storage; returns what was there.
    pub(super) fn swap_raw(&'static self, raw: Raw) -> Result<Raw, AccessError> {
        let index = self.index();
        current::write(|storage| swap_in(storage, index, raw))?
    }

    /// Converts the content of a slot back to `T`.
    pub(super) fn unwrap_raw(&self, raw: Raw) -> Option<T> {
        match raw {
            Raw::Local(value) => value?.downcast::<T>().ok(),
            Raw::Inheritable(Entry::Fork(forked))
                if Arc::strong_count(&forked) > 1 || forked.epoch != captures() =>
            {
                // Captured since it was stored: the captured context keeps it, the
                // owner's copy is a fork.
                Some((self.fork?)(forked.value.downcast_ref::<T>()?))
            }
            Raw::Inheritable(entry) => (self.inheritable?.owned)(entry),
        }
    }

    pub(super) fn wrap(&self, value: T) -> Raw {
        match self.inheritable {
            Some(ops) => Raw::Inheritable((ops.share)(value)),
            None => Raw::Local(Some(Value::new(value))),
        }
    }

    pub(super) fn empty(&self) -> Raw {
        match self.inheritable {
            Some(_) => Raw::Inheritable(Entry::Empty),
            None => Raw::Local(None),
        }
    }

    /// Stores the initial value, computed now with no borrow held.
    pub(super) fn store_initial(&'static self) -> Result<(), AccessError> {
        if let Some(value) = self.initial_value()? {
            // An initializer that set this key itself is overwritten, as std's
            // `thread_local!` and Java's `ThreadLocal` do.
            drop(self.swap_raw(self.wrap(value))?);
        }
        Ok(())
    }

    /// Runs the initializer, refusing to run it again from inside itself (it would
    /// recurse without end).
    pub(super) fn initial_value(&'static self) -> Result<Option<T>, AccessError> {
        let Some(init) = self.init else {
            return Ok(None);
        };
        let _running = Initializing::enter(self as *const Self as usize)?;
        Ok(Some(init()))
    }
}

thread_local! {
    /// The keys whose initializer runs on this thread right now.
    static INITIALIZING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks a key's initializer as running, until dropped (also by unwinding).
pub(super) struct Initializing(usize);

impl Initializing {
    pub(super) fn enter(key: usize) -> Result<Initializing, AccessError> {
        let entered = INITIALIZING.try_with(|running| {
            let mut running = running.try_borrow_mut().ok()?;
            if running.contains(&key) {
                return None;
            }
            running.push(key);
            Some(())
        });
        match entered {
            Ok(Some(())) => Ok(Initializing(key)),
            Ok(None) => Err(AccessError::new(Kind::Initializing)),
            // The thread is exiting: nothing can recurse through a missing list.
            Err(_) => Ok(Initializing(0)),
        }
    }
}

impl Drop for Initializing {
    fn drop(&mut self) {
        let _ = INITIALIZING.try_with(|running| {
            if let Ok(mut running) = running.try_borrow_mut() {
                running.retain(|&key| key != self.0);
            }
        });
    }
}

/// Takes the entry of the inheritable key at `index` out of `storage` for `with_mut`,
/// leaving [`Entry::Lent`] so that reentrant access to the key fails cleanly, and
/// counts it as lent (no capture may see the key meanwhile). `None` when there is no
/// value. [`LentBack`] puts it back and uncounts it.
pub(super) fn lend_out(storage: &Storage, index: usize) -> Result<Option<Entry>, AccessError> {
    let taken = storage.inheritables_mut(|entries| match entries.get_mut(index) {
        Some(Entry::Lent) => Err(AccessError::new(Kind::Borrowed)),
        Some(entry @ (Entry::Value(_) | Entry::Small(_) | Entry::Fork(_))) => {
            Ok(Some(std::mem::replace(entry, Entry::Lent)))
        }
        _ => Ok(None),
    });
    let taken = taken.unwrap_or(Err(AccessError::new(Kind::Borrowed)))?;
    if taken.is_some() {
        storage.lend();
    }
    Ok(taken)
}

/// Puts a lent inheritable entry back when `with_mut` ends, also by unwinding.
pub(super) struct LentBack {
    pub(super) index: usize,
    pub(super) entry: Option<Entry>,
}

impl Drop for LentBack {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let index = self.index;
        let rejected = current::write(|storage| {
            storage.unlend();
            storage
                .inheritables_mut(|entries| match entries.get_mut(index) {
                    Some(slot @ Entry::Lent) => {
                        *slot = entry;
                        None
                    }
                    // `reset`/`unload` ran meanwhile: the value goes, as they said.
                    _ => Some(entry),
                })
                .flatten()
        });
        drop(rejected);
    }
}

/// Puts `value` (taken) in place of the present value of a non-inheritable key at
/// `index` in `storage` (among the first cells); the old value.
#[inline(always)]
pub(super) fn replace_local<T: 'static>(
    storage: &Storage,
    index: usize,
    value: &mut Option<T>,
) -> Option<T> {
    let mut slot = storage.locals().get_inline(index)?.try_borrow_mut().ok()?;
    let present = slot.as_mut()?.downcast_mut::<T>()?;
    Some(std::mem::replace(present, value.take()?))
}

/// How many times the current owner's inheritable values were captured.
pub(super) fn captures() -> u64 {
    current::read(|here| match here {
        Here::Storage(storage) => storage.captures(),
        _ => 0,
    })
}

fn visit_entry<T: 'static, R>(
    entry: Option<&Entry>,
    f: impl FnOnce(&T) -> R,
) -> Result<Visit<R>, AccessError> {
    Ok(match entry {
        Some(Entry::Lent) => return Err(AccessError::new(Kind::Borrowed)),
        Some(entry) => entry
            .get_any::<T>()
            .map_or(Visit::Missing, |value| Visit::Ran(f(value))),
        None => Visit::Missing,
    })
}

pub(super) fn swap_in(storage: &Storage, index: usize, raw: Raw) -> Result<Raw, AccessError> {
    let borrowed = || AccessError::new(Kind::Borrowed);
    match raw {
        Raw::Local(value) => {
            let cell = storage.locals().get_or_create(index);
            let mut slot = cell.try_borrow_mut().map_err(|_| borrowed())?;
            Ok(Raw::Local(std::mem::replace(&mut *slot, value)))
        }
        Raw::Inheritable(mut entry) => storage
            .inheritables_mut(|entries| {
                if let Entry::Fork(forked) = &mut entry {
                    // A value just written: this owner's own.
                    if let Some(forked) = Arc::get_mut(forked) {
                        if forked.owner == Forked::FRESH {
                            forked.owner = storage.id().as_u64();
                            forked.epoch = storage.stored_fork();
                        }
                    }
                }
                if entries.len() <= index {
                    entries.resize_with(index + 1, Entry::default);
                }
                let slot = &mut entries[index];
                if matches!(slot, Entry::Lent) {
                    return Err(borrowed());
                }
                Ok(Raw::Inheritable(std::mem::replace(slot, entry)))
            })
            .unwrap_or_else(|| Err(borrowed())),
    }
}
