//! Automatic mode: every task of a runtime owns a storage, through tokio's task hooks
//! (`--cfg tokio_unstable`).
//!
//! # How it works
//!
//! Each task's state is a [`Frame`], kept in a [`Registry`] slot under the task's id:
//!
//! * `on_task_spawn` runs on the spawning thread before the child is scheduled: it
//!   files a frame seeded from the spawner's inheritable values (the *current* owner
//!   of that thread, not `tokio::task::try_id()`, which on a worker outside a poll is
//!   the worker's own blocking-task id). A frame allocates nothing until used.
//! * `on_before_task_poll` swaps the slot's frame with the thread's current frame in
//!   place ([`current::swap`]): while the task is polled, its slot holds the frame it
//!   displaced, and the thread-local [`POLLING`] names the task (the window it
//!   displaced is kept in the slot: windows nest when a nested runtime runs inside
//!   `block_in_place`).
//! * `on_after_task_poll` swaps them back.
//! * `on_task_terminate` tears the storage down with [`current::finish`] while it is
//!   current: handlers last-registered first with values readable, then values.
//!   tokio (1.54) calls it inside the final poll window for completion, panic and the
//!   abort of an idle task (the future is dropped in that window too, so its `Drop`
//!   sees the task's values; the after-poll hook then restores the outer frame and
//!   removes the slot), and outside any window at runtime shutdown: there the frame
//!   is swapped in for the teardown and out again.
//!
//! Two orderings of tokio need care:
//!
//! * **Polls can overlap.** tokio may re-schedule a task inside `task.run()`, before
//!   that poll's after-poll hook runs, so another worker can start the next poll (or
//!   shut the task down) while the previous window is still open. The next poll then
//!   waits (spinning briefly, then yielding) until the slot is idle: the other thread
//!   is only running tokio internals and the after-poll hooks.
//! * **Spawning onto a closed runtime** shuts the task down inside `spawn`, before the
//!   spawn hook: the terminate hook finds no slot and says so in [`STILLBORN`], and
//!   the spawn hook that follows on the same thread files nothing.
//!
//! No lock is global: the registry is split into cache-line-aligned shards by task
//! id, each a `Mutex<HashMap>` held for one lookup and a swap per hook; no user code
//! ever runs while a shard is locked (frames are torn down and dropped after the lock
//! is released). A poll costs two such lock round trips and no allocation.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use ::tokio::runtime::{Builder, TaskMeta};
use ::tokio::task::Id;

use crate::bridge;
use crate::current::{self, Frame, Owner};
use crate::snapshot::Snapshot;
// std's, or loom's in the loom models (`auto/loom_models.rs`).
use crate::sync::{spin_loop, thread_local, yield_now, Mutex, MutexGuard};

/// Gives every task of the runtime built by `builder` its own storage, with no
/// wrapper: automatic mode.
///
/// After it, every task the runtime runs — spawned by your code or inside hyper,
/// axum, tonic or any other crate — has its own storage: created at spawn with the
/// spawner's [inheritable](crate::Local::inheritable) values, current during each
/// poll, and torn down when the task terminates (completion, abort, panic, runtime
/// shutdown): exit handlers last-registered first, then values dropped.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// static USER: tasklocal::Local<String> = tasklocal::Local::inheritable();
///
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// tasklocal::tokio::install(builder.enable_all());
/// let rt = builder.build().unwrap();
///
/// rt.block_on(async {
///     tokio::spawn(async {
///         USER.set("ada".into()); // plain tokio::spawn: no wrapper
///         let child = tokio::spawn(async { USER.get() }); // inherited at spawn
///         assert_eq!(child.await.unwrap().as_deref(), Some("ada"));
///     })
///     .await
///     .unwrap();
/// });
/// # }
/// ```
///
/// Call it **after** any `on_task_spawn`, `on_before_task_poll`,
/// `on_after_task_poll` or `on_task_terminate` of your own: tokio keeps one callback
/// per hook, and a later call replaces the earlier one. To keep callbacks of your
/// own, pass them to [`install_with`]. See [the module docs](crate::tokio) for
/// `spawn_blocking`, `LocalSet` and the other limits.
pub fn install(builder: &mut Builder) -> &mut Builder {
    install_with(builder, Hooks::new())
}

