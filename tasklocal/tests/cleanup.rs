//! The end of an owner (SPEC section 5): exit handlers run last-registered first, with
//! every value still readable; then every value is dropped — exactly once, however the
//! owner ends. Handlers and `Drop`s may use the API; a panicking one does not stop the
//! rest; nothing leaks.
//!
//! Every value here is a [`Counted`], whose creation and drop are counted by the
//! [`Probe`] of the owner that holds it, and whose drop is logged.

use std::collections::HashSet;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::task::noop_waker;
use tasklocal::{Local, Snapshot, Task};

#[derive(Default)]
struct Probe {
    created: AtomicUsize,
    dropped: AtomicUsize,
    handlers: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::default()
    }

    fn value(self: &Arc<Self>, name: &'static str) -> Counted {
        self.created.fetch_add(1, Ordering::SeqCst);
        Counted {
            probe: self.clone(),
            name,
        }
    }

    fn log(&self, entry: impl Into<String>) {
        self.log.lock().unwrap().push(entry.into());
    }

    fn entries(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn alive(&self) -> usize {
        self.created.load(Ordering::SeqCst) - self.dropped.load(Ordering::SeqCst)
    }

    fn handlers(&self) -> usize {
        self.handlers.load(Ordering::SeqCst)
    }

    /// The owner that ran [`populate`] with this probe was torn down properly: both
    /// handlers ran once, last registered first, seeing every value; then every value
    /// was dropped, once.
    #[track_caller]
    fn assert_torn_down(&self) {
        let log = self.entries();
        assert!(log.len() >= 2, "handlers did not run: {log:?}");
        assert_eq!(
            log[..2],
            [
                "exit second: typed shared dynamic".to_string(),
                "exit first: typed shared dynamic".to_string()
            ],
            "handlers not FILO or values not readable in them: {log:?}"
        );
        let drops: HashSet<&str> = log[2..].iter().map(String::as_str).collect();
        assert_eq!(drops.len(), log.len() - 2, "a value dropped twice: {log:?}");
        assert_eq!(
            drops,
            HashSet::from(["drop typed", "drop shared", "drop dynamic"]),
            "{log:?}"
        );
        assert_eq!(self.handlers(), 2);
        assert_eq!(self.alive(), 0, "values leaked");
    }

    /// The owner is still alive: nothing ran, nothing was dropped.
    #[track_caller]
    fn assert_alive(&self) {
        assert_eq!(self.entries(), Vec::<String>::new());
        assert_eq!(self.handlers(), 0);
        assert_eq!(self.alive(), 3);
    }
}

/// A value whose creation and drop its probe counts.
struct Counted {
    probe: Arc<Probe>,
    name: &'static str,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.probe.value(self.name)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.probe.dropped.fetch_add(1, Ordering::SeqCst);
        self.probe.log(format!("drop {}", self.name));
    }
}

static TYPED: Local<Counted> = Local::new();
static SHARED: Local<Counted> = Local::inheritable();

fn name(value: Option<&Counted>) -> &'static str {
    value.map_or("-", |v| v.name)
}

/// The names of the values of `populate` visible now.
fn seen() -> String {
    format!(
        "{} {} {}",
        TYPED.with(name),
        SHARED.with(name),
        tasklocal::with(&"dyn", name)
    )
}

/// Gives the current owner three values and two exit handlers.
fn populate(probe: &Arc<Probe>) {
    TYPED.set(probe.value("typed"));
    SHARED.set(probe.value("shared"));
    tasklocal::set("dyn", probe.value("dynamic"));
    for label in ["first", "second"] {
        let probe = probe.clone();
        tasklocal::at_exit(move || {
            probe.handlers.fetch_add(1, Ordering::SeqCst);
            probe.log(format!("exit {label}: {}", seen()));
        });
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn on_completion() {
    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move {
        populate(&p);
        tokio::task::yield_now().await;
        p.assert_alive();
    }));
    probe.assert_torn_down();
}

