//! What automatic mode's hooks do: file a task's frame at spawn, swap it in and out
//! around each poll, tear it down at termination.
//!
//! Each hook first looks at the task's [`Cell`] of the table (the fast path): a task
//! filed there has its poll windows in [`WINDOWS`]; otherwise its frame is in the
//! shards, with the window's state in its [`Slot`].

use std::cell::{Cell as StdCell, RefCell};
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};

use ::tokio::runtime::TaskMeta;
use ::tokio::task::Id;

use crate::bridge;
use crate::current::{self, Frame, Here, Owner};
// std's, or loom's in the loom models (`auto/loom_models.rs`).
use crate::sync::{thread_local, MutexGuard};

use super::pending::{close_pending, end_pending, pend_window, pending_cell, settle};
use super::registry::{finish_detached, key, remove, Backoff, Cell, Held, Registry, Slot, State};
use super::HookFn;

thread_local! {
    /// The task whose poll window is innermost on this thread, if any.
    pub(super) static POLLING: StdCell<Option<Id>> = const { StdCell::new(None) };
    /// This thread's number (0: not drawn yet), to recognize its own poll windows.
    pub(super) static THREAD: StdCell<u64> = const { StdCell::new(0) };
    /// A task whose terminate hook found no slot on this thread: if the next spawn
    /// hook here is for the same task, it was spawned onto a closed runtime and has
    /// already ended.
    pub(super) static STILLBORN: StdCell<Option<Id>> = const { StdCell::new(None) };
    /// The poll windows open on this thread of tasks filed in the table, innermost
    /// last (windows nest when a nested runtime runs inside `block_in_place`).
    pub(super) static WINDOWS: RefCell<Vec<Window>> = const { RefCell::new(Vec::new()) };
}

/// A poll window of a task filed in the table: its cell, locked for the whole window.
pub(super) struct Window {
    key: u64,
    cell: &'static Cell,
    /// `cell`, locked: it holds the frame that the task's displaced (when entered).
    held: MutexGuard<'static, Option<Held>>,
    /// The task's frame is current, displacing an owner of this kind.
    entered: Option<Owner>,
    /// The bridges entered for the window, exited before it closes.
    bridges: bridge::Entered,
    /// The task terminated inside the window: `after_poll` tears it down.
    terminated: bool,
    /// The window that was innermost on this thread before this one.
    outer: Option<Id>,
}

/// This thread's number: unique among the threads of the process.
pub(super) fn thread_number() -> u64 {
    pub(super) static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD
        .try_with(|n| match n.get() {
            0 => {
                let drawn = NEXT.fetch_add(1, Ordering::Relaxed);
                n.set(drawn);
                drawn
            }
            drawn => drawn,
        })
        .unwrap_or(0)
}

impl Registry {
    pub(super) fn spawn(&self, id: Id) {
        let stillborn = STILLBORN
            .try_with(|s| s.get() == Some(id) && s.take().is_some())
            .unwrap_or(false);
        if stillborn {
            return;
        }
        let key = key(id);
        // (From a spawner whose window is pending, `capture` reads its cell.)
        let seed = current::capture();
        let Err(frame) = self.cell(key).file(key, self.id, Frame::new(seed)) else {
            return;
        };
        let old = self.lock(key).insert(key, Slot::idle(frame));
        // Dropped outside the lock (never anything: ids are unique).
        drop(old);
    }

    /// Inlined into tokio's callback: the common path, a task in the table whose
    /// window is left pending, makes no call.
    #[inline(always)]
    pub(super) fn before_poll(&self, id: Id) {
        let key = key(id);
        let cell = self.cell(key);
        let filed = cell.key.load(Ordering::Acquire) == key;
        if filed && !cell.take_hot() && pend_window(cell, id) {
            return;
        }
        self.open(id, key, filed.then_some(cell));
    }

