//! Pending poll windows: automatic mode's lazy switch. A poll of a task filed in the
//! table starts pending — the thread's owner is marked
//! [pending](crate::current::pend) and the task noted in [`PENDING`], with no lock
//! and no switch — and is opened ([`settle`], through `hooks::open_window`) only when
//! code asks for an owner. A task that ends in a pending window is torn down from its
//! cell ([`end_pending`]); a spawn reads the spawner's values in its cell
//! ([`capture_pending`]).

use std::cell::Cell as StdCell;
use std::sync::atomic::Ordering;

use ::tokio::task::Id;

use super::hooks::open_window;
use super::registry::{key, Cell, Held};
use crate::bridge;
use crate::current;
use crate::storage::Inheritables;
// std's, or loom's in the loom models (`auto/loom_models.rs`).
use crate::sync::thread_local;

thread_local! {
    /// The task, filed in the table, whose poll window on this thread is pending: its
    /// frame is swapped in only when code asks for an owner ([`settle`]), so a poll
    /// that never touches the API takes no lock. With the task's cell; `None` for
    /// the cell once the task ended in that window.
    pub(super) static PENDING: StdCell<Option<(Id, Option<&'static Cell>)>> =
        const { StdCell::new(None) };
}

/// Leaves the poll window of task `id`, filed in `cell`, pending ([`PENDING`]): the
/// owner of this thread becomes [pending](current::pend) and the task's frame is
/// swapped in by [`settle`] only if code asks for an owner. False (nothing done)
/// where the window must be opened now: bridges are registered (they must see the
/// task's values from the start of the poll), or the thread's own owner is not
/// current (another window or a scoped owner is, further out).
#[inline(always)]
pub(super) fn pend_window(cell: &'static Cell, id: Id) -> bool {
    !bridge::any()
        && PENDING
            .try_with(|pending| {
                let pend = pending.get().is_none() && current::pend();
                if pend {
                    pending.set(Some((id, Some(cell))));
                }
                pend
            })
            .unwrap_or(false)
}

/// The cell of task `id` if its window on this thread is pending (not opened yet).
#[inline]
pub(super) fn pending_cell(id: Id) -> Option<&'static Cell> {
    match PENDING.try_with(StdCell::get) {
        Ok(Some((task, cell))) if task == id => cell,
        _ => None,
    }
}

/// Settles this thread's pending window, for [`current::settle`]: opens it, so that
/// the task's frame is current. (If the frame cannot be swapped in, the thread's
/// owner stays current, and the isolation rule keeps it from the task.)
pub(super) fn settle() {
    let pending = PENDING.try_with(|pending| match pending.get() {
        Some((id, Some(cell))) => {
            pending.set(None);
            Some((id, cell))
        }
        _ => None,
    });
    current::unpend();
    if let Ok(Some((id, cell))) = pending {
        // A task that asks for its owner in one poll likely does in the next: those
        // open at once (`Cell::hot`).
        cell.heat();
        open_window(cell, key(id), id);
    }
}

/// What the task of this thread's pending window would hand a child, read in its
/// cell (locked for the read) with no switch, for [`current::capture`]. `None` when
/// no window is pending.
pub(super) fn capture_pending() -> Option<Option<Inheritables>> {
    let (id, cell) = match PENDING.try_with(StdCell::get) {
        Ok(Some((id, Some(cell)))) => (id, cell),
        _ => return None,
    };
    // Waits only for the after-poll hook of the task's previous window on another
    // thread, like opening the window would.
    let held = cell.lock();
    if cell.key.load(Ordering::Relaxed) != key(id) {
        return None;
    }
    Some(
        held.as_ref()
            .and_then(|held| current::capture_of(&held.frame)),
    )
}

/// Closes task `id`'s window if it is still pending, or ended pending: nothing was
/// swapped, nothing is locked. False when the window is not pending.
#[inline(always)]
pub(super) fn close_pending(id: Id) -> bool {
    PENDING
        .try_with(|pending| match pending.get() {
            Some((task, _)) if task == id => {
                pending.set(None);
                current::unpend();
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

/// The terminate hook of task `key`, filed in `cell`, inside its pending window: the
/// task's frame is taken out of the cell and ended where it stands, which enters it
/// only if there is anything to tear down ([`current::end`]); a task that never
/// touched its storage costs a reference count. The window ends pending.
#[cold]
#[inline(never)]
pub(super) fn end_pending(cell: &'static Cell, key: u64, id: Id) {
    // Waits only for the after-poll hook of the task's previous window on another
    // thread (tokio re-scheduled the task before that hook ran).
    let mut guard = cell.lock();
    let held = match cell.key.load(Ordering::Relaxed) == key {
        true => guard.take(),
        false => None,
    };
    if held.is_some() {
        cell.key.store(0, Ordering::Release);
    }
    drop(guard);
    let _ = PENDING.try_with(|pending| pending.set(Some((id, None))));
    current::unpend();
    if let Some(Held { mut frame, .. }) = held {
        current::end(&mut frame);
    }
}
