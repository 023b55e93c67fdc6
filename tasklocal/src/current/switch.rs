//! Switching owners: entering a frame (`enter` and its guard `Entered`, `entered`
//! for a `Task`'s poll, `entered_bridged` when bridges are registered), the swaps
//! runtime hooks use (`swap_in`, `swap_out`), and `run_and_finish`.

use std::cell::Cell;
use std::mem;

use super::{end, Context, Frame, Owner, CONTEXT};
use crate::bridge;
use crate::error::Kind;
use crate::once::Once;

/// The guard of an entered frame: while it lives, the frame is current on this
/// thread; dropping it (also during unwinding) restores the previous one.
#[must_use = "the frame is current only while the guard lives"]
pub(crate) struct Entered<'a> {
    frame: &'a mut Frame,
    /// The kind of the owner the frame displaced; `None` when nothing was entered.
    displaced: Option<Owner>,
    /// The bridges entered after the switch, to exit before it is undone.
    bridges: bridge::Entered,
}

/// Makes `frame` the current owner on this thread.
///
/// # Panics
///
/// When called inside a `with` or `with_mut` closure that borrows the current storage
/// on this thread: an owner cannot be switched under a live borrow.
#[inline]
pub(crate) fn enter(frame: &mut Frame) -> Entered<'_> {
    let displaced = swap_in_for_enter(frame);
    Entered::new(frame, displaced)
}

/// [`swap_in`] for [`enter`]: the displaced owner's kind, or `None` when the thread's
/// locals are gone (the owner then runs without storage).
///
/// # Panics
///
/// Like [`enter`].
#[inline(always)]
fn swap_in_for_enter(frame: &mut Frame) -> Option<Owner> {
    match swap_in(frame) {
        Ok(displaced) => Some(displaced),
        Err(Kind::Borrowed) => crate::error::panic_enter_borrowed(),
        Err(_) => None,
    }
}

/// Runs `f` with `frame` as the current owner, then makes the displaced owner current
/// again (also when `f` unwinds): [`enter`] and its guard in one access to the
/// thread-local, for the poll of a `Task`.
///
/// # Panics
///
/// Like [`enter`]. When the thread's locals are gone, `f` runs without storage.
#[inline]
pub(crate) fn entered<R>(frame: &mut Frame, f: impl FnOnce() -> R) -> R {
    /// Restores the displaced owner.
    struct Restore<'a> {
        cx: &'a Context,
        frame: &'a mut Frame,
        displaced: Owner,
    }
    impl Drop for Restore<'_> {
        #[inline]
        fn drop(&mut self) {
            switch_back(self.cx, self.frame, self.displaced);
        }
    }

    let mut f = Once::new(f);
    let result = CONTEXT.try_with(|cx| {
        let displaced = switch_in(cx, frame);
        let _restore = Restore {
            cx,
            frame,
            displaced,
        };
        f.take().map(|f| f())
    });
    f.or(result.ok().flatten(), |f| f())
}

/// [`entered`] when bridges are registered ([`bridge::any`]): the bridges are entered
/// after the switch and exited before it is undone, and the thread's mark that they
/// run is asked in the same access to the thread-local. Callers check and come here
/// out of line, so that their path stays lean when no bridge is registered.
#[cold]
#[inline(never)]
pub(crate) fn entered_bridged<R>(frame: &mut Frame, f: impl FnOnce() -> R) -> R {
    /// Exits the bridges entered, restores the displaced owner, and then resumes the
    /// panic of a bridge's `exit`.
    struct Restore<'a> {
        cx: &'a Context,
        frame: &'a mut Frame,
        displaced: Owner,
        bridges: bridge::Entered,
    }
    impl Drop for Restore<'_> {
        #[inline]
        fn drop(&mut self) {
            let panic = match self.bridges.is_empty() {
                true => None,
                false => bridge::exit_marked(&self.cx.calling_bridges, &mut self.bridges),
            };
            switch_back(self.cx, self.frame, self.displaced);
            bridge::resume(panic);
        }
    }

    let mut f = Once::new(f);
    let result = CONTEXT.try_with(|cx| {
        let displaced = switch_in(cx, frame);
        let mut restore = Restore {
            cx,
            frame,
            displaced,
            bridges: bridge::Entered::default(),
        };
        // A bridge's panic unwinds through `restore`: the switch is undone.
        bridge::resume(bridge::enter_marked(
            &cx.calling_bridges,
            &mut restore.bridges,
        ));
        f.take().map(|f| f())
    });
    f.or(result.ok().flatten(), |f| f())
}

