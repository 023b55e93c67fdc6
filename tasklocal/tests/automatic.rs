#![cfg(tokio_unstable)]
//! Automatic mode (`tasklocal::tokio::install`): every task of a runtime has its own
//! storage without a wrapper. Built only with `--cfg tokio_unstable`:
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo test -p tasklocal --all-features --test automatic
//! ```
//!
//! tokio wakes a `JoinHandle` before it calls the terminate hook, so a joined task's
//! teardown may still run on its worker: tests wait for what the teardown signals
//! (counted drops, handler channels), never for the handle alone.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tasklocal::{Local, Snapshot, TaskId};
use tokio::runtime::{Builder, Runtime};

/// How long a test waits for something that must happen before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Counts values made and dropped; one per test, so tests can run in parallel.
#[derive(Debug)]
struct Tally {
    created: AtomicUsize,
    dropped: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    fn created(&self) -> usize {
        self.created.load(SeqCst)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(SeqCst)
    }

    /// Waits (at most [`PATIENCE`]) until `n` values have been dropped; returns how
    /// many have.
    fn wait_dropped(&self, n: usize) -> usize {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.lock.lock().unwrap();
        while self.dropped() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            guard = self.changed.wait_timeout(guard, left).unwrap().0;
        }
        self.dropped()
    }

    /// Every value made has been dropped (waiting for teardowns still running).
    #[track_caller]
    fn assert_all_dropped(&self) {
        let created = self.created();
        assert_eq!(self.wait_dropped(created), created, "values leaked");
    }
}

/// A value whose drops are counted.
#[derive(Debug)]
struct Counted {
    tag: u64,
    tally: &'static Tally,
}

impl Counted {
    fn new(tag: u64, tally: &'static Tally) -> Counted {
        tally.created.fetch_add(1, SeqCst);
        Counted { tag, tally }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.dropped.fetch_add(1, SeqCst);
        let _guard = self.tally.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.tally.changed.notify_all();
    }
}

fn multi_thread(workers: usize) -> Runtime {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

fn current_thread() -> Runtime {
    let mut builder = Builder::new_current_thread();
    builder.enable_all();
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

async fn with_timeout<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

/// The tag of this owner's `VALUE`, if any.
fn tag(key: &'static Local<Counted>) -> Option<u64> {
    key.with(|v| v.map(|v| v.tag))
}

#[test]
fn thousands_of_plain_tasks_are_isolated() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static POLLS: Local<u64> = Local::with_initial(|| 0);
    const TASKS: u64 = 5_000;
    let rt = multi_thread(4);
    let ids = rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    assert_eq!(tag(&VALUE), None, "a new task starts empty");
                    assert_eq!(POLLS.get(), Some(0));
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::set("task", i);
                    let id = tasklocal::id();
                    for round in 1..=20 {
                        tokio::task::yield_now().await;
                        POLLS.with_mut(|n| *n += 1);
                        assert_eq!(tag(&VALUE), Some(i));
                        assert_eq!(tasklocal::get::<_, u64>(&"task"), Some(i));
                        assert_eq!(POLLS.get(), Some(round));
                        assert_eq!(tasklocal::id(), id);
                    }
                    id
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for task in tasks {
            ids.insert(task.await.unwrap());
        }
        ids
    }));
    assert_eq!(ids.len(), TASKS as usize, "every task has its own storage");
    assert_eq!(TALLY.created(), TASKS as usize);
    TALLY.assert_all_dropped();
    drop(rt);
    TALLY.assert_all_dropped();
}