    /// [`before_poll`](Registry::before_poll) of a window opened now: in the table
    /// (`cell`, where the task is filed), or in the shards.
    #[inline(never)]
    fn open(&self, id: Id, key: u64, cell: Option<&'static Cell>) {
        if !cell.is_some_and(|cell| open_window(cell, key, id)) {
            self.before_poll_shards(id, key);
        }
    }

    /// [`before_poll`](Registry::before_poll) of a task in the shards.
    #[inline(never)]
    fn before_poll_shards(&self, id: Id, key: u64) {
        let thread = thread_number();
        let outer = POLLING.try_with(|p| p.replace(Some(id))).ok().flatten();
        let mut backoff = Backoff::default();
        loop {
            let mut slots = self.lock(key);
            // A task spawned without our spawn hook starts empty.
            let slot = slots
                .entry(key)
                .or_insert_with(|| Slot::idle(Frame::new(None)));
            if slot.state == State::Idle {
                // Swapped in place, under the lock: no user code runs in a swap.
                let entered = current::swap_in(&mut slot.frame).ok();
                slot.state = State::Polled {
                    entered,
                    bridges: bridge::Entered::default(),
                    terminated: false,
                };
                slot.outer = outer;
                slot.thread = thread;
                drop(slots);
                if entered.is_some() && bridge::any() {
                    self.enter_bridges(key);
                }
                return;
            }
            // A poll window on another thread still has the task: tokio re-scheduled
            // it before that window's after-poll hook ran.
            drop(slots);
            backoff.snooze();
        }
    }

    /// Calls the bridges for the window just opened on this thread, outside the lock
    /// (they run user code), and files which were entered. A panic of a bridge stays
    /// here: it must not unwind into tokio's hook (the panic hook has reported it).
    #[cold]
    #[inline(never)]
    pub(super) fn enter_bridges(&self, key: u64) {
        let mut entered = bridge::Entered::default();
        drop(bridge::enter(&mut entered));
        if let Some(slot) = self.lock(key).get_mut(&key) {
            if let State::Polled { bridges, .. } = &mut slot.state {
                *bridges = entered;
            }
        }
    }

    /// Exits the bridges of the window about to close on this thread, with the task
    /// still current and outside the lock.
    #[cold]
    #[inline(never)]
    pub(super) fn exit_bridges(&self, key: u64) {
        let mut entered = match self.lock(key).get_mut(&key).map(|slot| &mut slot.state) {
            Some(State::Polled { bridges, .. }) => mem::take(bridges),
            _ => return,
        };
        // Reported by the panic hook; it must not unwind into tokio's hook.
        drop(bridge::exit(&mut entered));
    }

    /// Inlined into tokio's callback, like [`before_poll`](Registry::before_poll):
    /// closing a pending window makes no call.
    #[inline(always)]
    pub(super) fn after_poll(&self, id: Id) {
        if !close_pending(id) {
            self.close(id);
        }
    }

    /// [`after_poll`](Registry::after_poll) of a window that was opened.
    #[inline(never)]
    fn close(&self, id: Id) {
        let key = key(id);
        match close_innermost(key) {
            Closed::Done => {}
            Closed::Later => close_window(self.after_poll_callback),
            Closed::NotInTable => self.after_poll_shards(key),
        }
    }

    /// [`after_poll`](Registry::after_poll) of a task in the shards.
    #[inline(never)]
    fn after_poll_shards(&self, key: u64) {
        if bridge::any() {
            self.exit_bridges(key);
        }
        let mut slots = self.lock(key);
        let Some(slot) = slots.get_mut(&key) else {
            return;
        };
        let State::Polled {
            entered,
            terminated,
            ..
        } = slot.state
        else {
            return;
        };
        let _ = POLLING.try_with(|p| p.set(slot.outer));
        if !terminated {
            if entered
                .is_some_and(|displaced| current::swap_out(&mut slot.frame, displaced).is_err())
            {
                // Cannot happen: the swap that opened the window succeeded under the
                // same borrows. The task's frame stays where it is.
                return;
            }
            slot.state = State::Idle;
            return;
        }
        let slot = remove(&mut slots, key);
        drop(slots);
        let Some(Slot { mut frame, .. }) = slot else {
            return;
        };
        if let Some(displaced) = entered {
            // Torn down in `terminate` already; the user's after-poll callback may have
            // set something since.
            current::finish();
            if current::swap_out(&mut frame, displaced).is_err() {
                return;
            }
            // `frame` is the task's, empty.
            drop(frame);
        } else {
            finish_detached(frame, || ());
        }
    }

