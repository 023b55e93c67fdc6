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

mod table;
pub(crate) use table::Table;
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

    /// Whether `tasklocal::isolated` runs in this owner: its children inherit nothing.
    pub(crate) fn is_isolated(&self) -> bool {
        self.lent.get() & ISOLATED != 0
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
        Some(inherited.write(f))
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
    pub(crate) fn take_values(&self) -> Taken {
        let mut cells: Vec<Value> = Vec::new();
        take_cells(&self.locals, &mut cells);
        if let Some(dynamic) = self.dynamic.get() {
            take_cells(&dynamic.cells, &mut cells);
            if let Some(index) = dynamic.clear() {
                cells.push(Value::Boxed(Box::new(index)));
            }
        }
        let inherited = self
            .inheritables
            .try_borrow_mut()
            .ok()
            .map(|mut i| std::mem::replace(&mut *i, Table::inherited(None)))
            .filter(|inherited| inherited.entries().is_some());
        Taken { cells, inherited }
    }
}

/// The values taken out of a storage: its cells' values, and its inheritable values
/// as they are (a request's storage often holds only these: its teardown then
/// allocates nothing).
#[derive(Default)]
pub(crate) struct Taken {
    cells: Vec<Value>,
    inherited: Option<Table>,
}

impl Taken {
    pub(crate) fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.inherited.is_none()
    }

    /// Drops the values one by one, each under `catch_unwind`: a `Drop` that panics
    /// does not keep the others from being dropped.
    fn drop_each(self) {
        for value in self.cells {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
        }
        if let Some(inherited) = self.inherited {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(inherited)));
        }
    }
}

fn take_cells(cells: &Cells<Value>, out: &mut Vec<Value>) {
    cells.for_each(|cell| {
        // A cell borrowed now belongs to a `with` further up this thread's stack;
        // it is left alone and taken on the next round.
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if slot.is_some() {
                out.extend(slot.take());
            }
        }
    });
}

/// One step of teardown.
pub(crate) enum Garbage {
    Handler(Handler),
    Values(Taken),
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
            Garbage::Values(values) => values.drop_each(),
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
}