#[test]
fn children_inherit_from_their_spawner() {
    static TALLY: Tally = Tally::new();
    static TENANT: Local<Arc<Counted>> = Local::inheritable();
    static PLAIN: Local<u64> = Local::new();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        tokio::spawn(async {
            TENANT.set(Arc::new(Counted::new(1, &TALLY)));
            PLAIN.set(1);
            tasklocal::set("dynamic", 1u64);
            let child = tokio::spawn(async {
                let seen = TENANT.get().map(|t| t.tag);
                // Not inherited: non-inheritable and dynamic keys.
                assert_eq!(PLAIN.get(), None);
                assert_eq!(tasklocal::get::<_, u64>(&"dynamic"), None);
                // The child's writes are its own...
                TENANT.set(Arc::new(Counted::new(2, &TALLY)));
                // ...and its children inherit them.
                let grandchild = tokio::spawn(async { TENANT.get().map(|t| t.tag) });
                (seen, grandchild.await.unwrap())
            });
            // A write after the spawn is not seen by the child.
            TENANT.set(Arc::new(Counted::new(3, &TALLY)));
            assert_eq!(child.await.unwrap(), (Some(1), Some(2)));
            assert_eq!(TENANT.get().map(|t| t.tag), Some(3), "nothing flows back");
        })
        .await
        .unwrap();
    }));
    // Spawned from outside any task: inherits the calling thread's current owner.
    let seen = Snapshot::empty().run(|| {
        TENANT.set(Arc::new(Counted::new(4, &TALLY)));
        let task = rt.spawn(async { TENANT.get().map(|t| t.tag) });
        TENANT.set(Arc::new(Counted::new(5, &TALLY)));
        rt.block_on(task).unwrap()
    });
    assert_eq!(seen, Some(4));
    assert_eq!(TALLY.created(), 5);
    TALLY.assert_all_dropped();
}

/// The MDC in automatic mode: every plain `tokio::spawn`ed task has its own map, a
/// child starts with a copy of its spawner's, and writes never flow either way.
#[test]
fn the_mdc_is_per_task_and_inherited() {
    const TASKS: u64 = 200;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    assert!(
                        tasklocal::mdc::to_vec().is_empty(),
                        "a new task starts empty"
                    );
                    tasklocal::mdc::insert("request", i.to_string());
                    tokio::task::yield_now().await;
                    let child = tokio::spawn(async move {
                        let seen = tasklocal::mdc::to_vec();
                        tasklocal::mdc::insert("request", "child");
                        tasklocal::mdc::insert("depth", "1");
                        tokio::task::yield_now().await;
                        (seen, tasklocal::mdc::to_vec())
                    });
                    tasklocal::mdc::insert("after", "spawn");
                    let (seen, child_own) = child.await.unwrap();
                    assert_eq!(seen, [("request".to_string(), i.to_string())]);
                    assert_eq!(
                        child_own,
                        [
                            ("request".to_string(), "child".to_string()),
                            ("depth".to_string(), "1".to_string())
                        ]
                    );
                    // Nothing flowed back from the child.
                    assert_eq!(
                        tasklocal::mdc::to_vec(),
                        [
                            ("request".to_string(), i.to_string()),
                            ("after".to_string(), "spawn".to_string())
                        ]
                    );
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
}

/// Exit handlers run last-registered first with the values readable, then the
/// values are dropped: signalled on a channel, since the `JoinHandle` may resolve
/// before the teardown.
#[test]
fn teardown_on_completion() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: u64 = 1_000;
    let rt = multi_thread(2);
    let (tx, rx) = std::sync::mpsc::channel();
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (first, second) = (tx.clone(), tx.clone());
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::at_exit(move || first.send((i, 2, tag(&VALUE))).unwrap());
                    tasklocal::at_exit(move || second.send((i, 1, tag(&VALUE))).unwrap());
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
    drop(tx);
    let mut order: HashMap<u64, Vec<u32>> = HashMap::new();
    for _ in 0..2 * TASKS {
        let (i, n, seen) = rx.recv_timeout(PATIENCE).expect("a handler did not run");
        assert_eq!(
            seen,
            Some(i),
            "a handler runs with its task's values readable"
        );
        order.entry(i).or_default().push(n);
    }
    assert!(order.values().all(|o| o == &[1, 2]), "handlers run FILO");
    TALLY.assert_all_dropped();
    drop(rt);
    assert!(rx.try_recv().is_err(), "handlers run exactly once");
}

