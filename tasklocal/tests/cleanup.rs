//! The end of an owner (SPEC section 5): exit handlers run last-registered first, with
//! every value still readable; then every value is dropped — exactly once, however the
//! owner ends. Handlers and `Drop`s may use the API; a panicking one does not stop the
//! rest; nothing leaks. Tasks on tokio runtimes: `cleanup_tokio.rs`.
//!
//! Every value here is a `Counted`, whose creation and drop are counted by the `Probe`
//! of the owner that holds it, and whose drop is logged (`support::teardown`).

mod support;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::task::noop_waker;
use support::runtime::current_thread;
use support::teardown::{
    assert_busy_torn_down, assert_failing_torn_down, name, populate, populate_busy,
    populate_failing, seen, Counted, Probe, SHARED, TYPED,
};
use tasklocal::{Local, Snapshot, Task};

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

/// An inheritable value replaced in its owner is dropped by the write when nothing
/// else holds it — also after a capture that was let go (the copy the owner keeps for
/// its next capture holds no value past a write) — and otherwise when its last holder,
/// a child, ends; the last value goes with the owner.
#[test]
fn a_replaced_inheritable_value_drops_when_its_last_holder_lets_go() {
    static VALUE: Local<Counted> = Local::inheritable();
    let probe = Probe::new();
    let drops = || probe.dropped.load(Ordering::SeqCst);
    Snapshot::empty().run(|| {
        VALUE.set(probe.value("first"));
        drop(Snapshot::capture());
        VALUE.set(probe.value("second"));
        assert_eq!(drops(), 1, "replaced, no child holding it");
        // (`with`, not `get`: a clone would count as a value of its own.)
        let child = tasklocal::task(async { VALUE.with(|v| v.is_some()) });
        VALUE.set(probe.value("third"));
        assert_eq!(drops(), 1, "the child still holds it");
        assert!(block_on(child));
        assert_eq!(drops(), 2, "dropped at the child's end");
    });
    assert_eq!(drops(), 3, "the last one with its owner");
}

#[test]
fn values_beyond_the_first_cells_are_dropped_inside_the_teardown() {
    // A storage keeps its first few keys' values inline and the rest in cells it adds
    // as keys come: both kinds drop inside the teardown, with the owner still
    // current (a `Drop` sees its id), and what such a `Drop` sets is dropped too.
    struct Late(Arc<Mutex<Vec<tasklocal::TaskId>>>);
    impl Drop for Late {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(tasklocal::id());
        }
    }
    struct SetsLate(Arc<Mutex<Vec<tasklocal::TaskId>>>);
    impl Drop for SetsLate {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(tasklocal::id());
            tasklocal::set("set by a drop", Late(self.0.clone()));
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let id = block_on(Task::isolated(async move {
        for key in 0..40u32 {
            tasklocal::set(key, SetsLate(s.clone()));
        }
        tasklocal::id()
    }));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        80,
        "every value and what its drop set, dropped once"
    );
    assert!(
        seen.iter().all(|&dropped_in| dropped_in == id),
        "{seen:?} vs {id}"
    );
    assert!(tasklocal::with(&"set by a drop", |late: Option<&Late>| {
        late.is_none()
    }));
}