    pub(super) fn terminate(&self, meta: &TaskMeta<'_>, user: Option<&HookFn>) {
        let user = user.map(|f| move || f(meta));
        self.end(meta.id(), user.as_ref().map(|f| f as &dyn Fn()))
    }

    /// [`terminate`](Registry::terminate) of task `id`, with `user` the user's hook
    /// (apart so that the loom models, which have no `TaskMeta`, can drive it).
    pub(super) fn end(&self, id: Id, user_hook: Option<&dyn Fn()>) {
        if let Some(cell) = pending_cell(id) {
            // No code of the user's runs between here and the end of the window that
            // could tell a teardown now from one at the window's end.
            if user_hook.is_none() && !self.after_poll_callback {
                return end_pending(cell, key(id), id);
            }
            // The window is opened, and the task torn down in it as below.
            settle();
        }
        self.end_settled(id, user_hook);
    }

    /// [`end`](Registry::end) of a task whose window on this thread, if any, is open.
    #[inline(never)]
    fn end_settled(&self, id: Id, user_hook: Option<&dyn Fn()>) {
        let user = || {
            if let Some(f) = user_hook {
                f();
            }
        };
        let key = key(id);
        let cell = self.cell(key);
        if cell.key.load(Ordering::Acquire) == key
            && end_in_table(cell, key, id, self.after_poll_callback, &user)
        {
            return;
        }
        // Inside the task's own poll window on this thread (completion, panic,
        // abort): its frame is current; `after_poll` restores the outer one.
        if POLLING.try_with(|p| p.get() == Some(id)).unwrap_or(false) {
            let entered = match self.lock(key).get_mut(&key) {
                Some(slot) => match &mut slot.state {
                    State::Polled {
                        entered,
                        terminated,
                        ..
                    } => {
                        *terminated = true;
                        entered.is_some()
                    }
                    State::Idle => false,
                },
                None => false,
            };
            user();
            if entered {
                current::finish();
            }
            return;
        }
        let thread = thread_number();
        let mut backoff = Backoff::default();
        loop {
            let mut slots = self.lock(key);
            match slots.get_mut(&key) {
                // A blocking task, or a task spawned onto a closed runtime whose spawn
                // hook comes next.
                None => {
                    drop(slots);
                    let _ = STILLBORN.try_with(|s| s.set(Some(id)));
                    user();
                    return;
                }
                // Runtime shutdown: the future was dropped outside any poll.
                Some(slot) if slot.state == State::Idle => {
                    let slot = remove(&mut slots, key);
                    drop(slots);
                    if let Some(slot) = slot {
                        finish_detached(slot.frame, user);
                    }
                    return;
                }
                // A window further out on this thread has the task (tokio does not
                // end a task while it is polled; kept from waiting on ourselves).
                Some(slot) if slot.thread == thread => {
                    if let State::Polled { terminated, .. } = &mut slot.state {
                        *terminated = true;
                    }
                    drop(slots);
                    user();
                    return;
                }
                // The previous poll's after-poll hook has not run yet on another
                // thread.
                Some(_) => {}
            }
            drop(slots);
            backoff.snooze();
        }
    }
}

