//! The registry of automatic mode: every task's frame by task id, in a direct-mapped
//! table of cells (the fast path) and, for tasks whose cell is taken, in shards.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU8 as StdAtomicU8, Ordering::Relaxed};
use std::sync::{PoisonError, TryLockError};

use ::tokio::task::Id;

use crate::bridge;
use crate::current::{self, Frame, Owner};
// std's, or loom's in the loom models (`auto/loom_models.rs`).
use crate::sync::{spin_loop, yield_now, AtomicU64, Mutex, MutexGuard, Ordering};

/// One task's entry in the registry.
pub(super) struct Slot {
    /// `Idle`: the task's frame. `Polled` and entered: the frame that the task's frame
    /// displaced on the polling thread (the two are swapped in place). `Polled` and not
    /// entered (that thread could not switch): the task's frame.
    pub(super) frame: Frame,
    pub(super) state: State,
    /// The window that was innermost on the polling thread before this one.
    pub(super) outer: Option<Id>,
    /// The polling thread's number.
    pub(super) thread: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum State {
    /// No poll has the task.
    Idle,
    /// A poll window is open on `thread`.
    Polled {
        /// The task's frame is current there, displacing an owner of this kind.
        entered: Option<Owner>,
        /// The bridges entered for the window, exited before it closes.
        bridges: bridge::Entered,
        /// The task terminated inside the window: `after_poll` tears it down.
        terminated: bool,
    },
}

impl Slot {
    pub(super) fn idle(frame: Frame) -> Slot {
        Slot {
            frame,
            state: State::Idle,
            outer: None,
            thread: 0,
        }
    }
}

/// How many shards the registry has: a power of two, well above the number of
/// threads that poll at once, so that two of them rarely meet on one lock.
pub(super) const SHARDS: usize = 64;

pub(super) type Slots = HashMap<u64, Slot, BuildHasherDefault<SlotHasher>>;

/// One shard, on cache lines of its own.
#[repr(align(128))]
pub(super) struct Shard(pub(super) Mutex<Slots>);

/// One cell of the table: the frame of at most one task, the one whose key `key`
/// holds (0: none), on cache lines of its own.
///
/// The point of the table is a poll with one atomic read-modify-write on each side:
/// a cell is `'static`, so the hook that opens a poll window can keep the cell's
/// `MutexGuard<'static, _>` in a thread-local ([`WINDOWS`](super::hooks::WINDOWS)) and
/// the hook that closes the window drops it — one lock and one unlock per poll, where
/// a map behind a lock needs a lock round trip on each side to take the frame out and
/// to file it back (the frame moves between threads, so without `unsafe` it can only
/// travel through a lock). The cell stays locked while its task is polled, which is
/// harmless because one cell holds one task: only that task's own hooks lock it (a
/// spawn hook only tries), and those wait only for the previous poll window's
/// after-poll hook (see "Polls can overlap" in `auto.rs`).
#[repr(align(128))]
pub(super) struct Cell {
    /// The task filed here. Written only under `slot`'s lock, together with it
    /// (`key != 0` exactly when `slot` is `Some`); read without the lock by the task's
    /// own hooks, which can trust it: only the task's spawn hook sets it (before tokio
    /// can poll the task), only its teardown clears it, and no hook of the task runs
    /// after that.
    pub(super) key: AtomicU64,
    pub(super) slot: Mutex<Option<Held>>,
    /// How many of the task's next polls open their window at once instead of leaving
    /// it pending ([`HOT_POLLS`] after a pending window was settled): a task that
    /// touches the API in every poll then pays for the switch alone, not for the
    /// pending mark and the settling as well. A hint, std's atomic even in the loom
    /// models: relaxed loads and stores, no read-modify-write; a lost update only
    /// changes which way a window opens.
    pub(super) hot: StdAtomicU8,
}

/// How many polls after a settled one open their window at once (see [`Cell::hot`]).
pub(super) const HOT_POLLS: u8 = 8;

/// A task's frame in a [`Cell`]: while idle, the task's frame; while polled and
/// entered, the frame it displaced on the polling thread (swapped in place, like
/// [`Slot::frame`]).
pub(super) struct Held {
    pub(super) frame: Frame,
    /// The [`Registry::id`] of the runtime the task belongs to (the table is shared by
    /// all runtimes of the process: task ids are unique across them).
    pub(super) registry: u64,
}

impl Cell {
    #[cfg(not(all(test, tasklocal_loom)))]
    const fn new() -> Cell {
        Cell {
            key: AtomicU64::new(0),
            slot: Mutex::new(None),
            hot: StdAtomicU8::new(0),
        }
    }

    #[cfg(all(test, tasklocal_loom))]
    fn new() -> Cell {
        Cell {
            key: AtomicU64::new(0),
            slot: Mutex::new(None),
            hot: StdAtomicU8::new(0),
        }
    }

    /// Whether the task's window opens at once in this poll ([`Cell::hot`]); counts
    /// the poll down.
    #[inline(always)]
    pub(super) fn take_hot(&self) -> bool {
        match self.hot.load(Relaxed) {
            0 => false,
            hot => {
                self.hot.store(hot - 1, Relaxed);
                true
            }
        }
    }

