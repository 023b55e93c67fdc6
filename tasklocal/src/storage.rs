//! One owner's values and exit handlers, and their teardown.
//!
//! A [`Storage`] is only ever touched by the thread that currently runs its owner, so
//! it uses `Cell`/`RefCell` and no locks. Every value lives in its own cell whose
//! address never changes, so a value can stay borrowed by a `with` closure while the
//! closure writes other keys. Inheritable values live in one copy-on-write [`Table`]:
//! capturing them for a child is one reference-count increment, and writing them costs
//! no atomic operation.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::cells::Cells;
use crate::id::TaskId;
use crate::key::Dynamic;

pub(crate) use crate::value::{Small, Value};
/// A value of an inheritable key: shared with the snapshots that captured it.
pub(crate) type InheritableValue = Arc<dyn Any + Send + Sync>;
/// Inheritable values indexed by key, as captured for children and snapshots: shared,
/// never written while shared.
pub(crate) type Inheritables = Arc<Vec<Entry>>;

/// The state of one inheritable key in an owner.
#[derive(Clone, Default)]
pub(crate) enum Entry {
    /// No value.
    #[default]
    Empty,
    /// A value, possibly shared with snapshots.
    Value(InheritableValue),
    /// A small primitive value, kept inline.
    Small(Small),
    /// The value is taken out by a `with_mut` further up this thread's stack.
    Lent,
    /// A value of an `inheritable_with` key: its own owner's value, in any other owner
    /// an inherited one, forked before its first use there.
    Fork(Arc<Forked>),
}

/// A value of an `inheritable_with` key, and the storage it belongs to.
pub(crate) struct Forked {
    /// The [`TaskId`] of the storage whose own value this is, or [`Forked::FRESH`] or
    /// [`Forked::NOBODY`].
    pub(crate) owner: u64,
    /// The owner's [`Storage::captures`] when the value was stored.
    pub(crate) epoch: u64,
    pub(crate) value: Box<dyn Any + Send + Sync>,
}

impl Forked {
    /// Made by a write and not stored yet: the storage it goes to adopts it.
    pub(crate) const FRESH: u64 = 0;
    /// Put into a snapshot: every owner seeded from it forks it.
    pub(crate) const NOBODY: u64 = u64::MAX;
}
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
/// becomes the spare.
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

    /// The owner's own entries, to write: copied from what it inherited on its first
    /// write, and from then on no longer equal to their last capture (which becomes
    /// the spare when nobody else holds it). Call [`make_room`](Self::make_room) after
    /// the write.
    pub(crate) fn own(&mut self) -> &mut Vec<Entry> {
        if let Some(mut shared) = self.shared.take() {
            if self.own.is_empty() {
                self.own = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
            } else if let (None, Some(entries)) = (&self.spare, Arc::get_mut(&mut shared)) {
                entries.clear();
                self.spare = Some(shared);
            }
        }
        &mut self.own
    }

    /// After a write through [`own`](Self::own): a spare with room for every entry,
    /// so that the next capture allocates nothing.
    pub(crate) fn make_room(&mut self) {
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
    fn capture(&mut self) -> Option<Inheritables> {
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

/// The bit of [`Storage::lent`] set while `tasklocal::isolated` runs in the owner.
const ISOLATED: usize = 1 << (usize::BITS - 1);
/// The bit of [`Storage::lent`] set while a [`Forked`] value was stored since the
/// last capture.
const UNCAPTURED: usize = 1 << (usize::BITS - 2);
/// The bits of [`Storage::lent`] that count values lent to `with_mut`.
const LENT: usize = !(ISOLATED | UNCAPTURED);

/// An exit handler.
pub(crate) type Handler = Box<dyn FnOnce() + Send>;

/// Values and handlers of one owner.
pub(crate) struct Storage {
    id: TaskId,
    /// Values of non-inheritable typed keys.
    locals: Cells<Value>,
    /// Values of inheritable typed keys.
    inheritables: RefCell<Table>,
    /// How many inheritable values are taken out by a `with_mut` right now, plus
    /// [`ISOLATED`] while `tasklocal::isolated` runs in this owner, plus [`UNCAPTURED`]
    /// while a [`Forked`] value was stored since the last capture. Any of them sends
    /// capture off its fast path, which so pays nothing for isolation and forks.
    lent: Cell<usize>,
    /// How many captures found an [`UNCAPTURED`] value: a [`Forked`] value whose
    /// `epoch` differs was captured since it was stored, and is never changed in place.
    captures: Cell<u64>,
    /// Dynamic keys, created on first use.
    dynamic: OnceCell<Box<Dynamic>>,
    handlers: RefCell<Vec<Handler>>,
}

impl Entry {
    /// The value, if there is one and it is a `T`.
    #[inline(always)]
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        match self {
            Entry::Value(shared) if !Small::fits::<T>() => shared.downcast_ref(),
            Entry::Small(small) if Small::fits::<T>() => small.get(),
            _ => None,
        }
    }

    /// The value, if there is one and it is a `T`, whichever owner it belongs to (an
    /// `inheritable_with` value is read only once it is the current owner's own).
    #[inline]
    pub(crate) fn get_any<T: 'static>(&self) -> Option<&T> {
        match self {
            Entry::Fork(forked) => forked.value.downcast_ref(),
            _ => self.get(),
        }
    }
}

