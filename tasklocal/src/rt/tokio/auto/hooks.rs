//! What automatic mode's hooks do: file a task's frame at spawn, swap it in and out
//! around each poll, tear it down at termination.

use std::cell::Cell;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};

use ::tokio::runtime::TaskMeta;
use ::tokio::task::Id;

use crate::bridge;
use crate::current::{self, Frame};
// std's, or loom's in the loom models (`auto/loom_models.rs`).
use crate::sync::thread_local;

use super::registry::{finish_detached, key, remove, Backoff, Registry, Slot, State};
use super::HookFn;

thread_local! {
    /// The task whose poll window is innermost on this thread, if any.
    pub(super) static POLLING: Cell<Option<Id>> = const { Cell::new(None) };
    /// This thread's number (0: not drawn yet), to recognize its own poll windows.
    pub(super) static THREAD: Cell<u64> = const { Cell::new(0) };
    /// A task whose terminate hook found no slot on this thread: if the next spawn
    /// hook here is for the same task, it was spawned onto a closed runtime and has
    /// already ended.
    pub(super) static STILLBORN: Cell<Option<Id>> = const { Cell::new(None) };
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
        let slot = Slot::idle(Frame::new(current::capture()));
        let key = key(id);
        let old = self.lock(key).insert(key, slot);
        // Dropped outside the lock (never anything: ids are unique).
        drop(old);
    }

    pub(super) fn before_poll(&self, id: Id) {
        let key = key(id);
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

    pub(super) fn after_poll(&self, id: Id) {
        let key = key(id);
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
        self.end(meta.id(), || {
            if let Some(f) = user {
                f(meta);
            }
        })
    }

    /// [`terminate`](Registry::terminate) of task `id`, with `user` the user's hook
    /// (apart so that the loom models, which have no `TaskMeta`, can drive it).
    pub(super) fn end(&self, id: Id, user: impl Fn()) {
        let key = key(id);
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
                        finish_detached(slot.frame, &user);
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