    /// Marks the task's next polls [hot](Cell::hot): its pending window was settled.
    #[inline]
    pub(super) fn heat(&self) {
        self.hot.store(HOT_POLLS, Relaxed);
    }

    /// Locks the cell; poisoning is ignored (no code of ours panics holding it).
    #[inline]
    pub(super) fn lock(&'static self) -> MutexGuard<'static, Option<Held>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files `frame` here as task `key`'s, if the cell is free and not being locked
    /// right now; otherwise hands it back (for the shards).
    pub(super) fn file(&'static self, key: u64, registry: u64, frame: Frame) -> Result<(), Frame> {
        if self.key.load(Ordering::Relaxed) != 0 {
            return Err(frame);
        }
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(slot)) => slot.into_inner(),
            // Another hook has the cell for a moment: never wait here (the spawning
            // thread may hold that very cell, in a poll window further out).
            Err(TryLockError::WouldBlock) => return Err(frame),
        };
        if slot.is_some() {
            return Err(frame);
        }
        *slot = Some(Held { frame, registry });
        // A new task: no hint from the cell's previous one.
        self.hot.store(0, Relaxed);
        self.key.store(key, Ordering::Release);
        Ok(())
    }
}

/// How many cells the table has: a power of two. Task ids are drawn from one
/// counter, so up to this many tasks alive at once rarely share a cell; the others
/// go to the shards.
#[cfg(not(all(test, tasklocal_loom)))]
pub(super) const CELLS: usize = 4096;
/// In the loom models: as many cells as shards, so that two tasks of one shard share
/// a cell too, and the second goes to the shards (both paths are explored).
#[cfg(all(test, tasklocal_loom))]
pub(super) const CELLS: usize = SHARDS;

/// The table, shared by every runtime in automatic mode (512 KiB of zeroes until
/// used).
#[cfg(not(all(test, tasklocal_loom)))]
static TABLE: [Cell; CELLS] = [const { Cell::new() }; CELLS];

/// Every task's frame, by task id.
pub(super) struct Registry {
    /// The table: the cell of task `key` is `table[key % CELLS]`.
    pub(super) table: &'static [Cell; CELLS],
    pub(super) shards: Box<[Shard]>,
    /// Tells this runtime's frames in the shared table from other runtimes'.
    pub(super) id: u64,
    /// The user gave an after-poll callback of their own ([`Hooks`](super::Hooks)).
    pub(super) after_poll_callback: bool,
}

impl Registry {
    pub(super) fn new() -> Registry {
        // Not loom's: the number only tells registries apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        current::set_settler(current::Settler {
            settle: super::pending::settle,
            capture: super::pending::capture_pending,
        });
        Registry {
            table: table(),
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Slots::default())))
                .collect(),
            id: NEXT.fetch_add(1, Relaxed),
            after_poll_callback: true,
        }
    }

    /// The cell of task `key`.
    #[inline]
    pub(super) fn cell(&self, key: u64) -> &'static Cell {
        // `CELLS` is a power of two: a mask, not a division (and no bounds check).
        &self.table[key as usize & (CELLS - 1)]
    }

    /// The shard of task `key`, locked. No code of ours panics while holding it;
    /// poisoning is ignored all the same rather than breaking the runtime.
    #[inline]
    pub(super) fn lock(&self, key: u64) -> MutexGuard<'_, Slots> {
        self.shards[key as usize % SHARDS]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(not(all(test, tasklocal_loom)))]
fn table() -> &'static [Cell; CELLS] {
    &TABLE
}

/// loom's mutexes cannot be statics: every registry of a model gets a table of its
/// own, leaked (tests only).
#[cfg(all(test, tasklocal_loom))]
fn table() -> &'static [Cell; CELLS] {
    let cells: Box<[Cell]> = (0..CELLS).map(|_| Cell::new()).collect();
    match cells.try_into() {
        Ok(table) => Box::leak(table),
        Err(_) => unreachable!("CELLS cells"),
    }
}

/// Removes task `key`'s slot. A shard that held a burst of tasks gives its memory
/// back once it is seven-eighths empty, keeping room for twice what it holds, so at
/// least half its entries go between two shrinks (amortized O(1)).
pub(super) fn remove(slots: &mut Slots, key: u64) -> Option<Slot> {
    let slot = slots.remove(&key);
    if slots.capacity() > 64 && slots.len() * 8 < slots.capacity() {
        slots.shrink_to(slots.len() * 2);
    }
    slot
}

/// Waiting for another thread to file a frame: it only runs tokio internals and the
/// after-poll hooks meanwhile, so spin briefly, then yield.
#[derive(Default)]
pub(super) struct Backoff(u32);

impl Backoff {
    pub(super) fn snooze(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            spin_loop();
        } else {
            yield_now();
        }
    }
}

