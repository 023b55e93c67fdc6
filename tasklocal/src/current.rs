//! The thread-local switch that says which storage is current, its guard, and the
//! thread's own storage (the fallback owner).
//!
//! All per-thread state is one const-initialized thread-local, `CONTEXT`, holding
//! the current [`Frame`] and the kind of its [`Owner`]. Running an owner (polling a
//! `Task`, `Snapshot::run`, a task of a runtime in automatic mode) swaps the owner's
//! frame in and, through a guard, back out again — also when the poll unwinds. When
//! no owner runs, `CONTEXT` holds the thread's own frame.
//!
//! `CONTEXT` has no destructor, so it is never gone, and an access is a plain
//! thread-local read. The thread's own storage is torn down by the destructor of a
//! second thread-local, `THREAD_EXIT`; after that the thread's owner is
//! [`Owner::ThreadGone`]: reads see nothing, writes fail with [`Kind::Destroyed`], and
//! other owners (a `Task` dropped by another thread-local's destructor) still work.

use std::cell::{Cell, Ref, RefCell};
use std::mem::ManuallyDrop;
use std::sync::Arc;

use crate::error::{AccessError, Kind};
use crate::once::Once;
use crate::storage::{self, Garbage, Inheritables, Storage};
// std's, or loom's in the loom models (each loom thread needs its own context).
use crate::sync::thread_local;

mod pending;
mod switch;

use pending::settle_if_pending;
// Used by automatic mode only.
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(unused_imports))]
pub(crate) use pending::{capture_of, pend, set_settler, unpend, Settler};
pub(crate) use switch::{entered, entered_bridged, run_and_finish, try_enter, with_bridge_mark};
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(unused_imports))]
pub(crate) use switch::{swap_in, swap_out};

thread_local! {
    static CONTEXT: Context = const {
        Context {
            frame: RefCell::new(ManuallyDrop::new(Frame::new(None))),
            owner: Cell::new(Owner::Thread),
            exit_registered: Cell::new(false),
            calling_bridges: Cell::new(false),
        }
    };
    /// Registered (touched) when the thread's own storage is created; its destructor
    /// tears that storage down at thread exit.
    static THREAD_EXIT: ThreadExit = const { ThreadExit };
}

/// The per-thread state: the current owner's frame, and what kind of owner it is.
struct Context {
    /// `ManuallyDrop`: `Context` has no destructor, so `CONTEXT` is a plain
    /// thread-local with no is-it-destroyed check and no lazy destructor registration
    /// on any access. Nothing is lost: when a thread exits, its frame holds at most
    /// its own storage, which `THREAD_EXIT`'s destructor (registered when that storage
    /// is created) tears down; seeds only come with scoped owners, which are never
    /// current when a thread exits (every switch is undone by a guard or a hook).
    frame: RefCell<ManuallyDrop<Frame>>,
    owner: Cell<Owner>,
    /// The thread's `THREAD_EXIT` destructor is registered.
    exit_registered: Cell<bool>,
    /// A bridge's `enter` or `exit` runs on this thread: owners switched meanwhile call
    /// no bridge (see [`bridge::enter`](crate::bridge)). Kept here rather than in a
    /// thread-local of its own, so that a `Task`'s bridged poll asks it in the access
    /// that switches owners.
    calling_bridges: Cell<bool>,
}

/// The kind of the current owner; handed back and forth with its frame by [`swap_in`]
/// and [`swap_out`].
///
/// The discriminants are ordered for [`is_direct`]: the owners whose frame an access
/// may use without asking the isolation rule come first, so that the test is one
/// comparison with the `tokio` feature and without.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Owner {
    /// A task, a snapshot run: anything with its own lifetime.
    Scoped = 0,
    /// The thread itself.
    Thread = 1,
    /// The thread, after its storage was torn down at thread exit.
    ThreadGone = 2,
    /// The thread's frame is in `CONTEXT`, but a task of a runtime in automatic mode
    /// is being polled, whose frame has not been swapped in yet: automatic mode
    /// switches owners lazily ([`pend`]), so that a poll that never touches the API
    /// costs no lock. The first access that needs an owner settles it
    /// ([`settle_if_pending`]).
    Pending = 3,
}

