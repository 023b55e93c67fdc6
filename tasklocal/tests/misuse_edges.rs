//! Isolation and the misuse rule on tokio (SPEC section 1), the edges: a plain
//! `spawn_local` task outside any owner is refused; code in `block_in_place` stays in its
//! task; children of plain tasks, of every kind, inherit nothing of the worker thread's
//! storage; writes refused in a plain task leave that storage intact; hundreds of
//! `tasklocal`, plain and blocking tasks interleaved on two workers never see each
//! other; `isolated` (SPEC section 10) inside a task, across every kind of child. A
//! plain task polled inside an owner's poll runs in that owner: `misuse.rs`.
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::runtime::{current_thread, multi_thread};
use tasklocal::{Carried, Local, Snapshot, Task};

static PLAIN: Local<u64> = Local::new();
static INHERITED: Local<String> = Local::inheritable();

/// What the current owner has of `INHERITED`.
fn inherited() -> Option<String> {
    INHERITED.get()
}

#[test]
fn a_plain_local_task_outside_any_owner_is_refused() {
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    let (seen, write) = local.block_on(&rt, async {
        tokio::task::spawn_local(async {
            let seen = (PLAIN.get(), INHERITED.get(), tasklocal::try_id().is_ok());
            let write = PLAIN.try_set(2).map_err(|e| e.is_no_storage());
            (seen, write)
        })
        .await
        .unwrap()
    });
    assert_eq!(seen, (None, None, false));
    assert_eq!(write, Err(true));
}

#[test]
fn block_in_place_inside_a_task_stays_in_the_tasks_storage() {
    multi_thread(2).block_on(async {
        tasklocal::spawn(async {
            PLAIN.set(5);
            let id = tasklocal::id();
            let inside = tokio::task::block_in_place(|| {
                PLAIN.set(6);
                (PLAIN.get(), tasklocal::id())
            });
            assert_eq!(inside, (Some(6), id));
            tokio::task::yield_now().await;
            assert_eq!(PLAIN.get(), Some(6));
            assert_eq!(tasklocal::id(), id);
        })
        .await
        .unwrap();
    });
}

#[test]
fn children_of_a_plain_task_never_inherit_the_worker_threads_values() {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| {
            let n = STARTED.fetch_add(1, Ordering::SeqCst);
            INHERITED.set(format!("worker thread {n}"));
            PLAIN.set(n as u64);
        })
        .build()
        .unwrap();
    let in_thread = move || tasklocal::thread::spawn(inherited).join().unwrap();
    let carried = move || Carried::new(()).run(|_| inherited());
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(async move {
                let spawned = || async { tasklocal::spawn(async { inherited() }).await.unwrap() };
                let mut seen = vec![
                    ("capture", Snapshot::capture().get(&INHERITED)),
                    ("capture run", Snapshot::capture().run(inherited)),
                    ("carried", carried()),
                    ("thread::spawn", in_thread()),
                    ("rayon::join", tasklocal::rayon::join(inherited, || ()).0),
                    ("task", tasklocal::task(async { inherited() }).await),
                    ("spawn", spawned().await),
                    (
                        "spawn_blocking",
                        tasklocal::spawn_blocking(inherited).await.unwrap(),
                    ),
                    (
                        "isolated spawn",
                        tasklocal::isolated(|| tasklocal::spawn(async { inherited() }))
                            .await
                            .unwrap(),
                    ),
                ];
                tokio::task::yield_now().await;
                seen.push(("spawn after a yield", spawned().await));
                seen
            }));
            tasks.push(tokio::task::spawn_blocking(move || {
                vec![
                    ("blocking capture", Snapshot::capture().get(&INHERITED)),
                    ("blocking thread::spawn", in_thread()),
                    ("blocking carried", carried()),
                ]
            }));
        }
        for task in tasks {
            for (what, v) in task.await.unwrap() {
                assert_eq!(v, None, "{what} inherited from the worker thread");
            }
        }
    });
}

