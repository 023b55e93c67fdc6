//! loom models of automatic mode's registry: the hooks of tasks that share a shard,
//! a poll re-scheduled before the previous poll's after-poll hook, teardown at
//! shutdown racing with that hook and with the exit of the thread that polled, a
//! capture by a child while its parent ends, and a spawn racing shutdown.
//!
//! The hooks are driven in the orders tokio calls them (a poll window is
//! `before_poll`, the poll, `after_poll`; a task that completes ends inside its last
//! window; runtime shutdown ends it outside any window), on loom threads, with counted
//! values: every model checks that each value is dropped exactly once and that the
//! registry (its table and its shards) is empty at the end. Bounded to 5 preemptions (`LOOM_MAX_PREEMPTIONS`
//! overrides it) so that the models run in seconds (8 takes about a minute, and passes).

use std::sync::OnceLock;

use ::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use ::loom::sync::Arc;
use ::loom::thread;
use ::tokio::task::Id;

use super::{key, Registry, SHARDS};
use crate::Local;

/// A value that counts the live copies of itself.
#[derive(Debug)]
struct Counted {
    tag: u32,
    live: Arc<AtomicUsize>,
}

impl Counted {
    fn new(live: &Arc<AtomicUsize>, tag: u32) -> Counted {
        live.fetch_add(1, SeqCst);
        Counted {
            tag,
            live: live.clone(),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(&self.live, self.tag)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, SeqCst);
    }
}

static VALUE: Local<Counted> = Local::new();
static INHERITED: Local<Counted> = Local::inheritable();

fn tag(key: &'static Local<Counted>) -> Option<u32> {
    key.with(|value| value.map(|value| value.tag))
}

/// Two ids of real tokio tasks whose slots share a shard (and so a lock), and a cell
/// of the table (`CELLS` is `SHARDS` here): the first task spawned gets the cell, the
/// other goes to the shard, so each model runs both paths.
fn ids() -> (Id, Id) {
    static IDS: OnceLock<(Id, Id)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ids: Vec<Id> = (0..=SHARDS).map(|_| rt.spawn(async {}).id()).collect();
        let shard = |id: Id| key(id) as usize % SHARDS;
        let same = ids[1..]
            .iter()
            .copied()
            .find(|&id| shard(id) == shard(ids[0]))
            .unwrap();
        (ids[0], same)
    })
}

/// Runs `f` in every interleaving loom explores, with at most 5 preemptions unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = ::loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(5);
    }
    builder.check(f);
}

/// One poll window of task `id`.
fn poll(registry: &Registry, id: Id, f: impl FnOnce()) {
    registry.before_poll(id);
    f();
    registry.after_poll(id);
}

/// The last poll window of task `id`: the task completes and ends inside it.
fn poll_last(registry: &Registry, id: Id, f: impl FnOnce()) {
    registry.before_poll(id);
    f();
    registry.end(id, None);
    registry.after_poll(id);
}

fn is_empty(registry: &Registry) -> bool {
    registry
        .shards
        .iter()
        .all(|shard| shard.0.lock().unwrap().is_empty())
        && registry
            .table
            .iter()
            .all(|cell| cell.slot.lock().unwrap().is_none() && cell.key.load(SeqCst) == 0)
}

#[test]
fn loom_tasks_of_one_shard_on_two_threads_stay_apart() {
    let (x, y) = ids();
    model(move || {
        let live = Arc::new(AtomicUsize::new(0));
        let registry = Arc::new(Registry::new());
        registry.spawn(x);
        registry.spawn(y);
        let run = |id: Id, own: u32| {
            let (registry, live) = (registry.clone(), live.clone());
            thread::spawn(move || {
                poll(&registry, id, || {
                    assert_eq!(tag(&VALUE), None, "a task sees another's value");
                    VALUE.set(Counted::new(&live, own));
                });
                poll_last(&registry, id, || assert_eq!(tag(&VALUE), Some(own)));
            })
        };
        let (a, b) = (run(x, 1), run(y, 2));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(live.load(SeqCst), 0, "a value was leaked or dropped twice");
        assert!(is_empty(&registry));
    });
}

/// Task `x` sets a value in a poll on one thread and is re-scheduled onto another
/// before that poll's after-poll hook runs; there its last poll runs `last` and the
/// task ends. `after_poll_callback`: whether the user gave an after-poll callback
/// (without one, a task that ends in a pending window is torn down where it stands,
/// `end_pending`). Every value is dropped once and the registry is left empty.
fn rescheduled(after_poll_callback: bool, last: fn()) {
    let (x, _) = ids();
    model(move || {
        let live = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let mut registry = Registry::new();
        registry.after_poll_callback = after_poll_callback;
        let registry = Arc::new(registry);
        registry.spawn(x);
        let first = {
            let (registry, live, started) = (registry.clone(), live.clone(), started.clone());
            thread::spawn(move || {
                registry.before_poll(x);
                VALUE.set(Counted::new(&live, 1));
                // tokio re-schedules the task here, before this window closes.
                started.store(true, SeqCst);
                registry.after_poll(x);
            })
        };
        let second = {
            let registry = registry.clone();
            thread::spawn(move || {
                while !started.load(SeqCst) {
                    thread::yield_now();
                }
                poll_last(&registry, x, last);
            })
        };
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(live.load(SeqCst), 0);
        assert!(is_empty(&registry));
    });
}