/// Makes `frame` the current owner; returns the kind of the owner it displaced, which
/// `frame` now holds. The switch of [`entered`] and [`entered_bridged`].
///
/// # Panics
///
/// Like [`enter`].
#[inline(always)]
fn switch_in(cx: &Context, frame: &mut Frame) -> Owner {
    exchange_in(cx, frame, Owner::Scoped).unwrap_or_else(|_| crate::error::panic_enter_borrowed())
}

/// Undoes [`switch_in`].
#[inline(always)]
fn switch_back(cx: &Context, frame: &mut Frame, displaced: Owner) {
    // Cannot fail: the switch in succeeded, and no borrow outlives the owner's code.
    let _ = exchange_in(cx, frame, displaced);
}

/// Calls `f` with the thread's mark that a bridge's `enter` or `exit` runs on it (see
/// [`bridge::enter`]). `None` when the thread's locals are gone.
#[inline]
pub(crate) fn with_bridge_mark<R>(f: impl FnOnce(&Cell<bool>) -> R) -> Option<R> {
    CONTEXT.try_with(|cx| f(&cx.calling_bridges)).ok()
}

/// Like [`enter`], but `None` instead of a panic when the frame cannot be entered.
pub(crate) fn try_enter(frame: &mut Frame) -> Option<Entered<'_>> {
    let displaced = swap_in(frame).ok()?;
    Some(Entered::new(frame, Some(displaced)))
}

impl<'a> Entered<'a> {
    /// The guard of `frame`, just swapped in (unless `displaced` is `None`): calls the
    /// registered [bridges](crate::bridge) now that the frame is current. A bridge
    /// that panics unwinds through the guard, which undoes the switch (unless the
    /// thread is unwinding already: then the owner runs with the bridges entered so
    /// far).
    #[inline]
    fn new(frame: &'a mut Frame, displaced: Option<Owner>) -> Entered<'a> {
        let mut entered = Entered {
            frame,
            displaced,
            bridges: bridge::Entered::default(),
        };
        if bridge::any() {
            entered.enter_bridges();
        }
        entered
    }

    /// Calls the registered bridges, if the frame was swapped in. On a panic, the
    /// guard is dropped while unwinding: the bridges entered are exited and the switch
    /// undone.
    #[inline(always)]
    fn enter_bridges(&mut self) {
        if self.displaced.is_some() {
            bridge::resume(bridge::enter(&mut self.bridges));
        }
    }
}

/// Makes the scoped owner `frame` current; `frame` then holds the displaced frame,
/// whose kind is returned, to be handed to [`swap_out`]. The building block of
/// [`enter`], for callers that cannot hold a guard (runtime hooks). Fails with
/// [`Kind::Borrowed`] inside a `with` closure that borrows the current storage, and
/// with [`Kind::Destroyed`] when the thread's locals are gone.
#[inline]
pub(crate) fn swap_in(frame: &mut Frame) -> Result<Owner, Kind> {
    exchange(frame, Owner::Scoped)
}

/// Undoes [`swap_in`]: `frame` (holding the displaced frame) becomes current again
/// as the kind of owner it was, and gets the scoped owner's frame back.
#[inline]
pub(crate) fn swap_out(frame: &mut Frame, displaced: Owner) -> Result<(), Kind> {
    exchange(frame, displaced).map(drop)
}

#[inline]
fn exchange(frame: &mut Frame, owner: Owner) -> Result<Owner, Kind> {
    CONTEXT
        .try_with(|cx| exchange_in(cx, frame, owner))
        .unwrap_or(Err(Kind::Destroyed))
}

/// The one swap of owners, under every switch: `frame` and the current frame trade
/// places, and the current owner becomes of kind `owner`; returns the kind it was.
/// [`Kind::Borrowed`] inside a `with` closure that borrows the current storage.
#[inline(always)]
fn exchange_in(cx: &Context, frame: &mut Frame, owner: Owner) -> Result<Owner, Kind> {
    let mut current = cx.frame.try_borrow_mut().map_err(|_| Kind::Borrowed)?;
    mem::swap(&mut **current, frame);
    drop(current);
    Ok(cx.owner.replace(owner))
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let panic = match self.bridges.is_empty() {
            true => None,
            false => bridge::exit(&mut self.bridges),
        };
        if let Some(displaced) = self.displaced {
            let _ = swap_out(self.frame, displaced);
        }
        bridge::resume(panic);
    }
}

/// Runs `f` as the owner `frame`, then ends the owner (also when `f` panics).
pub(crate) fn run_and_finish<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    struct End(Frame);
    impl Drop for End {
        fn drop(&mut self) {
            end(&mut self.0);
        }
    }
    let mut owner = End(frame);
    // Dropped first: the previous owner is current again before `end` runs.
    let _entered = enter(&mut owner.0);
    f()
}