#[test]
fn teardown_on_abort() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 1_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::at_exit(move || {
                        if tag(&VALUE) == Some(i) {
                            ENDED.fetch_add(1, SeqCst);
                        }
                    });
                    tokio::task::yield_now().await;
                    ready.send(()).unwrap();
                    std::future::pending::<()>().await
                })
            })
            .collect();
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
        assert_eq!(TALLY.dropped(), 0);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            assert!(task.await.unwrap_err().is_cancelled());
        }
    }));
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), TASKS as usize);
    assert_eq!(ENDED.load(SeqCst), TASKS as usize);
}

#[test]
fn teardown_on_panic() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 1_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::at_exit(move || {
                        if tag(&VALUE) == Some(i) {
                            ENDED.fetch_add(1, SeqCst);
                        }
                    });
                    tokio::task::yield_now().await;
                    // A panic without the panic hook's noise.
                    std::panic::resume_unwind(Box::new("boom"));
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap_err().is_panic());
        }
    }));
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), TASKS as usize);
    assert_eq!(ENDED.load(SeqCst), TASKS as usize);
}

/// Spawns `n` tasks that set a value and wait forever, some of whose futures spawn
/// a task when dropped (at shutdown, onto the closing runtime); returns once all are
/// waiting.
async fn spawn_pending(n: u64, tally: &'static Tally, ended: &'static AtomicUsize) {
    static VALUE: Local<Counted> = Local::new();
    struct SpawnOnDrop;
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                drop(handle.spawn(async {}));
            }
        }
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let ready = ready_tx.clone();
        drop(tokio::spawn(async move {
            let _spawn_on_drop = (i % 10 == 0).then_some(SpawnOnDrop);
            VALUE.set(Counted::new(i, tally));
            tasklocal::at_exit(move || {
                if tag(&VALUE) == Some(i) {
                    ended.fetch_add(1, SeqCst);
                }
            });
            tokio::task::yield_now().await;
            ready.send(()).unwrap();
            std::future::pending::<()>().await
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await.unwrap();
    }
}

#[test]
fn teardown_on_shutdown_multi_thread() {
    static TALLY: Tally = Tally::new();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    let rt = multi_thread(2);
    rt.block_on(with_timeout(spawn_pending(1_000, &TALLY, &ENDED)));
    assert_eq!(TALLY.dropped(), 0);
    let handle = rt.handle().clone();
    drop(rt);
    // Spawning onto the closed runtime: the task ends before its spawn hook runs.
    drop(handle.spawn(async {}));
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), 1_000);
    assert_eq!(ENDED.load(SeqCst), 1_000);
}

#[test]
fn teardown_on_shutdown_current_thread() {
    static TALLY: Tally = Tally::new();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    let rt = current_thread();
    rt.block_on(with_timeout(spawn_pending(100, &TALLY, &ENDED)));
    assert_eq!(TALLY.created(), 100);
    assert_eq!(TALLY.dropped(), 0);
    drop(rt);
    // current_thread shuts its tasks down on the dropping thread: done by now.
    assert_eq!(TALLY.dropped(), 100);
    assert_eq!(ENDED.load(SeqCst), 100);
}

/// tokio drops a pending task's future at shutdown before the terminate hook, outside
/// any poll: a `Drop` in it sees no storage (documented), never another owner's.
#[test]
fn futures_dropped_at_shutdown_see_no_storage() {
    static VALUE: Local<u64> = Local::new();
    static SEEN: Mutex<Vec<(Option<u64>, bool)>> = Mutex::new(Vec::new());
    struct Probe;
    impl Drop for Probe {
        fn drop(&mut self) {
            let seen = (VALUE.get(), VALUE.try_set(9).is_err());
            SEEN.lock().unwrap().push(seen);
        }
    }
    for rt in [multi_thread(2), current_thread()] {
        rt.block_on(with_timeout(async {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            drop(tokio::spawn(async move {
                let _probe = Probe;
                VALUE.set(1);
                ready_tx.send(()).unwrap();
                std::future::pending::<()>().await
            }));
            ready_rx.await.unwrap();
        }));
        drop(rt);
    }
    assert_eq!(*SEEN.lock().unwrap(), [(None, true), (None, true)]);
}

