#![cfg(tokio_unstable)]
//! Automatic mode switches owners lazily: a poll starts *pending* (the worker
//! thread's frame stays in place) and the task's frame is swapped in only when code
//! asks for an owner. These tests check that no path can tell the difference: the
//! first access of a poll, whatever it is (a read, a write, `reset`, a spawn, a
//! `Task` polled inside, a user hook), reaches the task's storage and never the
//! worker thread's. Built only with `--cfg tokio_unstable`, like `automatic.rs`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use support::automatic::{current_thread, tag, with_timeout, Counted, Tally};
use tasklocal::{Local, TaskId};
use tokio::runtime::Builder;

/// Polls that touch nothing, enough of them that the next poll's window starts
/// pending again: after a poll that settled its window, automatic mode opens the
/// next few windows at once (a task that asks once likely asks again).
async fn idle_polls() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// A worker thread's own values (set in `on_thread_start`, outside any task) are
/// never seen by a task, whether its poll has asked for an owner yet or not, and
/// each task keeps its own values through polls that touch nothing.
#[test]
fn a_worker_threads_own_values_never_reach_a_task() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static MARK: Local<u64> = Local::inheritable();
    const WORKER: u64 = u64::MAX;
    const TASKS: u64 = 200;

    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(2).enable_all().on_thread_start(|| {
        // The worker thread's own storage, outside any task.
        MARK.set(WORKER);
        tasklocal::set("worker", true);
    });
    tasklocal::tokio::install(&mut builder);
    let rt = builder.build().unwrap();
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    // Polls that touch nothing, then a first access of each kind.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    assert_eq!(MARK.get(), None, "the worker's value leaked");
                    tokio::task::yield_now().await;
                    assert_eq!(tasklocal::get::<_, bool>(&"worker"), None);
                    tokio::task::yield_now().await;
                    assert!(!MARK.is_set());
                    VALUE.set(Counted::new(i, &TALLY));
                    MARK.set(i);
                    let id = tasklocal::id();
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                        tokio::task::yield_now().await;
                        assert_eq!(tag(&VALUE), Some(i));
                        assert_eq!(MARK.get(), Some(i));
                        assert_eq!(tasklocal::id(), id);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
    // Every worker still holds its own value.
    let workers = rt.block_on(async {
        let checks: Vec<_> = (0..8)
            .map(|_| tokio::task::spawn_blocking(|| MARK.get()))
            .collect();
        let mut seen = Vec::new();
        for check in checks {
            seen.push(check.await.unwrap());
        }
        seen
    });
    assert!(workers.iter().all(|&mark| mark != Some(0)), "{workers:?}");
    drop(rt);
    TALLY.assert_all_dropped();
}

/// `reset` as the first access of a poll empties the task's storage, not the thread
/// that polls it.
#[test]
fn reset_first_in_a_poll_empties_the_task_not_the_thread() {
    static VALUE: Local<u64> = Local::new();
    let rt = current_thread();
    // The thread driving the runtime has a value of its own.
    VALUE.set(7);
    let (before, after) = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            VALUE.set(1);
            idle_polls().await;
            let before = VALUE.get();
            idle_polls().await;
            tasklocal::reset();
            (before, VALUE.get())
        })
        .await
        .unwrap()
    }));
    assert_eq!((before, after), (Some(1), None));
    assert_eq!(VALUE.get(), Some(7), "reset reached the thread's storage");
}

/// A `Task` polled first thing in a poll is the innermost owner; after it, the
/// automatic-mode task's own values are there, not the thread's.
#[test]
fn a_task_polled_first_in_a_poll_then_the_outer_task() {
    static VALUE: Local<u64> = Local::inheritable();
    let rt = current_thread();
    VALUE.set(7);
    let seen = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            // Inherited from the thread that spawned it (`block_on`'s future).
            let inherited = VALUE.get();
            VALUE.set(1);
            idle_polls().await;
            // First thing in this poll: a `Task` created and polled.
            let inner = tasklocal::task(async {
                let seen = VALUE.get();
                VALUE.set(2);
                seen
            })
            .await;
            (inherited, inner, VALUE.get())
        })
        .await
        .unwrap()
    }));
    assert_eq!(seen, (Some(7), Some(1), Some(1)));
    assert_eq!(VALUE.get(), Some(7));
}