impl Drop for Registry {
    /// The runtime and all its tasks are gone. A frame can be left only when a spawn
    /// hook raced the runtime's shutdown on another thread and filed it after the
    /// task's terminate hook ran: such a task never ran, its frame holds at most
    /// inherited values. Tear them down here rather than leak.
    fn drop(&mut self) {
        for cell in self.table.iter() {
            if cell.key.load(Ordering::Acquire) == 0 {
                continue;
            }
            // A cell locked now is another runtime's task being polled (or a spawn
            // hook trying the cell for a moment): not a frame of ours left behind.
            let mut slot = match cell.slot.try_lock() {
                Ok(slot) => slot,
                Err(TryLockError::Poisoned(slot)) => slot.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            if slot.as_ref().is_some_and(|held| held.registry == self.id) {
                let held = slot.take();
                cell.key.store(0, Ordering::Release);
                drop(slot);
                if let Some(held) = held {
                    finish_detached(held.frame, || ());
                }
            }
        }
        for shard in self.shards.iter_mut() {
            let slots = std::mem::take(shard.0.get_mut().unwrap_or_else(PoisonError::into_inner));
            for slot in slots.into_values() {
                if slot.state == State::Idle {
                    finish_detached(slot.frame, || ());
                }
            }
        }
    }
}

/// Makes `frame` current for `first` and its teardown, then restores the previous
/// frame. When the thread cannot switch, `first` runs as is and the frame is torn
/// down where it stands.
pub(super) fn finish_detached(mut frame: Frame, first: impl FnOnce()) {
    // The guard calls the bridges too.
    if let Some(_entered) = current::try_enter(&mut frame) {
        first();
        current::finish();
    } else {
        first();
    }
    drop(frame);
}

/// The raw value of a task id (tokio hashes it as one `u64`).
#[inline]
pub(super) fn key(id: Id) -> u64 {
    let mut raw = RawId(0);
    id.hash(&mut raw);
    raw.0
}

/// Reads the `u64` an id hashes as; any other input is folded in (FNV-1a), so that
/// ids stay distinct whatever tokio's `Hash` does.
pub(super) struct RawId(u64);

impl Hasher for RawId {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = if self.0 == 0 {
            n
        } else {
            (self.0 ^ n).wrapping_mul(0x100_0000_01b3)
        };
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hasher of a shard's map. Keys of one shard share their low bits, so the
/// multiply's well-mixed high half is rotated into the low bits that pick a bucket.
#[derive(Default)]
pub(super) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(32);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More tasks alive at once than the table has cells: those whose cell is taken
    /// go to the shards, and every task keeps its own value through its polls, its
    /// children inherit it, and every value is dropped once.
    #[cfg(not(tasklocal_loom))]
    #[test]
    fn tasks_whose_cell_is_taken_go_to_the_shards() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        static LIVE: AtomicUsize = AtomicUsize::new(0);
        struct Counted(usize);
        impl Clone for Counted {
            fn clone(&self) -> Counted {
                LIVE.fetch_add(1, SeqCst);
                Counted(self.0)
            }
        }
        impl Drop for Counted {
            fn drop(&mut self) {
                LIVE.fetch_sub(1, SeqCst);
            }
        }
        static VALUE: crate::Local<Counted> = crate::Local::inheritable();

        let mut builder = ::tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        crate::tokio::install(&mut builder);
        let rt = builder.build().unwrap();
        let tasks = CELLS + CELLS / 2;
        rt.block_on(async {
            let (go, wait) = ::tokio::sync::watch::channel(false);
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let mut wait = wait.clone();
                    ::tokio::spawn(async move {
                        LIVE.fetch_add(1, SeqCst);
                        VALUE.set(Counted(i));
                        // All alive at once.
                        let _ = wait.wait_for(|go| *go).await;
                        ::tokio::task::yield_now().await;
                        let inherited = ::tokio::spawn(async { VALUE.with(|v| v.map(|v| v.0)) });
                        let inherited = inherited.await.unwrap();
                        (VALUE.with(|v| v.map(|v| v.0)), inherited)
                    })
                })
                .collect();
            go.send(true).unwrap();
            for (i, handle) in handles.into_iter().enumerate() {
                assert_eq!(handle.await.unwrap(), (Some(i), Some(i)));
            }
        });
        drop(rt);
        assert_eq!(LIVE.load(SeqCst), 0, "a value was leaked or dropped twice");
    }

    #[test]
    fn a_shard_gives_memory_back_after_a_burst() {
        let mut slots = Slots::default();
        for key in 0..10_000 {
            slots.insert(key, Slot::idle(Frame::new(None)));
        }
        let burst = slots.capacity();
        for key in 10..10_000 {
            assert!(remove(&mut slots, key).is_some());
        }
        assert!(
            slots.capacity() < burst / 100,
            "{} of {burst}",
            slots.capacity()
        );
        assert!((0..10).all(|key| slots.contains_key(&key)));
        assert!(remove(&mut slots, 10).is_none());
    }

    #[test]
    fn keys_are_the_raw_task_ids() {
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ids: Vec<Id> = (0..100).map(|_| rt.spawn(async {}).id()).collect();
        for id in &ids {
            assert_eq!(key(*id).to_string(), id.to_string());
        }
        // Drawn from one counter: the ids of tasks spawned one after another
        // increase (so they spread over the shards).
        assert!(ids.windows(2).all(|w| key(w[0]) < key(w[1])));
    }
}
