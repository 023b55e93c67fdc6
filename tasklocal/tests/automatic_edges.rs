#![cfg(all(tokio_unstable, feature = "tokio"))]
//! Automatic mode (`tasklocal::tokio::install`, SPEC 6) at its edges, with the owners
//! (SPEC 1), inheritance (SPEC 4) and the end of an owner (SPEC 5) it must keep:
//! `block_in_place`, `spawn_blocking`, a `LocalSet`, spawns from a std thread and from an
//! exit handler, wrappers and `Snapshot::run` inside automatic tasks, `reset` and
//! `unload`, aborts (by the task itself, mid-poll, a dropped `JoinSet`),
//! `shutdown_background`, and ids unique across every kind of owner. Built only with
//! `--cfg tokio_unstable` (see `automatic.rs`). No test here registers a bridge
//! (automatic mode with bridges: `automatic_bridge.rs`).
//!
//! tokio wakes a `JoinHandle` before it calls the terminate hook, so a joined task's
//! teardown may still run on its worker: tests wait for what the teardown signals
//! (counted drops, handler channels), never for the handle alone.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};

use support::automatic::{
    assert_handlers_ran, current_thread, multi_thread, set_with_two_handlers, tag, with_timeout,
    Counted, HandlerRun, Tally, PATIENCE,
};
use tasklocal::{Local, Snapshot};
use tokio::runtime::Runtime;

/// Runs `future` as an automatic task of `rt` (the `block_on` future is no task: it
/// runs in the thread's owner) and returns its output.
fn in_a_task<F>(rt: &Runtime, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(with_timeout(rt.spawn(future))).unwrap()
}

/// Runs `tasks` automatic tasks of `rt`, task `i` running `task(i)`, and waits until
/// every one has returned (their teardowns may still be running).
fn run_tasks<F, T>(rt: &Runtime, tasks: u64, task: F)
where
    F: Fn(u64) -> T,
    T: Future<Output = ()> + Send + 'static,
{
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(task(i))).collect();
        for handle in handles {
            handle.await.unwrap();
        }
    }));
}

/// After `tasks` tasks set up by `set_with_two_handlers` (reporting on `rx`) ended:
/// every task's handlers ran, last registered first, with its value readable, every
/// value of `tally` is dropped, and once the runtime is gone no handler has run again.
#[track_caller]
fn assert_torn_down_once(rt: Runtime, rx: &mpsc::Receiver<HandlerRun>, tasks: u64, tally: &Tally) {
    assert_handlers_ran(rx, tasks);
    tally.assert_all_dropped();
    drop(rt);
    assert!(rx.try_recv().is_err(), "handlers run exactly once");
}

/// Registers an exit handler that counts in `ended` when it sees `value` tagged
/// `expected`.
fn count_an_exit_seeing(
    value: &'static Local<Counted>,
    expected: u64,
    ended: &'static AtomicUsize,
) {
    tasklocal::at_exit(move || {
        if tag(value) == Some(expected) {
            ended.fetch_add(1, SeqCst);
        }
    });
}

/// `block_in_place` runs inside the task's poll: the closure reads and writes the
/// task's storage (same id), its writes are still there after it, and a task it
/// spawns inherits from the task.
#[test]
fn block_in_place_runs_in_the_tasks_storage() {
    static SHARED: Local<u64> = Local::inheritable();
    let rt = multi_thread(2);
    run_tasks(&rt, 50, |i| async move {
        SHARED.set(i);
        let id = tasklocal::id();
        let child = tokio::task::block_in_place(|| {
            assert_eq!(SHARED.get(), Some(i));
            assert_eq!(tasklocal::id(), id);
            SHARED.set(i + 1000);
            tokio::spawn(async { SHARED.get() })
        });
        tokio::task::yield_now().await;
        assert_eq!(SHARED.get(), Some(i + 1000));
        assert_eq!(tasklocal::id(), id);
        assert_eq!(child.await.unwrap(), Some(i + 1000));
    });
}