#[test]
fn user_callbacks_are_chained() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static POLLS: Local<u64> = Local::with_initial(|| 0);
    static SPAWNED: AtomicUsize = AtomicUsize::new(0);
    static SPAWNER_SEEN: AtomicUsize = AtomicUsize::new(0);
    static AFTER_SEEN: AtomicUsize = AtomicUsize::new(0);
    static TERMINATE_SEEN: AtomicUsize = AtomicUsize::new(0);
    static PARENT: Local<u64> = Local::new();
    const TASKS: u64 = 200;

    let hooks = tasklocal::tokio::Hooks::new()
        .on_task_spawn(|_| {
            SPAWNED.fetch_add(1, SeqCst);
            // The spawner's storage is current.
            if PARENT.get() == Some(1) {
                SPAWNER_SEEN.fetch_add(1, SeqCst);
            }
        })
        // The task's own storage is current in before- and after-poll callbacks.
        .on_before_task_poll(|_| {
            POLLS.with_mut(|n| *n += 1);
        })
        .on_after_task_poll(|_| {
            if VALUE.with(|v| v.is_some()) {
                AFTER_SEEN.fetch_add(1, SeqCst);
            }
        })
        // Before the teardown: the values are readable.
        .on_task_terminate(|_| {
            if VALUE.with(|v| v.is_some()) {
                TERMINATE_SEEN.fetch_add(1, SeqCst);
            }
        });
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    rt.block_on(with_timeout(async {
        tokio::spawn(async {
            PARENT.set(1);
            let tasks: Vec<_> = (0..TASKS)
                .map(|i| {
                    tokio::spawn(async move {
                        assert_eq!(POLLS.get(), Some(1), "first poll");
                        VALUE.set(Counted::new(i, &TALLY));
                        tokio::task::yield_now().await;
                        assert_eq!(POLLS.get(), Some(2), "second poll");
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await
        .unwrap();
    }));
    TALLY.assert_all_dropped();
    drop(rt);
    assert_eq!(SPAWNED.load(SeqCst), TASKS as usize + 1);
    assert_eq!(SPAWNER_SEEN.load(SeqCst), TASKS as usize);
    // Each child's first poll ends with its value set; the second is the final one.
    assert_eq!(AFTER_SEEN.load(SeqCst), TASKS as usize);
    assert_eq!(TERMINATE_SEEN.load(SeqCst), TASKS as usize);
}

#[test]
fn spawn_blocking_sees_its_spawner_or_nothing() {
    static TALLY: Tally = Tally::new();
    static TENANT: Local<Arc<Counted>> = Local::inheritable();
    static VALUE: Local<Counted> = Local::new();
    let mut builder = Builder::new_multi_thread();
    // One blocking thread, reused: leftovers would show.
    builder
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all();
    tasklocal::tokio::install(&mut builder);
    let rt = builder.build().unwrap();
    rt.block_on(with_timeout(async {
        tokio::spawn(async {
            TENANT.set(Arc::new(Counted::new(1, &TALLY)));
            VALUE.set(Counted::new(2, &TALLY));
            for round in 0..20u64 {
                // tasklocal::spawn_blocking: the spawner's inheritable values, and a
                // storage of its own, torn down when the closure returns.
                let seen = tasklocal::spawn_blocking(move || {
                    VALUE.set(Counted::new(100 + round, &TALLY));
                    tasklocal::set("blocking", round);
                    (TENANT.get().map(|t| t.tag), tag(&VALUE))
                })
                .await
                .unwrap();
                assert_eq!(seen, (Some(1), Some(100 + round)));
                // Plain spawn_blocking on the same thread: nothing, never leftovers.
                let (tenant, value, dynamic, write) = tokio::task::spawn_blocking(|| {
                    (
                        TENANT.get(),
                        tag(&VALUE),
                        tasklocal::get::<_, u64>(&"blocking"),
                        VALUE.try_set(Counted::new(999, &TALLY)),
                    )
                })
                .await
                .unwrap();
                assert!(tenant.is_none() && value.is_none() && dynamic.is_none());
                assert!(write.unwrap_err().is_no_storage());
                // block_in_place runs inside this task's poll: its storage.
                let inside = tokio::task::block_in_place(|| tag(&VALUE));
                assert_eq!(inside, Some(2));
            }
        })
        .await
        .unwrap();
    }));
    // A rejected value is dropped right away; every other one with its owner.
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), 2 + 20 + 20);
    drop(rt);
}

#[test]
fn a_task_inside_an_automatic_task_is_the_innermost_owner() {
    static TALLY: Tally = Tally::new();
    static TENANT: Local<u64> = Local::inheritable();
    static VALUE: Local<Counted> = Local::new();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        tokio::spawn(async {
            TENANT.set(1);
            VALUE.set(Counted::new(1, &TALLY));
            let outer = tasklocal::id();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let inner = tasklocal::task(async move {
                assert_eq!(TENANT.get(), Some(1), "inherited from the automatic task");
                assert_eq!(tag(&VALUE), None);
                TENANT.set(2);
                VALUE.set(Counted::new(2, &TALLY));
                tasklocal::at_exit(move || tx.send(tag(&VALUE)).unwrap());
                tokio::task::yield_now().await;
                assert_eq!((TENANT.get(), tag(&VALUE)), (Some(2), Some(2)));
                tasklocal::id()
            });
            let inner_id = inner.await;
            // The Task tore down before it completed, inside this task's poll.
            assert_eq!(rx.await.unwrap(), Some(2));
            assert_eq!(TALLY.dropped(), 1);
            assert_ne!(inner_id, outer);
            assert_eq!((TENANT.get(), tag(&VALUE)), (Some(1), Some(1)));
            assert_eq!(tasklocal::id(), outer);
            // tasklocal::spawn in automatic mode: the Task is innermost there too.
            let spawned = tasklocal::spawn(async {
                let seen = TENANT.get();
                TENANT.set(3);
                (seen, tasklocal::id())
            });
            let (seen, spawned_id) = spawned.await.unwrap();
            assert_eq!(seen, Some(1));
            assert!(spawned_id != outer && spawned_id != inner_id);
            assert_eq!(TENANT.get(), Some(1));
            // An isolated Task sees nothing of the automatic task.
            let isolated = tasklocal::Task::isolated(async { (TENANT.get(), tag(&VALUE)) });
            assert_eq!(isolated.await, (None, None));
        })
        .await
        .unwrap();
    }));
    TALLY.assert_all_dropped();
    drop(rt);
}

