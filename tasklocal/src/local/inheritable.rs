//! Inheritable keys: how their values take the inheritable form (shared by a
//! creator and its children, copied on write) and are forked for a child.

use std::sync::Arc;

use crate::current::{self, Here};
use crate::error::{AccessError, Kind};
use crate::storage::{Entry, Forked, Small, Storage};

use super::slot::Initializing;
use super::Local;

/// How an inheritable key converts its values to and from the shared form; only the
/// inheritable constructors, where `T: Clone + Send + Sync`, can make these.
pub(super) struct InheritableOps<T> {
    pub(super) share: fn(T) -> Entry,
    pub(super) owned: fn(Entry) -> Option<T>,
    pub(super) make_mut: for<'a> fn(&'a mut Entry) -> Option<&'a mut T>,
}

impl<T> Clone for InheritableOps<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for InheritableOps<T> {}

impl<T: Clone + Send + Sync + 'static> InheritableOps<T> {
    pub(super) const OPS: InheritableOps<T> = InheritableOps {
        share: |value| match Small::new(value) {
            Ok(small) => Entry::Small(small),
            Err(value) => Entry::Value(Arc::new(value)),
        },
        owned: |entry| match entry {
            Entry::Small(small) => small.into_inner(),
            Entry::Value(shared) => {
                let shared = shared.downcast::<T>().ok()?;
                Some(Arc::try_unwrap(shared).unwrap_or_else(|shared| T::clone(&shared)))
            }
            Entry::Empty | Entry::Lent | Entry::Fork(_) => None,
        },
        make_mut: |entry| {
            if let Entry::Value(shared) = entry {
                if Arc::get_mut(shared).is_none() {
                    // Shared with a snapshot or a child: copy on write.
                    *shared = Arc::new(shared.downcast_ref::<T>()?.clone());
                }
            }
            unique_mut(entry)
        },
    };
}

impl<T: Send + Sync + 'static> InheritableOps<T> {
    /// For `inheritable_with` keys: values are never copied but by `fork`, which the
    /// callers of `owned` and `make_mut` run when a value is shared.
    pub(super) const FORK: InheritableOps<T> = InheritableOps {
        share: |value| {
            Entry::Fork(Arc::new(Forked {
                owner: Forked::FRESH,
                epoch: 0,
                value: Box::new(value),
            }))
        },
        owned: |entry| match entry {
            Entry::Fork(forked) => match Arc::try_unwrap(forked).ok()?.value.downcast::<T>() {
                Ok(value) => Some(*value),
                Err(_) => None,
            },
            _ => None,
        },
        make_mut: |entry| match entry {
            Entry::Fork(forked) => Arc::get_mut(forked)?.value.downcast_mut(),
            _ => None,
        },
    };
}

/// The value of `entry` for writing in place, if it is a `T` not shared with anyone.
#[inline(always)]
pub(super) fn unique_mut<T: 'static>(entry: &mut Entry) -> Option<&mut T> {
    match entry {
        Entry::Small(small) if Small::fits::<T>() => small.get_mut(),
        Entry::Value(shared) if !Small::fits::<T>() => Arc::get_mut(shared)?.downcast_mut(),
        _ => None,
    }
}

impl<T: Clone + Send + Sync + 'static> Local<T> {
    /// This key's index and `value` in inheritable form; `None` for a key that is not
    /// inheritable.
    pub(crate) fn inheritable_entry(&self, value: T) -> Option<(usize, Entry)> {
        let mut entry = (self.inheritable?.share)(value);
        if let Entry::Fork(forked) = &mut entry {
            // In a snapshot: every owner seeded from it forks the value.
            if let Some(forked) = Arc::get_mut(forked) {
                forked.owner = Forked::NOBODY;
            }
        }
        Some((self.index(), entry))
    }

    /// This key's value in a table of inherited entries (of an `inheritable_with` key:
    /// as captured, not forked).
    pub(crate) fn inheritable_value(&self, entries: &[Entry]) -> Option<T> {
        self.inheritable?;
        entries.get(self.index())?.get_any::<T>().cloned()
    }
}

