//! Inheritance (SPEC section 4): a child owner starts with its creator's inheritable
//! values as of its creation; afterwards writes on either side are invisible to the
//! other, and the child's writes never flow back. Non-inheritable and dynamic keys are
//! never inherited. Which values a child gets, and when they are copied:
//! `inheritance_values.rs`.
//!
//! Every way of creating a child is run through the same protocol
//! (`support::inherit`): the parent sets values, creates the child, writes again
//! *after* the creation, and only then lets the child look; the child writes its own
//! values and the parent checks it does not see them; the parent writes again and the
//! child checks it does not see that.

mod support;

use std::sync::mpsc;

use futures::executor::block_on;
use support::inherit::{
    assert_inherited, assert_values, async_protocol, set_values, sync_protocol, Level, INH,
    INH_INIT,
};
use tasklocal::{Snapshot, Task};

#[test]
fn task_polled_elsewhere_sees_values_as_of_creation() {
    Snapshot::empty().run(|| {
        block_on(async_protocol(tasklocal::task));
        // Inside a `Task` as parent, too.
        block_on(Task::isolated(async_protocol(|child| {
            tasklocal::task(child)
        })));
    });
}

#[test]
fn snapshot_task_and_run_see_values_as_of_capture() {
    Snapshot::empty().run(|| {
        block_on(async_protocol(|child| Snapshot::capture().task(child)));
    });
    sync_protocol("Snapshot::run", |child| {
        let snapshot = Snapshot::capture();
        std::thread::spawn(move || snapshot.run(child));
    });
}

#[test]
fn thread_spawn_sees_values_as_of_creation() {
    sync_protocol("thread::spawn", |child| {
        tasklocal::thread::spawn(child);
    });
}

#[test]
fn thread_spawn_scoped_sees_values_as_of_creation() {
    Snapshot::empty().run(|| {
        set_values(1);
        std::thread::scope(|s| {
            let (to_child, from_parent) = mpsc::channel();
            let child = tasklocal::thread::spawn_scoped(s, move || {
                from_parent.recv().unwrap();
                assert_inherited(1);
                set_values(10);
                assert_values(10);
            });
            set_values(2);
            to_child.send(()).unwrap();
            child.join().unwrap();
            assert_values(2);
        });
    });
}

#[test]
fn plain_thread_as_creator() {
    // The creator is a thread's own storage, not a scoped owner.
    std::thread::spawn(|| {
        set_values(1);
        let (to_child, from_parent) = mpsc::channel();
        let child = tasklocal::thread::spawn(move || {
            from_parent.recv().unwrap();
            assert_inherited(1);
            set_values(10);
        });
        set_values(2);
        to_child.send(()).unwrap();
        child.join().unwrap();
        assert_values(2);
        // A plain std thread inherits nothing.
        std::thread::spawn(|| {
            assert_eq!(INH.get(), None);
            assert_eq!(INH_INIT.get(), Some(Level(100)));
        })
        .join()
        .unwrap();
    })
    .join()
    .unwrap();
}

#[cfg(feature = "tokio")]
mod tokio_children {
    use super::*;
    use crate::support::runtime::{current_thread, multi_thread};

    fn runtime() -> tokio::runtime::Runtime {
        multi_thread(2)
    }

    #[test]
    fn spawn_sees_values_as_of_creation() {
        let rt = runtime();
        rt.block_on(Task::isolated(async_protocol(|child| async move {
            tasklocal::spawn(child).await.unwrap()
        })));
        // On a current-thread runtime the child cannot run before the parent yields.
        let rt = current_thread();
        rt.block_on(Task::isolated(async {
            set_values(1);
            let child = tasklocal::spawn(async {
                assert_inherited(1);
                set_values(10);
            });
            set_values(2);
            child.await.unwrap();
            assert_values(2);
        }));
    }

    #[test]
    fn spawn_blocking_sees_values_as_of_creation() {
        let rt = runtime();
        rt.block_on(async {
            sync_protocol("spawn_blocking", |child| {
                drop(tasklocal::spawn_blocking(child));
            });
        });
    }

