//! Bridges: make a library's thread-local "current" value follow tasklocal's owners.
//!
//! Many libraries keep what is "current" in a thread-local of their own:
//! OpenTelemetry's `Context::current()`, the `log-mdc` map that log4rs prints, a
//! tenant or a database transaction in an ORM. In async code such a value is lost at
//! the next `.await` (the task moves to another worker) or bleeds into the next task
//! polled on the same worker. A [`Bridge`] fixes that: tasklocal calls
//! [`Bridge::enter`] right after an owner became current on a thread and
//! [`Bridge::exit`] right before it stops being current, so the library's
//! thread-local can mirror a value the owner keeps in its storage (a
//! [`Local`](crate::Local), inherited by its children like any other).
//!
//! Owners switch on every poll of a [`Task`](crate::Task) or of a task in automatic
//! mode, around [`Snapshot::run`](crate::Snapshot::run), and around the teardown of
//! an owner (its exit handlers and value drops run with it current). The thread's own
//! storage is the owner when no other runs: a bridge's thread-local *is* the thread
//! owner's state, and every `exit` restores it.
//!
//! Calls nest like the owners: `enter` of an inner owner, `exit` of the inner one,
//! then (later) `exit` of the outer one — a stack per thread. Both run on the thread
//! that switched, with the owner's values readable (except in the `exit` that follows
//! an owner's teardown: its values are dropped by then); they may call any tasklocal
//! API.
//!
//! With no bridge registered, a switch pays one relaxed load of a global counter.
//!
//! ```
//! use std::cell::Cell;
//! use tasklocal::bridge::{self, Bridge};
//! use tasklocal::Local;
//!
//! // A library that keeps its "current tenant" in a thread-local...
//! thread_local!(static TENANT: Cell<Option<u32>> = const { Cell::new(None) });
//! thread_local!(static SAVED: std::cell::RefCell<Vec<Option<u32>>> = const { std::cell::RefCell::new(Vec::new()) });
//!
//! // ...and the owner's value it should mirror.
//! static OWNER_TENANT: Local<u32> = Local::inheritable();
//!
//! struct TenantBridge;
//! impl Bridge for TenantBridge {
//!     fn enter(&self) {
//!         let previous = TENANT.replace(OWNER_TENANT.get());
//!         SAVED.with(|s| s.borrow_mut().push(previous));
//!     }
//!     fn exit(&self) {
//!         let previous = SAVED.with(|s| s.borrow_mut().pop()).flatten();
//!         TENANT.set(previous);
//!     }
//! }
//! bridge::register(TenantBridge).unwrap();
//!
//! OWNER_TENANT.set(1);
//! let task = tasklocal::task(async {
//!     // The library's thread-local follows the task's owner.
//!     assert_eq!(TENANT.get(), Some(1));
//! });
//! futures::executor::block_on(task);
//! assert_eq!(TENANT.get(), None); // restored after the poll
//! ```

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::current;

/// A library's thread-local state that follows the current owner. See the
/// [module docs](self).
///
/// Both methods run on the switching thread with the owner current: they may read
/// and write the owner's values and call any tasklocal API. A method that panics does
/// not corrupt the switch: the owner is made current (or left) all the same, every
/// bridge entered is exited, and the panic then continues in the code that switched
/// (the poll of the task, or `Snapshot::run`), unless that code is already unwinding.
///
/// ```
/// use tasklocal::bridge::Bridge;
///
/// struct Nothing;
/// impl Bridge for Nothing {
///     fn enter(&self) {}
///     fn exit(&self) {}
/// }
/// tasklocal::bridge::register(Nothing).unwrap();
/// ```
pub trait Bridge: Send + Sync + 'static {
    /// An owner has just become current on this thread: make the library's
    /// thread-local show the owner's state (saving what it showed, to restore in
    /// [`exit`](Self::exit)).
    fn enter(&self);

    /// The owner [entered](Self::enter) last on this thread is about to stop being
    /// current: restore what the library's thread-local showed before.
    fn exit(&self);
}

/// At most this many bridges can be registered.
pub const MAX_BRIDGES: usize = 8;

/// The registered bridges, append-only: a slot is written once, under `REGISTER`,
/// before `COUNT` makes it visible.
static SLOTS: [OnceLock<&'static dyn Bridge>; MAX_BRIDGES] =
    [const { OnceLock::new() }; MAX_BRIDGES];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static REGISTER: Mutex<()> = Mutex::new(());

/// Registers `bridge` for every owner switch on every thread from now on, for the
/// life of the process.
///
/// Owners that are current on some thread when it is registered were entered
/// without it: the bridge sees neither their `enter` nor their `exit` (each owner's
/// switch calls the bridges it entered, and only those, on the way out). Register
/// bridges at start-up, before runtimes run tasks.
///
/// # Errors
///
/// [`RegisterError`] when [`MAX_BRIDGES`] bridges are registered already.
///
/// ```
/// use tasklocal::bridge::{register, Bridge};
///
/// struct Quiet;
/// impl Bridge for Quiet {
///     fn enter(&self) {}
///     fn exit(&self) {}
/// }
/// assert!(register(Quiet).is_ok());
/// ```
pub fn register(bridge: impl Bridge) -> Result<(), RegisterError> {
    let _lock = REGISTER.lock().unwrap_or_else(PoisonError::into_inner);
    let n = COUNT.load(Ordering::Relaxed);
    let slot = SLOTS.get(n).ok_or(RegisterError { _private: () })?;
    let bridge: &'static dyn Bridge = Box::leak(Box::new(bridge));
    // Only this thread writes slot `n`, under the lock.
    let _ = slot.set(bridge);
    COUNT.store(n + 1, Ordering::Release);
    Ok(())
}

/// The number of bridges registered.
///
/// ```
/// let before = tasklocal::bridge::registered();
/// struct B;
/// impl tasklocal::bridge::Bridge for B { fn enter(&self) {} fn exit(&self) {} }
/// tasklocal::bridge::register(B).unwrap();
/// assert_eq!(tasklocal::bridge::registered(), before + 1);
/// ```
pub fn registered() -> usize {
    COUNT.load(Ordering::Acquire)
}

/// [`register`] failed: [`MAX_BRIDGES`] bridges are registered already.
///
/// ```
/// struct B;
/// impl tasklocal::bridge::Bridge for B { fn enter(&self) {} fn exit(&self) {} }
/// let mut last = Ok(());
/// for _ in 0..=tasklocal::bridge::MAX_BRIDGES {
///     last = tasklocal::bridge::register(B);
/// }
/// let err = last.unwrap_err();
/// assert!(err.to_string().contains("bridges"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterError {
    _private: (),
}

