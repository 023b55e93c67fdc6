#![cfg(all(tokio_unstable, feature = "tokio"))]
//! Automatic mode (`tasklocal::tokio::install`, SPEC 6), the end of tasks under load
//! (SPEC 5): thousands of pending tasks at each way of shutting a runtime down (drop,
//! `shutdown_timeout`, `shutdown_background`, multi- and current-thread), in the middle
//! of a wake storm, `JoinSet::abort_all`, aborts of idle tasks parked inside nested
//! `tasklocal::task`s. Every exit handler runs once with its task's values readable,
//! never the values of the thread that runs it; every value is dropped once; a future
//! dropped at shutdown sees nothing of the thread's values. Built only with
//! `--cfg tokio_unstable` (see `automatic.rs`).
//!
//! tokio wakes a `JoinHandle` before it calls the terminate hook, so a joined task's
//! teardown may still run on its worker: tests wait for what the teardown signals
//! (counted drops, handler counters), never for the handle alone.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::automatic::{current_thread, multi_thread, tag, with_timeout, Counted, Tally};
use support::stress::{counters, runtime_with_thread_values, wait_until, Mismatches, Wakers};
use tasklocal::Local;
use tokio::runtime::Builder;

/// Thousands of pending tasks holding values and handlers at runtime shutdown, for
/// each way of shutting down: every handler runs once with its task's value readable
/// (not the shutting-down thread's), every value is dropped once.
fn shutdown_with_pending_tasks(
    how: &str,
    shutdown: impl FnOnce(tokio::runtime::Runtime),
    rt: tokio::runtime::Runtime,
    tasks: u64,
) {
    static THREAD_ONLY: Local<u64> = Local::new();
    let tally: &'static Tally = Box::leak(Box::new(Tally::new()));
    let bad: &'static Mismatches = Box::leak(Box::new(Mismatches::new()));
    let ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    static VALUE: Local<Counted> = Local::new();
    let exits = counters(tasks as usize);
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..tasks {
            let ready = ready_tx.clone();
            drop(tokio::spawn(async move {
                VALUE.set(Counted::new(i, tally));
                tasklocal::at_exit(move || {
                    exits[i as usize].fetch_add(1, SeqCst);
                    bad.check("handler value", tag(&VALUE), Some(i));
                    bad.check("thread's value in handler", THREAD_ONLY.get(), None);
                    // Set during teardown: must be dropped before it finishes.
                    VALUE.set(Counted::new(i, tally));
                    ran.fetch_add(1, SeqCst);
                });
                if i % 3 == 0 {
                    // Parked inside a nested owner.
                    tasklocal::task(async move {
                        VALUE.set(Counted::new(i, tally));
                        tasklocal::at_exit(move || {
                            bad.check("nested handler value", tag(&VALUE), Some(i));
                        });
                        ready.send(()).unwrap();
                        std::future::pending::<()>().await
                    })
                    .await
                } else {
                    tokio::task::yield_now().await;
                    ready.send(()).unwrap();
                    std::future::pending::<()>().await
                }
            }));
        }
        for _ in 0..tasks {
            ready_rx.recv().await.unwrap();
        }
    }));
    // The shutting-down thread has a value of its own.
    THREAD_ONLY.set(77);
    assert_eq!(tally.dropped(), 0, "{how}");
    shutdown(rt);
    // Handlers create a value each: wait for them before counting.
    wait_until("handlers", || ran.load(SeqCst) >= tasks as usize);
    tally.assert_all_dropped();
    assert_eq!(tally.created() as u64, 2 * tasks + tasks.div_ceil(3));
    bad.assert_none();
    for (i, e) in exits.iter().enumerate() {
        assert_eq!(e.load(SeqCst), 1, "{how}: handler of task {i}");
    }
    assert_eq!(
        THREAD_ONLY.get(),
        Some(77),
        "{how}: the thread's own value survives"
    );
    THREAD_ONLY.take();
}

#[test]
fn shutdown_by_drop_multi_thread() {
    shutdown_with_pending_tasks("drop", drop, multi_thread(2), 4_000);
}

#[test]
fn shutdown_by_drop_current_thread() {
    shutdown_with_pending_tasks("drop ct", drop, current_thread(), 4_000);
}

#[test]
fn shutdown_timeout_multi_thread() {
    shutdown_with_pending_tasks(
        "shutdown_timeout",
        |rt| rt.shutdown_timeout(Duration::from_secs(10)),
        multi_thread(2),
        4_000,
    );
}

#[test]
fn shutdown_background_multi_thread() {
    shutdown_with_pending_tasks(
        "shutdown_background",
        |rt| rt.shutdown_background(),
        multi_thread(2),
        4_000,
    );
}

#[test]
fn shutdown_background_current_thread() {
    shutdown_with_pending_tasks(
        "shutdown_background ct",
        |rt| rt.shutdown_background(),
        current_thread(),
        4_000,
    );
}

