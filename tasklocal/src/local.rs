//! [`Local<T>`]: typed keys.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::current::{self, Here};
use crate::error::{panic_access, AccessError, Kind};
use crate::storage::{Entry, Forked, Small, Storage, Value};

/// A typed key: each owner (task, thread, snapshot run) has its own value for it —
/// Java's `ThreadLocal<T>`, tokio's `task_local!`, go-tls's `Set`/`Get` with a type.
///
/// Declare keys as statics with one of the `const` constructors:
///
/// ```
/// use tasklocal::Local;
///
/// /// Follows the request into every task and thread it spawns.
/// static REQUEST_ID: Local<String> = Local::inheritable();
/// /// Starts at 0 in every owner.
/// static COUNTER: Local<u64> = Local::with_initial(|| 0);
/// /// Neither inherited nor initialized.
/// static SCRATCH: Local<Vec<u8>> = Local::new();
///
/// REQUEST_ID.set("req-1".to_string());
/// COUNTER.with_mut(|n| *n += 1);
/// assert_eq!(COUNTER.get(), Some(1));
/// assert_eq!(SCRATCH.get(), None);
///
/// std::thread::spawn(|| {
///     // A plain thread is an owner of its own: nothing is inherited.
///     assert_eq!(REQUEST_ID.get(), None);
///     assert_eq!(COUNTER.get(), Some(0));
/// })
/// .join()
/// .unwrap();
///
/// tasklocal::thread::spawn(|| {
///     // `tasklocal::thread::spawn` inherits the inheritable values.
///     assert_eq!(REQUEST_ID.get().as_deref(), Some("req-1"));
/// })
/// .join()
/// .unwrap();
/// ```
///
/// # Which owner
///
/// Every method works on the storage of the innermost owner the code runs in: the
/// [`Task`](crate::Task) being polled, the [`Snapshot::run`](crate::Snapshot::run)
/// closure, a task of a runtime in automatic mode, or else the thread.
///
/// # Initialization
///
/// A key made with [`with_initial`](Self::with_initial) gives each owner `init()`,
/// computed on the owner's first access and stored. A key made with
/// [`inheritable`](Self::inheritable) gives a child owner its creator's value as of
/// the child's creation; the child's first write copies it (copy on write), and no
/// write on either side is seen by the other. A key made with
/// [`inheritable_with`](Self::inheritable_with) gives a child `fork(&value)` instead,
/// computed on the child's first access.
///
/// # Panics
///
/// The methods without `try_` panic where their `try_` twin returns an
/// [`AccessError`]:
///
/// * in a tokio task that has no storage of its own (plain `tokio::spawn`,
///   `spawn_blocking`), a write panics — reads there see no value (initial values are
///   computed but not stored); use [`spawn`](crate::spawn), [`task`](crate::task) or
///   automatic mode;
/// * **reentrancy**: any method of any key may be called from inside a
///   [`with`](Self::with)/[`with_mut`](Self::with_mut) closure or an initializer, and
///   never deadlocks. What cannot be served is the value borrowed right now: `set`,
///   `replace`, `take`, `scope` and `with_mut` of a non-inheritable key that a `with`
///   closure is reading, any access to the key a `with_mut` closure is mutating, and
///   an initializer reading its own key. Those panic, and their `try_` forms return an
///   error for which [`is_borrowed`](AccessError::is_borrowed) is true. (A `with`
///   closure of an inheritable key reads a shared reference to the value, so writes of
///   that key inside it are served; the closure keeps seeing the value it started
///   with.) Entering another owner (polling a [`Task`](crate::Task),
///   [`Snapshot::run`](crate::Snapshot::run)) inside a `with` closure of a
///   non-inheritable key panics too, and so do [`reset`](crate::reset) and
///   [`unload`](crate::unload) while a `with` closure borrows a value.
/// * after thread exit has torn the thread's storage down (from another
///   thread-local's destructor), writes panic and reads see no value.
pub struct Local<T: 'static> {
    index: KeyIndex,
    init: Option<fn() -> T>,
    shared: Option<SharedOps<T>>,
    /// How a child's value is made from its creator's (`inheritable_with`).
    fork: Option<fn(&T) -> T>,
    _values: PhantomData<fn() -> T>,
}