    #[test]
    fn spawn_local_sees_values_as_of_creation() {
        let rt = current_thread();
        let local = tokio::task::LocalSet::new();
        local.block_on(
            &rt,
            Task::isolated(async {
                set_values(1);
                let child = tasklocal::spawn_local(async {
                    assert_inherited(1);
                    set_values(10);
                    tokio::task::yield_now().await;
                    assert_values(10);
                });
                set_values(2);
                child.await.unwrap();
                assert_values(2);
            }),
        );
    }

    #[test]
    fn many_children_of_one_parent_each_see_the_parent_and_their_own() {
        let rt = runtime();
        rt.block_on(Task::isolated(async {
            set_values(1);
            let children: Vec<_> = (0..500u32)
                .map(|i| {
                    tasklocal::spawn(async move {
                        assert_inherited(1);
                        tokio::task::yield_now().await;
                        set_values(1000 + i);
                        tokio::task::yield_now().await;
                        assert_values(1000 + i);
                    })
                })
                .collect();
            set_values(2);
            for child in children {
                child.await.unwrap();
            }
            assert_values(2);
        }));
    }
}

#[cfg(feature = "rayon")]
mod rayon_children {
    use super::*;
    use crate::support::inherit::PLAIN;
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn rayon_spawn_sees_values_as_of_creation() {
        // The child reports panics through the channel: rayon aborts on a panic in
        // `spawn`.
        sync_protocol("rayon::spawn", tasklocal::rayon::spawn);
    }

    #[test]
    fn rayon_join_closures_see_the_caller_and_not_each_other() {
        Snapshot::empty().run(|| {
            set_values(1);
            let (a, b) = tasklocal::rayon::join(
                || {
                    assert_inherited(1);
                    set_values(10);
                    assert_values(10);
                    tasklocal::id()
                },
                || {
                    assert_inherited(1);
                    set_values(20);
                    assert_values(20);
                    tasklocal::id()
                },
            );
            assert_ne!(a, b);
            assert_ne!(a, tasklocal::id());
            assert_values(1);
        });
    }

    #[test]
    fn rayon_install_sees_values_as_of_the_call() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        Snapshot::empty().run(|| {
            set_values(1);
            tasklocal::rayon::install(&pool, || {
                assert_inherited(1);
                set_values(10);
                // Nested: a join inside the installed closure inherits from it.
                tasklocal::rayon::join(|| assert_inherited(10), || assert_inherited(10));
                assert_values(10);
            });
            assert_values(1);
        });
        // Nothing stayed on the pool's threads.
        let seen = pool.broadcast(|_| (INH.get(), PLAIN.get()));
        assert!(seen.iter().all(|s| *s == (None, None)), "{seen:?}");
    }

    #[test]
    fn rayon_wrap_gives_every_item_the_context_and_an_owner_of_its_own() {
        Snapshot::empty().run(|| {
            set_values(1);
            let f = tasklocal::rayon::wrap(|i: u32| {
                assert_inherited(1);
                set_values(1000 + i);
                assert_values(1000 + i);
                i
            });
            set_values(2);
            let sum: u64 = (0..2000u32).into_par_iter().map(f).map(u64::from).sum();
            assert_eq!(sum, 1999 * 2000 / 2);
            assert_values(2);
        });
    }

    #[test]
    fn one_snapshot_used_many_times_from_a_pool() {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let snapshot = Snapshot::empty().run(|| {
            set_values(1);
            let snapshot = Snapshot::capture();
            set_values(2);
            snapshot
        });
        pool.install(|| {
            (0..5000u32).into_par_iter().for_each(|i| {
                snapshot.run(|| {
                    // Every run starts from the snapshot, whatever the previous run
                    // on this worker wrote.
                    assert_inherited(1);
                    set_values(i);
                    assert_values(i);
                    RUNS.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(RUNS.load(Ordering::Relaxed), 5000);
        // The snapshot itself is unchanged by all those runs.
        snapshot.run(|| assert_inherited(1));
        let seen = pool.broadcast(|_| (INH.get(), PLAIN.get()));
        assert!(seen.iter().all(|s| *s == (None, None)), "{seen:?}");
    }
}
