//! [`KeyIndex`]: a key's number in the storages' tables, assigned on first use.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A key's index into the storages' tables, assigned on first use.
pub(super) struct KeyIndex {
    plus_one: AtomicUsize,
}

static LOCAL_KEYS: AtomicUsize = AtomicUsize::new(0);
static INHERITABLE_KEYS: AtomicUsize = AtomicUsize::new(0);

impl KeyIndex {
    pub(super) const fn new() -> Self {
        KeyIndex {
            plus_one: AtomicUsize::new(0),
        }
    }

    /// The index, if one was assigned (by an earlier access).
    #[inline(always)]
    pub(super) fn assigned(&self) -> Option<usize> {
        self.plus_one.load(Ordering::Relaxed).checked_sub(1)
    }

    #[inline(always)]
    pub(super) fn get(&self, inheritable: bool) -> usize {
        match self.plus_one.load(Ordering::Relaxed) {
            0 => self.assign(inheritable),
            n => n - 1,
        }
    }

    #[cold]
    pub(super) fn assign(&self, inheritable: bool) -> usize {
        let counter = if inheritable {
            &INHERITABLE_KEYS
        } else {
            &LOCAL_KEYS
        };
        let mine = counter.fetch_add(1, Ordering::Relaxed) + 1;
        match self
            .plus_one
            .compare_exchange(0, mine, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => mine - 1,
            // Another thread assigned one first; ours stays unused.
            Err(theirs) => theirs - 1,
        }
    }
}