/// A `JoinSet` dropped with its tasks pending aborts them: every task's handlers run
/// once, last registered first, with its values readable, and every value is
/// dropped, the inherited one included.
#[test]
fn dropping_a_joinset_tears_down_every_pending_task() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static INHERITED: Local<Arc<Counted>> = Local::inheritable();
    const TASKS: u64 = 300;
    let rt = multi_thread(2);
    let (tx, rx) = mpsc::channel();
    in_a_task(&rt, async move {
        INHERITED.set(Arc::new(Counted::new(9_999, &TALLY)));
        let mut set = tokio::task::JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..TASKS {
            let tx = tx.clone();
            let ready = ready_tx.clone();
            set.spawn(async move {
                assert_eq!(INHERITED.get().map(|v| v.tag), Some(9_999));
                set_with_two_handlers(i, &VALUE, &TALLY, &tx);
                tokio::task::yield_now().await;
                ready.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        }
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
        drop(set);
    });
    assert_torn_down_once(rt, &rx, TASKS, &TALLY);
    assert_eq!(TALLY.created(), TASKS as usize + 1);
}

/// A task that aborts itself keeps its values for the rest of that poll and is
/// cancelled at its next `.await`: torn down once, handlers FILO, values dropped.
#[test]
fn a_task_that_aborts_itself_is_torn_down_once() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: u64 = 200;
    let rt = multi_thread(2);
    let (tx, rx) = mpsc::channel();
    rt.block_on(with_timeout(async {
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let tx = tx.clone();
            let (abort_tx, abort_rx) = tokio::sync::oneshot::channel::<tokio::task::AbortHandle>();
            let handle = tokio::spawn(async move {
                set_with_two_handlers(i, &VALUE, &TALLY, &tx);
                abort_rx.await.unwrap().abort();
                assert_eq!(
                    tag(&VALUE),
                    Some(i),
                    "the rest of the poll keeps the values"
                );
                tokio::task::yield_now().await;
                unreachable!("cancelled at the await");
            });
            abort_tx.send(handle.abort_handle()).unwrap();
            handles.push(handle);
        }
        for handle in handles {
            assert!(handle.await.unwrap_err().is_cancelled());
        }
    }));
    drop(tx);
    assert_torn_down_once(rt, &rx, TASKS, &TALLY);
}

/// A task aborted from another thread while it is in the middle of a poll: the
/// running poll keeps the task's values; the teardown happens once, after that poll,
/// with handlers FILO and values readable, then drops. The abort comes from the
/// `block_on` future, so it never waits for a worker the victim's poll occupies.
#[test]
fn a_task_aborted_mid_poll_is_torn_down_after_that_poll() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: u64 = 30;
    let rt = multi_thread(2);
    let (tx, rx) = mpsc::channel();
    rt.block_on(with_timeout(async {
        for i in 0..TASKS {
            let (in_poll_tx, in_poll_rx) = tokio::sync::oneshot::channel();
            let aborted = Arc::new(AtomicBool::new(false));
            let victim_aborted = aborted.clone();
            let tx = tx.clone();
            let victim = tokio::spawn(async move {
                set_with_two_handlers(i, &VALUE, &TALLY, &tx);
                tokio::task::yield_now().await;
                in_poll_tx.send(()).unwrap();
                // Busy inside this poll until the abort was requested.
                while !victim_aborted.load(SeqCst) {
                    std::hint::spin_loop();
                }
                assert_eq!(tag(&VALUE), Some(i));
                tokio::task::yield_now().await;
                unreachable!("cancelled at the await");
            });
            in_poll_rx.await.unwrap();
            victim.abort();
            aborted.store(true, SeqCst);
            assert!(victim.await.unwrap_err().is_cancelled());
        }
    }));
    drop(tx);
    assert_torn_down_once(rt, &rx, TASKS, &TALLY);
}

/// `shutdown_background` with tasks pending: they are dropped in the background, and
/// still every handler runs once with its task's value and every value is dropped.
#[test]
fn shutdown_background_tears_down_every_pending_task() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 200;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..TASKS {
            let ready = ready_tx.clone();
            tokio::spawn(async move {
                VALUE.set(Counted::new(i, &TALLY));
                count_an_exit_seeing(&VALUE, i, &ENDED);
                tokio::task::yield_now().await;
                ready.send(()).unwrap();
                std::future::pending::<()>().await
            });
        }
        for _ in 0..TASKS {
            ready_rx.recv().await.unwrap();
        }
    }));
    rt.shutdown_background();
    TALLY.assert_all_dropped();
    assert_eq!(ENDED.load(SeqCst), TASKS as usize);
}