#[test]
fn on_panic_inside_the_task() {
    // Polled by hand.
    let probe = Probe::new();
    let p = probe.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        block_on(Task::isolated(async move {
            populate(&p);
            panic!("the task fails");
        }))
    }));
    assert!(r.is_err());
    probe.assert_torn_down();
}

#[test]
fn on_dropping_a_task_never_polled() {
    let probe = Probe::new();
    Snapshot::empty().run(|| {
        SHARED.set(probe.value("inherited"));
        let captured = probe.value("captured");
        let task = tasklocal::task(async move {
            let _captured = captured;
            unreachable!("never polled");
        });
        assert_eq!(probe.alive(), 2);
        drop(task);
        // The future went; the inherited value is still the parent's.
        assert_eq!(probe.alive(), 1);
        assert_eq!(SHARED.with(name), "inherited");
    });
    assert_eq!(probe.alive(), 0);
    assert_eq!(probe.entries(), ["drop captured", "drop inherited"]);
}

#[test]
fn on_dropping_a_task_polled_once() {
    /// Part of the future: its `Drop` sees the task's values still in place.
    struct Guard(Arc<Probe>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.log(format!("future dropped: {}", seen()));
        }
    }
    let probe = Probe::new();
    let p = probe.clone();
    let mut task = Box::pin(Task::isolated(async move {
        let _guard = Guard(p.clone());
        populate(&p);
        std::future::pending::<()>().await
    }));
    let waker = noop_waker();
    assert!(task
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    probe.assert_alive();
    drop(task);
    let log = probe.entries();
    assert_eq!(log[0], "future dropped: typed shared dynamic", "{log:?}");
    probe.log.lock().unwrap().remove(0);
    probe.assert_torn_down();

    // Cancelled by `select!`: the losing branch is dropped.
    let probe = Probe::new();
    let p = probe.clone();
    current_thread().block_on(async move {
        let loser = tasklocal::task(async move {
            populate(&p);
            std::future::pending::<()>().await
        });
        tokio::select! {
            biased;
            _ = loser => unreachable!(),
            _ = tokio::task::yield_now() => {}
        }
        probe.assert_torn_down();
    });
}

#[test]
fn on_snapshot_run_returning_and_panicking() {
    let probe = Probe::new();
    let id = Snapshot::empty().run(|| {
        populate(&probe);
        probe.assert_alive();
        tasklocal::id()
    });
    probe.assert_torn_down();
    assert_ne!(id, tasklocal::id());

    let probe = Probe::new();
    let r = catch_unwind(AssertUnwindSafe(|| {
        Snapshot::empty().run(|| {
            populate(&probe);
            panic!("inside run");
        })
    }));
    assert!(r.is_err());
    probe.assert_torn_down();
}

#[test]
fn on_tasklocal_thread_spawn() {
    let probe = Probe::new();
    let p = probe.clone();
    tasklocal::thread::spawn(move || populate(&p))
        .join()
        .unwrap();
    probe.assert_torn_down();

    let probe = Probe::new();
    let p = probe.clone();
    let r = tasklocal::thread::spawn(move || {
        populate(&p);
        panic!("thread fails");
    })
    .join();
    assert!(r.is_err());
    probe.assert_torn_down();
}

#[test]
fn on_plain_thread_exit() {
    // The thread's own storage: handlers run at thread exit, after the closure.
    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || {
        populate(&p);
        p.log("closure returns");
    })
    .join()
    .unwrap();
    let log = probe.entries();
    assert_eq!(log[0], "closure returns");
    probe.log.lock().unwrap().remove(0);
    probe.assert_torn_down();

    // Also when the thread unwinds.
    let probe = Probe::new();
    let p = probe.clone();
    let r = std::thread::spawn(move || {
        populate(&p);
        panic!("thread fails");
    })
    .join();
    assert!(r.is_err());
    probe.assert_torn_down();
}

/// A value whose `Drop` uses the API: reads, sets a value, registers a handler.
struct Busy(Arc<Probe>);