/// tokio may start a task's next poll on another worker before the previous poll's
/// after-poll hook has run (a wake from another thread landing in between): the next
/// poll must wait for the task's frame rather than run without it.
#[test]
fn overlapping_polls_wait_for_the_frame() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: usize = 8;
    const WAKES: usize = 5_000;
    let hooks = tasklocal::tokio::Hooks::new().on_after_task_poll(|_| {
        // Widen the gap between the end of a poll and the frame's filing.
        for _ in 0..2_000 {
            std::hint::spin_loop();
        }
    });
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(4).enable_all();
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    let notifies: Vec<Arc<tokio::sync::Notify>> = (0..TASKS).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let wakers: Vec<_> = (0..2)
        .map(|k| {
            let (notifies, stop) = (notifies.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    for n in notifies.iter().skip(k).step_by(2) {
                        n.notify_one();
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = notifies
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, notify)| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i as u64, &TALLY));
                    for _ in 0..WAKES {
                        notify.notified().await;
                        assert_eq!(tag(&VALUE), Some(i as u64));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
    stop.store(true, SeqCst);
    wakers.into_iter().for_each(|w| w.join().unwrap());
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), TASKS);
    drop(rt);
}

/// A runtime in automatic mode started inside `block_in_place` of a task of another:
/// poll windows nest on the thread.
#[test]
fn nested_runtime_inside_block_in_place() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..20u64)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    let inner = tokio::task::block_in_place(|| {
                        let inner = current_thread();
                        let seen = inner.block_on(async {
                            tokio::spawn(async move {
                                assert_eq!(tag(&VALUE), None);
                                VALUE.set(Counted::new(1_000 + i, &TALLY));
                                tokio::task::yield_now().await;
                                tag(&VALUE)
                            })
                            .await
                            .unwrap()
                        });
                        drop(inner);
                        (seen, tag(&VALUE))
                    });
                    assert_eq!(inner, (Some(1_000 + i), Some(i)));
                    tokio::task::yield_now().await;
                    assert_eq!(tag(&VALUE), Some(i));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), 40);
    drop(rt);
}