/// An exit handler that spawns a task: no deadlock, the child inherits the values as
/// they are in the teardown, and what the child sets is dropped too.
#[test]
fn a_task_spawned_by_an_exit_handler_inherits_and_leaks_nothing() {
    static TALLY: Tally = Tally::new();
    static SHARED: Local<Arc<Counted>> = Local::inheritable();
    static VALUE: Local<Counted> = Local::new();
    const TASKS: u64 = 100;
    let rt = multi_thread(2);
    let (tx, rx) = mpsc::channel::<(u64, Option<u64>)>();
    run_tasks(&rt, TASKS, |i| {
        let tx = tx.clone();
        async move {
            SHARED.set(Arc::new(Counted::new(i, &TALLY)));
            VALUE.set(Counted::new(i, &TALLY));
            tasklocal::at_exit(move || {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(10_000 + i, &TALLY));
                    tx.send((i, SHARED.get().map(|s| s.tag))).unwrap();
                });
            });
            tokio::task::yield_now().await;
        }
    });
    drop(tx);
    let mut seen: Vec<_> = (0..TASKS)
        .map(|_| rx.recv_timeout(PATIENCE).expect("a child did not run"))
        .collect();
    seen.sort();
    assert_eq!(seen, (0..TASKS).map(|i| (i, Some(i))).collect::<Vec<_>>());
    TALLY.assert_all_dropped();
    drop(rt);
}

/// After a runtime shut down with a task whose exit handler spawned onto it (the
/// spawn comes too late to run), the same thread's tasks on a new runtime still get
/// storage of their own.
#[test]
fn a_spawn_onto_a_closing_runtime_leaves_later_tasks_their_storage() {
    static VALUE: Local<u64> = Local::new();
    let rt = current_thread();
    let handle = rt.handle().clone();
    rt.block_on(async {
        tokio::spawn(async move {
            VALUE.set(1);
            tasklocal::at_exit(move || {
                // Onto the runtime being shut down (the handle is let go).
                drop(handle.spawn(async { VALUE.set(2) }));
            });
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;
    });
    drop(rt);
    let rt = current_thread();
    let written = in_a_task(&rt, async {
        VALUE.try_set(3).is_ok() && VALUE.get() == Some(3)
    });
    assert!(written);
}

/// `unload()` in an automatic task drops its values now, discards its exit handlers
/// (they never run) and gives it a new id; what it sets afterwards is dropped when the
/// task ends, and handlers registered afterwards run.
#[test]
fn unload_in_an_automatic_task_drops_values_and_discards_handlers() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static DISCARDED: AtomicUsize = AtomicUsize::new(0);
    static RAN: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 100;
    let rt = multi_thread(2);
    run_tasks(&rt, TASKS, |i| async move {
        VALUE.set(Counted::new(i, &TALLY));
        tasklocal::at_exit(|| {
            DISCARDED.fetch_add(1, SeqCst);
        });
        let before = tasklocal::id();
        tokio::task::yield_now().await;
        tasklocal::unload();
        assert_eq!(tag(&VALUE), None);
        let after = tasklocal::id();
        assert_ne!(before, after);
        VALUE.set(Counted::new(1_000 + i, &TALLY));
        count_an_exit_seeing(&VALUE, 1_000 + i, &RAN);
        tokio::task::yield_now().await;
        assert_eq!(tasklocal::id(), after);
        assert_eq!(tag(&VALUE), Some(1_000 + i));
    });
    TALLY.assert_all_dropped();
    drop(rt);
    assert_eq!(TALLY.created(), 2 * TASKS as usize);
    assert_eq!(DISCARDED.load(SeqCst), 0, "unload discards handlers");
    assert_eq!(RAN.load(SeqCst), TASKS as usize);
}

/// `reset()` in an automatic task drops its values now and keeps its id; its exit
/// handlers stay and run at the end, seeing what was set after the reset.
#[test]
fn reset_in_an_automatic_task_drops_values_and_keeps_handlers() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static RAN: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 100;
    let rt = multi_thread(2);
    run_tasks(&rt, TASKS, |i| async move {
        let id = tasklocal::id();
        VALUE.set(Counted::new(i, &TALLY));
        count_an_exit_seeing(&VALUE, 1_000 + i, &RAN);
        tokio::task::yield_now().await;
        tasklocal::reset();
        assert_eq!(tag(&VALUE), None);
        assert_eq!(tasklocal::id(), id);
        VALUE.set(Counted::new(1_000 + i, &TALLY));
        tokio::task::yield_now().await;
    });
    TALLY.assert_all_dropped();
    drop(rt);
    assert_eq!(RAN.load(SeqCst), TASKS as usize);
}