impl<T: Send + 'static> Local<T> {
    /// `value` as the entry of an `inheritable_with` key owned by the storage `owner`,
    /// whose captures count `epoch`.
    pub(super) fn owned_entry(&self, value: T, owner: u64, epoch: u64) -> Entry {
        let Some(ops) = self.inheritable else {
            return Entry::Empty;
        };
        let mut entry = (ops.share)(value);
        if let Entry::Fork(forked) = &mut entry {
            if let Some(forked) = Arc::get_mut(forked) {
                forked.owner = owner;
                forked.epoch = epoch;
            }
        }
        entry
    }

    /// For an `inheritable_with` key: makes the current owner's value its own, forking
    /// the value it inherited if it has not done so yet (see
    /// [`inheritable_with`](Local::inheritable_with)).
    #[inline]
    pub(super) fn own_fork(&'static self) -> Result<(), AccessError> {
        match self.fork {
            Some(fork) => self.own_fork_with(fork),
            None => Ok(()),
        }
    }

    #[inline(never)]
    pub(super) fn own_fork_with(&'static self, fork: fn(&T) -> T) -> Result<(), AccessError> {
        let index = self.index();
        let borrowed = || AccessError::new(Kind::Borrowed);
        // The inherited entry waiting for its fork, if any.
        let pending = current::read(|here| match here {
            Here::Storage(storage) => {
                let inherited = storage
                    .inheritables()
                    .try_borrow()
                    .map_err(|_| borrowed())?;
                Ok(match inherited.get(index) {
                    Some(Entry::Fork(forked)) if forked.owner != storage.id().as_u64() => {
                        Some(forked.clone())
                    }
                    _ => None,
                })
            }
            Here::Seed(seed) => Ok(match seed.and_then(|entries| entries.get(index)) {
                Some(Entry::Fork(forked)) => Some(forked.clone()),
                _ => None,
            }),
            Here::Denied(Kind::Borrowed) => Err(borrowed()),
            Here::Denied(_) => Ok(None),
        })?;
        let Some(source) = pending else {
            return Ok(());
        };
        let Some(value) = source.value.downcast_ref::<T>() else {
            return Ok(());
        };
        // `fork` runs with no borrow held; reading this key from inside it would fork
        // again without end.
        let running = Initializing::enter(self as *const Self as usize)
            .map_err(|_| AccessError::new(Kind::Forking))?;
        let forked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fork(value)));
        drop(running);
        let panicked = forked.is_err();
        let entry = match forked {
            Ok(value) => Some(value),
            Err(payload) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload)));
                None
            }
        };
        // Stored in place of the inherited entry, unless `fork` wrote the key itself.
        let displaced = current::write(|storage| {
            let own = match entry {
                Some(value) => {
                    self.owned_entry(value, storage.id().as_u64(), storage.stored_fork())
                }
                None => Entry::Empty,
            };
            storage
                .inheritables_mut(|entries| match entries.get_mut(index) {
                    Some(slot) if matches!(&*slot, Entry::Fork(f) if Arc::ptr_eq(f, &source)) => {
                        std::mem::replace(slot, own)
                    }
                    _ => own,
                })
                .ok_or_else(borrowed)
        });
        // Dropped with no borrow held: a `Drop` may use the API.
        drop(source);
        drop(displaced??);
        if panicked {
            return Err(AccessError::new(Kind::ForkPanicked));
        }
        Ok(())
    }
}

/// Puts `value` (taken) in place of the present value of an inheritable key at `index`
/// in `storage`, if the owner's own entries were not captured since their last write
/// (and a boxed value is not shared); the old value.
#[inline(always)]
pub(super) fn replace_inheritable<T: 'static>(
    storage: &Storage,
    index: usize,
    value: &mut Option<T>,
) -> Option<T> {
    let mut inherited = storage.inheritables().try_borrow_mut().ok()?;
    let entries = inherited.own_uncaptured()?;
    let present = unique_mut::<T>(entries.get_mut(index)?)?;
    Some(std::mem::replace(present, value.take()?))
}