impl Drop for Busy {
    fn drop(&mut self) {
        let probe = self.0.clone();
        probe.log(format!("busy drop sees: {}", seen()));
        let _ = tasklocal::id();
        let _ = Snapshot::capture();
        tasklocal::set("set by drop", probe.value("set by drop"));
        let p = probe.clone();
        tasklocal::at_exit(move || p.log("handler registered by drop"));
    }
}

static BUSY: Local<Busy> = Local::new();

/// Handlers and a `Drop` that use the API during teardown.
fn populate_busy(probe: &Arc<Probe>) {
    TYPED.set(probe.value("typed"));
    BUSY.set(Busy(probe.clone()));
    let p = probe.clone();
    tasklocal::at_exit(move || {
        p.log(format!("handler sees: {}", seen()));
        let _ = tasklocal::id();
        let _ = Snapshot::capture();
        // Replaces a value: the old one is dropped now, the new one later.
        TYPED.set(p.value("set by handler"));
        SHARED.set(p.value("shared by handler"));
        tasklocal::set("dyn", p.value("dynamic by handler"));
        let q = p.clone();
        tasklocal::at_exit(move || q.log(format!("nested handler sees: {}", seen())));
    });
}

#[track_caller]
fn assert_busy_torn_down(probe: &Probe) {
    let log = probe.entries();
    let expected_order = [
        "handler sees: typed - -",
        "drop typed",
        "nested handler sees: set by handler shared by handler dynamic by handler",
    ];
    let positions: Vec<_> = expected_order
        .iter()
        .map(|e| {
            log.iter()
                .position(|l| l == e)
                .unwrap_or_else(|| panic!("{e:?} missing: {log:?}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{log:?}");
    // The values are taken out together and then dropped: a `Drop` sees the others
    // already gone.
    for entry in [
        "busy drop sees: - - -",
        "handler registered by drop",
        "drop set by handler",
        "drop shared by handler",
        "drop dynamic by handler",
        "drop set by drop",
    ] {
        assert!(log.iter().any(|l| l == entry), "{entry:?} missing: {log:?}");
    }
    assert_eq!(probe.alive(), 0, "values leaked: {log:?}");
}

#[test]
fn handlers_and_drops_may_use_the_api_during_teardown() {
    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move { populate_busy(&p) }));
    assert_busy_torn_down(&probe);

    let probe = Probe::new();
    Snapshot::empty().run(|| populate_busy(&probe));
    assert_busy_torn_down(&probe);

    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || populate_busy(&p))
        .join()
        .unwrap();
    assert_busy_torn_down(&probe);
}

/// Its `Drop` panics, after counting itself as dropped.
struct PanicsOnDrop(Counted);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop of {} fails", self.0.name);
    }
}

static FAILING: Local<PanicsOnDrop> = Local::new();

fn populate_failing(probe: &Arc<Probe>) {
    populate(probe);
    FAILING.set(PanicsOnDrop(probe.value("failing")));
    tasklocal::set(1u8, PanicsOnDrop(probe.value("failing dynamic")));
    let p = probe.clone();
    tasklocal::at_exit(move || {
        p.handlers.fetch_add(1, Ordering::SeqCst);
        panic!("handler fails")
    });
}

#[track_caller]
fn assert_failing_torn_down(probe: &Probe) {
    let log = probe.entries();
    // The panicking handler ran first (last registered), then both others.
    assert_eq!(probe.handlers(), 3, "{log:?}");
    assert_eq!(log[0], "exit second: typed shared dynamic");
    assert_eq!(log[1], "exit first: typed shared dynamic");
    assert_eq!(probe.alive(), 0, "values leaked: {log:?}");
}

#[test]
fn a_panicking_handler_or_drop_does_not_stop_the_rest() {
    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move { populate_failing(&p) }));
    assert_failing_torn_down(&probe);

    let probe = Probe::new();
    Snapshot::empty().run(|| populate_failing(&probe));
    assert_failing_torn_down(&probe);

    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || populate_failing(&p))
        .join()
        .unwrap();
    assert_failing_torn_down(&probe);
}

