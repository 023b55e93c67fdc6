//! [`KeyIndex`]: a key's number in the storages' tables, assigned on first use.
//!
//! The number is stored with the key's kind folded in, so that the fast paths learn
//! from one load both where to look and whether to look at all ([`KeyIndex::place`]):
//! a key's kind is a field of a `static` that also holds an atomic, which the compiler
//! must load from memory on every access rather than fold into the code.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cells::INLINE;

/// A key's index into the storages' tables, assigned on first use.
pub(super) struct KeyIndex {
    /// [`UNASSIGNED`], or the index of a non-inheritable key, or the index of an
    /// inheritable key with [`INHERITABLE`] set.
    raw: AtomicUsize,
}

/// The top bit: set in the stored number of an inheritable key (whose index counts
/// from 0 like a non-inheritable key's, in a table of its own).
const INHERITABLE: usize = 1 << (usize::BITS - 1);
/// No index yet. Has [`INHERITABLE`] set, and as an inheritable index it is beyond
/// any table, so that the fast paths need no test of their own for it.
const UNASSIGNED: usize = usize::MAX;

static LOCAL_KEYS: AtomicUsize = AtomicUsize::new(0);
static INHERITABLE_KEYS: AtomicUsize = AtomicUsize::new(0);

/// Where the fast paths find a key's value, as [`KeyIndex::place`] tells from the
/// stored number alone.
pub(super) enum Place {
    /// A non-inheritable key with one of a storage's inline cells: this index.
    Inline(usize),
    /// An inheritable key, at this index of an owner's table (beyond any table while
    /// no index is assigned).
    Inheritable(usize),
    /// A non-inheritable key beyond the inline cells: only the slow paths look.
    Elsewhere,
}

impl KeyIndex {
    pub(super) const fn new() -> Self {
        KeyIndex {
            raw: AtomicUsize::new(UNASSIGNED),
        }
    }

    /// The index, if one was assigned (by an earlier access).
    #[inline(always)]
    pub(super) fn assigned(&self) -> Option<usize> {
        match self.raw.load(Ordering::Relaxed) {
            UNASSIGNED => None,
            raw => Some(raw & !INHERITABLE),
        }
    }

    /// The index, or, while none is assigned, one beyond any table: for a lookup that
    /// is a miss either way.
    #[inline(always)]
    pub(super) fn assigned_or_beyond(&self) -> usize {
        self.raw.load(Ordering::Relaxed) & !INHERITABLE
    }

    /// Where the fast paths look for this key's value: one load and at most two
    /// comparisons, with no look at the key's kind (see the module's docs).
    #[inline(always)]
    pub(super) fn place(&self) -> Place {
        let raw = self.raw.load(Ordering::Relaxed);
        if raw < INLINE {
            Place::Inline(raw)
        } else if raw & INHERITABLE != 0 {
            Place::Inheritable(raw & !INHERITABLE)
        } else {
            Place::Elsewhere
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, inheritable: bool) -> usize {
        match self.assigned() {
            Some(index) => index,
            None => self.assign(inheritable),
        }
    }

    #[cold]
    pub(super) fn assign(&self, inheritable: bool) -> usize {
        let (counter, tag) = if inheritable {
            (&INHERITABLE_KEYS, INHERITABLE)
        } else {
            (&LOCAL_KEYS, 0)
        };
        let mine = counter.fetch_add(1, Ordering::Relaxed);
        match self.raw.compare_exchange(
            UNASSIGNED,
            mine | tag,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => mine,
            // Another thread assigned one first; ours stays unused.
            Err(theirs) => theirs & !INHERITABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(raw: usize) -> KeyIndex {
        KeyIndex {
            raw: AtomicUsize::new(raw),
        }
    }

    #[test]
    fn the_place_is_told_from_the_stored_number() {
        assert!(matches!(stored(0).place(), Place::Inline(0)));
        assert!(matches!(stored(INLINE - 1).place(), Place::Inline(i) if i == INLINE - 1));
        assert!(matches!(stored(INLINE).place(), Place::Elsewhere));
        // An inheritable key among the first cells of its table is not `Inline`.
        assert!(matches!(stored(INHERITABLE).place(), Place::Inheritable(0)));
        assert!(matches!(
            stored(INHERITABLE | 3).place(),
            Place::Inheritable(3)
        ));
        // No index yet: an inheritable index beyond any table.
        assert!(matches!(KeyIndex::new().place(), Place::Inheritable(i) if i == usize::MAX >> 1));
        assert_eq!(KeyIndex::new().assigned(), None);
        assert_eq!(KeyIndex::new().assigned_or_beyond(), usize::MAX >> 1);
    }

    #[test]
    fn an_assigned_index_keeps_its_kind() {
        let (local, inheritable) = (KeyIndex::new(), KeyIndex::new());
        let l = local.get(false);
        let i = inheritable.get(true);
        assert_eq!(
            (local.assigned(), inheritable.assigned()),
            (Some(l), Some(i))
        );
        assert_eq!(local.get(false), l, "assigned once");
        assert_eq!(inheritable.assigned_or_beyond(), i);
        assert!(matches!(inheritable.place(), Place::Inheritable(n) if n == i));
        match local.place() {
            Place::Inline(n) => assert_eq!(n, l),
            Place::Elsewhere => assert!(l >= INLINE),
            Place::Inheritable(_) => panic!("a non-inheritable key's place"),
        }
    }

    #[test]
    fn the_loser_of_an_assignment_race_takes_the_winners_index() {
        // What a thread that lost the race sees: the index already assigned, untagged.
        let (local, inheritable) = (KeyIndex::new(), KeyIndex::new());
        let (l, i) = (local.get(false), inheritable.get(true));
        assert_eq!(local.assign(false), l);
        assert_eq!(inheritable.assign(true), i);
        assert_eq!(inheritable.assigned(), Some(i), "the winner's stays");
    }
}
