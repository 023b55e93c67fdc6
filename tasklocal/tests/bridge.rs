//! Bridges (SPEC section 9): a library's thread-local follows the current owner on
//! every switch — task polls, `Snapshot::run`, threads, teardown — and is restored
//! after every one, also when the poll or the bridge panics.
//!
//! Bridges are process-wide, so every test here registers its own, keyed by a `Local`
//! of its own: the others see nothing of it.
#![cfg(feature = "tokio")]

mod support;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use tasklocal::bridge::{self, Bridge};
use tasklocal::Local;

thread_local! {
    /// The library's thread-local that should mirror `OWNER_VALUE`.
    static MIRROR: Cell<Option<u64>> = const { Cell::new(None) };
    static SAVED: RefCell<Vec<Option<u64>>> = const { RefCell::new(Vec::new()) };
}

static OWNER_VALUE: Local<u64> = Local::inheritable();
/// Set in an owner: its `enter` panics.
static PANIC_ON_ENTER: Local<bool> = Local::inheritable();
/// Set in an owner: its `exit` panics.
static PANIC_ON_EXIT: Local<bool> = Local::inheritable();

static ENTERS: AtomicUsize = AtomicUsize::new(0);
static EXITS: AtomicUsize = AtomicUsize::new(0);

struct Mirror;

impl Bridge for Mirror {
    fn enter(&self) {
        if PANIC_ON_ENTER.get() == Some(true) {
            panic!("bridge enter fails on purpose");
        }
        ENTERS.fetch_add(1, Ordering::Relaxed);
        let previous = MIRROR.replace(OWNER_VALUE.get());
        SAVED.with(|s| s.borrow_mut().push(previous));
    }

    fn exit(&self) {
        EXITS.fetch_add(1, Ordering::Relaxed);
        let previous = SAVED.with(|s| s.borrow_mut().pop()).flatten();
        MIRROR.set(previous);
        if PANIC_ON_EXIT.get() == Some(true) {
            panic!("bridge exit fails on purpose");
        }
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| bridge::register(Mirror).unwrap());
}

/// The 2-worker runtime every test here runs on.
fn runtime() -> tokio::runtime::Runtime {
    support::runtime::multi_thread(2)
}

#[test]
fn every_task_sees_its_own_value_across_polls_and_workers() {
    install();
    let rt = runtime();
    let mismatches = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..400u64 {
            let mine = mismatches.clone();
            handles.push(tasklocal::spawn(async move {
                OWNER_VALUE.set(i);
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                    if MIRROR.get() != Some(i) {
                        mine.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            // Plain tokio tasks beside them, on the same workers: never a task's value.
            let plain = mismatches.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                    if MIRROR.get().is_some() {
                        plain.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(mismatches.load(Ordering::Relaxed), 0);
    // Each worker's thread-local is restored after every poll.
    rt.block_on(async {
        let seen = tokio::spawn(async { MIRROR.get() }).await.unwrap();
        assert_eq!(seen, None);
    });
}

#[test]
fn children_inherit_and_the_thread_is_restored() {
    install();
    let rt = runtime();
    rt.block_on(tasklocal::task(async {
        OWNER_VALUE.set(7);
        assert_eq!(MIRROR.get(), None, "a write shows at the next switch");
        let child = tasklocal::spawn(async { MIRROR.get() }).await.unwrap();
        assert_eq!(child, Some(7));
        let blocking = tasklocal::spawn_blocking(|| MIRROR.get()).await.unwrap();
        assert_eq!(blocking, Some(7));
        let thread = tasklocal::thread::spawn(|| MIRROR.get()).join().unwrap();
        assert_eq!(thread, Some(7));
    }));
    assert_eq!(MIRROR.get(), None);
}

#[test]
fn owners_nest() {
    install();
    tasklocal::Snapshot::empty().run(|| {
        OWNER_VALUE.set(1);
        let outer = tasklocal::Snapshot::capture();
        outer.run(|| {
            assert_eq!(MIRROR.get(), Some(1));
            OWNER_VALUE.set(2);
            tasklocal::Snapshot::capture().run(|| {
                assert_eq!(MIRROR.get(), Some(2));
                let inner = futures::executor::block_on(tasklocal::task(async {
                    OWNER_VALUE.set(3);
                    tasklocal::Task::isolated(async { MIRROR.get() }).await
                }));
                assert_eq!(
                    inner, None,
                    "an isolated task mirrors its own (empty) state"
                );
                assert_eq!(MIRROR.get(), Some(2));
            });
            assert_eq!(MIRROR.get(), Some(1));
        });
    });
    assert_eq!(MIRROR.get(), None);
}

#[test]
fn a_panicking_poll_restores_the_thread() {
    install();
    let task = tasklocal::task(async {
        OWNER_VALUE.set(9);
        tasklocal::Task::isolated(async {
            OWNER_VALUE.set(10);
            panic!("the poll fails");
        })
        .await
    });
    let result = panic::catch_unwind(AssertUnwindSafe(|| futures::executor::block_on(task)));
    assert!(result.is_err());
    assert_eq!(MIRROR.get(), None);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
}

#[test]
fn exit_handlers_and_drops_run_with_the_owner_mirrored() {
    install();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let task = tasklocal::task(async {
        OWNER_VALUE.set(5);
        tasklocal::at_exit(|| {
            if MIRROR.get() == Some(5) {
                SEEN.fetch_add(1, Ordering::SeqCst);
            }
            // A handler may call the API during teardown: no deadlock.
            let _ = tasklocal::Snapshot::capture().run(|| OWNER_VALUE.get());
        });
        std::future::pending::<()>().await
    });
    let mut task = Box::pin(task);
    let waker = futures::task::noop_waker();
    let _ = task
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    drop(task); // cancelled: the teardown enters the owner again
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
    assert_eq!(MIRROR.get(), None);
    use std::future::Future;
}

#[test]
fn a_panicking_bridge_does_not_corrupt_the_owner() {
    install();
    static OTHER: Local<&str> = Local::new();
    OTHER.set("thread");
    // `enter` panics: the poll panics, and the thread's own owner is current again.
    let task = tasklocal::task(async {});
    let result = tasklocal::Snapshot::empty().run(|| {
        PANIC_ON_ENTER.set(true);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(tasklocal::task(async { OTHER.set("task") }))
        }));
        // The run's own teardown enters it again.
        PANIC_ON_ENTER.set(false);
        result
    });
    assert!(result.is_err());
    assert_eq!(OTHER.get(), Some("thread"));
    assert_eq!(MIRROR.get(), None);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
    futures::executor::block_on(task);

    // `exit` panics: every bridge is exited, the owner switched back, then the panic
    // continues in the code that switched.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        tasklocal::Snapshot::empty().run(|| {
            PANIC_ON_EXIT.set(true);
            OWNER_VALUE.set(3);
            futures::executor::block_on(tasklocal::task(async { MIRROR.get() }))
        })
    }));
    assert!(result.is_err());
    assert_eq!(OTHER.get(), Some("thread"));
    assert_eq!(MIRROR.get(), None);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
}