/// A `tasklocal::task` wrapper or a `Snapshot::run` inside an automatic task is the
/// innermost owner: plain `tokio::spawn`s from inside it inherit its values, not the
/// task's; from inside a `Task::isolated` they inherit nothing.
#[test]
// The owners hand back their children's handles, awaited after they ended, on purpose.
#[allow(clippy::async_yields_async)]
fn plain_spawns_inside_a_wrapper_or_a_run_inherit_from_the_innermost_owner() {
    static SHARED: Local<u64> = Local::inheritable();
    in_a_task(&multi_thread(2), async {
        SHARED.set(1);
        let from_wrapper = tasklocal::task(async {
            SHARED.set(2);
            let child = tokio::spawn(async { SHARED.get() });
            tokio::task::yield_now().await;
            child
        })
        .await;
        assert_eq!(from_wrapper.await.unwrap(), Some(2));
        let from_run = Snapshot::capture().run(|| {
            SHARED.set(3);
            tokio::spawn(async { SHARED.get() })
        });
        assert_eq!(from_run.await.unwrap(), Some(3));
        let from_isolated =
            tasklocal::Task::isolated(async { tokio::spawn(async { SHARED.get() }) }).await;
        assert_eq!(from_isolated.await.unwrap(), None);
        assert_eq!(SHARED.get(), Some(1));
    });
}

/// A plain `spawn_blocking` closure has no storage (writes fail); a task it spawns
/// with `Handle::spawn` still gets its own, empty storage: writable, nothing
/// inherited, and nothing of it reaches the task that ran the closure.
#[test]
fn a_task_spawned_from_a_plain_blocking_closure_has_its_own_storage() {
    static SHARED: Local<u64> = Local::inheritable();
    in_a_task(&multi_thread(2), async {
        SHARED.set(5);
        let handle = tokio::runtime::Handle::current();
        let child = tokio::task::spawn_blocking(move || {
            assert!(SHARED.try_set(6).is_err());
            handle.spawn(async {
                let seen = SHARED.get();
                let wrote = SHARED.try_set(7).is_ok();
                tokio::task::yield_now().await;
                (seen, wrote, SHARED.get())
            })
        })
        .await
        .unwrap();
        assert_eq!(child.await.unwrap(), (None, true, Some(7)));
        assert_eq!(SHARED.get(), Some(5));
    });
}

/// `tasklocal::spawn_local` on a `LocalSet` run inside an automatic task: the local
/// task has its own storage, inherits the task's inheritable values (not the others),
/// and its writes never reach the task.
#[test]
fn spawn_local_in_an_automatic_task_inherits_and_writes_its_own_storage() {
    static SHARED: Local<u64> = Local::inheritable();
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    let rt = multi_thread(2);
    in_a_task(&rt, async {
        SHARED.set(1);
        VALUE.set(Counted::new(1, &TALLY));
        let seen = tokio::task::block_in_place(|| {
            let local = tokio::task::LocalSet::new();
            tokio::runtime::Handle::current().block_on(local.run_until(async {
                tasklocal::spawn_local(async {
                    let seen = (SHARED.get(), tag(&VALUE));
                    SHARED.set(2);
                    VALUE.set(Counted::new(2, &TALLY));
                    tokio::task::yield_now().await;
                    (seen, SHARED.get(), tag(&VALUE))
                })
                .await
                .unwrap()
            }))
        });
        assert_eq!(seen, ((Some(1), None), Some(2), Some(2)));
        assert_eq!((SHARED.get(), tag(&VALUE)), (Some(1), Some(1)));
    });
    TALLY.assert_all_dropped();
    drop(rt);
}