/// A real third-party server: axum spawns a task per connection (and hyper serves a
/// keep-alive connection's requests in it); its handlers use locals with no wrapper
/// at all — only the runtime is built with `install`.
mod axum_server {
    use super::*;
    use axum::extract::Path;
    use axum::routing::get;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    static TALLY: Tally = Tally::new();
    /// Set by the server task, inherited by every connection task axum spawns.
    static EDGE: Local<Arc<Counted>> = Local::inheritable();
    /// Set by each request's handler.
    static REQUEST: Local<Counted> = Local::new();
    /// Inheritable, set per request: followed into a task the handler spawns.
    static TRACE: Local<u64> = Local::inheritable();
    /// Requests served by this task (connection).
    static SERVED: Local<u64> = Local::with_initial(|| 0);

    const CONCURRENCY: u64 = 300;
    const ROUNDS: u64 = 4;

    async fn handler(Path(n): Path<u64>) -> String {
        let edge = EDGE.with(|e| e.map(|e| e.tag));
        // The previous request's value on this connection (same task), if any.
        let previous = tag(&REQUEST);
        REQUEST.set(Counted::new(n, &TALLY));
        TRACE.set(n);
        tasklocal::set("request", n);
        SERVED.with_mut(|s| *s += 1);
        let mut own = true;
        for _ in 0..3 {
            tokio::task::yield_now().await;
            own &= tag(&REQUEST) == Some(n) && tasklocal::get::<_, u64>(&"request") == Some(n);
        }
        let child = tokio::spawn(async { TRACE.get() }).await.unwrap();
        own &= tag(&REQUEST) == Some(n);
        format!(
            "{n} {own} {} {} {} {} {}",
            child.map_or(-1, |c| c as i64),
            edge.map_or(-1, |e| e as i64),
            previous.map_or(-1, |p| p as i64),
            tasklocal::id(),
            SERVED.get().unwrap(),
        )
    }

    struct Reply {
        n: u64,
        own: bool,
        child: i64,
        edge: i64,
        previous: i64,
        task: String,
    }

    fn parse(body: &str) -> Reply {
        let f: Vec<&str> = body.split(' ').collect();
        assert_eq!(f.len(), 7, "{body}");
        Reply {
            n: f[0].parse().unwrap(),
            own: f[1].parse().unwrap(),
            child: f[2].parse().unwrap(),
            edge: f[3].parse().unwrap(),
            previous: f[4].parse().unwrap(),
            task: f[5].to_string(),
        }
    }

