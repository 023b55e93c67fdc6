#![cfg(all(tokio_unstable, feature = "tokio"))]
//! Automatic mode (`tasklocal::tokio::install`, SPEC 6) under load, around a task's
//! storage: plain and `tasklocal::spawn_blocking` closures on reused blocking threads
//! and the tasks they spawn (inheritance, SPEC 4), `block_in_place` storms, nested
//! `tasklocal::task`s in thousands of tasks, and user hooks (`Hooks`) on threads that
//! set values of their own in `on_thread_start`: a blocking closure sees nothing of
//! its thread, the hooks run in their task's storage, and a blocking task's terminate
//! hook in the blocking thread's own (as `Hooks::on_task_terminate` documents). Built
//! only with `--cfg tokio_unstable` (see `automatic.rs`).
//!
//! Checks inside tasks are collected ([`Mismatches`]) and asserted on the test's
//! thread, so that a wrong value fails the test instead of one task.

mod support;

use std::sync::Mutex;

use support::automatic::{multi_thread, tag, with_timeout, Counted, Tally};
use support::stress::{id_of, quiet_panics, runtime_with_thread_values, Mismatches};
use tasklocal::Local;
use tokio::runtime::Builder;

/// A blocking-pool thread reused for many plain `spawn_blocking` closures (whose
/// blocking tasks end on it): each closure spawns a task with `Handle::spawn`, which
/// must own a writable storage every time.
#[test]
fn tasks_spawned_from_reused_blocking_threads_own_storage() {
    static VALUE: Local<u64> = Local::inheritable();
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all();
    tasklocal::tokio::install(&mut builder);
    let rt = builder.build().unwrap();
    let failures = rt.block_on(with_timeout(async {
        let mut failures = Vec::new();
        for i in 0..200u64 {
            let handle = tokio::runtime::Handle::current();
            let child = tokio::task::spawn_blocking(move || {
                handle.spawn(async move {
                    let wrote = VALUE.try_set(i).is_ok();
                    tokio::task::yield_now().await;
                    (wrote, VALUE.get())
                })
            })
            .await
            .unwrap();
            let seen = child.await.unwrap();
            if seen != (true, Some(i)) {
                failures.push((i, seen));
            }
        }
        failures
    }));
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop(rt);
}

/// The same with `tasklocal::spawn_blocking` closures that spawn: the child inherits
/// the closure's (snapshot's) values.
#[test]
fn tasks_spawned_from_tasklocal_spawn_blocking_inherit() {
    static VALUE: Local<u64> = Local::inheritable();
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all();
    tasklocal::tokio::install(&mut builder);
    let rt = builder.build().unwrap();
    let failures = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            let mut failures = Vec::new();
            for i in 0..200u64 {
                VALUE.set(i);
                let handle = tokio::runtime::Handle::current();
                let child = tasklocal::spawn_blocking(move || {
                    let seen_in_closure = VALUE.get();
                    VALUE.set(i + 1000);
                    (
                        seen_in_closure,
                        handle.spawn(async move {
                            let inherited = VALUE.get();
                            let wrote = VALUE.try_set(i + 2000).is_ok();
                            tokio::task::yield_now().await;
                            (inherited, wrote, VALUE.get())
                        }),
                    )
                })
                .await
                .unwrap();
                let seen = (child.0, child.1.await.unwrap(), VALUE.get());
                if seen != (Some(i), (Some(i + 1000), true, Some(i + 2000)), Some(i)) {
                    failures.push((i, seen));
                }
            }
            failures
        })
        .await
        .unwrap()
    }));
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop(rt);
}

/// `block_in_place` in thousands of tasks at once: the closure runs in the calling
/// task's storage, which it keeps across the worker hand-off.
#[test]
fn block_in_place_storm() {
    static VALUE: Local<u64> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    const TASKS: u64 = 2_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(i);
                    for r in 0..3 {
                        let seen = tokio::task::block_in_place(|| {
                            let seen = VALUE.get();
                            VALUE.set(i + r + 1);
                            seen
                        });
                        BAD.check("in place", seen, Some(i + r));
                        tokio::task::yield_now().await;
                        BAD.check("after", VALUE.get(), Some(i + r + 1));
                        VALUE.set(i + r + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }));
    BAD.assert_none();
    drop(rt);
}

/// Tasks that cooled down (no API call for many polls) make their first access of a
/// poll inside `block_in_place`, while the worker's core runs other tasks elsewhere.
#[test]
fn first_access_of_a_pending_poll_inside_block_in_place() {
    static VALUE: Local<u64> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    const TASKS: u64 = 300;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(i);
                    for round in 0..3 {
                        for _ in 0..40 {
                            tokio::task::yield_now().await;
                        }
                        let seen = tokio::task::block_in_place(|| {
                            let seen = VALUE.get();
                            VALUE.set(i + 1000 * (round + 1));
                            seen
                        });
                        BAD.check("in place", seen, Some(i + 1000 * round));
                    }
                    for _ in 0..40 {
                        tokio::task::yield_now().await;
                    }
                    BAD.check("end", VALUE.get(), Some(i + 3000));
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }));
    BAD.assert_none();
    drop(rt);
}