/// One owner's state: its storage once created, and until then what it inherited.
/// Two pointers: it sits in every `Task`.
pub(crate) struct Frame {
    /// Taken out and torn down by `Frame`'s own `Drop`, so the drop glue of an empty
    /// frame is two null checks, inline.
    storage: ManuallyDrop<Option<Box<Storage>>>,
    seed: Option<Inheritables>,
}

impl Frame {
    /// The frame of a new owner that inherits `seed`. Allocates nothing.
    pub(crate) const fn new(seed: Option<Inheritables>) -> Frame {
        Frame {
            storage: ManuallyDrop::new(None),
            seed,
        }
    }
}

impl Drop for Frame {
    /// Normally a frame is torn down with [`finish`] while current. This is the
    /// fallback for a frame dropped otherwise (a `Task` dropped inside a `with`
    /// closure, where no switch is possible): handlers still run and values are
    /// dropped, though the API cannot reach them any more.
    #[inline]
    fn drop(&mut self) {
        if let Some(storage) = self.storage.take() {
            teardown_detached(storage);
        }
    }
}

#[cold]
#[inline(never)]
fn teardown_detached(storage: Box<Storage>) {
    storage::teardown(|| storage.next_garbage());
}

/// What an access finds on this thread.
pub(crate) enum Here<'a> {
    /// The current owner's storage.
    Storage(&'a Storage),
    /// The current owner has no storage yet; this is what it inherited.
    Seed(Option<&'a Inheritables>),
    /// There is no storage and none may be created here.
    Denied(Kind),
}

/// The isolation rule, written once: the worker thread's storage is never lent to a
/// tokio task that has none of its own. True when the current owner, `owner`, is the
/// thread but the code running is such a task.
#[inline(always)]
fn denied_to_foreign_task(owner: Owner) -> bool {
    match owner {
        Owner::Thread => in_foreign_task(),
        // Not settled: the thread's frame is there, but a task is being polled.
        Owner::Pending => true,
        Owner::Scoped | Owner::ThreadGone => false,
    }
}

/// Decides which owner is current for the code running here: the frame in `CONTEXT`
/// and its kind, or why it may not be used ([`Kind::Borrowed`] while an owner is
/// being switched or emptied, [`Kind::NoStorage`] by [the isolation
/// rule](denied_to_foreign_task)). Every access but the direct fast paths goes through it.
#[inline(always)]
fn decide(cx: &Context) -> Result<(Ref<'_, ManuallyDrop<Frame>>, Owner), Kind> {
    let owner = settle_if_pending(cx);
    let frame = cx.frame.try_borrow().map_err(|_| Kind::Borrowed)?;
    if denied_to_foreign_task(owner) {
        return Err(Kind::NoStorage);
    }
    Ok((frame, owner))
}

/// What the owner [`decide`]d on offers an access.
#[inline(always)]
fn here<'a>(frame: &'a Frame, owner: Owner) -> Here<'a> {
    match (&*frame.storage, owner) {
        (Some(storage), _) => Here::Storage(storage),
        (None, Owner::ThreadGone) => Here::Denied(Kind::Destroyed),
        // Settled by `decide` before this is asked.
        (None, Owner::Pending) => Here::Denied(Kind::NoStorage),
        (None, _) => Here::Seed(frame.seed.as_ref()),
    }
}

