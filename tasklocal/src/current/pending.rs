//! Automatic mode's lazy switch: a [pending](Owner::Pending) owner, and how it is
//! settled. A poll of a task in automatic mode starts pending (the thread's frame
//! stays in `CONTEXT`); the first access that needs an owner settles it through the
//! [`Settler`] automatic mode registered, which swaps the task's frame in.

use std::sync::OnceLock;

use super::{Context, Frame, Owner, CONTEXT};
use crate::storage::Inheritables;

/// What settles a [pending](Owner::Pending) owner: automatic mode's, registered by
/// [`set_settler`] when a runtime is built in automatic mode.
static SETTLER: OnceLock<Settler> = OnceLock::new();

/// How automatic mode settles a [pending](Owner::Pending) owner.
pub(crate) struct Settler {
    /// Swaps the polled task's frame in (or, if it cannot, leaves the thread
    /// current): the one function that [`settle`] calls.
    pub(crate) settle: fn(),
    /// What the polled task would hand a child ([`capture_of`] its frame), read
    /// where the frame lies, with no switch; `None` if it cannot be read there.
    pub(crate) capture: fn() -> Option<Option<Inheritables>>,
}

/// Registers automatic mode's [`Settler`] (the first registration stays: there is
/// one automatic mode).
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(dead_code))]
pub(crate) fn set_settler(settler: Settler) {
    let _ = SETTLER.set(settler);
}

/// The inheritable values that the owner `frame`, not current, would hand a child,
/// as [`capture`] does for the current one.
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(dead_code))]
pub(crate) fn capture_of(frame: &Frame) -> Option<Inheritables> {
    match &*frame.storage {
        Some(storage) => storage.capture(),
        None => frame.seed.clone(),
    }
}

/// Marks the owner [pending](Owner::Pending): a task is polled whose frame is swapped
/// in only if code asks for an owner. Only from the thread's own owner; false (nothing
/// done) otherwise, and the caller switches eagerly.
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(dead_code))]
#[inline(always)]
pub(crate) fn pend() -> bool {
    CONTEXT
        .try_with(|cx| {
            let pend = cx.owner.get() == Owner::Thread;
            if pend {
                cx.owner.set(Owner::Pending);
            }
            pend
        })
        .unwrap_or(false)
}

/// Undoes [`pend`] if the owner is still pending (nothing asked for it, or its
/// settler has not run).
#[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(dead_code))]
#[inline(always)]
pub(crate) fn unpend() {
    let _ = CONTEXT.try_with(|cx| {
        if cx.owner.get() == Owner::Pending {
            cx.owner.set(Owner::Thread);
        }
    });
}

/// The owner, settled if it was pending.
#[inline(always)]
pub(super) fn settle_if_pending(cx: &Context) -> Owner {
    match cx.owner.get() {
        Owner::Pending => settle(cx),
        owner => owner,
    }
}

/// Settles a [pending](Owner::Pending) owner: the polled task's frame is swapped in
/// (the owner is then scoped), or, where that cannot be done, the thread stays
/// current (and the isolation rule denies it to the task). Runs no code of the user's.
#[cold]
#[inline(never)]
fn settle(cx: &Context) -> Owner {
    // The settler's swap expects the thread as the displaced owner.
    cx.owner.set(Owner::Thread);
    if let Some(settler) = SETTLER.get() {
        (settler.settle)();
    }
    cx.owner.get()
}

/// What the task of this thread's pending window would hand a child, read where its
/// frame lies ([`Settler::capture`]); `None` when the owner is not pending.
pub(super) fn capture() -> Option<Option<Inheritables>> {
    let pending = CONTEXT.try_with(|cx| cx.owner.get() == Owner::Pending);
    match (pending, SETTLER.get()) {
        (Ok(true), Some(settler)) => (settler.capture)(),
        _ => None,
    }
}