/// `tasklocal::task` nested inside automatic tasks, thousands of them migrating between
/// workers: inside, the Task's own storage; around it, the automatic task's.
#[test]
fn nested_tasks_inside_thousands_of_automatic_tasks() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static SHARED: Local<u64> = Local::inheritable();
    static BAD: Mismatches = Mismatches::new();
    const TASKS: u64 = 5_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    SHARED.set(i);
                    let outer_id = tasklocal::id();
                    let inner = tasklocal::task(async move {
                        BAD.check("inner inherits", SHARED.get(), Some(i));
                        BAD.check("inner value", tag(&VALUE), None);
                        VALUE.set(Counted::new(i + 100_000, &TALLY));
                        SHARED.set(i + 100_000);
                        let id = tasklocal::id();
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                            BAD.check("inner own", tag(&VALUE), Some(i + 100_000));
                            BAD.check("inner id", tasklocal::id(), id);
                        }
                        id
                    });
                    let mut inner = Box::pin(inner);
                    // Interleave: poll the inner task, touch the outer in between.
                    let inner_id = loop {
                        tokio::select! {
                            biased;
                            id = &mut inner => break id,
                            _ = tokio::task::yield_now() => {
                                BAD.check("outer between", tag(&VALUE), Some(i));
                                BAD.check("outer shared", SHARED.get(), Some(i));
                            }
                        }
                    };
                    BAD.check("distinct ids", inner_id != outer_id, true);
                    BAD.check("outer after", tag(&VALUE), Some(i));
                    BAD.check("outer id", tasklocal::id(), outer_id);
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }));
    TALLY.assert_all_dropped();
    BAD.assert_none();
    drop(rt);
}

/// The docs' table: a plain `spawn_blocking` closure has no storage — "Reads see
/// nothing set, writes panic (`try_` forms return `Err`) — never a value left on the
/// reused blocking thread", also when the thread set values of its own at its start.
#[test]
fn plain_spawn_blocking_never_sees_the_blocking_threads_values() {
    static THREAD_MARK: Local<u64> = Local::new();
    let rt = runtime_with_thread_values(2, &THREAD_MARK);
    let seen = rt.block_on(with_timeout(async {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let s = tokio::task::spawn_blocking(|| {
                (THREAD_MARK.get(), THREAD_MARK.try_set(1).is_err())
            })
            .await
            .unwrap();
            seen.push(s);
        }
        seen
    }));
    drop(rt);
    assert!(seen.iter().all(|s| *s == (None, true)), "{seen:?}");
}

/// A task spawned from a plain `spawn_blocking` closure: "there is nothing to inherit
/// from" (module docs' table) — the closure sees nothing, so its child must not start
/// with the blocking thread's own inheritable values either; the user spawn hook
/// runs in "the spawner's storage", which has nothing.
#[test]
fn a_task_spawned_from_a_plain_blocking_closure_inherits_nothing_of_the_thread() {
    static THREAD_INH: Local<u64> = Local::inheritable();
    static SPAWN_HOOK_SAW: Mutex<Vec<Option<u64>>> = Mutex::new(Vec::new());
    let hooks = tasklocal::tokio::Hooks::new().on_task_spawn(|_| {
        SPAWN_HOOK_SAW.lock().unwrap().push(THREAD_INH.get());
    });
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| THREAD_INH.set(7));
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    let seen = rt.block_on(async {
        let handle = tokio::runtime::Handle::current();
        let (in_closure, child) = tokio::task::spawn_blocking(move || {
            SPAWN_HOOK_SAW.lock().unwrap().clear();
            let in_closure = THREAD_INH.get();
            (in_closure, handle.spawn(async { THREAD_INH.get() }))
        })
        .await
        .unwrap();
        (in_closure, child.await.unwrap())
    });
    drop(rt);
    let hook = SPAWN_HOOK_SAW.lock().unwrap().clone();
    assert_eq!(seen, (None, None), "(closure, its child)");
    assert_eq!(
        hook.first(),
        Some(&None),
        "the spawn hook in the closure's spawn: {hook:?}"
    );
}

/// What a terminate hook saw: its task's `ME` value and the thread's mark.
type HookSaw = (Option<u64>, Option<u64>);