#[test]
fn unload_discards_handlers_drops_values_and_gives_a_new_id() {
    let check = |probe: &Arc<Probe>| {
        populate(probe);
        let before = tasklocal::id();
        tasklocal::unload();
        // Values dropped now; handlers discarded, not run.
        assert_eq!(probe.alive(), 0);
        assert_eq!(probe.handlers(), 0);
        assert_eq!(seen(), "- - -");
        let after = tasklocal::id();
        assert_ne!(before, after);
        assert_eq!(tasklocal::id(), after);
        // The owner goes on with a fresh storage, torn down at its end as usual.
        TYPED.set(probe.value("after unload"));
        let p = probe.clone();
        tasklocal::at_exit(move || p.log(format!("handler after unload sees: {}", seen())));
    };
    let assert_end = |probe: &Probe| {
        assert_eq!(probe.handlers(), 0, "a discarded handler ran");
        let log = probe.entries();
        let tail = &log[log.len() - 2..];
        assert_eq!(
            tail,
            [
                "handler after unload sees: after unload - -",
                "drop after unload"
            ]
        );
        assert_eq!(probe.alive(), 0);
    };

    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move { check(&p) }));
    assert_end(&probe);

    let probe = Probe::new();
    Snapshot::empty().run(|| check(&probe));
    assert_end(&probe);

    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || check(&p)).join().unwrap();
    assert_end(&probe);

    // Unload when nothing was ever stored: harmless.
    Snapshot::empty().run(tasklocal::unload);
}

#[test]
fn reset_drops_values_now_and_keeps_handlers_and_id() {
    let check = |probe: &Arc<Probe>| {
        populate(probe);
        let id = tasklocal::id();
        tasklocal::reset();
        assert_eq!(probe.alive(), 0, "values not dropped by reset");
        assert_eq!(seen(), "- - -");
        assert_eq!(tasklocal::id(), id);
        assert_eq!(probe.handlers(), 0);
        TYPED.set(probe.value("typed"));
        SHARED.set(probe.value("shared"));
        tasklocal::set("dyn", probe.value("dynamic"));
        probe.log.lock().unwrap().clear();
    };
    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move { check(&p) }));
    probe.assert_torn_down();

    let probe = Probe::new();
    Snapshot::empty().run(|| check(&probe));
    probe.assert_torn_down();

    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || check(&p)).join().unwrap();
    probe.assert_torn_down();
}

#[test]
fn reset_keeps_what_was_inherited_by_children_and_snapshots() {
    let probe = Probe::new();
    Snapshot::empty().run(|| {
        SHARED.set(probe.value("shared"));
        let snapshot = Snapshot::capture();
        tasklocal::reset();
        assert_eq!(SHARED.with(name), "-");
        assert_eq!(probe.alive(), 1, "the snapshot's value went too");
        assert_eq!(snapshot.run(|| SHARED.with(name)), "shared");
        drop(snapshot);
        assert_eq!(probe.alive(), 0);
    });
}

#[test]
fn teardown_runs_exactly_once_even_if_polled_by_many_executors_in_turn() {
    // A task completes; its `Task` is dropped later: no second teardown.
    let probe = Probe::new();
    let p = probe.clone();
    let mut task = Box::pin(Task::isolated(async move { populate(&p) }));
    let waker = noop_waker();
    assert_eq!(
        task.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(())
    );
    probe.assert_torn_down();
    drop(task);
    probe.assert_torn_down();
}

