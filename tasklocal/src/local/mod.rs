//! [`Local<T>`]: typed keys.
//!
//! Layered like std's `thread/local.rs`: this file has the key and its constructors;
//! [`read`] and [`write`] the public accessors with their fast paths; [`slot`] the
//! slot-access layer they fall back to (no storage, a seed, an initial value, a
//! borrow); [`inheritable`] how inheritable values are shared, copied on write and
//! forked; [`key_index`] the key's number.

use std::fmt;
use std::marker::PhantomData;

mod inheritable;
mod key_index;
mod read;
mod slot;
mod write;

use inheritable::InheritableOps;
use key_index::KeyIndex;

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
/// [`AccessError`](crate::AccessError):
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
///   error for which [`is_borrowed`](crate::AccessError::is_borrowed) is true. (A `with`
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
    inheritable: Option<InheritableOps<T>>,
    /// How a child's value is made from its creator's (`inheritable_with`).
    fork: Option<fn(&T) -> T>,
    _values: PhantomData<fn() -> T>,
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
            inheritable: None,
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
            inheritable: None,
            fork: None,
            _values: PhantomData,
        }
    }

    #[inline(always)]
    const fn is_inheritable(&self) -> bool {
        self.inheritable.is_some()
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
            inheritable: Some(InheritableOps::<T>::OPS),
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
            inheritable: Some(InheritableOps::<T>::OPS),
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
            inheritable: Some(InheritableOps::<T>::FORK),
            fork: Some(fork),
            _values: PhantomData,
        }
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