/// Opens a poll window of task `key`, filed in `cell`: locks the cell, swaps the
/// task's frame in and keeps the lock in [`WINDOWS`] until [`close_window`]. False
/// (nothing done) if the cell turns out not to hold the task, which the hooks'
/// ordering rules out.
#[inline(always)]
pub(super) fn open_window(cell: &'static Cell, key: u64, id: Id) -> bool {
    let opened = WINDOWS.try_with(|windows| {
        let Ok(mut windows) = windows.try_borrow_mut() else {
            // Cannot happen: no code that opens a window runs while it is borrowed.
            return Some(None);
        };
        // Waits only for the after-poll hook of this task's previous window on
        // another thread (tokio re-scheduled the task before that hook ran), or for a
        // spawn hook trying the cell.
        let mut held = cell.lock();
        let entered = match held.as_mut() {
            // Swapped in place, under the cell's lock: no user code runs in a swap.
            Some(task) if cell.key.load(Ordering::Relaxed) == key => {
                current::swap_in(&mut task.frame).ok()
            }
            _ => return None,
        };
        let outer = POLLING.try_with(|p| p.replace(Some(id))).ok().flatten();
        windows.push(Window {
            key,
            cell,
            held,
            entered,
            bridges: bridge::Entered::default(),
            terminated: false,
            outer,
        });
        Some(entered)
    });
    match opened {
        Ok(Some(entered)) => {
            if entered.is_some() && bridge::any() {
                enter_window_bridges();
            }
            true
        }
        Ok(None) => false,
        // This thread's locals are being destroyed (a runtime driven from a
        // thread-local's destructor): no window can be kept open, so the task runs
        // without its storage, as where no switch is possible. (Its after-poll hook
        // finds no window and no slot, and does nothing.)
        Err(_) => true,
    }
}

/// Calls the bridges for the window just opened on this thread and files which were
/// entered. A panic of a bridge stays here: it must not unwind into tokio's hook (the
/// panic hook has reported it).
#[cold]
#[inline(never)]
fn enter_window_bridges() {
    let mut entered = bridge::Entered::default();
    drop(bridge::enter(&mut entered));
    let _ = WINDOWS.try_with(|windows| {
        if let Some(window) = windows
            .try_borrow_mut()
            .ok()
            .as_mut()
            .and_then(|w| w.last_mut())
        {
            window.bridges = entered;
        }
    });
}

