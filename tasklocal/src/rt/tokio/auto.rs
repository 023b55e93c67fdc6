//! Automatic mode: every task of a runtime owns a storage, through tokio's task hooks
//! (`--cfg tokio_unstable`).
//!
//! # How it works
//!
//! Each task's state is a [`Frame`](crate::current::Frame), kept in the [`Registry`](registry::Registry) under the task's id: in
//! the task's cell of a direct-mapped table (the fast path, `registry::Cell`), or, when
//! another live task has that cell, in a slot of a sharded map (`registry::Slot`).
//!
//! * `on_task_spawn` runs on the spawning thread before the child is scheduled: it
//!   files a frame seeded from the spawner's inheritable values (the *current* owner
//!   of that thread, not `tokio::task::try_id()`, which on a worker outside a poll is
//!   the worker's own blocking-task id). A frame allocates nothing until used.
//! * `on_before_task_poll` leaves the poll window *pending* for a task in the table
//!   (the common case): it only marks the thread's owner
//!   [`Pending`](crate::current::Owner::Pending) and notes the task in the
//!   thread-local [`PENDING`](pending::PENDING) — no lock, no switch. The first access
//!   of the poll that needs an owner (a read, a write, a spawn's capture, `reset`, a
//!   user hook) settles it: [`pending::settle`] opens the window, which swaps the task's
//!   frame with the thread's current frame in place
//!   ([`current::swap_in`](crate::current::swap_in),
//!   [`current::swap_out`](crate::current::swap_out)). While a window is open, the
//!   task's cell or slot holds the frame it displaced, and the thread-local
//!   [`POLLING`](hooks::POLLING) names the task (windows nest when a nested runtime
//!   runs inside `block_in_place`). A cell stays locked while its window is open: the
//!   hook keeps its `MutexGuard<'static, _>` in the thread-local
//!   [`WINDOWS`](hooks::WINDOWS), with the window's state. Windows are opened at once
//!   where they cannot wait: when bridges are registered (they must see the task's
//!   values from the start of the poll), for a task in the shards, and inside another
//!   owner. A spawn in a pending window reads the spawner's values in its cell,
//!   without a switch. After a poll that settled its window, the task's next few
//!   polls (`registry::HOT_POLLS`) open theirs at once: a task that asks for its owner
//!   in one poll likely does in the next, and pays then for the switch alone.
//! * `on_after_task_poll` closes a pending window by clearing the mark, and an open
//!   one by swapping the frames back (and unlocking the cell).
//! * `on_task_terminate` tears the storage down with [`current::finish`](crate::current::finish) while it is
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
//!   waits until the window is closed — on the cell's lock, or for a slot spinning
//!   briefly, then yielding: the other thread is only running tokio internals and the
//!   after-poll hooks.
//! * **Spawning onto a closed runtime** shuts the task down inside `spawn`, before the
//!   spawn hook: the terminate hook finds no slot and says so in [`STILLBORN`](hooks::STILLBORN), and
//!   the spawn hook that follows on the same thread files nothing.
//!
//! The code is in three files: `auto/hooks.rs` has what each hook does,
//! `auto/pending.rs` the pending windows, `auto/registry.rs` the registry of frames by
//! task id.
//!
//! No lock is global, and no lock is shared by two live tasks on the fast path:
//!
//! * The table (4096 cells of 128 bytes, shared by the runtimes of the process: task
//!   ids are unique across them) gives each cell to at most one task, filed by the
//!   spawn hook if the cell is free. A cell is locked by its own task's hooks only (a
//!   spawn hook merely tries it), so holding it through the poll blocks nothing but
//!   an overlapping poll of the same task. A poll of a task in the table costs one
//!   lock and one unlock when it touches the API — the least that moves a frame
//!   between threads without `unsafe` — and none when it does not; no allocation. (A
//!   frame could be kept on the polling thread between polls with no atomic
//!   operation at all, but then a poll of the task on another thread, or its
//!   teardown, would have to wait for that thread to give it back, which it may never
//!   do: a thread leaves `block_on`, or blocks in `block_in_place` on the very task.)
//!   A spawn with inheritance costs three lock round trips: reading the spawner's
//!   values, filing the child's frame, taking it out when the child ends.
//! * Tasks whose cell is taken go to cache-line-aligned shards by task id, each a
//!   `Mutex<HashMap>` held for one lookup and a swap per hook: two lock round trips
//!   a poll.
//!
//! No user code ever runs while a shard is locked, nor in a swap (frames are torn down
//! and dropped after the lock is released); a cell is locked while its task's own
//! code runs.

use std::fmt;
use std::sync::Arc;

use ::tokio::runtime::{Builder, TaskMeta};

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
    let mut registry = Registry::new();
    registry.after_poll_callback = after_poll.is_some();
    let registry = Arc::new(registry);
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
        .on_task_terminate(move |meta| r4.terminate(meta, terminate.as_deref()));
    // Without callbacks of the user's, the poll hooks are closures whose common path
    // (a window left pending, then closed) makes no call, so needs no stack frame.
    match before_poll {
        None => builder.on_before_task_poll(move |meta| r2.before_poll(meta.id())),
        Some(f) => builder.on_before_task_poll(move |meta| {
            r2.before_poll(meta.id());
            f(meta);
        }),
    };
    match after_poll {
        None => builder.on_after_task_poll(move |meta| r3.after_poll(meta.id())),
        Some(f) => builder.on_after_task_poll(move |meta| {
            f(meta);
            r3.after_poll(meta.id());
        }),
    }
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
    /// values are readable. For tasks without storage (plain `spawn_blocking`
    /// closures) `f` runs in whatever owner is current on the thread then: on a
    /// blocking thread, that thread's own storage (what its `on_thread_start` set, if
    /// anything) — never another task's.
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

mod hooks;
mod pending;
mod registry;

use registry::Registry;
#[cfg(all(test, tasklocal_loom))]
use registry::{key, SHARDS};

#[cfg(all(test, tasklocal_loom))]
mod loom_models;
