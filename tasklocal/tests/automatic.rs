#![cfg(tokio_unstable)]
//! Automatic mode (`tasklocal::tokio::install`): every task of a runtime has its own
//! storage without a wrapper — isolation, inheritance, the MDC, user hooks, blocking
//! work, nesting. The end of a task: `automatic_teardown.rs`; a real axum server:
//! `automatic_server.rs`. Built only with `--cfg tokio_unstable`:
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo test -p tasklocal --all-features \
//!     --test automatic --test automatic_teardown --test automatic_server
//! ```
//!
//! tokio wakes a `JoinHandle` before it calls the terminate hook, so a joined task's
//! teardown may still run on its worker: tests wait for what the teardown signals
//! (counted drops, handler channels), never for the handle alone.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use support::automatic::{current_thread, multi_thread, tag, with_timeout, Counted, Tally};
use support::stress::Wakers;
use tasklocal::{Local, Snapshot, TaskId};
use tokio::runtime::Builder;

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
    let wakers = Wakers::start({
        let notifies = notifies.clone();
        move |k| {
            notifies
                .iter()
                .skip(k)
                .step_by(2)
                .for_each(|n| n.notify_one())
        }
    });
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
    wakers.stop();
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