/// `Handle::spawn` from a plain std thread: the child inherits the thread owner's
/// inheritable values and MDC as of the spawn; later writes on either side stay apart.
#[test]
fn a_spawn_from_a_std_thread_inherits_the_threads_values() {
    static SHARED: Local<String> = Local::inheritable();
    let rt = multi_thread(2);
    let handle = rt.handle().clone();
    std::thread::spawn(move || {
        SHARED.set("thread".into());
        tasklocal::mdc::insert("k", "thread");
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let child = handle.spawn(async move {
            let first = (SHARED.get(), tasklocal::mdc::get("k"));
            go_rx.await.unwrap();
            let second = SHARED.get();
            SHARED.set("child".into());
            (first, second)
        });
        SHARED.set("thread later".into());
        go_tx.send(()).unwrap();
        let (first, second) = handle.block_on(child).unwrap();
        assert_eq!(first, (Some("thread".into()), Some("thread".into())));
        assert_eq!(second.as_deref(), Some("thread"));
        assert_eq!(SHARED.get().as_deref(), Some("thread later"));
    })
    .join()
    .unwrap();
    drop(rt);
}

/// Parents that keep writing (and touch their MDC) right after each spawn: every
/// child sees the value as of its spawn, never a later one, on 2 workers with the
/// children starting at once.
#[test]
fn children_see_the_value_as_of_their_spawn_while_the_parent_writes_on() {
    static SHARED: Local<u64> = Local::inheritable();
    static WRONG: AtomicUsize = AtomicUsize::new(0);
    let rt = multi_thread(2);
    run_tasks(&rt, 50, |parent| async move {
        let mut children = Vec::new();
        for k in 0..40u64 {
            let value = parent * 1_000 + k;
            SHARED.set(value);
            children.push((value, tokio::spawn(async { SHARED.get() })));
            tasklocal::mdc::insert("k", k.to_string());
            SHARED.set(u64::MAX);
            if k % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for (value, child) in children {
            if child.await.unwrap() != Some(value) {
                WRONG.fetch_add(1, SeqCst);
            }
        }
    });
    assert_eq!(WRONG.load(SeqCst), 0);
}

/// A `tasklocal::task` created in one automatic task and dropped (cancelled) in the
/// poll of another: its teardown runs its own handlers with its own values, and the
/// task that dropped it keeps its values.
#[test]
// The first task hands back the wrapper, to be dropped in the second, on purpose.
#[allow(clippy::async_yields_async)]
fn a_wrapper_dropped_in_another_task_tears_down_as_itself() {
    static SHARED: Local<u64> = Local::inheritable();
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    let rt = multi_thread(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler_seen = seen.clone();
    let wrapper = in_a_task(&rt, async move {
        SHARED.set(1);
        let mut wrapper = Box::pin(tasklocal::task(async move {
            VALUE.set(Counted::new(10, &TALLY));
            tasklocal::at_exit(move || {
                handler_seen
                    .lock()
                    .unwrap()
                    .push((SHARED.get(), tag(&VALUE)));
            });
            std::future::pending::<()>().await
        }));
        assert!(futures::poll!(wrapper.as_mut()).is_pending());
        wrapper
    });
    in_a_task(&rt, async move {
        SHARED.set(2);
        VALUE.set(Counted::new(20, &TALLY));
        tokio::task::yield_now().await;
        drop(wrapper);
        assert_eq!((SHARED.get(), tag(&VALUE)), (Some(2), Some(20)));
    });
    assert_eq!(*seen.lock().unwrap(), [(Some(1), Some(10))]);
    TALLY.assert_all_dropped();
    drop(rt);
}

/// Ids are unique among all storages: automatic tasks (before and after `unload`),
/// wrappers inside them, runs and threads.
#[test]
fn ids_are_unique_across_every_kind_of_owner() {
    let rt = multi_thread(2);
    let ids = rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(async {
                    let task = tasklocal::id();
                    tokio::task::yield_now().await;
                    assert_eq!(tasklocal::id(), task);
                    tasklocal::unload();
                    let unloaded = tasklocal::id();
                    let wrapper = tasklocal::task(async { tasklocal::id() }).await;
                    let run = Snapshot::empty().run(tasklocal::id);
                    let thread = tasklocal::thread::spawn(tasklocal::id).join().unwrap();
                    [task, unloaded, wrapper, run, thread]
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.unwrap());
        }
        all
    }));
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
}