/// Closes the innermost window of this thread, when [`close_innermost`] left it:
/// takes it off [`WINDOWS`], exits its bridges, swaps the task's frame back into the
/// cell and unlocks it — or, when the task terminated in the window, empties the cell
/// and tears the task down after unlocking it.
#[cold]
#[inline(never)]
fn close_window(after_poll_callback: bool) {
    let window = WINDOWS
        .try_with(|windows| windows.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten();
    let Some(mut window) = window else {
        return;
    };
    // Code of the user's that ran with the task current since its teardown in
    // `terminate`, which may have set something.
    let user_code = after_poll_callback || !window.bridges.is_empty();
    if !window.bridges.is_empty() {
        // With the task still current. Reported by the panic hook; it must not unwind
        // into tokio's hook.
        drop(bridge::exit(&mut window.bridges));
    }
    let _ = POLLING.try_with(|p| p.set(window.outer));
    if !window.terminated {
        if let (Some(displaced), Some(task)) = (window.entered, window.held.as_mut()) {
            // Cannot fail: the swap that opened the window succeeded under the same
            // borrows. (If it did, the task's frame would stay current.)
            let _ = current::swap_out(&mut task.frame, displaced);
        }
        // Dropping the window unlocks the cell.
        return;
    }
    close_last_window(window, user_code);
}

/// What [`close_innermost`] did.
enum Closed {
    /// The innermost window of this thread is not task `key`'s: it has none in the
    /// table.
    NotInTable,
    /// Closed in place.
    Done,
    /// Left for [`close_window`]: it has bridges to exit, or the task terminated in
    /// it. (Not taken off [`WINDOWS`] here: a `Window` in this enum would be copied
    /// on the common path too.)
    Later,
}

/// Closes the innermost window of this thread if it is task `key`'s (windows close in
/// the order they opened), in place when nothing but the swap is to be done: no user
/// code runs, so it can be done under the borrow of [`WINDOWS`], and the window is
/// not moved.
#[inline(always)]
fn close_innermost(key: u64) -> Closed {
    WINDOWS
        .try_with(|windows| {
            let Ok(mut windows) = windows.try_borrow_mut() else {
                return Closed::NotInTable;
            };
            let Some(window) = windows.last_mut() else {
                return Closed::NotInTable;
            };
            if window.key != key {
                return Closed::NotInTable;
            }
            if !window.bridges.is_empty() || window.terminated {
                return Closed::Later;
            }
            let _ = POLLING.try_with(|p| p.set(window.outer));
            if let (Some(displaced), Some(task)) = (window.entered, window.held.as_mut()) {
                // Cannot fail: the swap that opened the window succeeded under the
                // same borrows. (If it did, the task's frame would stay current.)
                let _ = current::swap_out(&mut task.frame, displaced);
            }
            // Unlocks the cell.
            windows.pop();
            Closed::Done
        })
        .unwrap_or(Closed::NotInTable)
}

/// [`close_window`] of the task's last window: the task ended in it.
fn close_last_window(mut window: Window, user_code: bool) {
    let held = window.held.take();
    // The cell is free again: `key` is cleared under the lock, with the slot.
    window.cell.key.store(0, Ordering::Release);
    drop(window.held);
    let Some(Held { mut frame, .. }) = held else {
        return;
    };
    if let Some(displaced) = window.entered {
        // Torn down in `terminate` already (unless deferred, or ended while a window
        // further in was open); the user's after-poll callback or a bridge's exit may
        // have set something since.
        if user_code {
            current::finish();
        }
        if current::swap_out(&mut frame, displaced).is_err() {
            return;
        }
        // `frame` is the task's: empty, or holding what is left to tear down (its
        // seed, when `terminate` deferred it; its storage, when it ended while a
        // window further in was open; anything tokio's own code set since), which
        // `end` tears down as the task's.
        current::end(&mut frame);
    } else {
        finish_detached(frame, || ());
    }
}

/// The terminate hook of task `key`, filed in `cell`. False (nothing done) if the
/// cell turns out not to hold the task, which the hooks' ordering rules out.
fn end_in_table(
    cell: &'static Cell,
    key: u64,
    id: Id,
    after_poll_callback: bool,
    user: &impl Fn(),
) -> bool {
    // A window of this thread has the task: normally the innermost (the task
    // completed, panicked or was aborted inside its poll; its frame is current and
    // `after_poll` restores the outer one), or one further out (tokio does not end a
    // task while it is polled; kept from waiting on ourselves: the cell is locked by
    // that window).
    let innermost = POLLING.try_with(|p| p.get() == Some(id)).unwrap_or(false);
    let in_window = WINDOWS
        .try_with(|windows| {
            let mut windows = windows.try_borrow_mut().ok()?;
            let window = windows.iter_mut().rev().find(|w| w.key == key)?;
            window.terminated = true;
            Some((window.entered.is_some(), window.bridges.is_empty()))
        })
        .ok()
        .flatten();
    if let Some((entered, no_bridges)) = in_window {
        user();
        if entered && innermost {
            // A task that never touched its storage holds at most what it inherited:
            // nothing of its own to tear down, and its inherited values are shared
            // with its spawner (or, if this was their last holder, dropped as the
            // task's). Then the teardown is left to `close_last_window`, which does it
            // for the price of a reference count (`current::end`) rather than a
            // teardown round while current — unless user code runs in between and
            // could see the difference: an after-poll callback of the user's, which
            // must see an empty storage, or a bridge's exit.
            let deferred = !after_poll_callback
                && no_bridges
                && current::read(|here| !matches!(here, Here::Storage(_)));
            if !deferred {
                current::finish();
            }
        }
        return true;
    }
    // Outside any window of this thread (runtime shutdown): waits only for the
    // after-poll hook of the task's last window on another thread.
    let mut guard = cell.lock();
    if guard.is_none() || cell.key.load(Ordering::Relaxed) != key {
        return false;
    }
    let held = guard.take();
    cell.key.store(0, Ordering::Release);
    drop(guard);
    if let Some(held) = held {
        finish_detached(held.frame, user);
    }
    true
}