impl fmt::Debug for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterError").finish_non_exhaustive()
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot register more than {MAX_BRIDGES} tasklocal bridges"
        )
    }
}

impl std::error::Error for RegisterError {}

/// Whether any bridge is registered: the one check a switch makes when none is.
#[inline(always)]
pub(crate) fn any() -> bool {
    COUNT.load(Ordering::Relaxed) != 0
}

/// The bridges an owner's switch entered: exited, last first, by [`exit`].
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Entered(u8);

impl Entered {
    /// No bridge was entered.
    #[inline(always)]
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Calls [`Bridge::enter`] of every registered bridge, first registered first, with
/// the owner just made current. `entered` counts those whose `enter` returned, to be
/// exited by [`exit`]. A panicking `enter` stops the round (that bridge is not
/// exited); its panic is returned for the caller to [`resume`] once its guard is in
/// place.
///
/// Owners switched *inside* a bridge's `enter` or `exit` (a bridge that runs a
/// [`Snapshot`](crate::Snapshot) or polls a task) call no bridge: that would recurse.
#[cold]
#[inline(never)]
pub(crate) fn enter(entered: &mut Entered) -> Option<Box<dyn Any + Send>> {
    current::with_bridge_mark(|calling| enter_marked(calling, entered)).flatten()
}

/// [`enter`] for a caller that holds the thread's mark already, `calling`: set while
/// a bridge's `enter` or `exit` runs on this thread (it lives with the current owner,
/// so that a switch asks it in the same thread-local access).
#[inline]
pub(crate) fn enter_marked(
    calling: &Cell<bool>,
    entered: &mut Entered,
) -> Option<Box<dyn Any + Send>> {
    if calling.replace(true) {
        return None;
    }
    let n = COUNT.load(Ordering::Acquire).min(MAX_BRIDGES);
    let mut panicked = None;
    while usize::from(entered.0) < n {
        let Some(bridge) = SLOTS[usize::from(entered.0)].get() else {
            break;
        };
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| bridge.enter())) {
            panicked = Some(panic);
            break;
        }
        entered.0 += 1;
    }
    calling.set(false);
    panicked
}

/// Whether a bridge's `enter` or `exit` runs on this thread: owners switched now are
/// entered with no bridge. For the bridges of this crate.
#[cfg_attr(
    not(any(feature = "log-mdc", feature = "opentelemetry")),
    allow(dead_code)
)]
pub(crate) fn calling() -> bool {
    // Also when the thread's locals are gone: no bridge may be called then.
    current::with_bridge_mark(Cell::get).unwrap_or(true)
}

/// Calls [`Bridge::exit`] of the bridges `entered` counts, last first, with the owner
/// still current. Every one runs even if one panics; the first panic is returned for
/// the caller to resume once the owner is switched back.
#[cold]
#[inline(never)]
pub(crate) fn exit(entered: &mut Entered) -> Option<Box<dyn Any + Send>> {
    match current::with_bridge_mark(|calling| exit_marked(calling, &mut *entered)) {
        Some(panic) => panic,
        // No mark to set (the thread's locals are gone): exited all the same.
        None => exit_marked(&Cell::new(true), entered),
    }
}

/// [`exit`] for a caller that holds the thread's mark already (see [`enter_marked`]).
#[inline]
pub(crate) fn exit_marked(
    calling: &Cell<bool>,
    entered: &mut Entered,
) -> Option<Box<dyn Any + Send>> {
    // Entered ones are exited even inside another bridge's call: `enter` counted them.
    let outer = calling.replace(true);
    let mut first = None;
    while entered.0 > 0 {
        entered.0 -= 1;
        if let Some(bridge) = SLOTS[usize::from(entered.0)].get() {
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| bridge.exit())) {
                first.get_or_insert(panic);
            }
        }
    }
    calling.set(outer);
    first
}

/// Resumes a panic of a bridge, unless the thread is unwinding already (then it is
/// dropped: a second panic would abort — an owner's teardown during unwinding
/// enters the owner again).
#[inline(always)]
pub(crate) fn resume(panic: Option<Box<dyn Any + Send>>) {
    if let Some(panic) = panic {
        resume_panic(panic);
    }
}

#[cold]
#[inline(never)]
fn resume_panic(panic: Box<dyn Any + Send>) {
    if !std::thread::panicking() {
        panic::resume_unwind(panic);
    }
}