/// [`install`], keeping task hooks of your own: tokio allows one callback per hook,
/// so automatic mode calls yours from its own.
///
/// Yours run with the task's storage current where there is one:
///
/// | hook | when yours runs |
/// |---|---|
/// | [`on_task_spawn`](Hooks::on_task_spawn) | after the child's storage is prepared; the *spawner's* storage is current |
/// | [`on_before_task_poll`](Hooks::on_before_task_poll) | after the task's storage became current |
/// | [`on_after_task_poll`](Hooks::on_after_task_poll) | while the task's storage is still current (after the final poll: after its teardown) |
/// | [`on_task_terminate`](Hooks::on_task_terminate) | before the teardown, with the task's values readable |
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// static REQUEST: tasklocal::Local<u32> = tasklocal::Local::new();
///
/// let ended = Arc::new(AtomicUsize::new(0));
/// let seen = ended.clone();
/// let hooks = tasklocal::tokio::Hooks::new().on_task_terminate(move |_meta| {
///     // The task's values are still readable here.
///     if REQUEST.get() == Some(7) {
///         seen.fetch_add(1, Ordering::SeqCst);
///     }
/// });
/// let mut builder = tokio::runtime::Builder::new_current_thread();
/// tasklocal::tokio::install_with(&mut builder, hooks);
/// let rt = builder.build().unwrap();
/// rt.block_on(async { tokio::spawn(async { REQUEST.set(7) }).await.unwrap() });
/// drop(rt); // the runtime is gone: every task has terminated
/// assert_eq!(ended.load(Ordering::SeqCst), 1);
/// # }
/// ```
pub fn install_with(builder: &mut Builder, hooks: Hooks) -> &mut Builder {
    let Hooks {
        spawn,
        before_poll,
        after_poll,
        terminate,
    } = hooks;
    let registry = Arc::new(Registry::new());
    let (r1, r2, r3, r4) = (
        registry.clone(),
        registry.clone(),
        registry.clone(),
        registry,
    );
    builder
        .on_task_spawn(move |meta| {
            r1.spawn(meta.id());
            if let Some(f) = &spawn {
                f(meta);
            }
        })
        .on_before_task_poll(move |meta| {
            r2.before_poll(meta.id());
            if let Some(f) = &before_poll {
                f(meta);
            }
        })
        .on_after_task_poll(move |meta| {
            if let Some(f) = &after_poll {
                f(meta);
            }
            r3.after_poll(meta.id());
        })
        .on_task_terminate(move |meta| r4.terminate(meta, terminate.as_deref()))
}