/// User hooks under stress, with tasks in the table and in the shards, ending every
/// way (completion, panic, abort of idle tasks, shutdown), plus blocking tasks, on
/// threads that hold values of their own: the terminate hook sees the task's values
/// (never the thread's; for a blocking task, none of a task's), the before-poll hook
/// runs in the task's storage, what the after-poll hook sets is dropped.
#[test]
fn user_hooks_under_stress_see_their_tasks_storage() {
    static TALLY: Tally = Tally::new();
    static THREAD_MARK: Local<u64> = Local::new();
    static ME: Local<u64> = Local::new();
    static POLLS: Local<u64> = Local::with_initial(|| 0);
    static AFTER: Local<Counted> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    static TERMINATED: Mutex<Vec<(u64, HookSaw)>> = Mutex::new(Vec::new());
    const TASKS: u64 = 6_000;
    quiet_panics();
    let hooks = tasklocal::tokio::Hooks::new()
        .on_before_task_poll(|_| {
            POLLS.with_mut(|n| *n += 1);
        })
        .on_after_task_poll(|meta| {
            let id: u64 = meta.id().to_string().parse().unwrap();
            AFTER.set(Counted::new(id, &TALLY));
        })
        .on_task_terminate(|meta| {
            let id: u64 = meta.id().to_string().parse().unwrap();
            TERMINATED
                .lock()
                .unwrap()
                .push((id, (ME.get(), THREAD_MARK.get())));
        });
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .on_thread_start(|| THREAD_MARK.set(u64::MAX));
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    let (spawned, blocking) = rt.block_on(with_timeout(async {
        let (parked_tx, mut parked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut spawned = Vec::new();
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let parked = parked_tx.clone();
            let h = tokio::spawn(async move {
                let me: u64 = tokio::task::id().to_string().parse().unwrap();
                ME.set(me);
                BAD.check("thread mark", THREAD_MARK.get(), None);
                let mut expected = POLLS.get().unwrap();
                BAD.check("first poll", expected, 1);
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                    expected += 1;
                    BAD.check("polls", POLLS.get(), Some(expected));
                }
                match i % 4 {
                    1 => panic!("deliberate"),
                    2 | 3 => {
                        parked.send(()).unwrap();
                        std::future::pending::<()>().await
                    }
                    _ => {}
                }
            });
            spawned.push(id_of(&h));
            handles.push((i, h));
        }
        let mut blocking = Vec::new();
        for _ in 0..50 {
            let h = tokio::task::spawn_blocking(|| ());
            blocking.push(id_of(&h));
            h.await.unwrap();
        }
        for _ in 0..TASKS / 2 {
            parked_rx.recv().await.unwrap();
        }
        for (i, h) in handles {
            match i % 4 {
                0 => h.await.unwrap(),
                1 => assert!(h.await.unwrap_err().is_panic()),
                2 => {
                    h.abort();
                    assert!(h.await.unwrap_err().is_cancelled());
                }
                _ => drop(h), // pending until shutdown
            }
        }
        (spawned, blocking)
    }));
    drop(rt);
    let terminated = TERMINATED.lock().unwrap().clone();
    let by_id: std::collections::HashMap<u64, Vec<HookSaw>> =
        terminated
            .iter()
            .fold(Default::default(), |mut m, (id, saw)| {
                m.entry(*id).or_default().push(*saw);
                m
            });
    for id in &spawned {
        assert_eq!(
            by_id.get(id),
            Some(&vec![(Some(*id), None)]),
            "task {id}: terminate hook"
        );
    }
    for id in &blocking {
        // The hook runs once for each blocking task (what it sees there is checked by
        // `user_terminate_hook_of_a_blocking_task_sees_the_blocking_threads_storage`).
        assert_eq!(
            by_id.get(id).map(|v| (v.len(), v[0].0)),
            Some((1, None)),
            "blocking task {id}"
        );
    }
    BAD.assert_none();
    TALLY.assert_all_dropped();
}

/// `Hooks::on_task_terminate`: for a plain `spawn_blocking` task the hook runs in the
/// blocking thread's own storage (what its `on_thread_start` set), never another
/// task's — here not the spawner's, which set a value of its own — while the closure
/// itself sees nothing (module docs' table).
#[test]
fn user_terminate_hook_of_a_blocking_task_sees_the_blocking_threads_storage() {
    static THREAD_MARK: Local<u64> = Local::new();
    static SEEN: Mutex<Vec<(u64, Option<u64>)>> = Mutex::new(Vec::new());
    let hooks = tasklocal::tokio::Hooks::new().on_task_terminate(|meta| {
        let id: u64 = meta.id().to_string().parse().unwrap();
        SEEN.lock().unwrap().push((id, THREAD_MARK.get()));
    });
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| THREAD_MARK.set(7));
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    let (id, in_closure) = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            THREAD_MARK.set(9);
            let h = tokio::task::spawn_blocking(|| THREAD_MARK.get());
            let id = id_of(&h);
            (id, h.await.unwrap())
        })
        .await
        .unwrap()
    }));
    // Dropping the runtime joins its blocking threads: the hook has run.
    drop(rt);
    assert_eq!(in_closure, None, "the closure sees nothing");
    let seen: Vec<_> = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _)| *i == id)
        .cloned()
        .collect();
    assert_eq!(
        seen,
        [(id, Some(7))],
        "the terminate hook of a blocking task runs once, in the blocking thread's storage"
    );
}
