//! [`AccessError`]: why a storage access could not be served.

use std::fmt;

/// The error returned by the `try_` methods when an access cannot be served.
///
/// It says why through its methods ([`is_no_storage`](Self::is_no_storage),
/// [`is_borrowed`](Self::is_borrowed), [`is_destroyed`](Self::is_destroyed)) and its
/// `Display` text, which also names the fix.
///
/// # Examples
///
/// ```
/// static NAME: tasklocal::Local<String> = tasklocal::Local::new();
///
/// NAME.set("a".to_string());
/// let err = NAME.with(|_| NAME.try_set("b".to_string())).unwrap_err();
/// assert!(err.is_borrowed());
/// println!("{err}");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AccessError {
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// Running in a tokio task that has no storage of its own.
    NoStorage,
    /// The slot is borrowed by an enclosing `with`/`with_mut`.
    Borrowed,
    /// The thread's locals are being or have been destroyed.
    Destroyed,
    /// A key's initializer reads the key itself.
    Initializing,
    /// The `fork` of an `inheritable_with` key reads the key itself.
    Forking,
    /// The `fork` of an `inheritable_with` key panicked in this owner.
    ForkPanicked,
}

impl AccessError {
    pub(crate) const fn new(kind: Kind) -> Self {
        AccessError { kind }
    }

    /// The code runs in a tokio task that has no storage of its own (spawned with
    /// plain `tokio::spawn` or `spawn_blocking`), so there is nowhere to write.
    ///
    /// ```
    /// # #[cfg(feature = "tokio")] {
    /// static N: tasklocal::Local<u32> = tasklocal::Local::new();
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let err = rt.block_on(async { tokio::spawn(async { N.try_set(1) }).await.unwrap() });
    /// assert!(err.unwrap_err().is_no_storage());
    /// # }
    /// ```
    pub fn is_no_storage(&self) -> bool {
        self.kind == Kind::NoStorage
    }

    /// The value is in use further up this thread's stack: borrowed by an enclosing
    /// [`with`](crate::Local::with) or [`with_mut`](crate::Local::with_mut) call, or
    /// being computed by the key's initializer (which read the key itself); or the
    /// storage cannot be reset or unloaded because a value in it is borrowed.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::with_initial(|| 0);
    /// N.with_mut(|_| assert!(N.try_take().unwrap_err().is_borrowed()));
    /// ```
    pub fn is_borrowed(&self) -> bool {
        matches!(
            self.kind,
            Kind::Borrowed | Kind::Initializing | Kind::Forking
        )
    }

    /// The `fork` of an [`inheritable_with`](crate::Local::inheritable_with) key
    /// panicked when this owner first used the value it inherited: the owner has no
    /// value for the key (its creator's is unaffected).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable_with(|_| panic!("no"));
    /// N.set(1);
    /// # std::panic::set_hook(Box::new(|_| ()));
    /// let err = tasklocal::Snapshot::capture().run(|| N.try_with(|n| n.copied())).unwrap_err();
    /// assert!(err.is_fork_panicked());
    /// assert_eq!(N.get(), Some(1));
    /// ```
    pub fn is_fork_panicked(&self) -> bool {
        self.kind == Kind::ForkPanicked
    }

    /// The thread is exiting and its storage has already been torn down (the call
    /// comes from another thread-local's destructor).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::new();
    /// assert!(!N.try_set(1).is_err_and(|e| e.is_destroyed()));
    /// ```
    pub fn is_destroyed(&self) -> bool {
        self.kind == Kind::Destroyed
    }
}

impl fmt::Debug for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessError")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::NoStorage => {
                "this tokio task has no tasklocal storage: spawn it with `tasklocal::spawn` \
                 (or `tasklocal::spawn_blocking`), wrap its future with `tasklocal::task`, \
                 or install automatic mode with `tasklocal::tokio::install`"
            }
            Kind::Borrowed => {
                "the value is borrowed by an enclosing `with`/`with_mut` call: \
                 finish that call first, or read it with `get`/`with`"
            }
            Kind::Initializing => {
                "the initializer of this key reads the key itself: \
                 it would recurse without end"
            }
            Kind::Forking => {
                "the `fork` of this `inheritable_with` key reads the key itself: \
                 it would recurse without end"
            }
            Kind::ForkPanicked => {
                "the `fork` of this `inheritable_with` key panicked when this owner first \
                 used the value it inherited: the owner has no value for the key"
            }
            Kind::Destroyed => {
                "the thread's tasklocal storage has already been destroyed (thread exit)"
            }
        })
    }
}

impl std::error::Error for AccessError {}

/// Panics with the error's message; the one place the panicking methods panic.
#[cold]
#[track_caller]
#[inline(never)]
pub(crate) fn panic_access(err: AccessError) -> ! {
    panic!("tasklocal: {err}")
}

/// Entering an owner under a live borrow of the current storage cannot be served.
#[cold]
#[track_caller]
#[inline(never)]
pub(crate) fn panic_enter_borrowed() -> ! {
    panic!(
        "tasklocal: cannot run a `Task` or `Snapshot::run` inside a `with`/`with_mut` closure \
         that borrows the current storage on this thread: read the value with `get` first"
    )
}
