//! [`Table`]: an owner's inheritable values, written in place and copied on capture.

use std::sync::Arc;

use super::{Entry, Inheritables};

/// The inheritable values of one owner: shared with the seed it inherited until its
/// first write, from then on its own.
///
/// Copy on write, but with the copy made on capture rather than on write. A table
/// shared through an `Arc` can only be written after `Arc::get_mut`, whose
/// compare-and-swap costs several times the write itself (7 ns of a 9 ns `set` on the
/// machine of `docs/BENCHMARKS.md`). So the owner writes a `Vec` of its own, and a
/// capture hands out a copy of it, kept until the next write: capturing again
/// unchanged values is one reference-count increment, as with a shared table.
///
/// A capture allocates nothing either: it copies into a `spare` `Arc` made ready by
/// the write before it. That write allocates only where copy on write did, when a
/// child or a snapshot still holds the last capture; otherwise the last capture
/// becomes the spare. Likewise on an owner's first write, the seed it inherited,
/// when nobody else holds it (a request's task, seeded by a snapshot that is gone):
/// its entries move into the owner's own, and its emptied `Arc` is the spare.
///
/// Dropping or clearing that last capture on a write runs no value's `Drop`: every
/// value in it is also in the owner's own entries (shared values are `Arc`s, small
/// ones need none).
pub(crate) struct Table {
    /// The owner's own entries; empty until its first write.
    own: Vec<Entry>,
    /// While `own` is empty, what the owner inherited; else the last capture of
    /// `own`, while `own` has not changed since. So `shared`, when present, holds
    /// every entry `own` has: a read looks in `own`, then here.
    shared: Option<Inheritables>,
    /// Once the owner wrote: an empty table of its own alone, with room for `own`,
    /// for the next capture to copy `own` into.
    spare: Option<Inheritables>,
}

impl Table {
    /// The table of an owner that inherited `seed` and wrote nothing yet.
    pub(crate) const fn inherited(seed: Option<Inheritables>) -> Table {
        Table {
            own: Vec::new(),
            shared: seed,
            spare: None,
        }
    }

    /// The entry of the key at `index`.
    #[inline(always)]
    pub(crate) fn get(&self, index: usize) -> Option<&Entry> {
        if !self.own.is_empty() {
            return self.own.get(index);
        }
        self.shared.as_ref()?.get(index)
    }

    /// All entries; `None` when there are none.
    pub(crate) fn entries(&self) -> Option<&[Entry]> {
        match self.own.is_empty() {
            false => Some(&self.own),
            true => self.shared.as_deref().map(Vec::as_slice),
        }
    }

    /// The owner's own entries, to write in place, when that needs no copy and
    /// drops no capture: the writes' fast path. `None` sends the caller to
    /// [`own`](Self::own).
    #[inline(always)]
    pub(crate) fn own_uncaptured(&mut self) -> Option<&mut Vec<Entry>> {
        match self.shared {
            None => Some(&mut self.own),
            Some(_) => None,
        }
    }

    /// Runs `f` on the owner's own entries (the writes' general path, after
    /// [`own_uncaptured`](Self::own_uncaptured)), then makes sure the next capture has
    /// a spare with room for them.
    pub(crate) fn write<R>(&mut self, f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        let result = f(self.own());
        self.make_room();
        result
    }

    /// The owner's own entries, to write: on its first write, what it inherited
    /// (moved when nobody else holds it, else copied); from then on no longer equal
    /// to their last capture (which becomes the spare when nobody else holds it).
    fn own(&mut self) -> &mut Vec<Entry> {
        if let Some(mut shared) = self.shared.take() {
            match (self.own.is_empty(), Arc::get_mut(&mut shared)) {
                // A seed nobody else holds (a request's task): its entries move, and
                // its `Arc`, emptied, is the spare (`make_room` adds only the room).
                (true, Some(entries)) => {
                    self.own = std::mem::take(entries);
                    self.spare.get_or_insert(shared);
                }
                (true, None) => self.own = (*shared).clone(),
                (false, Some(entries)) if self.spare.is_none() => {
                    entries.clear();
                    self.spare = Some(shared);
                }
                (false, _) => {}
            }
        }
        &mut self.own
    }

    /// After a write through [`own`](Self::own): a spare with room for every entry,
    /// so that the next capture allocates nothing.
    fn make_room(&mut self) {
        let needed = self.own.len();
        if needed == 0 {
            return;
        }
        match self.spare.as_mut().and_then(Arc::get_mut) {
            Some(spare) => spare.reserve(needed),
            None => self.spare = Some(Arc::new(Vec::with_capacity(needed))),
        }
    }

    /// The entries for a child when that needs no copy: what the owner inherited
    /// while it wrote nothing, or its own entries' last capture while unchanged.
    #[inline(always)]
    pub(crate) fn unchanged(&self) -> Option<Option<Inheritables>> {
        match &self.shared {
            None if !self.own.is_empty() => None,
            shared => Some(shared.clone()),
        }
    }

