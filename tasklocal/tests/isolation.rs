//! Isolation, the first promise (SPEC section 1): no code ever observes a value of
//! another owner. Tasks migrate between worker threads, interleave on one thread,
//! share threads with the thread's own storage — none of it may matter.

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::noop_waker;
#[cfg(feature = "tokio")]
use support::runtime::{current_thread, multi_thread};
use tasklocal::{Local, Snapshot, Task};

static NUMBER: Local<u64> = Local::new();
static NAME: Local<String> = Local::inheritable();
static HISTORY: Local<Vec<u64>> = Local::with_initial(Vec::new);
static LEVEL: Local<u32> = Local::inheritable_with_initial(|| 0);

/// Sets a value of every kind for owner `n`.
fn set_own(n: u64) {
    NUMBER.set(n);
    NAME.set(format!("owner {n}"));
    HISTORY.with_mut(|h| *h = vec![n]);
    LEVEL.set(n as u32);
    tasklocal::set("owner", n);
    tasklocal::set(n, format!("key of {n}"));
}

/// Owner `n` sees exactly its own values, and not those of owners `n ± 1`.
#[track_caller]
fn assert_own(n: u64) {
    assert_eq!(NUMBER.get(), Some(n));
    assert_eq!(NAME.with(|s| s.cloned()), Some(format!("owner {n}")));
    assert_eq!(HISTORY.with(|h| h.map(|h| h.to_vec())), Some(vec![n]));
    assert_eq!(LEVEL.get(), Some(n as u32));
    assert_eq!(tasklocal::get::<_, u64>(&"owner"), Some(n));
    assert_eq!(tasklocal::get::<_, String>(&n), Some(format!("key of {n}")));
    assert_eq!(tasklocal::get::<_, String>(&(n + 1)), None);
    assert_eq!(tasklocal::get::<_, String>(&n.wrapping_sub(1)), None);
}

/// An owner that has set nothing.
#[track_caller]
fn assert_nothing() {
    assert_eq!(NUMBER.get(), None);
    assert_eq!(NAME.get(), None);
    assert_eq!(HISTORY.get(), Some(vec![]));
    assert_eq!(LEVEL.get(), Some(0));
    assert_eq!(tasklocal::get::<_, u64>(&"owner"), None);
}

#[cfg(feature = "tokio")]
#[test]
fn thousands_of_migrating_tasks_each_see_only_their_own_values() {
    const TASKS: u64 = 2_000;
    const YIELDS: usize = 25;
    let rt = multi_thread(4);
    let results: Vec<(tasklocal::TaskId, HashSet<std::thread::ThreadId>)> =
        rt.block_on(Task::isolated(async {
            let handles: Vec<_> = (0..TASKS)
                .map(|n| {
                    tasklocal::spawn(async move {
                        let mut threads = HashSet::new();
                        threads.insert(std::thread::current().id());
                        assert_nothing();
                        set_own(n);
                        let id = tasklocal::id();
                        for _ in 0..YIELDS {
                            tokio::task::yield_now().await;
                            threads.insert(std::thread::current().id());
                            assert_own(n);
                            assert_eq!(tasklocal::id(), id);
                        }
                        (id, threads)
                    })
                })
                .collect();
            let mut results = Vec::new();
            for handle in handles {
                results.push(handle.await.unwrap());
            }
            results
        }));
    let ids: HashSet<tasklocal::TaskId> = results.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), TASKS as usize, "task ids are not unique");
    let workers: HashSet<std::thread::ThreadId> =
        results.iter().flat_map(|(_, t)| t.clone()).collect();
    let migrated = results.iter().filter(|(_, t)| t.len() > 1).count();
    eprintln!(
        "{TASKS} tasks ran on {} worker threads; {migrated} of them migrated",
        workers.len()
    );
    assert!(workers.len() > 1, "all tasks ran on one worker");
    assert!(migrated > 0, "no task moved between workers");
    assert!(!workers.contains(&std::thread::current().id()));
}