#[test]
fn loom_a_poll_rescheduled_before_the_after_poll_hook_sees_the_task_values() {
    rescheduled(true, || assert_eq!(tag(&VALUE), Some(1)));
}

/// The re-scheduled poll touches nothing and the task ends in it: its window stays
/// pending, and the teardown from the terminate hook (which takes the frame out of
/// the cell) waits for the first window to close and drops the value once.
#[test]
fn loom_a_rescheduled_poll_that_touches_nothing_ends_the_task_once() {
    rescheduled(false, || ());
}

#[test]
fn loom_shutdown_teardown_races_the_after_poll_hook_and_thread_exit() {
    let (x, _) = ids();
    model(move || {
        let live = Arc::new(AtomicUsize::new(0));
        let handlers = Arc::new(AtomicUsize::new(0));
        let polled = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(Registry::new());
        registry.spawn(x);
        let worker = {
            let (registry, live, polled) = (registry.clone(), live.clone(), polled.clone());
            let handlers = handlers.clone();
            thread::spawn(move || {
                registry.before_poll(x);
                VALUE.set(Counted::new(&live, 1));
                crate::at_exit(move || {
                    // Run at the teardown, on whichever thread, with the value readable.
                    assert_eq!(tag(&VALUE), Some(1));
                    handlers.fetch_add(1, SeqCst);
                });
                polled.store(true, SeqCst);
                registry.after_poll(x);
                // The worker thread exits now, its thread-locals with it.
            })
        };
        let shutdown = {
            let registry = registry.clone();
            thread::spawn(move || {
                while !polled.load(SeqCst) {
                    thread::yield_now();
                }
                // Runtime shutdown drops the idle task outside any poll window.
                registry.end(x, None);
            })
        };
        worker.join().unwrap();
        shutdown.join().unwrap();
        assert_eq!(
            handlers.load(SeqCst),
            1,
            "the exit handler ran {handlers:?} times"
        );
        assert_eq!(live.load(SeqCst), 0);
        assert!(is_empty(&registry));
    });
}

#[test]
fn loom_a_child_captured_while_its_parent_ends() {
    let (x, y) = ids();
    model(move || {
        let live = Arc::new(AtomicUsize::new(0));
        let spawned = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(Registry::new());
        registry.spawn(x);
        let parent = {
            let (registry, live, spawned) = (registry.clone(), live.clone(), spawned.clone());
            thread::spawn(move || {
                poll_last(&registry, x, || {
                    INHERITED.set(Counted::new(&live, 1));
                    registry.spawn(y); // captures x's values
                    spawned.store(true, SeqCst);
                });
            })
        };
        let child = {
            let (registry, live) = (registry.clone(), live.clone());
            thread::spawn(move || {
                while !spawned.load(SeqCst) {
                    thread::yield_now();
                }
                poll(&registry, y, || {
                    assert_eq!(tag(&INHERITED), Some(1));
                    INHERITED.set(Counted::new(&live, 2));
                });
                registry.end(y, None); // shutdown
            })
        };
        parent.join().unwrap();
        child.join().unwrap();
        assert_eq!(live.load(SeqCst), 0);
        assert!(is_empty(&registry));
    });
}

#[test]
fn loom_a_spawn_racing_shutdown_is_torn_down_once() {
    let (x, y) = ids();
    model(move || {
        let live = Arc::new(AtomicUsize::new(0));
        let registry = Arc::new(Registry::new());
        registry.spawn(x);
        let parent = {
            let (registry, live) = (registry.clone(), live.clone());
            thread::spawn(move || {
                poll(&registry, x, || {
                    INHERITED.set(Counted::new(&live, 1));
                    registry.spawn(y);
                });
            })
        };
        // The runtime shuts down on another thread: the child's terminate hook may run
        // before its spawn hook filed a slot.
        let shutdown = {
            let registry = registry.clone();
            thread::spawn(move || registry.end(y, None))
        };
        parent.join().unwrap();
        shutdown.join().unwrap();
        registry.end(x, None);
        // A slot filed after its task ended is torn down with the registry.
        drop(registry);
        assert_eq!(live.load(SeqCst), 0);
    });
}