/// Whether `owner` is *direct*: an access may use its frame without [`decide`]. A
/// scoped owner (a `Task`, a snapshot run, a task in automatic mode) is, as no
/// isolation rule applies to it; without the `tokio` feature, where there is no
/// plain tokio task to keep out, the thread is too. One comparison either way (see
/// [`Owner`]'s discriminants).
#[inline(always)]
fn is_direct(owner: Owner) -> bool {
    #[cfg(feature = "tokio")]
    {
        owner == Owner::Scoped
    }
    #[cfg(not(feature = "tokio"))]
    {
        owner as u8 <= Owner::Thread as u8
    }
}

/// The frame of a [direct](is_direct) owner: a scoped owner, or, without the `tokio`
/// feature, the thread. `None` for any other owner. It makes no call, so a caller
/// whose hit path is this needs no stack frame.
#[inline(always)]
fn with_direct<R>(f: impl FnOnce(&Frame) -> Option<R>) -> Option<R> {
    CONTEXT
        .try_with(|cx| {
            if !is_direct(cx.owner.get()) {
                return None;
            }
            let frame = cx.frame.try_borrow().ok()?;
            f(&frame)
        })
        .ok()
        .flatten()
}

/// Whether this code runs in a tokio task that has no owner of its own.
#[inline]
fn in_foreign_task() -> bool {
    #[cfg(feature = "tokio")]
    {
        ::tokio::task::try_id().is_some()
    }
    #[cfg(not(feature = "tokio"))]
    {
        false
    }
}

