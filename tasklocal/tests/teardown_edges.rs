//! The end of an owner (SPEC section 5), the edges: a task dropped inside another
//! owner tears down in its own storage, the future's own `Drop` included; a snapshot's
//! run ends before it returns; handlers and `Drop`s that use the API during the
//! teardown — set values, register handlers, `unload`, `reset`, spawn children, enter
//! owners — in every kind of owner, leak nothing and never hang; handlers run
//! last-registered first across polls on two workers, see what the owner inherited and
//! its initial values, and a panicking one does not stop the rest. Thread-local
//! destructors at thread exit, shared inheritable values and ten thousand tasks:
//! `teardown_leaks.rs`; the common cases: `cleanup.rs`, `cleanup_tokio.rs`.
//!
//! Values are `Counted`s, whose drops the `Probe` of the test counts
//! (`support::teardown`); the probe also serves as the test's log.
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::task::noop_waker;
use support::fresh;
use support::runtime::{current_thread, multi_thread};
use support::teardown::{Counted, Probe};
use tasklocal::{Local, Snapshot, Task};

static NAME: Local<String> = Local::new();
static INHERITED: Local<String> = Local::inheritable();
static VALUE: Local<Counted> = Local::new();
static OTHER_VALUE: Local<Counted> = Local::new();

/// Polls `future` once, with a waker that does nothing.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(&noop_waker()))
}

/// A task of the current owner, polled once: it ran `start` and, holding what `start`
/// returned, waits for ever.
fn started_task<G: Send + 'static>(
    start: impl FnOnce() -> G + Send + 'static,
) -> Pin<Box<impl Future<Output = ()>>> {
    let mut task = Box::pin(tasklocal::task(async move {
        let _held = start();
        std::future::pending::<()>().await
    }));
    assert!(poll_once(task.as_mut()).is_pending());
    task
}

/// Values dropped so far.
fn dropped(probe: &Probe) -> usize {
    probe.dropped.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------
// Where a task's teardown runs.
// ---------------------------------------------------------------------------

#[test]
fn a_task_dropped_inside_another_owner_tears_down_in_its_own_storage() {
    let log = Probe::new();
    fresh(|| {
        NAME.set("outer".into());
        let l = log.clone();
        let task = started_task(move || {
            NAME.set("task".into());
            tasklocal::at_exit(move || {
                l.log(format!("handler sees {:?}", NAME.get()));
                NAME.set("set by handler".into());
                tasklocal::set("k", 1u8);
            });
        });
        assert_eq!(NAME.get().as_deref(), Some("outer"));
        drop(task);
        // What the handler set went with the task, not into the dropper.
        assert_eq!(NAME.get().as_deref(), Some("outer"));
        assert_eq!(tasklocal::get::<_, u8>(&"k"), None);
    });
    assert_eq!(log.entries(), ["handler sees Some(\"task\")"]);
}

#[test]
fn the_futures_own_drop_runs_inside_the_task_on_cancel_and_abort() {
    /// Part of the future: its `Drop` logs the task's `NAME`.
    struct Guard(Arc<Probe>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.log(format!("guard sees {:?}", NAME.get()));
        }
    }
    // Cancelled: dropped after a poll.
    let log = Probe::new();
    fresh(|| {
        NAME.set("outer".into());
        let l = log.clone();
        let task = started_task(move || {
            NAME.set("task".into());
            Guard(l)
        });
        drop(task);
    });
    assert_eq!(log.entries(), ["guard sees Some(\"task\")"]);
    // Aborted, on a multi-thread runtime.
    let log = Probe::new();
    multi_thread(2).block_on(async {
        let l = log.clone();
        let (started, is_started) = tokio::sync::oneshot::channel();
        let handle = tasklocal::spawn(async move {
            NAME.set("spawned".into());
            let _guard = Guard(l);
            started.send(()).unwrap();
            std::future::pending::<()>().await
        });
        is_started.await.unwrap();
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
    });
    assert_eq!(log.entries(), ["guard sees Some(\"spawned\")"]);
}

#[test]
fn dropping_a_started_task_inside_with_of_a_non_inheritable_key_leaks_nothing() {
    let probe = Probe::new();
    fresh(|| {
        NAME.set("outer".into());
        let p = probe.clone();
        let task = started_task(move || {
            VALUE.set(p.value("task's"));
            tasklocal::at_exit(move || {
                p.handlers.fetch_add(1, Ordering::SeqCst);
            });
        });
        // Whether the drop is served or refused inside the borrow, the task's value must
        // not leak and its handler must run exactly once (now or later); the dropping
        // owner stays intact.
        let _ = catch_unwind(AssertUnwindSafe(|| NAME.with(|_| drop(task))));
        assert_eq!(NAME.get().as_deref(), Some("outer"));
        assert_eq!(VALUE.with(|v| v.map(|v| v.name)), None);
    });
    assert_eq!(dropped(&probe), 1, "the dropped task's value leaked");
    assert_eq!(probe.handlers(), 1);
}