/// How an inheritable key converts its values to and from the shared form; only the
/// inheritable constructors, where `T: Clone + Send + Sync`, can make these.
struct SharedOps<T> {
    share: fn(T) -> Entry,
    owned: fn(Entry) -> Option<T>,
    make_mut: for<'a> fn(&'a mut Entry) -> Option<&'a mut T>,
}

impl<T> Clone for SharedOps<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOps<T> {}

impl<T: Clone + Send + Sync + 'static> SharedOps<T> {
    const OPS: SharedOps<T> = SharedOps {
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

impl<T: Send + Sync + 'static> SharedOps<T> {
    /// For `inheritable_with` keys: values are never copied but by `fork`, which the
    /// callers of `owned` and `make_mut` run when a value is shared.
    const FORK: SharedOps<T> = SharedOps {
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
fn unique_mut<T: 'static>(entry: &mut Entry) -> Option<&mut T> {
    match entry {
        Entry::Small(small) if Small::fits::<T>() => small.get_mut(),
        Entry::Value(shared) if !Small::fits::<T>() => Arc::get_mut(shared)?.downcast_mut(),
        _ => None,
    }
}

/// A key's index into the storages' tables, assigned on first use.
struct KeyIndex {
    plus_one: AtomicUsize,
}

static LOCAL_KEYS: AtomicUsize = AtomicUsize::new(0);
static INHERITABLE_KEYS: AtomicUsize = AtomicUsize::new(0);

impl KeyIndex {
    const fn new() -> Self {
        KeyIndex {
            plus_one: AtomicUsize::new(0),
        }
    }

    /// The index, if one was assigned (by an earlier access).
    #[inline(always)]
    fn assigned(&self) -> Option<usize> {
        self.plus_one.load(Ordering::Relaxed).checked_sub(1)
    }

    #[inline(always)]
    fn get(&self, inheritable: bool) -> usize {
        match self.plus_one.load(Ordering::Relaxed) {
            0 => self.assign(inheritable),
            n => n - 1,
        }
    }

    #[cold]
    fn assign(&self, inheritable: bool) -> usize {
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

/// The content of a key's slot, in whichever form the key stores it.
enum Raw {
    Local(Option<Value>),
    Shared(Entry),
}

/// What a look at a key found.
enum Visit<R> {
    /// The value was there and the visitor ran on it, under the borrow.
    Ran(R),
    /// The entry of an inheritable key, to be read with no borrow held.
    Lent(Entry),
    /// No value.
    Missing,
    /// No storage here: reads see no value and writes fail with this error.
    Detached(AccessError),
}

impl<T: 'static> Local<T> {
    /// A key with no initial value that is not inherited: every owner starts unset.
    ///
    /// ```
    /// static CONN: tasklocal::Local<Vec<u8>> = tasklocal::Local::new();
    /// assert!(!CONN.is_set());
    /// ```
    pub const fn new() -> Self {
        Local {
            index: KeyIndex::new(),
            init: None,
            shared: None,
            fork: None,
            _values: PhantomData,
        }
    }

    /// A key whose value in each owner starts as `init()`, computed lazily on the
    /// owner's first access (Java's `ThreadLocal.withInitial`).
    ///
    /// ```
    /// static COUNTER: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 0);
    /// assert_eq!(COUNTER.get(), Some(0));
    /// ```
    pub const fn with_initial(init: fn() -> T) -> Self {
        Local {
            index: KeyIndex::new(),
            init: Some(init),
            shared: None,
            fork: None,
            _values: PhantomData,
        }
    }

    #[inline(always)]
    const fn is_inheritable(&self) -> bool {
        self.shared.is_some()
    }
}

impl<T: Clone + Send + Sync + 'static> Local<T> {
    /// A key whose value a child owner — [`task`](crate::task),
    /// [`spawn`](crate::spawn), [`thread::spawn`](crate::thread::spawn),
    /// [`Snapshot`](crate::Snapshot) — starts with, as its creator had it when the
    /// child was created (Java's `InheritableThreadLocal`, Python's `contextvars`).
    ///
    /// ```
    /// static TENANT: tasklocal::Local<String> = tasklocal::Local::inheritable();
    /// TENANT.set("acme".into());
    /// let child = tasklocal::thread::spawn(|| TENANT.get());
    /// assert_eq!(child.join().unwrap().as_deref(), Some("acme"));
    /// ```
    pub const fn inheritable() -> Self {
        Local {
            index: KeyIndex::new(),
            init: None,
            shared: Some(SharedOps::<T>::OPS),
            fork: None,
            _values: PhantomData,
        }
    }

    /// Both: inherited from the creator, and `init()` in an owner that inherited no
    /// value.
    ///
    /// ```
    /// static LEVEL: tasklocal::Local<u8> = tasklocal::Local::inheritable_with_initial(|| 3);
    /// assert_eq!(LEVEL.get(), Some(3));
    /// LEVEL.set(5);
    /// assert_eq!(tasklocal::thread::spawn(|| LEVEL.get()).join().unwrap(), Some(5));
    /// ```
    pub const fn inheritable_with_initial(init: fn() -> T) -> Self {
        Local {
            index: KeyIndex::new(),
            init: Some(init),
            shared: Some(SharedOps::<T>::OPS),
            fork: None,
            _values: PhantomData,
        }
    }
}

impl<T: Send + Sync + 'static> Local<T> {
    /// An inherited key whose value a child owner starts with as `fork(&value)`, made
    /// from its creator's value as of the child's creation — Kotlin's `copyForChild`,
    /// TransmittableThreadLocal's `copy`. `T` need not be `Clone`: `fork` is how the key
    /// copies. Use it for values a child must not share as they are: a budget split
    /// between children, a depth that grows, a span whose children are new spans.
    ///
    /// ```
    /// use tasklocal::Local;
    ///
    /// /// How deep in the spawn tree the code runs.
    /// static DEPTH: Local<u32> = Local::inheritable_with(|depth| depth + 1);
    ///
    /// DEPTH.set(0);
    /// let child = tasklocal::thread::spawn(|| {
    ///     let mine = DEPTH.get();
    ///     let grandchild = tasklocal::thread::spawn(|| DEPTH.get()).join().unwrap();
    ///     (mine, grandchild)
    /// });
    /// assert_eq!(child.join().unwrap(), (Some(1), Some(2)));
    /// assert_eq!(DEPTH.get(), Some(0));
    /// ```
    ///
    /// # When `fork` runs
    ///
    /// Capturing stays O(1) whatever the number of keys: nothing is forked when a child
    /// is created. A child runs `fork` on its first access to the key — [`get`](Self::get),
    /// [`with`](Self::with), [`with_mut`](Self::with_mut), [`take`](Self::take),
    /// [`replace`](Self::replace) — once, and keeps the result as its own value; further
    /// accesses read that. The value forked is the creator's as of the child's
    /// creation (later writes of the creator are not seen). A child that never accesses
    /// the key never runs `fork`, and neither does one that [`set`](Self::set)s it
    /// first; such a child passes on what it inherited unforked, so its own children
    /// fork from that (an owner that never looked at the key is transparent).
    /// [`is_set`](Self::is_set) does not fork. `fork` runs in the child, with the
    /// child's storage current, and may use the API — except this key, which fails
    /// with [`is_borrowed`](crate::AccessError::is_borrowed).
    ///
    /// # Writes
    ///
    /// [`set`](Self::set), [`replace`](Self::replace) and [`scope`](Self::scope) store a
    /// new value and copy nothing. A value captured since it was stored (by a spawn, a
    /// [`Snapshot`](crate::Snapshot), a [`Carried`](crate::Carried)) must stay as it was
    /// for the children still to fork it, so the owner does not change it in place; with
    /// no `Clone`, `fork` is the only copy: [`with_mut`](Self::with_mut) of such a value
    /// works on `fork(&value)`, which becomes the owner's value (changed in place by
    /// further `with_mut`s until the next capture), and [`take`](Self::take) and
    /// [`replace`](Self::replace) return `fork(&value)`. Whether a capture happened is
    /// what counts, not whether it is still alive, so the outcome never depends on
    /// timing. A value not captured since it was stored is changed or moved out as it
    /// is. To replace the owner's value with no `fork`, [`set`](Self::set) a new one.
    ///
    /// # When `fork` panics
    ///
    /// The panic is caught: the access that forked fails — `try_` forms return an
    /// error for which [`is_fork_panicked`](crate::AccessError::is_fork_panicked) is
    /// true, the others panic with that message — and the child drops its reference
    /// to the inherited value and has no value for the key from then on (as if
    /// unset; nothing is leaked, nothing is retried). The creator's value is
    /// unaffected. A panic of `fork` while it copies a captured value of the owner's
    /// own (see Writes) propagates: [`with_mut`](Self::with_mut) leaves the value as
    /// it was; [`take`](Self::take) and [`replace`](Self::replace) have removed it
    /// (the captured contexts keep theirs).
    ///
    /// ```
    /// static N: tasklocal::Local<String> = tasklocal::Local::inheritable_with(|_| panic!("fork"));
    /// N.set("mine".into());
    /// # std::panic::set_hook(Box::new(|_| ()));
    /// tasklocal::Snapshot::capture().run(|| {
    ///     assert!(N.try_with(|_| ()).unwrap_err().is_fork_panicked());
    ///     assert_eq!(N.get(), None); // nothing inherited
    /// });
    /// assert_eq!(N.get().as_deref(), Some("mine"));
    /// ```
    pub const fn inheritable_with(fork: fn(&T) -> T) -> Self {
        Local {
            index: KeyIndex::new(),
            init: None,
            shared: Some(SharedOps::<T>::FORK),
            fork: Some(fork),
            _values: PhantomData,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Local<T> {
    /// This key's index and `value` in inheritable form; `None` for a key that is not
    /// inheritable.
    pub(crate) fn inherited_entry(&self, value: T) -> Option<(usize, Entry)> {
        let mut entry = (self.shared?.share)(value);
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
    pub(crate) fn inherited_value(&self, entries: &[Entry]) -> Option<T> {
        self.shared?;
        entries.get(self.index())?.get_any::<T>().cloned()
    }
}

impl<T: Send + 'static> Local<T> {
    #[inline(always)]
    fn index(&self) -> usize {
        self.index.get(self.is_inheritable())
    }

    /// Looks at the value. `f` runs on it under the borrow, except for an inheritable
    /// key when `lend` is true: then a clone of its entry is handed out instead.
    fn visit<R>(
        &'static self,
        f: impl FnOnce(&T) -> R,
        lend: bool,
    ) -> Result<Visit<R>, AccessError> {
        let index = self.index();
        let inheritable = self.is_inheritable();
        let borrowed = || AccessError::new(Kind::Borrowed);
        current::read(|here| match here {
            Here::Storage(storage) if !inheritable => match storage.locals.get(index) {
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
                let inherited = storage.inherited.try_borrow().map_err(|_| borrowed())?;
                visit_entry(
                    inherited.as_ref().and_then(|entries| entries.get(index)),
                    f,
                    lend,
                )
            }
            // Only inheritable keys have inherited values (the index spaces differ).
            Here::Seed(seed) if inheritable => {
                visit_entry(seed.and_then(|entries| entries.get(index)), f, lend)
            }
            Here::Seed(_) => Ok(Visit::Missing),
            Here::Denied(Kind::Borrowed) => Err(borrowed()),
            Here::Denied(kind) => Ok(Visit::Detached(AccessError::new(kind))),
        })
    }

    /// Puts `raw` into this key's slot in the current storage; returns what was there.
    fn swap_raw(&'static self, raw: Raw) -> Result<Raw, AccessError> {
        let index = self.index();
        current::write(|storage| swap_in(storage, index, raw))?
    }

    /// Converts the content of a slot back to `T`.
    fn unwrap_raw(&self, raw: Raw) -> Option<T> {
        match raw {
            Raw::Local(value) => value?.downcast::<T>().ok(),
            Raw::Shared(Entry::Fork(forked))
                if Arc::strong_count(&forked) > 1 || forked.epoch != captures() =>
            {
                // Captured since it was stored: the captured context keeps it, the
                // owner's copy is a fork.
                Some((self.fork?)(forked.value.downcast_ref::<T>()?))
            }
            Raw::Shared(entry) => (self.shared?.owned)(entry),
        }
    }

    /// `value` as the entry of an `inheritable_with` key owned by the storage `owner`,
    /// whose captures count `epoch`.
    fn owned_entry(&self, value: T, owner: u64, epoch: u64) -> Entry {
        let Some(ops) = self.shared else {
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
    fn own_fork(&'static self) -> Result<(), AccessError> {
        match self.fork {
            Some(fork) => self.own_fork_with(fork),
            None => Ok(()),
        }
    }

    #[inline(never)]
    fn own_fork_with(&'static self, fork: fn(&T) -> T) -> Result<(), AccessError> {
        let index = self.index();
        let borrowed = || AccessError::new(Kind::Borrowed);
        // The inherited entry waiting for its fork, if any.
        let pending = current::read(|here| match here {
            Here::Storage(storage) => {
                let inherited = storage.inherited.try_borrow().map_err(|_| borrowed())?;
                Ok(
                    match inherited.as_ref().and_then(|entries| entries.get(index)) {
                        Some(Entry::Fork(forked)) if forked.owner != storage.id.as_u64() => {
                            Some(forked.clone())
                        }
                        _ => None,
                    },
                )
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
                Some(value) => self.owned_entry(value, storage.id.as_u64(), storage.stored_fork()),
                None => Entry::Empty,
            };
            storage
                .inherited_mut(|entries| match entries.get_mut(index) {
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

    fn wrap(&self, value: T) -> Raw {
        match self.shared {
            Some(ops) => Raw::Shared((ops.share)(value)),
            None => Raw::Local(Some(Value::new(value))),
        }
    }

    fn empty(&self) -> Raw {
        match self.shared {
            Some(_) => Raw::Shared(Entry::Empty),
            None => Raw::Local(None),
        }
    }

    /// Stores the initial value, computed now with no borrow held.
    fn store_initial(&'static self) -> Result<(), AccessError> {
        if let Some(value) = self.initial_value()? {
            // An initializer that set this key itself is overwritten, as std's
            // `thread_local!` and Java's `ThreadLocal` do.
            drop(self.swap_raw(self.wrap(value))?);
        }
        Ok(())
    }

    /// Runs the initializer, refusing to run it again from inside itself (it would
    /// recurse without end).
    fn initial_value(&'static self) -> Result<Option<T>, AccessError> {
        let Some(init) = self.init else {
            return Ok(None);
        };
        let _running = Initializing::enter(self as *const Self as usize)?;
        Ok(Some(init()))
    }

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

    /// [`set`](Self::set) when the scoped fast path misses.
    #[inline(never)]
    #[track_caller]
    fn set_miss(&'static self, value: T) {
        if let Err(err) = self.try_set_miss(value) {
            panic_access(err)
        }
    }

    /// Overwrites a present value in place, if the current owner is a scoped owner whose
    /// storage holds one (unshared, for an inheritable key): the old value, or `value`
    /// back.
    #[inline(always)]
    fn set_scoped(&'static self, value: T) -> Result<T, T> {
        let Some(index) = self.index.assigned() else {
            return Err(value);
        };
        let mut value = Some(value);
        // Two closures, the key's kind decided outside them: one closure with the branch
        // inside compiled to a path 24 instructions longer.
        let old = if self.is_inheritable() {
            current::with_scoped_storage(|storage| replace_inherited(storage, index, &mut value))
        } else {
            current::with_scoped_storage(|storage| replace_local(storage, index, &mut value))
        };
        // Not `Once`: its `or` here compiled to 8 more instructions a `set`.
        match (old, value) {
            (Some(old), _) => Ok(old),
            (None, Some(value)) => Err(value),
            // `value` is only taken by the replace that produced `Some`.
            (None, None) => unreachable!(),
        }
    }

    /// [`try_set`](Self::try_set) past the scoped fast path: the fast path of any owner,
    /// then the general path.
    #[inline(never)]
    fn try_set_miss(&'static self, value: T) -> Result<(), AccessError> {
        let index = self.index();
        let mut value = Some(value);
        let old = if self.is_inheritable() {
            current::with_storage(|storage| replace_inherited(storage, index, &mut value))
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
    fn try_set_slow(&'static self, value: T) -> Result<(), AccessError> {
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
        match self.visit(|_| (), false)? {
            Visit::Ran(()) | Visit::Lent(_) => {}
            // Nothing to take: do not create a storage for it.
            Visit::Missing => return Ok(None),
            Visit::Detached(err) => return Err(err),
        }
        let old = self.swap_raw(self.empty())?;
        Ok(self.unwrap_raw(old))
    }

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
        matches!(self.visit(|_| (), false), Ok(Visit::Ran(())) | Err(_))
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
        if !self.is_inheritable() {
            // Fast path: a non-inheritable value is read in place, under the borrow.
            let index = self.index();
            let fast = current::with_storage(|storage| {
                let slot = storage.locals.get_inline(index)?.try_borrow().ok()?;
                let value = slot.as_ref()?.downcast_ref::<T>()?;
                Some(f.take()?(Some(value)))
            });
            if let Some(r) = fast {
                return Ok(r);
            }
        }
        match f {
            Some(f) => self.with_slow(f, true),
            None => Err(AccessError::new(Kind::Borrowed)),
        }
    }

    #[inline(never)]
    fn with_slow<R>(
        &'static self,
        f: impl FnOnce(Option<&T>) -> R,
        initialize: bool,
    ) -> Result<R, AccessError> {
        self.own_fork()?;
        let mut f = Some(f);
        // An inheritable value is read through a clone of its entry, so that `f` runs
        // with no borrow held.
        let visit = self.visit(|value| f.take().map(|f| f(Some(value))), true)?;
        let Some(f) = f.take() else {
            return match visit {
                Visit::Ran(Some(r)) => Ok(r),
                _ => Err(AccessError::new(Kind::Borrowed)),
            };
        };
        match visit {
            Visit::Lent(entry) => Ok(f(entry.get_any::<T>())),
            Visit::Missing if initialize && self.init.is_some() => {
                self.store_initial()?;
                self.with_slow(f, false)
            }
            // No storage to keep it in: the initial value is computed, not stored.
            Visit::Detached(_) => Ok(f(self.initial_value()?.as_ref())),
            _ => Ok(f(None)),
        }
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
        match self.visit(|_| (), false)? {
            Visit::Ran(()) | Visit::Lent(_) => {}
            Visit::Missing if self.init.is_some() => self.store_initial()?,
            Visit::Missing => return Ok(None),
            Visit::Detached(err) => return Err(err),
        }
        let index = self.index();
        let Some(ops) = self.shared else {
            let mut f = Some(f);
            return current::write(|storage| {
                let cell = storage.locals.get_or_create(index);
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
            let taken = storage.inherited_mut(|entries| match entries.get_mut(index) {
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
            Ok((taken, storage.captures.get()))
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
    pub fn scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        let old = self
            .swap_raw(self.wrap(value))
            .unwrap_or_else(|err| panic_access(err));
        let _restore = Restore {
            key: self,
            old: Some(old),
        };
        f()
    }
}

thread_local! {
    /// The keys whose initializer runs on this thread right now.
    static INITIALIZING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks a key's initializer as running, until dropped (also by unwinding).
struct Initializing(usize);

impl Initializing {
    fn enter(key: usize) -> Result<Initializing, AccessError> {
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

/// Puts a lent inheritable entry back when `with_mut` ends, also by unwinding.
struct LentBack {
    index: usize,
    entry: Option<Entry>,
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
                .inherited_mut(|entries| match entries.get_mut(index) {
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

/// Restores a key's previous state when `scope` ends, also by unwinding.
struct Restore<T: Send + 'static> {
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
        match self.get_scoped() {
            Some(value) => Some(value),
            // A tail call: the hit path makes no call and needs no stack frame.
            None => self.get_miss(),
        }
    }

    /// [`get`](Self::get) when the scoped fast path misses.
    #[inline(never)]
    #[track_caller]
    fn get_miss(&'static self) -> Option<T> {
        match self.try_get_miss() {
            Ok(value) => value,
            Err(err) => panic_access(err),
        }
    }

    /// The value, if the current owner is a `Task` (or any scoped owner) whose storage
    /// holds it.
    #[inline(always)]
    fn get_scoped(&'static self) -> Option<T> {
        let index = self.index.assigned()?;
        current::with_scoped_storage(|storage| self.read_in(storage, index))
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
        match self.get_scoped() {
            Some(value) => Ok(Some(value)),
            None => self.try_get_miss(),
        }
    }

    /// [`try_get`](Self::try_get) past the scoped fast path: the fast path of any
    /// owner (a thread's storage, after checking that no plain tokio task runs), then
    /// the general path.
    #[inline(never)]
    fn try_get_miss(&'static self) -> Result<Option<T>, AccessError> {
        let index = self.index();
        if self.is_inheritable() {
            // A scoped owner with no storage yet (a child that only reads what it
            // inherited): straight from its seed.
            let seeded = current::with_scoped_frame(|frame| match frame {
                // A value to fork, or none: the general path.
                Err(seed) => seed.get(index)?.get::<T>().cloned(),
                Ok(_) => None,
            });
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
    fn read_in(&self, storage: &Storage, index: usize) -> Option<T> {
        if self.is_inheritable() {
            let inherited = storage.inherited.try_borrow().ok()?;
            inherited.as_ref()?.get(index)?.get::<T>().cloned()
        } else {
            let slot = storage.locals.get_inline(index)?.try_borrow().ok()?;
            slot.as_ref()?.downcast_ref::<T>().cloned()
        }
    }

    #[inline(never)]
    fn get_slow(&'static self) -> Result<Option<T>, AccessError> {
        self.own_fork()?;
        match self.visit(T::clone, false)? {
            Visit::Ran(value) => Ok(Some(value)),
            _ => self.with_slow(|value| value.cloned(), true),
        }
    }
}

/// Puts `value` (taken) in place of the present value of an inheritable key at `index`
/// in `storage`, if its table is unshared; the old value.
#[inline(always)]
fn replace_inherited<T: 'static>(
    storage: &Storage,
    index: usize,
    value: &mut Option<T>,
) -> Option<T> {
    let mut inherited = storage.inherited.try_borrow_mut().ok()?;
    let entries = Arc::get_mut(inherited.as_mut()?)?;
    let present = unique_mut::<T>(entries.get_mut(index)?)?;
    Some(std::mem::replace(present, value.take()?))
}

/// Puts `value` (taken) in place of the present value of a non-inheritable key at
/// `index` in `storage` (among the first cells); the old value.
#[inline(always)]
fn replace_local<T: 'static>(storage: &Storage, index: usize, value: &mut Option<T>) -> Option<T> {
    let mut slot = storage.locals.get_inline(index)?.try_borrow_mut().ok()?;
    let present = slot.as_mut()?.downcast_mut::<T>()?;
    Some(std::mem::replace(present, value.take()?))
}

/// How many times the current owner's inheritable values were captured.
fn captures() -> u64 {
    current::read(|here| match here {
        Here::Storage(storage) => storage.captures.get(),
        _ => 0,
    })
}

fn visit_entry<T: 'static, R>(
    entry: Option<&Entry>,
    f: impl FnOnce(&T) -> R,
    lend: bool,
) -> Result<Visit<R>, AccessError> {
    Ok(match entry {
        Some(Entry::Lent) => return Err(AccessError::new(Kind::Borrowed)),
        Some(entry) if lend && !matches!(entry, Entry::Empty) => Visit::Lent(entry.clone()),
        Some(entry) => entry
            .get_any::<T>()
            .map_or(Visit::Missing, |value| Visit::Ran(f(value))),
        None => Visit::Missing,
    })
}

fn swap_in(storage: &Storage, index: usize, raw: Raw) -> Result<Raw, AccessError> {
    let borrowed = || AccessError::new(Kind::Borrowed);
    match raw {
        Raw::Local(value) => {
            let cell = storage.locals.get_or_create(index);
            let mut slot = cell.try_borrow_mut().map_err(|_| borrowed())?;
            Ok(Raw::Local(std::mem::replace(&mut *slot, value)))
        }
        Raw::Shared(mut entry) => storage
            .inherited_mut(|entries| {
                if let Entry::Fork(forked) = &mut entry {
                    // A value just written: this owner's own.
                    if let Some(forked) = Arc::get_mut(forked) {
                        if forked.owner == Forked::FRESH {
                            forked.owner = storage.id.as_u64();
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
                Ok(Raw::Shared(std::mem::replace(slot, entry)))
            })
            .unwrap_or_else(|| Err(borrowed())),
    }
}

impl<T: 'static> Default for Local<T> {
    /// [`Local::new`]: no initial value, not inherited.
    ///
    /// ```
    /// let key: tasklocal::Local<u8> = Default::default();
    /// # let _ = key;
    /// ```
    fn default() -> Self {
        Local::new()
    }
}

impl<T: 'static> fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local")
            .field("type", &std::any::type_name::<T>())
            .field("inheritable", &self.is_inheritable())
            .field("initial", &self.init.is_some())
            .finish_non_exhaustive()
    }
}