#[test]
fn refused_writes_in_plain_tasks_leave_the_worker_threads_storage_intact() {
    let rt = current_thread();
    // The thread's own storage, outside any task.
    let after = std::thread::spawn(move || {
        PLAIN.set(42);
        tasklocal::set("dyn", 43u64);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        tasklocal::at_exit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        rt.block_on(async {
            tokio::spawn(async {
                let _ = tasklocal::try_remove(&"dyn");
                let _ = tasklocal::try_take::<_, u64>(&"dyn");
                let _ = PLAIN.try_take();
                let _ = catch_unwind(tasklocal::reset);
                let _ = catch_unwind(tasklocal::unload);
                let _ = catch_unwind(|| tasklocal::remove(&"dyn"));
            })
            .await
            .unwrap();
        });
        (
            PLAIN.get(),
            tasklocal::get::<_, u64>(&"dyn"),
            ran.load(Ordering::SeqCst) == 0,
        )
    })
    .join()
    .unwrap();
    assert_eq!(after, (Some(42), Some(43), true));
}

/// Every `tasklocal` task sees only its own values, across awaits (and migrations);
/// plain and blocking tasks in between see none.
#[test]
fn interleaved_tasks_on_two_workers_never_see_each_other() {
    multi_thread(2).block_on(async {
        INHERITED.set("root".into());
        let mut tasks = Vec::new();
        for i in 0..400u64 {
            tasks.push(tasklocal::spawn(async move {
                assert_eq!(INHERITED.get().as_deref(), Some("root"));
                PLAIN.set(i);
                INHERITED.set(format!("t{i}"));
                tasklocal::set(i % 5, i);
                let id = tasklocal::id();
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                    assert_eq!(PLAIN.get(), Some(i));
                    assert_eq!(INHERITED.get(), Some(format!("t{i}")));
                    assert_eq!(tasklocal::id(), id);
                    for k in 0..5u64 {
                        let own = tasklocal::get::<_, u64>(&k) == Some(i);
                        assert_eq!(own, k == i % 5, "dynamic key {k} in task {i}");
                    }
                    // A write in place, too.
                    PLAIN.with_mut(|p| *p += 0);
                }
            }));
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    assert_eq!((PLAIN.get(), INHERITED.get()), (None, None));
                    assert_eq!(tasklocal::get::<_, u64>(&(i % 5)), None);
                    tokio::task::yield_now().await;
                }
            }));
            if i % 20 == 0 {
                tasks.push(tokio::task::spawn_blocking(|| {
                    assert_eq!((PLAIN.get(), INHERITED.get()), (None, None));
                }));
                tasks.push(tasklocal::spawn_blocking(move || {
                    assert_eq!(INHERITED.get().as_deref(), Some("root"));
                    PLAIN.set(i);
                    assert_eq!(PLAIN.get(), Some(i));
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(INHERITED.get().as_deref(), Some("root"));
        assert_eq!(PLAIN.get(), None);
    });
}

/// `isolated` empties the owners created while it runs, of every kind, and nothing
/// after it (also after a panic out of nested `isolated`s); a `Task` polled inside it
/// passes its own values on to its children.
#[test]
fn isolated_in_a_task_empties_every_kind_of_child_and_only_while_it_runs() {
    multi_thread(2).block_on(async {
        tasklocal::spawn(async {
            INHERITED.set("request".into());
            let (task, snapshot, thread, rayon, blocking) = tasklocal::isolated(|| {
                (
                    tasklocal::task(async move { inherited() }),
                    Snapshot::capture(),
                    tasklocal::thread::spawn(inherited),
                    tasklocal::rayon::join(inherited, inherited),
                    tasklocal::spawn_blocking(inherited),
                )
            });
            assert_eq!(task.await, None);
            assert_eq!(snapshot.get(&INHERITED), None);
            assert_eq!(thread.join().unwrap(), None);
            assert_eq!(rayon, (None, None));
            assert_eq!(blocking.await.unwrap(), None);
            let r = catch_unwind(|| {
                tasklocal::isolated(|| tasklocal::isolated(|| panic!("isolated fails")))
            });
            assert!(r.is_err());
            assert_eq!(
                tasklocal::spawn(async move { inherited() })
                    .await
                    .unwrap()
                    .as_deref(),
                Some("request")
            );
            let nested = tasklocal::isolated(|| {
                futures::executor::block_on(Task::isolated(async {
                    INHERITED.set("inner".into());
                    tasklocal::task(async { INHERITED.get() }).await
                }))
            });
            assert_eq!(nested.as_deref(), Some("inner"));
        })
        .await
        .unwrap();
    });
}