impl Storage {
    /// This storage's id.
    #[inline(always)]
    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    /// The cells of non-inheritable typed keys.
    #[inline(always)]
    pub(crate) fn locals(&self) -> &Cells<Value> {
        &self.locals
    }

    /// The table of inheritable values.
    #[inline(always)]
    pub(crate) fn inheritables(&self) -> &RefCell<Table> {
        &self.inheritables
    }

    /// How many captures found a [`Forked`] value stored since the last one.
    #[inline(always)]
    pub(crate) fn captures(&self) -> u64 {
        self.captures.get()
    }

    /// The dynamic keys, if any was ever set.
    #[inline(always)]
    pub(crate) fn dynamic_if_created(&self) -> Option<&Dynamic> {
        self.dynamic.get().map(|dynamic| &**dynamic)
    }

    pub(crate) fn new(seed: Option<Inheritables>) -> Box<Storage> {
        Box::new(Storage {
            id: TaskId::next(),
            locals: Cells::new(),
            inheritables: RefCell::new(Table::inherited(seed)),
            lent: Cell::new(0),
            captures: Cell::new(0),
            dynamic: OnceCell::new(),
            handlers: RefCell::new(Vec::new()),
        })
    }

    pub(crate) fn dynamic(&self) -> &Dynamic {
        self.dynamic.get_or_init(|| {
            Box::new(Dynamic {
                index: RefCell::new(HashMap::default()),
                cells: Cells::new(),
                free: RefCell::new(Vec::new()),
                next: Cell::new(0),
                recent: Cell::new(crate::key::Recent::EMPTY),
            })
        })
    }

    /// The inheritable values, to seed a child: one reference-count increment, unless
    /// they changed since the last capture (then a copy of the table, kept for the
    /// next one) or a `with_mut` has a value out right now (then those keys are left
    /// out). Inside `tasklocal::isolated`, nothing.
    pub(crate) fn capture(&self) -> Option<Inheritables> {
        let lent = self.lent.get();
        if lent & ISOLATED != 0 {
            return None;
        }
        let inherited = self.inheritables.try_borrow().ok()?;
        let entries = inherited.entries()?;
        if lent & UNCAPTURED != 0 {
            // The values stored so far are captured from now on.
            self.captures.set(self.captures.get().wrapping_add(1));
            self.lent.set(lent & !UNCAPTURED);
        }
        if lent & LENT != 0 {
            return Some(without_lent(entries));
        }
        if let Some(Some(unchanged)) = inherited.unchanged() {
            return Some(unchanged);
        }
        drop(inherited);
        match self.inheritables.try_borrow_mut() {
            Ok(mut inherited) => inherited.capture(),
            // A `with` closure further up reads the table: a copy, not kept.
            Err(_) => Some(Arc::new(
                self.inheritables.try_borrow().ok()?.entries()?.to_vec(),
            )),
        }
    }

    /// [`capture`](Self::capture) when it needs no call: `None` when a `with_mut` has
    /// a value out, the values changed since the last capture, or the table is
    /// borrowed.
    #[inline(always)]
    pub(crate) fn capture_unlent(&self) -> Option<Option<Inheritables>> {
        if self.lent.get() != 0 {
            return None;
        }
        self.inheritables.try_borrow().ok()?.unchanged()
    }

    /// Marks one more inheritable value as taken out by a `with_mut`.
    pub(crate) fn lend(&self) {
        self.lent.set(self.lent.get() + 1);
    }

    /// Undoes [`lend`](Self::lend).
    pub(crate) fn unlend(&self) {
        let lent = self.lent.get();
        if lent & LENT != 0 {
            self.lent.set(lent - 1);
        }
    }

    /// Notes that a [`Forked`] value is stored now (so that the next capture counts);
    /// returns the `epoch` to give it.
    pub(crate) fn stored_fork(&self) -> u64 {
        self.lent.set(self.lent.get() | UNCAPTURED);
        self.captures.get()
    }

    /// Starts (`true`) or ends isolation (`tasklocal::isolated`): the children of this
    /// owner inherit nothing. Returns the previous state.
    pub(crate) fn set_isolated(&self, isolated: bool) -> bool {
        let lent = self.lent.get();
        let flag = if isolated { ISOLATED } else { 0 };
        self.lent.set(lent & !ISOLATED | flag);
        lent & ISOLATED != 0
    }

    /// Runs `f` on the inheritable entries, made the owner's own first (copy on write).
    pub(crate) fn inheritables_mut<R>(&self, f: impl FnOnce(&mut Vec<Entry>) -> R) -> Option<R> {
        let mut inherited = self.inheritables.try_borrow_mut().ok()?;
        let result = f(inherited.own());
        inherited.make_room();
        Some(result)
    }

    pub(crate) fn push_handler(&self, handler: Handler) {
        self.handlers.borrow_mut().push(handler);
    }