    /// The entries for a child: [`unchanged`](Self::unchanged), else a copy of the
    /// owner's own entries, kept for the next capture.
    pub(crate) fn capture(&mut self) -> Option<Inheritables> {
        if self.shared.is_none() && !self.own.is_empty() {
            let mut copy = self.spare.take().unwrap_or_default();
            match Arc::get_mut(&mut copy) {
                // The spare is empty: extending drops nothing.
                Some(entries) => entries.extend(self.own.iter().cloned()),
                None => copy = Arc::new(self.own.clone()),
            }
            self.shared = Some(copy);
        }
        self.shared.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Small;

    fn small(table: &Table, index: usize) -> Option<u8> {
        match table.get(index)? {
            Entry::Small(Small::U8(n)) => Some(*n),
            _ => None,
        }
    }

    fn write(table: &mut Table, index: usize, n: u8) {
        table.write(|own| {
            if own.len() <= index {
                own.resize_with(index + 1, Entry::default);
            }
            own[index] = Entry::Small(Small::U8(n));
        });
    }

    #[test]
    fn a_table_copies_on_its_first_write_and_its_seed_is_untouched() {
        let seed = Arc::new(vec![Entry::Small(Small::U8(1)), Entry::Small(Small::U8(2))]);
        let mut table = Table::inherited(Some(seed.clone()));
        assert_eq!(small(&table, 1), Some(2), "read from the seed");
        assert!(
            Arc::ptr_eq(&table.unchanged().flatten().unwrap(), &seed),
            "an owner that wrote nothing hands its seed on"
        );
        assert!(
            table.own_uncaptured().is_none(),
            "no write in place into a seed"
        );
        write(&mut table, 1, 20);
        assert_eq!((small(&table, 0), small(&table, 1)), (Some(1), Some(20)));
        assert_eq!(
            small(&Table::inherited(Some(seed)), 1),
            Some(2),
            "the seed kept its value"
        );
        assert_eq!(small(&table, 2), None);
    }

    #[test]
    fn a_capture_is_kept_until_the_next_write() {
        let mut table = Table::inherited(None);
        assert!(table.capture().is_none(), "nothing to inherit");
        assert!(matches!(table.unchanged(), Some(None)));
        write(&mut table, 0, 1);
        assert!(
            table.unchanged().is_none(),
            "changed since: a copy is needed"
        );
        assert!(
            table.own_uncaptured().is_some(),
            "written in place, no atomic"
        );
        let first = table.capture().unwrap();
        let again = table.capture().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged: the same copy, no new one"
        );
        assert!(Arc::ptr_eq(&table.unchanged().flatten().unwrap(), &first));
        assert!(
            table.own_uncaptured().is_none(),
            "a write must drop the kept copy"
        );
        write(&mut table, 0, 2);
        assert_eq!(small(&table, 0), Some(2));
        assert!(
            matches!(first[0], Entry::Small(Small::U8(1))),
            "the child's copy kept 1"
        );
        let second = table.capture().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(matches!(second[0], Entry::Small(Small::U8(2))));
    }

    #[test]
    fn dropping_a_kept_capture_on_a_write_drops_no_value() {
        struct Counted(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dropped = || drops.load(std::sync::atomic::Ordering::SeqCst);
        let mut table = Table::inherited(None);
        table.write(|own| own.push(Entry::Value(Arc::new(Counted(drops.clone())))));
        let child = table.capture();
        drop(child);
        // The kept copy is now the last holder besides the owner's own entries.
        write(&mut table, 1, 7);
        assert_eq!(dropped(), 0, "the value is still the owner's");
        table.write(|own| own[0] = Entry::Empty);
        assert_eq!(dropped(), 1, "dropped once, when the owner replaced it");
    }

    #[test]
    fn a_capture_copies_into_the_spare_its_last_write_made_ready() {
        let mut table = Table::inherited(None);
        write(&mut table, 3, 1);
        let spare = Arc::as_ptr(table.spare.as_ref().unwrap());
        let first = table.capture().unwrap();
        assert_eq!(Arc::as_ptr(&first), spare, "the copy went into the spare");
        assert_eq!(first.len(), 4);
        assert!(table.spare.is_none());
        // No child holds the capture any more: the write makes it the spare.
        drop(first);
        write(&mut table, 0, 2);
        assert_eq!(
            Arc::as_ptr(table.spare.as_ref().unwrap()),
            spare,
            "recycled"
        );
        assert!(table.spare.as_ref().unwrap().is_empty(), "kept empty");
        let second = table.capture().unwrap();
        assert_eq!(Arc::as_ptr(&second), spare);
        // A child still holds it: the write makes a new spare, as copy on write copied.
        write(&mut table, 0, 3);
        let third = table.capture().unwrap();
        assert_ne!(Arc::as_ptr(&third), spare);
        assert!(
            matches!(second[0], Entry::Small(Small::U8(2))),
            "the child's values"
        );
        assert!(matches!(third[0], Entry::Small(Small::U8(3))));
        // A write that grows the table makes room for the next capture.
        drop((second, third));
        write(&mut table, 40, 4);
        assert!(table.spare.as_ref().unwrap().capacity() >= 41);
    }
}