#[test]
fn a_task_moved_to_another_thread_takes_its_storage_along() {
    // Deterministic migration: poll a `Task` on one thread, then on another.
    let (to_b, on_b) = mpsc::channel::<Pin<Box<Task<_>>>>();
    let (started, wait_started) = mpsc::channel();
    let (resume, wait_resume) = tokio::sync::oneshot::channel::<()>();
    let task = Box::pin(Task::isolated(async move {
        set_own(1);
        let first = (std::thread::current().id(), tasklocal::id());
        started.send(()).unwrap();
        wait_resume.await.unwrap();
        assert_own(1);
        assert_eq!(tasklocal::id(), first.1);
        assert_ne!(std::thread::current().id(), first.0, "did not move");
        NUMBER.set(2);
        NUMBER.get()
    }));
    let a = std::thread::spawn(move || {
        set_own(100); // thread A's own storage
        let mut task = task;
        let waker = noop_waker();
        assert!(task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_own(100);
        to_b.send(task).unwrap();
        (tasklocal::id(), NUMBER.get())
    });
    wait_started.recv().unwrap();
    let b = std::thread::spawn(move || {
        set_own(200); // thread B's own storage
        let mut task = on_b.recv().unwrap();
        resume.send(()).unwrap();
        let waker = noop_waker();
        let out = task.as_mut().poll(&mut Context::from_waker(&waker));
        assert_own(200);
        out
    });
    assert_eq!(b.join().unwrap(), Poll::Ready(Some(2)));
    assert_eq!(a.join().unwrap().1, Some(100));
}

#[cfg(feature = "tokio")]
#[test]
fn tasks_interleaving_on_one_thread_do_not_bleed() {
    // The `thread_local!` bleed: two tasks on one current-thread runtime take turns;
    // with a thread-local, B's write would be what A reads after its yield.
    use tokio::sync::oneshot;
    let rt = current_thread();
    rt.block_on(async {
        set_own(9); // the thread's own storage (`block_on` is not a task)
        let (a_set, b_wait_a) = oneshot::channel::<()>();
        let (b_set, a_wait_b) = oneshot::channel::<()>();
        let (a_checked, b_wait_check) = oneshot::channel::<()>();
        let a = tasklocal::spawn(async move {
            let thread = std::thread::current().id();
            assert_eq!(NAME.get().as_deref(), Some("owner 9")); // inherited
            set_own(1);
            a_set.send(()).unwrap();
            a_wait_b.await.unwrap(); // B runs and writes meanwhile, on this thread
            assert_eq!(std::thread::current().id(), thread);
            assert_own(1);
            a_checked.send(()).unwrap();
            tokio::task::yield_now().await;
            assert_own(1);
        });
        let b = tasklocal::spawn(async move {
            b_wait_a.await.unwrap();
            set_own(2);
            b_set.send(()).unwrap();
            b_wait_check.await.unwrap();
            assert_own(2);
            tokio::task::yield_now().await;
            assert_own(2);
        });
        a.await.unwrap();
        b.await.unwrap();
        assert_own(9);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn many_tasks_interleaving_on_one_thread() {
    let rt = current_thread();
    rt.block_on(Task::isolated(async {
        let handles: Vec<_> = (0..500u64)
            .map(|n| {
                tasklocal::spawn(async move {
                    set_own(n);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                        assert_own(n);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        assert_nothing();
    }));
}

#[test]
fn futures_executor_polls_tasks_in_isolation() {
    Snapshot::empty().run(|| {
        set_own(1000); // the owner polling them
        let tasks = (0..200u64).map(|n| {
            Task::isolated(async move {
                assert_nothing();
                set_own(n);
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                    assert_own(n);
                }
                tasklocal::id()
            })
        });
        let ids = futures::executor::block_on(futures::future::join_all(tasks));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
        assert!(!ids.contains(&tasklocal::id()));
        assert_own(1000);

        // A local pool too, with spawned (not joined) tasks.
        let mut pool = futures::executor::LocalPool::new();
        let done = Arc::new(Mutex::new(Vec::new()));
        for n in 0..100u64 {
            let done = done.clone();
            futures::task::LocalSpawnExt::spawn_local(
                &pool.spawner(),
                tasklocal::task(async move {
                    assert_eq!(NAME.get().as_deref(), Some("owner 1000"));
                    set_own(n);
                    tokio::task::yield_now().await;
                    assert_own(n);
                    done.lock().unwrap().push(n);
                }),
            )
            .unwrap();
        }
        pool.run();
        assert_eq!(done.lock().unwrap().len(), 100);
        assert_own(1000);
    });
}

#[test]
fn threads_and_tasks_on_the_same_thread_are_separate_owners() {
    std::thread::spawn(|| {
        assert_nothing();
        set_own(1); // the thread's own storage
        let thread_id = tasklocal::id();
        let mut task = Box::pin(Task::isolated(async {
            assert_nothing();
            set_own(2);
            tokio::task::yield_now().await;
            assert_own(2);
            tasklocal::id()
        }));
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(task.as_mut().poll(&mut cx).is_pending());
        // Between polls, the thread is itself again.
        assert_own(1);
        set_own(3);
        let task_id = match task.as_mut().poll(&mut cx) {
            Poll::Ready(id) => id,
            Poll::Pending => panic!("not done"),
        };
        assert_ne!(task_id, thread_id);
        assert_own(3);
        assert_eq!(tasklocal::id(), thread_id);
    })
    .join()
    .unwrap();
    // Two plain threads.
    let threads: Vec<_> = (0..8u64)
        .map(|n| {
            std::thread::spawn(move || {
                assert_nothing();
                set_own(n);
                std::thread::yield_now();
                assert_own(n);
                tasklocal::id()
            })
        })
        .collect();
    let ids: HashSet<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), 8);
}

#[cfg(feature = "tokio")]
#[test]
fn nested_tasks_restore_the_outer_owner_after_each_poll() {
    let rt = multi_thread(2);
    rt.block_on(async {
        tasklocal::spawn(async {
            set_own(1);
            let inner = tasklocal::task(async {
                // Inherited NAME and LEVEL, nothing else.
                assert_eq!(NAME.get().as_deref(), Some("owner 1"));
                assert_eq!(NUMBER.get(), None);
                set_own(2);
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                    assert_own(2);
                }
                3
            });
            let outer_checks = async {
                for _ in 0..5 {
                    assert_own(1);
                    tokio::task::yield_now().await;
                }
            };
            let (n, ()) = tokio::join!(inner, outer_checks);
            assert_eq!(n, 3);
            assert_own(1);
        })
        .await
        .unwrap()
    });
}

#[cfg(feature = "tokio")]
#[test]
fn a_panicking_task_leaves_nothing_behind_on_its_thread() {
    let rt = current_thread();
    rt.block_on(async {
        set_own(5);
        let err = tasklocal::spawn(async {
            set_own(6);
            tokio::task::yield_now().await;
            panic!("task failure");
        })
        .await
        .unwrap_err();
        assert!(err.is_panic());
        assert_own(5);
        // A later task on the same thread starts clean.
        tasklocal::spawn(async {
            assert_eq!(NUMBER.get(), None);
            assert_eq!(NAME.get().as_deref(), Some("owner 5"));
            assert_eq!(tasklocal::get::<_, u64>(&"owner"), None);
        })
        .await
        .unwrap();
    });
}

#[test]
fn a_panicking_task_polled_by_hand_leaves_nothing_behind() {
    Snapshot::empty().run(|| {
        set_own(7);
        let r = std::panic::catch_unwind(|| {
            futures::executor::block_on(Task::isolated(async {
                set_own(8);
                panic!("inner");
            }))
        });
        assert!(r.is_err());
        assert_own(7);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn finished_tasks_leave_no_residue_for_later_tasks_on_the_same_workers() {
    let rt = multi_thread(4);
    rt.block_on(Task::isolated(async {
        for round in 0..3u64 {
            let handles: Vec<_> = (0..300u64)
                .map(|n| {
                    tasklocal::spawn(async move {
                        assert_nothing();
                        set_own(round * 1000 + n);
                        tokio::task::yield_now().await;
                        assert_own(round * 1000 + n);
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        }
    }));
}

#[test]
fn task_ids_are_unique_stable_and_well_formed() {
    let mut seen = HashMap::new();
    Snapshot::empty().run(|| {
        let id = tasklocal::id();
        assert_eq!(tasklocal::id(), id);
        assert_eq!(tasklocal::try_id(), Ok(id));
        assert!(id.as_u64() > 0);
        assert_eq!(id.to_string(), id.as_u64().to_string());
        assert!(format!("{id:?}").contains(&id.as_u64().to_string()));
        seen.insert(id, "run");
        let copy = id; // Copy
        assert_eq!(copy, id);
    });
    for i in 0..1000 {
        let id = futures::executor::block_on(Task::isolated(async { tasklocal::id() }));
        assert!(seen.insert(id, "task").is_none(), "id reused at {i}");
    }
    let mut sorted: Vec<_> = seen.keys().copied().collect();
    sorted.sort();
    assert_eq!(sorted.len(), 1001);
    // Threads have ids of their own, distinct from every storage before.
    let thread_id = std::thread::spawn(tasklocal::id).join().unwrap();
    assert!(!seen.contains_key(&thread_id));
}