/// A child spawned in a poll that asked nothing yet inherits its spawner's values
/// as of the spawn, and the last holder of a value drops it once, when it ends.
#[test]
fn a_spawn_first_in_a_poll_inherits_as_of_the_spawn() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Arc<Counted>> = Local::inheritable();
    let tag = |key: &'static Local<Arc<Counted>>| key.with(|v| v.map(|v| v.tag));
    let rt = current_thread();
    let (child, parent) = rt.block_on(with_timeout(async move {
        tokio::spawn(async move {
            VALUE.set(Arc::new(Counted::new(1, &TALLY)));
            idle_polls().await;
            // First thing in this poll: a spawn.
            let child = tokio::spawn(async move {
                tokio::task::yield_now().await;
                tag(&VALUE)
            });
            VALUE.set(Arc::new(Counted::new(2, &TALLY)));
            (child.await.unwrap(), tag(&VALUE))
        })
        .await
        .unwrap()
    }));
    assert_eq!((child, parent), (Some(1), Some(2)));
    drop(rt);
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), 2);
}

/// The user's hooks run with the task's values current, also around polls in which
/// the task itself touched nothing, and its terminate hook sees them after a last
/// poll that touched nothing.
#[test]
fn user_hooks_see_the_task_in_polls_that_touch_nothing() {
    static VALUE: Local<u64> = Local::new();
    static BEFORE: AtomicUsize = AtomicUsize::new(0);
    static AFTER: AtomicUsize = AtomicUsize::new(0);
    static TERMINATE: AtomicUsize = AtomicUsize::new(0);
    static THREAD_LEAKS: AtomicUsize = AtomicUsize::new(0);
    // More than the polls that open at once after a settled one.
    const POLLS: usize = 20;

    let hooks = tasklocal::tokio::Hooks::new()
        .on_before_task_poll(|_| {
            match VALUE.get() {
                Some(1) => BEFORE.fetch_add(1, SeqCst),
                Some(_) => THREAD_LEAKS.fetch_add(1, SeqCst),
                None => 0,
            };
        })
        .on_after_task_poll(|_| {
            match VALUE.get() {
                Some(1) => AFTER.fetch_add(1, SeqCst),
                Some(_) => THREAD_LEAKS.fetch_add(1, SeqCst),
                None => 0,
            };
        })
        .on_task_terminate(|_| {
            if VALUE.get() == Some(1) {
                TERMINATE.fetch_add(1, SeqCst);
            }
        });
    let mut builder = Builder::new_current_thread();
    builder.enable_all();
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    VALUE.set(7);
    let task: TaskId = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            VALUE.set(1);
            // Polls 2..=POLLS touch nothing.
            for _ in 1..POLLS {
                tokio::task::yield_now().await;
            }
            tasklocal::id()
        })
        .await
        .unwrap()
    }));
    drop(rt);
    assert_ne!(task, tasklocal::id());
    assert_eq!(VALUE.get(), Some(7));
    assert_eq!(
        THREAD_LEAKS.load(SeqCst),
        0,
        "a hook saw the thread's value"
    );
    // Every poll but the first starts with the value set; every poll ends with it
    // (the last after the teardown: after it, the value is gone).
    assert_eq!(BEFORE.load(SeqCst), POLLS - 1);
    assert_eq!(AFTER.load(SeqCst), POLLS - 1);
    assert_eq!(TERMINATE.load(SeqCst), 1);
}

/// A task that ends in a poll that touched nothing — its window pending, torn down
/// from its cell by the terminate hook — runs its exit handlers last-registered
/// first with its values readable, then drops its values: on completion and on a
/// panic, on 2 workers, each exactly once.
#[test]
fn a_task_ending_in_a_pending_window_is_torn_down_once() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: u64 = 200;
    let rt = support::automatic::multi_thread(2);
    let (tx, rx) = std::sync::mpsc::channel();
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    support::automatic::set_with_two_handlers(i, &VALUE, &TALLY, &tx);
                    // The last poll starts pending and touches nothing.
                    idle_polls().await;
                    if i % 2 == 1 {
                        // A panic without the panic hook's noise.
                        std::panic::resume_unwind(Box::new("boom"));
                    }
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.is_err(), i % 2 == 1);
        }
    }));
    drop(tx);
    support::automatic::assert_handlers_ran(&rx, TASKS);
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.created(), TASKS as usize);
    drop(rt);
    assert!(rx.try_recv().is_err(), "handlers run exactly once");
}