#[test]
fn a_panicking_exit_in_a_poll_switches_back_before_the_panic_continues() {
    install();
    static TASK_ONLY: Local<&str> = Local::new();
    tasklocal::Snapshot::empty().run(|| {
        OWNER_VALUE.set(3);
        // An owner entered with the value: the bridge shows it.
        tasklocal::Snapshot::capture().run(|| {
            assert_eq!(MIRROR.get(), Some(3));
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                futures::executor::block_on(tasklocal::Task::isolated(async {
                    TASK_ONLY.set("task");
                    // Only this task's `exit` panics: its own value.
                    PANIC_ON_EXIT.set(true);
                }))
            }));
            assert!(result.is_err());
            // Where the panic is caught, the run's owner is current again, and the
            // bridge shows it again.
            assert_eq!(TASK_ONLY.get(), None);
            assert_eq!(OWNER_VALUE.get(), Some(3));
            assert_eq!(MIRROR.get(), Some(3));
        });
    });
    assert_eq!(MIRROR.get(), None);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
}

#[test]
fn enters_and_exits_pair_up() {
    install();
    let rt = runtime();
    rt.block_on(async {
        let handles: Vec<_> = (0..100u64)
            .map(|i| {
                tasklocal::spawn(async move {
                    OWNER_VALUE.set(i);
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    drop(rt);
    // Other tests run in parallel: compare at a quiet point of this thread only.
    assert!(ENTERS.load(Ordering::Relaxed) >= 200);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
}

/// Set in an owner: the bridge runs owners of its own in `enter` and `exit`.
static REENTER: Local<bool> = Local::inheritable();

struct Reentrant;

impl Bridge for Reentrant {
    fn enter(&self) {
        if REENTER.get() == Some(true) {
            // A snapshot run and a task poll inside the bridge: no recursion, no deadlock.
            let seen = tasklocal::Snapshot::capture().run(|| OWNER_VALUE.get());
            let polled = futures::executor::block_on(tasklocal::task(async { OWNER_VALUE.get() }));
            assert_eq!(seen, polled);
        }
    }

    fn exit(&self) {
        if REENTER.get() == Some(true) {
            let _ = tasklocal::Snapshot::capture().run(|| OWNER_VALUE.get());
            tasklocal::mdc::insert("seen_by_exit", "1");
        }
    }
}

#[test]
fn a_bridge_may_run_owners_of_its_own() {
    install();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| bridge::register(Reentrant).unwrap());
    let rt = runtime();
    let value = rt.block_on(tasklocal::task(async {
        REENTER.set(true);
        OWNER_VALUE.set(4);
        let child = tasklocal::spawn(async {
            tokio::task::yield_now().await;
            MIRROR.get()
        });
        child.await.unwrap()
    }));
    assert_eq!(value, Some(4));
    assert_eq!(MIRROR.get(), None);
}

thread_local! {
    /// `Late`'s calls on this thread: (enters, exits).
    static LATE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Counts its calls per thread; registered while an owner runs.
struct Late;

impl Bridge for Late {
    fn enter(&self) {
        LATE.set((LATE.get().0 + 1, LATE.get().1));
    }
    fn exit(&self) {
        LATE.set((LATE.get().0, LATE.get().1 + 1));
    }
}

/// A bridge registered while an owner is current sees neither the `enter` nor the
/// `exit` of that owner (each switch exits exactly the bridges it entered), and both of
/// every owner entered afterwards.
#[test]
fn a_bridge_registered_while_an_owner_runs_sees_no_exit_without_its_enter() {
    install();
    futures::executor::block_on(tasklocal::task(async {
        bridge::register(Late).unwrap();
        tasklocal::Snapshot::capture().run(|| {});
        assert_eq!(LATE.get(), (1, 1), "the run entered after registering");
    }));
    // The task's poll was entered without `Late`: its exit did not call it.
    assert_eq!(LATE.get(), (1, 1));
    futures::executor::block_on(tasklocal::Task::isolated(async {}));
    assert_eq!(LATE.get(), (2, 2));
}