    /// The next piece of teardown work: the last registered handler, else all values.
    pub(crate) fn next_garbage(&self) -> Garbage {
        if let Some(handler) = self
            .handlers
            .try_borrow_mut()
            .ok()
            .and_then(|mut h| h.pop())
        {
            return Garbage::Handler(handler);
        }
        let values = self.take_values();
        if values.is_empty() {
            Garbage::Done
        } else {
            Garbage::Values(values)
        }
    }

    /// Whether a `with` closure further up this thread's stack borrows a value here:
    /// then the storage cannot be emptied now.
    pub(crate) fn is_borrowed(&self) -> bool {
        let borrowed =
            |cells: &Cells<Value>| cells.iter().any(|cell| cell.try_borrow_mut().is_err());
        borrowed(&self.locals)
            || self.dynamic.get().is_some_and(|dynamic| {
                borrowed(&dynamic.cells) || dynamic.index.try_borrow_mut().is_err()
            })
    }

    /// Takes every value out of the storage (to be dropped by the caller, after every
    /// borrow is released, since a value's `Drop` may call back into the API).
    pub(crate) fn take_values(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        take_cells(&self.locals, &mut out);
        if let Some(dynamic) = self.dynamic.get() {
            take_cells(&dynamic.cells, &mut out);
            if let Some(index) = dynamic.clear() {
                out.push(Value::Boxed(Box::new(index)));
            }
        }
        if let Some(inherited) = self
            .inheritables
            .try_borrow_mut()
            .ok()
            .map(|mut i| std::mem::replace(&mut *i, Table::inherited(None)))
            .filter(|inherited| inherited.entries().is_some())
        {
            out.push(Value::Boxed(Box::new(inherited)));
        }
        out
    }
}

fn take_cells(cells: &Cells<Value>, out: &mut Vec<Value>) {
    for cell in cells.iter() {
        // A cell borrowed now belongs to a `with` further up this thread's stack;
        // it is left alone and taken on the next round.
        if let Some(value) = cell.try_borrow_mut().ok().and_then(|mut v| v.take()) {
            out.push(value);
        }
    }
}

/// One step of teardown.
pub(crate) enum Garbage {
    Handler(Handler),
    Values(Vec<Value>),
    Done,
}

/// Runs teardown steps until nothing is left: handlers in reverse order of
/// registration with every value still present, then the values. Whatever a handler
/// or a `Drop` adds meanwhile is handled in a further round; a panic in one of them is
/// caught so that the rest still runs.
pub(crate) fn teardown(mut next: impl FnMut() -> Garbage) {
    loop {
        match next() {
            Garbage::Handler(handler) => {
                let _ = panic::catch_unwind(AssertUnwindSafe(handler));
            }
            Garbage::Values(values) => {
                for value in values {
                    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
                }
            }
            Garbage::Done => break,
        }
    }
}

/// A copy of `inherited` without the entries a `with_mut` has out.
#[cold]
fn without_lent(inherited: &[Entry]) -> Inheritables {
    let entries = inherited
        .iter()
        .map(|entry| match entry {
            Entry::Lent => Entry::Empty,
            other => other.clone(),
        })
        .collect();
    Arc::new(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_forks_and_lending_share_one_word_without_mixing() {
        let storage = Storage::new(Some(Arc::new(vec![Entry::Small(Small::U8(1))])));
        assert!(storage.capture().is_some());
        assert_eq!(storage.captures.get(), 0, "no fork stored: nothing counted");
        assert!(!storage.set_isolated(true));
        storage.lend();
        assert!(storage.capture().is_none(), "isolated");
        assert!(storage.capture_unlent().is_none(), "the fast path declines");
        storage.unlend();
        storage.unlend(); // one too many leaves the flags alone
        assert!(storage.set_isolated(false));
        assert_eq!(storage.lent.get(), 0);
        let epoch = storage.stored_fork();
        assert!(
            storage.capture_unlent().is_none(),
            "a stored fork sends capture off the fast path"
        );
        assert!(storage.capture().is_some());
        assert_eq!(storage.captures.get(), epoch + 1);
        assert_eq!(storage.lent.get(), 0);
        assert!(storage.capture_unlent().is_some());
        assert_eq!(
            storage.captures.get(),
            epoch + 1,
            "counted once per stored fork"
        );
    }

    fn small(table: &Table, index: usize) -> Option<u8> {
        match table.get(index)? {
            Entry::Small(Small::U8(n)) => Some(*n),
            _ => None,
        }
    }

    fn write(table: &mut Table, index: usize, n: u8) {
        let own = table.own();
        if own.len() <= index {
            own.resize_with(index + 1, Entry::default);
        }
        own[index] = Entry::Small(Small::U8(n));
        table.make_room();
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
        table
            .own()
            .push(Entry::Value(Arc::new(Counted(drops.clone()))));
        let child = table.capture();
        drop(child);
        // The kept copy is now the last holder besides the owner's own entries.
        write(&mut table, 1, 7);
        assert_eq!(dropped(), 0, "the value is still the owner's");
        table.own()[0] = Entry::Empty;
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