/// A task hook, as tokio takes it.
type HookFn = dyn Fn(&TaskMeta<'_>) + Send + Sync;
type Callback = Arc<HookFn>;

/// Task hooks of your own, for [`install_with`] to run alongside automatic mode's.
///
/// The methods mirror those of [`tokio::runtime::Builder`](::tokio::runtime::Builder);
/// setting one twice keeps the last, as tokio does.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// let hooks = tasklocal::tokio::Hooks::new()
///     .on_task_spawn(|meta| println!("spawned {}", meta.id()))
///     .on_task_terminate(|meta| println!("ended {}", meta.id()));
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// tasklocal::tokio::install_with(&mut builder, hooks);
/// # }
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Hooks {
    spawn: Option<Callback>,
    before_poll: Option<Callback>,
    after_poll: Option<Callback>,
    terminate: Option<Callback>,
}

impl Hooks {
    /// No hooks of your own.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// tasklocal::tokio::install_with(&mut builder, tasklocal::tokio::Hooks::new());
    /// # }
    /// ```
    pub fn new() -> Hooks {
        Hooks::default()
    }

    /// Runs `f` when a task is spawned, on the spawning thread, after automatic mode
    /// prepared the child's storage; the spawner's storage is current.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// let hooks = tasklocal::tokio::Hooks::new().on_task_spawn(|meta| {
    ///     println!("task {} spawned at {}", meta.id(), meta.spawned_at());
    /// });
    /// # let _ = hooks;
    /// # }
    /// ```
    #[must_use = "the hooks are only used once passed to `install_with`"]
    pub fn on_task_spawn(mut self, f: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static) -> Hooks {
        self.spawn = Some(Arc::new(f));
        self
    }

    /// Runs `f` before each poll of a task, with the task's storage current.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// static POLLS: tasklocal::Local<u64> = tasklocal::Local::with_initial(|| 0);
    /// // Counts the polls of every task, in the task's own storage.
    /// let hooks = tasklocal::tokio::Hooks::new().on_before_task_poll(|_| {
    ///     POLLS.with_mut(|n| *n += 1);
    /// });
    /// # let _ = hooks;
    /// # }
    /// ```
    #[must_use = "the hooks are only used once passed to `install_with`"]
    pub fn on_before_task_poll(
        mut self,
        f: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Hooks {
        self.before_poll = Some(Arc::new(f));
        self
    }

    /// Runs `f` after each poll of a task, while the task's storage is still current.
    /// After the task's final poll, its storage has already been torn down: `f` sees
    /// an empty storage, and anything it sets is dropped right after it returns.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// let hooks = tasklocal::tokio::Hooks::new().on_after_task_poll(|meta| {
    ///     let _ = meta.id();
    /// });
    /// # let _ = hooks;
    /// # }
    /// ```
    #[must_use = "the hooks are only used once passed to `install_with`"]
    pub fn on_after_task_poll(
        mut self,
        f: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Hooks {
        self.after_poll = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a task terminates, before its storage is torn down: the task's
    /// values are readable. For tasks without storage (`spawn_blocking` closures) the
    /// thread's current storage is whatever it is — for a blocking task, none.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// static REQUEST: tasklocal::Local<String> = tasklocal::Local::new();
    /// let hooks = tasklocal::tokio::Hooks::new().on_task_terminate(|meta| {
    ///     if let Some(request) = REQUEST.get() {
    ///         println!("task {} served {request}", meta.id());
    ///     }
    /// });
    /// # let _ = hooks;
    /// # }
    /// ```
    #[must_use = "the hooks are only used once passed to `install_with`"]
    pub fn on_task_terminate(mut self, f: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static) -> Hooks {
        self.terminate = Some(Arc::new(f));
        self
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_task_spawn", &self.spawn.is_some())
            .field("on_before_task_poll", &self.before_poll.is_some())
            .field("on_after_task_poll", &self.after_poll.is_some())
            .field("on_task_terminate", &self.terminate.is_some())
            .finish()
    }
}

thread_local! {
    /// The task whose poll window is innermost on this thread, if any.
    static POLLING: Cell<Option<Id>> = const { Cell::new(None) };
    /// This thread's number (0: not drawn yet), to recognize its own poll windows.
    static THREAD: Cell<u64> = const { Cell::new(0) };
    /// A task whose terminate hook found no slot on this thread: if the next spawn
    /// hook here is for the same task, it was spawned onto a closed runtime and has
    /// already ended.
    static STILLBORN: Cell<Option<Id>> = const { Cell::new(None) };
}

/// This thread's number: unique among the threads of the process.
fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
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

/// One task's entry in the registry.
struct Slot {
    /// `Idle`: the task's frame. `Polled` and entered: the frame that the task's frame
    /// displaced on the polling thread (the two are swapped in place). `Polled` and not
    /// entered (that thread could not switch): the task's frame.
    frame: Frame,
    state: State,
    /// The window that was innermost on the polling thread before this one.
    outer: Option<Id>,
    /// The polling thread's number.
    thread: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
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
    fn idle(frame: Frame) -> Slot {
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
const SHARDS: usize = 64;

type Slots = HashMap<u64, Slot, BuildHasherDefault<SlotHasher>>;

/// One shard, on cache lines of its own.
#[repr(align(128))]
struct Shard(Mutex<Slots>);

/// Every task's frame, by task id.
struct Registry {
    shards: Box<[Shard]>,
}

impl Registry {
    fn new() -> Registry {
        Registry {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Slots::default())))
                .collect(),
        }
    }

    /// The shard of task `key`, locked. No code of ours panics while holding it;
    /// poisoning is ignored all the same rather than breaking the runtime.
    #[inline]
    fn lock(&self, key: u64) -> MutexGuard<'_, Slots> {
        self.shards[key as usize % SHARDS]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, id: Id) {
        let stillborn = STILLBORN
            .try_with(|s| s.get() == Some(id) && s.take().is_some())
            .unwrap_or(false);
        if stillborn {
            return;
        }
        let slot = Slot::idle(Snapshot::capture().into_frame());
        let key = key(id);
        let old = self.lock(key).insert(key, slot);
        // Dropped outside the lock (never anything: ids are unique).
        drop(old);
    }

    fn before_poll(&self, id: Id) {
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
    fn enter_bridges(&self, key: u64) {
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
    fn exit_bridges(&self, key: u64) {
        let mut entered = match self.lock(key).get_mut(&key).map(|slot| &mut slot.state) {
            Some(State::Polled { bridges, .. }) => mem::take(bridges),
            _ => return,
        };
        // Reported by the panic hook; it must not unwind into tokio's hook.
        drop(bridge::exit(&mut entered));
    }

    fn after_poll(&self, id: Id) {
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

    fn terminate(&self, meta: &TaskMeta<'_>, user: Option<&HookFn>) {
        self.end(meta.id(), || {
            if let Some(f) = user {
                f(meta);
            }
        })
    }

    /// [`terminate`](Registry::terminate) of task `id`, with `user` the user's hook
    /// (apart so that the loom models, which have no `TaskMeta`, can drive it).
    fn end(&self, id: Id, user: impl Fn()) {
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

/// Removes task `key`'s slot. A shard that held a burst of tasks gives its memory
/// back once it is seven-eighths empty, keeping room for twice what it holds, so at
/// least half its entries go between two shrinks (amortized O(1)).
fn remove(slots: &mut Slots, key: u64) -> Option<Slot> {
    let slot = slots.remove(&key);
    if slots.capacity() > 64 && slots.len() * 8 < slots.capacity() {
        slots.shrink_to(slots.len() * 2);
    }
    slot
}

/// Waiting for another thread to file a frame: it only runs tokio internals and the
/// after-poll hooks meanwhile, so spin briefly, then yield.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
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
fn finish_detached(mut frame: Frame, first: impl FnOnce()) {
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
fn key(id: Id) -> u64 {
    let mut raw = RawId(0);
    id.hash(&mut raw);
    raw.0
}

/// Reads the `u64` an id hashes as; any other input is folded in (FNV-1a), so that
/// ids stay distinct whatever tokio's `Hash` does.
struct RawId(u64);

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
struct SlotHasher(u64);

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

#[cfg(all(test, tasklocal_loom))]
mod loom_models;

#[cfg(test)]
mod tests {
    use super::*;

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