/// The runtime is dropped while thousands of tasks are in a yield storm, woken from
/// other threads too, with after-poll hooks widened (polls overlap): every handler
/// runs once with its task's value readable, every value is dropped once.
#[test]
fn shutdown_in_the_middle_of_a_wake_storm_with_overlapping_polls() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    static RAN: AtomicUsize = AtomicUsize::new(0);
    const TASKS: usize = 3_000;
    let exits = counters(TASKS);
    let hooks = tasklocal::tokio::Hooks::new().on_after_task_poll(|_| {
        for _ in 0..200 {
            std::hint::spin_loop();
        }
    });
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    tasklocal::tokio::install_with(&mut builder, hooks);
    let rt = builder.build().unwrap();
    let notifies: Arc<Vec<tokio::sync::Notify>> =
        Arc::new((0..64).map(|_| tokio::sync::Notify::new()).collect());
    let wakers = Wakers::start({
        let notifies = notifies.clone();
        move |k| {
            notifies
                .iter()
                .skip(k)
                .step_by(2)
                .for_each(|n| n.notify_waiters())
        }
    });
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..TASKS {
            let ready = ready_tx.clone();
            let notifies = notifies.clone();
            drop(tokio::spawn(async move {
                VALUE.set(Counted::new(i as u64, &TALLY));
                tasklocal::at_exit(move || {
                    exits[i].fetch_add(1, SeqCst);
                    BAD.check("handler", tag(&VALUE), Some(i as u64));
                    RAN.fetch_add(1, SeqCst);
                });
                ready.send(()).unwrap();
                let mut round = 0u64;
                loop {
                    round += 1;
                    if i % 2 == 0 {
                        notifies[i % 64].notified().await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    if round % 3 == 0 {
                        BAD.check("storm", tag(&VALUE), Some(i as u64));
                    }
                }
            }));
        }
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
    }));
    drop(rt);
    wakers.stop();
    TALLY.assert_all_dropped();
    wait_until("handlers", || RAN.load(SeqCst) >= TASKS);
    BAD.assert_none();
    for (i, e) in exits.iter().enumerate() {
        assert_eq!(e.load(SeqCst), 1, "handler of {i}");
    }
    assert_eq!(TALLY.dropped(), TALLY.created());
}

/// `JoinSet::abort_all` over thousands of tasks, some parked, some yielding in a storm:
/// every handler runs once with the value readable, every value dropped once.
#[test]
fn joinset_abort_all_over_a_yield_storm() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    static RAN: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 6_000;
    let exits = counters(TASKS as usize);
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let mut set = tokio::task::JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..TASKS {
            let ready = ready_tx.clone();
            set.spawn(async move {
                VALUE.set(Counted::new(i, &TALLY));
                tasklocal::at_exit(move || {
                    exits[i as usize].fetch_add(1, SeqCst);
                    RAN.fetch_add(1, SeqCst);
                    BAD.check("handler", tag(&VALUE), Some(i));
                });
                ready.send(()).unwrap();
                if i % 2 == 0 {
                    loop {
                        tokio::task::yield_now().await;
                        BAD.check("storm", tag(&VALUE), Some(i));
                    }
                } else {
                    std::future::pending::<()>().await
                }
            });
        }
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
        set.abort_all();
        while let Some(r) = set.join_next().await {
            assert!(r.unwrap_err().is_cancelled());
        }
    }));
    TALLY.assert_all_dropped();
    wait_until("handlers", || RAN.load(SeqCst) >= TASKS as usize);
    BAD.assert_none();
    for (i, e) in exits.iter().enumerate() {
        assert_eq!(e.load(SeqCst), 1, "handler of {i}");
    }
    drop(rt);
    assert_eq!(TALLY.dropped(), TALLY.created());
}