/// Calls `f` with what the current owner has. `f` runs while `CONTEXT` is borrowed:
/// it may borrow cells of the storage but must not run code that enters an owner.
#[inline]
pub(crate) fn read<R>(f: impl FnOnce(Here<'_>) -> R) -> R {
    let mut f = Once::new(f);
    let result = CONTEXT.try_with(|cx| {
        let f = f.take()?;
        Some(match decide(cx) {
            Ok((frame, owner)) => f(here(&frame, owner)),
            Err(kind) => f(Here::Denied(kind)),
        })
    });
    f.or(result.ok().flatten(), |f| f(Here::Denied(Kind::Destroyed)))
}

/// The fast path of accessors inside a [direct](is_direct) owner (a `Task`, a
/// snapshot run, a task in automatic mode; the thread without the `tokio` feature):
/// `f` with its storage. `None` when the current owner is not direct (with `tokio`, a
/// thread's storage is only used after asking tokio that no plain tokio task runs
/// here: [`with_storage`]) or has no storage yet. It makes no call, so a caller whose
/// hit path is this needs no stack frame.
#[inline(always)]
pub(crate) fn with_direct_storage<R>(f: impl FnOnce(&Storage) -> Option<R>) -> Option<R> {
    with_direct(|frame| f(frame.storage.as_deref()?))
}

/// The fast path of reads inside a [direct](is_direct) owner: `f` with its storage, or,
/// while it has none, with the seed it inherited, if any (so a child that only reads
/// what it inherited never creates a storage). `None` like [`with_direct_storage`].
#[inline(always)]
pub(crate) fn with_direct_frame<R>(
    f: impl FnOnce(Result<&Storage, Option<&Inheritables>>) -> Option<R>,
) -> Option<R> {
    with_direct(|frame| match &*frame.storage {
        Some(storage) => f(Ok(storage)),
        None => f(Err(frame.seed.as_ref())),
    })
}

/// The fast path of every accessor: `f` with the current owner's storage, if it has
/// one; `None` sends the caller to its general path.
#[inline(always)]
pub(crate) fn with_storage<R>(f: impl FnOnce(&Storage) -> Option<R>) -> Option<R> {
    CONTEXT
        .try_with(|cx| {
            // The first access of a poll in automatic mode: settled here, so that it
            // is served by this fast path rather than the general one.
            settle_if_pending(cx);
            // [`decide`] with the storage looked at first: one instruction less on
            // the path of every read that misses the direct fast path.
            let frame = cx.frame.try_borrow().ok()?;
            let storage = frame.storage.as_deref()?;
            if denied_to_foreign_task(cx.owner.get()) {
                return None;
            }
            f(storage)
        })
        .ok()
        .flatten()
}

/// [`with_storage`] for the path where the current owner is most likely the thread:
/// the isolation rule is asked first, when nothing else is live across the call into
/// tokio, so that the caller's stack frame stays small. `None` also whenever a plain
/// tokio task runs here (even inside a scoped owner: the caller's general path then
/// decides).
#[inline(always)]
pub(crate) fn with_storage_outside_tokio<R>(f: impl FnOnce(&Storage) -> Option<R>) -> Option<R> {
    if in_foreign_task() {
        return None;
    }
    CONTEXT
        .try_with(|cx| {
            // Pending: a task's poll window is open though tokio said no task runs
            // (its hooks run outside the task's id); the general path settles it.
            // (Not settled here: the call would cost the thread's path 2 instructions.)
            if cx.owner.get() == Owner::Pending {
                return None;
            }
            let frame = cx.frame.try_borrow().ok()?;
            f(frame.storage.as_deref()?)
        })
        .ok()
        .flatten()
}

/// The inheritable values of the current owner, for a child: what its storage holds,
/// or what it inherited if it has none yet.
#[inline]
pub(crate) fn capture() -> Option<Inheritables> {
    // Fast path, with no call on the way: a direct owner.
    let direct = with_direct(|frame| match &*frame.storage {
        Some(storage) => storage.capture_unlent(),
        None => Some(frame.seed.clone()),
    });
    match direct {
        Some(inherited) => inherited,
        None => capture_miss(),
    }
}

/// [`capture`] from a thread's own storage, while the frame is borrowed, or while a
/// `with_mut` has an inheritable value out.
#[inline(never)]
fn capture_miss() -> Option<Inheritables> {
    // A spawn in a poll of a task in automatic mode that has not asked for its owner
    // yet: read where the task's frame lies, rather than swap it in for one capture.
    if let Some(captured) = pending::capture() {
        return captured;
    }
    read(|here| match here {
        Here::Storage(storage) => storage.capture(),
        Here::Seed(seed) => seed.cloned(),
        Here::Denied(_) => None,
    })
}

/// Calls `f` with the current owner's storage, creating the storage if needed.
#[inline]
pub(crate) fn write<R>(f: impl FnOnce(&Storage) -> R) -> Result<R, AccessError> {
    let mut f = Some(f);
    CONTEXT
        .try_with(|cx| {
            {
                let (frame, _) = decide(cx).map_err(AccessError::new)?;
                if let Some(storage) = &*frame.storage {
                    if let Some(f) = f.take() {
                        return Ok(f(storage));
                    }
                }
            }
            create(cx)?;
            let frame = cx
                .frame
                .try_borrow()
                .map_err(|_| AccessError::new(Kind::Borrowed))?;
            match (&*frame.storage, f.take()) {
                (Some(storage), Some(f)) => Ok(f(storage)),
                _ => Err(AccessError::new(Kind::Borrowed)),
            }
        })
        .unwrap_or(Err(AccessError::new(Kind::Destroyed)))
}

/// Creates the storage of the current owner, which [`decide`] allowed.
#[cold]
fn create(cx: &Context) -> Result<(), AccessError> {
    let mut frame = cx
        .frame
        .try_borrow_mut()
        .map_err(|_| AccessError::new(Kind::Borrowed))?;
    match cx.owner.get() {
        Owner::ThreadGone => return Err(AccessError::new(Kind::Destroyed)),
        Owner::Thread if !cx.exit_registered.get() => {
            if THREAD_EXIT.try_with(|_| ()).is_err() {
                return Err(AccessError::new(Kind::Destroyed));
            }
            cx.exit_registered.set(true);
        }
        Owner::Thread | Owner::Scoped => {}
        // Settled by `decide` before this is asked.
        Owner::Pending => return Err(AccessError::new(Kind::NoStorage)),
    }
    let seed = frame.seed.take();
    *frame.storage = Some(Storage::new(seed));
    Ok(())
}

/// Takes the current owner's storage and inheritance away, leaving it empty: the
/// next access creates a new storage. Returns them to be dropped by the caller.
/// Refused while a `with` closure borrows a value of the storage.
pub(crate) fn detach() -> Result<(Option<Box<Storage>>, Option<Inheritables>), AccessError> {
    CONTEXT
        .try_with(
            |cx| match (settle_if_pending(cx), cx.frame.try_borrow_mut()) {
                (owner, _) if denied_to_foreign_task(owner) => Ok((None, None)),
                (_, Ok(mut frame)) => Ok((frame.storage.take(), frame.seed.take())),
                (_, Err(_)) => Err(AccessError::new(Kind::Borrowed)),
            },
        )
        .unwrap_or(Ok((None, None)))
}

/// Empties the current owner's storage (values and inheritance) and returns what it
/// held, to be dropped by the caller with no borrow held. Refused while a `with`
/// closure borrows one of its values.
pub(crate) fn empty() -> Result<(storage::Taken, Option<Inheritables>), AccessError> {
    let values = read(|here| match here {
        Here::Storage(storage) if storage.is_borrowed() => Err(AccessError::new(Kind::Borrowed)),
        Here::Storage(storage) => Ok(storage.take_values()),
        _ => Ok(storage::Taken::default()),
    })?;
    let seed = CONTEXT
        .try_with(
            |cx| match (settle_if_pending(cx), cx.frame.try_borrow_mut()) {
                (owner, _) if denied_to_foreign_task(owner) => None,
                (_, Ok(mut frame)) => frame.seed.take(),
                (_, Err(_)) => None,
            },
        )
        .ok()
        .flatten();
    Ok((values, seed))
}

/// Ends the current owner: runs its exit handlers (last registered first) while its
/// values are still readable, then drops the values, until nothing is left, also what
/// handlers and `Drop`s set meanwhile.
pub(crate) fn finish() {
    loop {
        storage::teardown(|| {
            read(|here| match here {
                Here::Storage(storage) => storage.next_garbage(),
                _ => Garbage::Done,
            })
        });
        let Ok((storage, seed)) = detach() else { break };
        if storage.is_none() && seed.is_none() {
            break;
        }
        // The storage is empty; dropping the last reference to an inherited table may
        // drop values, whose `Drop` may set new ones: go round again.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(storage);
            drop(seed);
        }));
    }
}