#[test]
fn owners_ended_inside_a_teardown_are_torn_down_too() {
    // A value that is itself a pending `Task` with values and handlers of its own,
    // and a handler that runs a whole owner: both nest inside the outer teardown.
    static INNER: Local<std::pin::Pin<Box<Task<std::future::Pending<()>>>>> = Local::new();
    let outer = Probe::new();
    let inner = Probe::new();
    let nested_run = Probe::new();
    let nested_task = Probe::new();
    let (o, i, n, t) = (
        outer.clone(),
        inner.clone(),
        nested_run.clone(),
        nested_task.clone(),
    );
    block_on(Task::isolated(async move {
        populate(&o);
        let mut task = Box::pin(Task::isolated(std::future::pending::<()>()));
        // Give the inner task values by polling a wrapper that populates first.
        let mut setup = Box::pin(Task::isolated(async move {
            populate(&i);
            std::future::pending::<()>().await
        }));
        let waker = noop_waker();
        assert!(setup
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        INNER.set(task);
        tasklocal::set("setup", Mutex::new(setup));
        tasklocal::at_exit(move || {
            Snapshot::empty().run(|| populate(&n));
            // (`block_on` cannot nest in `block_on`: poll by hand.)
            let mut task = Box::pin(Task::isolated(async move { populate(&t) }));
            let waker = noop_waker();
            assert!(task
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready());
        });
    }));
    outer.assert_torn_down();
    inner.assert_torn_down();
    nested_run.assert_torn_down();
    nested_task.assert_torn_down();
}

#[test]
fn a_task_dropped_by_a_thread_local_destructor_is_torn_down_like_any_other() {
    // Held in a thread-local registered before tasklocal's own: at thread exit it is
    // dropped after the thread's own storage is torn down. The task is still an owner
    // of its own: handlers run FILO with its values readable, then every value is
    // dropped.
    type Held = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    thread_local! {
        static HELD: std::cell::RefCell<Vec<Held>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let probe = Probe::new();
    let p = probe.clone();
    std::thread::spawn(move || {
        HELD.with(|_| ()); // registered first, destroyed last
        let mut task: Held = Box::pin(Task::isolated(async move {
            populate(&p);
            std::future::pending::<()>().await
        }));
        let waker = noop_waker();
        assert!(task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        HELD.with(|held| held.borrow_mut().push(task));
    })
    .join()
    .unwrap();
    probe.assert_torn_down();
}

/// Tasks spawned on tokio runtimes.
#[cfg(feature = "tokio")]
mod with_tokio {
    use super::*;
    use std::sync::mpsc;

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn on_completion_of_a_spawned_task() {
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            tasklocal::spawn(async move {
                populate(&p);
                tokio::task::yield_now().await;
            })
            .await
            .unwrap();
            // Torn down before the join handle resolves.
            probe.assert_torn_down();
        });
    }

    #[test]
    fn on_abort() {
        let rt = multi_thread();
        rt.block_on(async {
            let probe = Probe::new();
            let p = probe.clone();
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            let handle = tasklocal::spawn(async move {
                populate(&p);
                ready.send(()).unwrap();
                std::future::pending::<()>().await
            });
            is_ready.await.unwrap();
            probe.assert_alive();
            handle.abort();
            assert!(handle.await.unwrap_err().is_cancelled());
            probe.assert_torn_down();
        });
    }

    #[test]
    fn on_panic_inside_a_spawned_task() {
        let rt = multi_thread();
        rt.block_on(async {
            let probe = Probe::new();
            let p = probe.clone();
            let handle = tasklocal::spawn(async move {
                populate(&p);
                tokio::task::yield_now().await;
                panic!("the task fails");
            });
            assert!(handle.await.unwrap_err().is_panic());
            probe.assert_torn_down();
        });
    }

    #[test]
    fn on_runtime_shutdown_with_pending_tasks() {
        for flavor in ["multi_thread", "current_thread"] {
            let rt = match flavor {
                "multi_thread" => multi_thread(),
                _ => current_thread(),
            };
            let (ready, is_ready) = mpsc::channel();
            let probes: Vec<_> = (0..50).map(|_| Probe::new()).collect();
            // Some tasks run and wait forever; some are never polled at all.
            let never_polled = Probe::new();
            rt.block_on(async {
                for probe in &probes {
                    let probe = probe.clone();
                    let ready = ready.clone();
                    tasklocal::spawn(async move {
                        populate(&probe);
                        ready.send(()).unwrap();
                        std::future::pending::<()>().await
                    });
                }
                for _ in &probes {
                    // Wait without blocking the runtime's only thread.
                    loop {
                        match is_ready.try_recv() {
                            Ok(()) => break,
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                }
            });
            {
                let _guard = rt.enter();
                let value = never_polled.value("captured");
                tasklocal::spawn(async move {
                    let _value = value;
                    std::future::pending::<()>().await
                });
            }
            for probe in &probes {
                probe.assert_alive();
            }
            assert_eq!(never_polled.alive(), 1);
            drop(rt);
            for probe in &probes {
                probe.assert_torn_down();
            }
            assert_eq!(never_polled.alive(), 0, "{flavor}");
        }
    }

    #[test]
    fn spawn_blocking_is_torn_down_when_the_closure_returns() {
        let rt = multi_thread();
        rt.block_on(async {
            let probe = Probe::new();
            let p = probe.clone();
            tasklocal::spawn_blocking(move || populate(&p))
                .await
                .unwrap();
            probe.assert_torn_down();
        });
    }

    #[test]
    fn handlers_and_drops_of_an_aborted_task_may_use_the_api() {
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let handle = tasklocal::spawn(async move {
                populate_busy(&p);
                std::future::pending::<()>().await
            });
            tokio::task::yield_now().await;
            handle.abort();
            let _ = handle.await;
        });
        assert_busy_torn_down(&probe);
    }

    #[test]
    fn a_panicking_handler_or_drop_in_a_task_unwinding_from_a_panic() {
        // During unwinding from a panicking task.
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let err = tasklocal::spawn(async move {
                populate_failing(&p);
                panic!("task fails");
            })
            .await
            .unwrap_err();
            assert!(err.is_panic());
        });
        assert_failing_torn_down(&probe);
    }

    #[test]
    fn a_hundred_thousand_tasks_leak_nothing() {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        static HANDLERS: AtomicUsize = AtomicUsize::new(0);
        #[derive(Clone)]
        struct Small;
        impl Small {
            fn new() -> Small {
                CREATED.fetch_add(1, Ordering::Relaxed);
                Small
            }
        }
        impl Drop for Small {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        static LOCAL: Local<Small> = Local::new();
        static INHERITED: Local<Small> = Local::inheritable();
        const TASKS: usize = 100_000;
        let rt = multi_thread();
        rt.block_on(Task::isolated(async {
            INHERITED.set(Small::new()); // shared by every task, dropped with this one
            for _ in 0..10 {
                let handles: Vec<_> = (0..TASKS / 10)
                    .map(|i| {
                        tasklocal::spawn(async move {
                            LOCAL.set(Small::new());
                            tasklocal::set("small", Small::new());
                            if i % 2 == 0 {
                                // Copy on write of the inherited value.
                                INHERITED.set(Small::new());
                            }
                            tasklocal::at_exit(|| {
                                HANDLERS.fetch_add(1, Ordering::Relaxed);
                            });
                            tokio::task::yield_now().await;
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            }
        }));
        drop(rt);
        assert_eq!(HANDLERS.load(Ordering::Relaxed), TASKS);
        assert_eq!(CREATED.load(Ordering::Relaxed), 1 + 2 * TASKS + TASKS / 2);
        assert_eq!(
            DROPPED.load(Ordering::Relaxed),
            CREATED.load(Ordering::Relaxed),
            "values leaked"
        );
    }
}

/// A child that never touched its storage but holds the last reference to the values
/// it inherited drops them at its end, as its own: their `Drop` writes into the
/// child's storage (torn down too), never into the parent's.
#[test]
fn inherited_values_last_held_by_an_untouched_child_drop_as_the_childs() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct WritesOnDrop;
    impl Drop for WritesOnDrop {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
            tasklocal::set("written by a drop", 1u8);
        }
    }
    static LAST: tasklocal::Local<Arc<WritesOnDrop>> = tasklocal::Local::inheritable();
    tasklocal::Snapshot::empty().run(|| {
        let seed = tasklocal::Snapshot::empty().with_value(&LAST, Arc::new(WritesOnDrop));
        let child = seed.task(async {});
        drop(seed); // the child now holds the only reference
        futures::executor::block_on(child);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        assert_eq!(tasklocal::get::<_, u8>(&"written by a drop"), None);
    });
}
