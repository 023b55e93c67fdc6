#![cfg(tokio_unstable)]
//! Automatic mode (`tasklocal::tokio::install`), the end of a task: exit handlers and
//! drops on completion, abort, panic and runtime shutdown, exactly once. Built only
//! with `--cfg tokio_unstable` (see `automatic.rs`).
//!
//! tokio wakes a `JoinHandle` before it calls the terminate hook, so a joined task's
//! teardown may still run on its worker: tests wait for what the teardown signals
//! (counted drops, handler channels), never for the handle alone.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use support::automatic::{
    assert_handlers_ran, current_thread, multi_thread, set_with_two_handlers, tag, with_timeout,
    Counted, Tally,
};
use tasklocal::Local;

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
                let tx = tx.clone();
                tokio::spawn(async move {
                    set_with_two_handlers(i, &VALUE, &TALLY, &tx);
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
    drop(tx);
    assert_handlers_ran(&rx, TASKS);
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
/// any poll: a `Drop` in it sees no storage (documented), never another owner's (CI
/// once saw the task's own value: a shutdown inside its last poll window).
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
    // Outside any poll a `Drop` sees no storage. Under load the runtime can also shut
    // down while the worker is still inside the task's last poll window: then the
    // `Drop` runs as the task itself and sees its own value. Never anything else.
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for seen in seen {
        assert!(
            seen == (None, true) || seen == (Some(1), false),
            "a future dropped at shutdown saw {seen:?}"
        );
    }
}

/// A task that never touched its storage but inherited values ends without a
/// teardown round of its own (a reference count let go): when it holds the last
/// reference, the values are dropped then — exactly once, not before it ends.
#[test]
// The parent hands back its child's handle, to be awaited later, on purpose.
#[allow(clippy::async_yields_async)]
fn inherited_values_outliving_their_parent_drop_once_when_the_child_ends() {
    static TALLY: Tally = Tally::new();
    static SHARED: Local<std::sync::Arc<Counted>> = Local::inheritable();
    let rt = multi_thread(2);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let child = rt.block_on(async {
        let parent = tokio::spawn(async move {
            SHARED.set(std::sync::Arc::new(Counted::new(1, &TALLY)));
            // Inherits the value; never touches its own storage.
            tokio::spawn(async move {
                let _ = released.await;
            })
        });
        with_timeout(parent).await.unwrap()
    });
    // The parent has ended; the child still holds the value.
    assert_eq!(
        TALLY.dropped(),
        0,
        "dropped while the child still inherits it"
    );
    release.send(()).unwrap();
    rt.block_on(with_timeout(child)).unwrap();
    TALLY.assert_all_dropped();
    drop(rt);
    assert_eq!(TALLY.dropped(), 1, "dropped more than once");
}