/// An idle task aborted: its future's `Drop` runs in the task's terminate window
/// (auto.rs: "the future is dropped in that window too, so its `Drop` sees the task's
/// values"), and nothing of another owner.
#[test]
fn drop_of_an_aborted_idle_tasks_future_sees_its_values() {
    static VALUE: Local<u64> = Local::new();
    static SEEN: Mutex<Vec<(u64, Option<u64>)>> = Mutex::new(Vec::new());
    struct Probe(u64);
    impl Drop for Probe {
        fn drop(&mut self) {
            SEEN.lock().unwrap().push((self.0, VALUE.get()));
        }
    }
    const TASKS: u64 = 1_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        VALUE.set(999_999);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    let _probe = Probe(i);
                    VALUE.set(i);
                    ready.send(()).unwrap();
                    std::future::pending::<()>().await
                })
            })
            .collect();
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
        for h in &handles {
            h.abort();
        }
        for h in handles {
            assert!(h.await.unwrap_err().is_cancelled());
        }
    }));
    drop(rt);
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), TASKS as usize);
    let wrong: Vec<_> = seen.iter().filter(|(i, v)| *v != Some(*i)).collect();
    assert!(
        wrong.is_empty(),
        "{} wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Idle tasks parked inside a nested `tasklocal::task`, aborted: the nested owner's
/// handlers see its values, then the task's handlers see the task's values.
#[test]
fn aborting_tasks_parked_inside_nested_wrappers() {
    static VALUE: Local<u64> = Local::new();
    static LOG: Mutex<Vec<(u64, &'static str, Option<u64>)>> = Mutex::new(Vec::new());
    const TASKS: u64 = 2_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    VALUE.set(i);
                    tasklocal::at_exit(move || LOG.lock().unwrap().push((i, "outer", VALUE.get())));
                    tasklocal::task(async move {
                        VALUE.set(i + 50_000);
                        tasklocal::at_exit(move || {
                            LOG.lock().unwrap().push((i, "inner", VALUE.get()))
                        });
                        ready.send(()).unwrap();
                        std::future::pending::<()>().await
                    })
                    .await
                })
            })
            .collect();
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
        for h in &handles {
            h.abort();
        }
        for h in handles {
            assert!(h.await.unwrap_err().is_cancelled());
        }
    }));
    wait_until("handlers", || {
        LOG.lock().unwrap().len() >= 2 * TASKS as usize
    });
    drop(rt);
    let log = LOG.lock().unwrap().clone();
    assert_eq!(log.len(), 2 * TASKS as usize);
    let mut per: std::collections::HashMap<u64, Vec<(&str, Option<u64>)>> = Default::default();
    for (i, which, v) in log {
        per.entry(i).or_default().push((which, v));
    }
    for (i, runs) in per {
        assert_eq!(
            runs,
            [("inner", Some(i + 50_000)), ("outer", Some(i))],
            "task {i}"
        );
    }
}

/// What an exit handler saw: its task's number, the task's value, the thread's mark.
type HandlerSaw = (u64, Option<u64>, Option<u64>);

/// At shutdown, futures are dropped outside any poll: "a `Drop` in such a future runs
/// without the task's storage (it sees nothing set; or the task's own values [...] —
/// never another owner's)" — never the values of the worker thread, which holds some
/// of its own; the exit handlers see the task's values only.
#[test]
fn shutdown_drops_see_nothing_of_the_worker_threads_values() {
    static THREAD_MARK: Local<u64> = Local::new();
    static VALUE: Local<u64> = Local::new();
    static DROPS: Mutex<Vec<(Option<u64>, Option<u64>)>> = Mutex::new(Vec::new());
    static HANDLERS: Mutex<Vec<HandlerSaw>> = Mutex::new(Vec::new());
    struct Probe(u64);
    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0;
            DROPS.lock().unwrap().push((THREAD_MARK.get(), VALUE.get()));
        }
    }
    const TASKS: u64 = 500;
    let rt = runtime_with_thread_values(2, &THREAD_MARK);
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..TASKS {
            let ready = ready_tx.clone();
            drop(tokio::spawn(async move {
                let _probe = Probe(i);
                VALUE.set(i);
                tasklocal::at_exit(move || {
                    HANDLERS
                        .lock()
                        .unwrap()
                        .push((i, VALUE.get(), THREAD_MARK.get()));
                });
                ready.send(()).unwrap();
                std::future::pending::<()>().await
            }));
        }
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
    }));
    drop(rt);
    wait_until("handlers", || {
        HANDLERS.lock().unwrap().len() >= TASKS as usize
    });
    let handlers = HANDLERS.lock().unwrap().clone();
    assert!(
        handlers
            .iter()
            .all(|(i, v, t)| (*v, *t) == (Some(*i), None)),
        "handlers saw {:?}",
        &handlers
            .iter()
            .filter(|(i, v, t)| (*v, *t) != (Some(*i), None))
            .take(5)
            .collect::<Vec<_>>()
    );
    let drops = DROPS.lock().unwrap().clone();
    assert_eq!(drops.len(), TASKS as usize);
    let bad: Vec<_> = drops.iter().filter(|(t, _)| t.is_some()).collect();
    assert!(
        bad.is_empty(),
        "{} futures' Drop at shutdown saw the worker thread's value: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

/// The same on a current-thread runtime dropped by a thread with values of its own.
#[test]
fn shutdown_drops_see_nothing_of_the_dropping_threads_values() {
    static THREAD_MARK: Local<u64> = Local::new();
    static DROPS: Mutex<Vec<Option<u64>>> = Mutex::new(Vec::new());
    struct Probe;
    impl Drop for Probe {
        fn drop(&mut self) {
            DROPS.lock().unwrap().push(THREAD_MARK.get());
        }
    }
    std::thread::spawn(|| {
        let rt = current_thread();
        rt.block_on(async {
            for _ in 0..100 {
                let probe = Probe;
                drop(tokio::spawn(async move {
                    let _probe = probe;
                    tasklocal::set("touch", 1u8);
                    std::future::pending::<()>().await
                }));
            }
            tokio::task::yield_now().await;
        });
        THREAD_MARK.set(5);
        drop(rt);
        THREAD_MARK.set(6);
    })
    .join()
    .unwrap();
    let drops = DROPS.lock().unwrap().clone();
    assert_eq!(drops.len(), 100);
    assert!(drops.iter().all(Option::is_none), "{drops:?}");
}