    #[test]
    fn axum_handlers_under_keep_alive_load() {
        let server_rt = multi_thread(2);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = server_rt.spawn(async move {
            EDGE.set(Arc::new(Counted::new(7, &TALLY)));
            let app = axum::Router::new().route("/req/{n}", get(handler));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        let addr = addr_rx.recv_timeout(PATIENCE).unwrap();

        // The client runs on a runtime of its own, without automatic mode.
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let replies = client_rt.block_on(with_timeout(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let mut replies = Vec::new();
            for round in 0..ROUNDS {
                let requests: Vec<_> = (0..CONCURRENCY)
                    .map(|i| {
                        let n = round * CONCURRENCY + i;
                        let client = client.clone();
                        let uri: hyper::Uri = format!("http://{addr}/req/{n}").parse().unwrap();
                        tokio::spawn(async move {
                            let response = client.get(uri).await.unwrap();
                            assert!(response.status().is_success());
                            let body = response.into_body().collect().await.unwrap();
                            (n, String::from_utf8(body.to_bytes().to_vec()).unwrap())
                        })
                    })
                    .collect();
                for request in requests {
                    replies.push(request.await.unwrap());
                }
            }
            replies
        }));
        // Closes every keep-alive connection.
        drop(client_rt);

        assert_eq!(replies.len(), (CONCURRENCY * ROUNDS) as usize);
        let mut by_task: HashMap<String, Vec<Reply>> = HashMap::new();
        for (n, body) in &replies {
            let reply = parse(body);
            assert_eq!(reply.n, *n, "the response answers its request");
            assert!(
                reply.own,
                "request {n}: the handler saw another request's values"
            );
            assert_eq!(
                reply.child, *n as i64,
                "the handler's child inherited its value"
            );
            assert_eq!(reply.edge, 7, "inherited from the server task through axum");
            by_task.entry(reply.task.clone()).or_default().push(reply);
        }
        // Requests on one connection share its task and nothing else: each one saw
        // nothing or the value of an earlier request of the same connection.
        let mut served = 0;
        for replies in by_task.values() {
            let mine: HashSet<i64> = replies.iter().map(|r| r.n as i64).collect();
            let fresh = replies.iter().filter(|r| r.previous == -1).count();
            assert_eq!(fresh, 1, "one request per connection found it empty");
            assert!(replies
                .iter()
                .all(|r| r.previous == -1 || mine.contains(&r.previous)));
            served += replies.len();
        }
        assert_eq!(served, replies.len());
        assert!(
            by_task.len() < replies.len(),
            "keep-alive connections served several requests"
        );

        stop_tx.send(()).unwrap();
        server_rt
            .block_on(with_timeout(server))
            .expect("the server task");
        // Every connection task has ended: every request's value is dropped.
        let requests = (CONCURRENCY * ROUNDS) as usize;
        assert_eq!(TALLY.created(), requests + 1);
        assert_eq!(
            TALLY.wait_dropped(requests + 1),
            requests + 1,
            "values leaked"
        );
        drop(server_rt);
    }
}

#[test]
fn task_ids_are_unique_across_runtimes() {
    // Two runtimes in automatic mode at once, in the same process.
    let (a, b) = (multi_thread(1), current_thread());
    let ids: Vec<TaskId> = (0..100)
        .flat_map(|_| {
            [
                a.block_on(async { tokio::spawn(async { tasklocal::id() }).await.unwrap() }),
                b.block_on(async { tokio::spawn(async { tasklocal::id() }).await.unwrap() }),
            ]
        })
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
}

/// `tasklocal::isolated` applies to plain `tokio::spawn` in automatic mode: the spawn
/// hook captures through the same path as every other child.
#[test]
fn isolated_applies_to_plain_spawns() {
    static REQ: Local<u64> = Local::inheritable();
    const TASKS: u64 = 200;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (1..=TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    REQ.set(i);
                    tokio::task::yield_now().await;
                    let (isolated, snapshot) = tasklocal::isolated(|| {
                        assert_eq!(REQ.get(), Some(i), "the caller still sees its value");
                        (tokio::spawn(async { REQ.get() }), Snapshot::capture())
                    });
                    let inheriting = tokio::spawn(async { REQ.get() });
                    assert_eq!(isolated.await.unwrap(), None);
                    assert_eq!(snapshot.run(|| REQ.get()), None);
                    assert_eq!(inheriting.await.unwrap(), Some(i));
                    // A task spawned inside `isolated` inherits nothing, but its own
                    // children inherit from it.
                    let nested = tasklocal::isolated(|| {
                        tokio::spawn(async move {
                            REQ.set(i + 1);
                            tokio::spawn(async { REQ.get() }).await.unwrap()
                        })
                    });
                    assert_eq!(nested.await.unwrap(), Some(i + 1));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
}