/// Ends the owner `frame`, which is not current: enters it only if there is anything
/// to tear down, so that the end of a task that never touched its storage costs no
/// switch at all.
#[inline]
pub(crate) fn end(frame: &mut Frame) {
    if frame.storage.is_some() {
        return end_entered(frame, None);
    }
    let Some(seed) = frame.seed.take() else {
        return;
    };
    // Still shared with its creator or a sibling: letting go runs no `Drop`. Else this
    // owner holds the last reference: its inherited values are dropped as its own.
    if let Some(entries) = Arc::into_inner(seed) {
        end_entered(frame, Some(entries));
    }
}

/// [`end`], not inlined: for callers whose hot path is elsewhere.
#[inline(never)]
pub(crate) fn end_outlined(frame: &mut Frame) {
    end(frame);
}

/// [`end`] with the owner entered: drops `last_seed` (the inherited values this owner
/// held the last reference to) and tears the storage down, as in [`finish`].
#[inline(never)]
fn end_entered(frame: &mut Frame, last_seed: Option<Vec<storage::Entry>>) {
    if let Some(_entered) = try_enter(frame) {
        if let Some(entries) = last_seed {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(entries)));
        }
        finish();
    }
}

struct ThreadExit;

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let _ = CONTEXT.try_with(|cx| {
            if cx.owner.get() != Owner::Thread {
                return;
            }
            finish();
            cx.owner.set(Owner::ThreadGone);
        });
    }
}