#[test]
fn snapshot_run_ends_its_owner_before_returning_even_when_f_spawns_children() {
    let log = Probe::new();
    multi_thread(2).block_on(async {
        let l = log.clone();
        let child = Snapshot::empty().run(move || {
            INHERITED.set("run".into());
            tasklocal::at_exit(move || l.log("run ended"));
            tasklocal::spawn(async { INHERITED.get() })
        });
        log.log("run returned");
        assert_eq!(child.await.unwrap().as_deref(), Some("run"));
    });
    assert_eq!(log.entries(), ["run ended", "run returned"]);
}

// ---------------------------------------------------------------------------
// Handlers and `Drop`s that use the API during the teardown.
// ---------------------------------------------------------------------------

#[test]
fn handlers_registered_by_handlers_during_teardown_are_not_leaked() {
    let marker = Arc::new(());
    let m = marker.clone();
    block_on(Task::isolated(async move {
        tasklocal::at_exit(move || {
            let held = m.clone();
            tasklocal::at_exit(move || drop(held));
            drop(m);
        });
    }));
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "a handler registered during teardown leaked"
    );
}

/// A value whose `Drop` sets a typed and a dynamic value and registers a handler that
/// holds a third; all four are `Counted`.
struct SetsOnDrop {
    probe: Arc<Probe>,
    _own: Counted,
}

impl SetsOnDrop {
    fn new(probe: &Arc<Probe>) -> SetsOnDrop {
        SetsOnDrop {
            probe: probe.clone(),
            _own: probe.value("sets on drop"),
        }
    }
}

impl Drop for SetsOnDrop {
    fn drop(&mut self) {
        let probe = &self.probe;
        probe.log(format!("drop sees {:?}", NAME.get()));
        let _ = OTHER_VALUE.try_set(probe.value("set by drop"));
        tasklocal::set("set by drop", probe.value("dynamic set by drop"));
        let held = probe.value("held by handler");
        let _ = tasklocal::try_at_exit(move || drop(held));
    }
}

static SETS_ON_DROP: Local<SetsOnDrop> = Local::new();

#[test]
fn drops_using_the_api_during_teardown_leak_nothing_in_every_kind_of_owner() {
    type Owner = fn(Box<dyn FnOnce() + Send>);
    let owners: Vec<(&str, Owner)> = vec![
        ("snapshot run", |f| Snapshot::empty().run(f)),
        ("block_on task", |f| {
            block_on(Task::isolated(async move { f() }))
        }),
        ("thread::spawn", |f| {
            tasklocal::thread::spawn(f).join().unwrap()
        }),
        ("plain thread", |f| std::thread::spawn(f).join().unwrap()),
        ("rayon::install", |f| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            tasklocal::rayon::install(&pool, f)
        }),
        ("rayon::join", |f| {
            tasklocal::rayon::join(f, || ());
        }),
        ("tokio spawn", |f| {
            multi_thread(2)
                .block_on(async move { tasklocal::spawn(async move { f() }).await.unwrap() });
        }),
        ("tokio spawn_blocking", |f| {
            multi_thread(2).block_on(async move { tasklocal::spawn_blocking(f).await.unwrap() });
        }),
        ("tokio abort", |f| {
            multi_thread(2).block_on(async move {
                let (ran, has_run) = tokio::sync::oneshot::channel();
                let handle = tasklocal::spawn(async move {
                    f();
                    ran.send(()).unwrap();
                    std::future::pending::<()>().await
                });
                has_run.await.unwrap();
                handle.abort();
                let _ = handle.await;
            });
        }),
        ("tokio shutdown", |f| {
            // A current-thread runtime's drop tears its pending tasks down before it
            // returns.
            let rt = current_thread();
            rt.block_on(async move {
                let (ran, has_run) = tokio::sync::oneshot::channel();
                tasklocal::spawn(async move {
                    f();
                    ran.send(()).unwrap();
                    std::future::pending::<()>().await
                });
                has_run.await.unwrap();
            });
            drop(rt);
        }),
    ];
    for (what, owner) in owners {
        let probe = Probe::new();
        let p = probe.clone();
        owner(Box::new(move || {
            NAME.set("owner".into());
            VALUE.set(p.value("value"));
            SETS_ON_DROP.set(SetsOnDrop::new(&p));
            let held = p.value("held by handler");
            tasklocal::at_exit(move || {
                let _held = &held;
                SETS_ON_DROP.set(SetsOnDrop::new(&p));
            });
        }));
        // `VALUE` and the handler's value, and two `SetsOnDrop`s, each itself and the
        // three values its drop creates.
        assert_eq!(dropped(&probe), 2 + 2 * 4, "{what}: {:?}", probe.entries());
        assert_eq!(probe.alive(), 0, "{what}: {:?}", probe.entries());
    }
}

#[test]
fn a_handler_that_unloads_or_resets_during_teardown_leaks_nothing_and_does_not_hang() {
    for op in ["unload", "reset"] {
        let probe = Probe::new();
        let marker = Arc::new(());
        let (p, m) = (probe.clone(), marker.clone());
        multi_thread(2).block_on(async move {
            tasklocal::spawn(async move {
                VALUE.set(p.value("value"));
                let held = m.clone();
                tasklocal::at_exit(move || drop(held));
                tasklocal::at_exit(move || {
                    match op {
                        "unload" => tasklocal::unload(),
                        _ => tasklocal::reset(),
                    }
                    OTHER_VALUE.set(p.value("set after the unload or reset"));
                    tasklocal::at_exit(move || drop(m));
                });
            })
            .await
            .unwrap();
        });
        assert_eq!(dropped(&probe), 2, "{op}");
        assert_eq!(Arc::strong_count(&marker), 1, "{op}: a handler leaked");
    }
}

#[test]
fn exit_handlers_that_spawn_children_at_completion_and_at_shutdown_leak_nothing() {
    let marker = Arc::new(());
    // At completion: the child inherits the values the handler reads.
    let m = marker.clone();
    multi_thread(2).block_on(async move {
        let child = Arc::new(Mutex::new(None));
        let c = child.clone();
        tasklocal::spawn(async move {
            INHERITED.set("ending".into());
            tasklocal::at_exit(move || {
                let _held = &m;
                *c.lock().unwrap() = Some(tasklocal::spawn(async { INHERITED.get() }));
            });
        })
        .await
        .unwrap();
        let child = child.lock().unwrap().take().unwrap();
        assert_eq!(child.await.unwrap().as_deref(), Some("ending"));
    });
    // At shutdown: pending tasks whose handlers spawn more tasks, torn down by the drop
    // of a current-thread runtime before it returns.
    let rt = current_thread();
    let (registered, has_registered) = std::sync::mpsc::channel();
    rt.block_on(async {
        let (up, mut is_up) = tokio::sync::mpsc::unbounded_channel::<()>();
        for _ in 0..20 {
            let (m, registered, up) = (marker.clone(), registered.clone(), up.clone());
            tasklocal::spawn(async move {
                up.send(()).unwrap();
                let held = m.clone();
                tasklocal::at_exit(move || {
                    let _ = tokio::runtime::Handle::try_current().map(|_| {
                        tasklocal::spawn(async move {
                            let _held = &held;
                            std::future::pending::<()>().await
                        })
                    });
                });
                registered.send(()).unwrap();
                let _held = &m;
                std::future::pending::<()>().await
            });
        }
        for _ in 0..20 {
            is_up.recv().await.unwrap();
        }
    });
    for _ in 0..20 {
        has_registered.recv().unwrap();
    }
    drop(rt);
    assert_eq!(Arc::strong_count(&marker), 1);
}

#[test]
fn exit_handlers_may_enter_owners_that_inherit_the_ending_owners_values() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    block_on(Task::isolated(async move {
        INHERITED.set("ending".into());
        tasklocal::at_exit(move || {
            let run = Snapshot::capture().run(|| INHERITED.get());
            let mut task = Box::pin(tasklocal::task(async { INHERITED.get() }));
            let Poll::Ready(polled) = poll_once(task.as_mut()) else {
                panic!("the task is pending")
            };
            let thread = tasklocal::thread::spawn(|| INHERITED.get()).join().unwrap();
            let rayon = tasklocal::rayon::join(|| INHERITED.get(), || ()).0;
            s.lock()
                .unwrap()
                .extend([run, polled, thread, rayon, INHERITED.get()]);
        });
    }));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter().all(|v| v.as_deref() == Some("ending")),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------
// What handlers see, and in which order they run.
// ---------------------------------------------------------------------------

#[test]
fn exit_handlers_see_inherited_values_the_task_never_read_and_initial_values() {
    static WITH_INIT: Local<u32> = Local::with_initial(|| 77);
    let log = Probe::new();
    fresh(|| {
        INHERITED.set("parent".into());
        let l = log.clone();
        multi_thread(2).block_on(async move {
            tasklocal::spawn(async move {
                tasklocal::at_exit(move || {
                    l.log(format!("{:?} {:?}", INHERITED.get(), WITH_INIT.get()))
                });
            })
            .await
            .unwrap();
        });
    });
    assert_eq!(log.entries(), ["Some(\"parent\") Some(77)"]);
}

#[test]
fn handler_order_is_last_registered_first_across_polls_on_different_workers() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    multi_thread(2).block_on(async move {
        tasklocal::spawn(async move {
            for i in 0..50 {
                let o = o.clone();
                tasklocal::at_exit(move || o.lock().unwrap().push(i));
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    });
    assert_eq!(*order.lock().unwrap(), (0..50).rev().collect::<Vec<_>>());
}

#[test]
fn a_panicking_handler_in_snapshot_run_does_not_stop_the_rest() {
    let probe = Probe::new();
    let p = probe.clone();
    let _ = catch_unwind(move || {
        Snapshot::empty().run(move || {
            VALUE.set(p.value("value"));
            for fails in [false, true, false] {
                let p = p.clone();
                tasklocal::at_exit(move || {
                    assert!(!fails, "handler fails");
                    p.handlers.fetch_add(1, Ordering::SeqCst);
                });
            }
        })
    });
    assert_eq!(probe.handlers(), 2);
    assert_eq!(dropped(&probe), 1);
}
