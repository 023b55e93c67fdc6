//! Misuse is caught, not leaked (SPEC section 1): code in a tokio task that has no
//! storage of its own — plain `tokio::spawn`, plain `tokio::task::spawn_blocking` —
//! never falls back to the worker thread's storage. Reads there see nothing (initial
//! values are computed, not stored), writes panic naming `tasklocal::spawn`, and every
//! `try_` form of a write returns an error for which `is_no_storage()` is true.
#![cfg(feature = "tokio")]

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::message;
use support::runtime::{current_thread, multi_thread};
use tasklocal::{Local, Snapshot};
use tokio::runtime::{Builder, Runtime};

/// Runs `f`, which must panic, and returns its panic message.
#[track_caller]
fn panic_message(what: &str, f: impl FnOnce()) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("`{what}` did not panic in a task without storage"),
        Err(payload) => message(payload),
    }
}

/// Asserts that `f` panics with a message naming the fix.
#[track_caller]
fn assert_panics_naming_fix(what: &str, f: impl FnOnce()) {
    let msg = panic_message(what, f);
    assert!(
        msg.contains("tasklocal::spawn"),
        "`{what}` panicked without naming `tasklocal::spawn`: {msg:?}"
    );
}

#[track_caller]
fn assert_no_storage<T: std::fmt::Debug>(what: &str, result: Result<T, tasklocal::AccessError>) {
    match result {
        Ok(v) => panic!("`{what}` succeeded in a task without storage: {v:?}"),
        Err(err) => {
            assert!(err.is_no_storage(), "`{what}`: {err:?}");
            assert!(
                !err.is_borrowed() && !err.is_destroyed(),
                "`{what}`: {err:?}"
            );
            assert!(
                err.to_string().contains("tasklocal::spawn"),
                "`{what}`: the error does not name the fix: {err}"
            );
        }
    }
}

static PLAIN: Local<u64> = Local::new();
static TEXT: Local<String> = Local::new();
static INHERIT: Local<String> = Local::inheritable();
static INHERIT_INIT: Local<u64> = Local::inheritable_with_initial(|| 77);

/// The values the "worker thread" owner sets in its own storage, so that a fallback
/// to it would be visible.
fn set_thread_values(marker: u64) {
    PLAIN.set(marker);
    TEXT.set(format!("thread {marker}"));
    INHERIT.set(format!("inherit {marker}"));
    INHERIT_INIT.set(marker);
    tasklocal::set("dyn", marker);
    tasklocal::set(7u32, format!("dyn {marker}"));
}

fn assert_thread_values(marker: u64) {
    assert_eq!(PLAIN.get(), Some(marker));
    assert_eq!(TEXT.get(), Some(format!("thread {marker}")));
    assert_eq!(INHERIT.get(), Some(format!("inherit {marker}")));
    assert_eq!(INHERIT_INIT.get(), Some(marker));
    assert_eq!(tasklocal::get::<_, u64>(&"dyn"), Some(marker));
    assert_eq!(
        tasklocal::get::<_, String>(&7u32),
        Some(format!("dyn {marker}"))
    );
}

/// Reads in a task without storage: nothing set anywhere is visible.
fn assert_reads_see_nothing() {
    assert_eq!(PLAIN.get(), None);
    assert_eq!(PLAIN.try_get(), Ok(None));
    assert!(!PLAIN.is_set());
    assert_eq!(PLAIN.with(|v| v.copied()), None);
    assert_eq!(PLAIN.try_with(|v| v.copied()), Ok(None));
    assert_eq!(TEXT.get(), None);
    assert_eq!(INHERIT.get(), None);
    assert!(!INHERIT.is_set());
    assert_eq!(INHERIT.with(|v| v.cloned()), None);
    // The initial value, not the thread's value, and not stored.
    assert_eq!(INHERIT_INIT.get(), Some(77));
    assert!(!INHERIT_INIT.is_set());
    assert_eq!(tasklocal::get::<_, u64>(&"dyn"), None);
    assert_eq!(tasklocal::with(&"dyn", |v: Option<&u64>| v.copied()), None);
    assert_eq!(tasklocal::get::<_, String>(&7u32), None);
    // Nothing to inherit either.
    assert_eq!(Snapshot::capture().run(|| INHERIT.get()), None);
    assert_eq!(Snapshot::capture().run(|| INHERIT_INIT.get()), Some(77));
    assert_eq!(
        futures::executor::block_on(tasklocal::task(async { INHERIT.get() })),
        None
    );
}

/// Every write, in both forms, in a task without storage.
fn assert_writes_refused() {
    // `try_` forms: `Err`, `is_no_storage()`.
    assert_no_storage("Local::try_set", PLAIN.try_set(1));
    assert_no_storage("Local::try_set (inheritable)", INHERIT.try_set("x".into()));
    assert_no_storage("Local::try_replace", PLAIN.try_replace(1));
    assert_no_storage("Local::try_take", PLAIN.try_take());
    assert_no_storage("Local::try_take (inheritable)", INHERIT.try_take());
    assert_no_storage("Local::try_with_mut", PLAIN.try_with_mut(|v| *v += 1));
    assert_no_storage(
        "Local::try_with_mut (initial)",
        INHERIT_INIT.try_with_mut(|v| *v += 1),
    );
    assert_no_storage(
        "Local::try_scope",
        PLAIN.try_scope(1, || panic!("ran without storage")),
    );
    assert_no_storage(
        "Local::try_scope (inheritable)",
        INHERIT.try_scope("x".into(), || panic!("ran without storage")),
    );
    assert_no_storage("tasklocal::try_set", tasklocal::try_set("dyn", 1u64));
    assert_no_storage("tasklocal::try_remove", tasklocal::try_remove(&"dyn"));
    assert_no_storage("tasklocal::try_take", tasklocal::try_take::<_, u64>(&"dyn"));
    assert_no_storage("tasklocal::try_id", tasklocal::try_id());
    assert_no_storage(
        "tasklocal::try_at_exit",
        tasklocal::try_at_exit(|| panic!("registered without storage")),
    );

    // Panicking forms: the message names `tasklocal::spawn`.
    assert_panics_naming_fix("Local::set", || PLAIN.set(1));
    assert_panics_naming_fix("Local::set (inheritable)", || INHERIT.set("x".into()));
    assert_panics_naming_fix("Local::replace", || {
        let _ = PLAIN.replace(1);
    });
    assert_panics_naming_fix("Local::take", || {
        let _ = PLAIN.take();
    });
    assert_panics_naming_fix("Local::with_mut", || {
        let _ = PLAIN.with_mut(|v| *v += 1);
    });
    assert_panics_naming_fix("Local::with_mut (initial)", || {
        let _ = INHERIT_INIT.with_mut(|v| *v += 1);
    });
    assert_panics_naming_fix("Local::scope", || PLAIN.scope(1, || ()));
    assert_panics_naming_fix("tasklocal::set", || tasklocal::set("dyn", 1u64));
    assert_panics_naming_fix("tasklocal::remove", || {
        let _ = tasklocal::remove(&"dyn");
    });
    assert_panics_naming_fix("tasklocal::take", || {
        let _ = tasklocal::take::<_, u64>(&"dyn");
    });
    assert_panics_naming_fix("tasklocal::id", || {
        let _ = tasklocal::id();
    });
    assert_panics_naming_fix("tasklocal::at_exit", || {
        tasklocal::at_exit(|| panic!("registered without storage"))
    });

    // `reset` and `unload` have nothing to act on; they must not touch the thread's.
    tasklocal::reset();
    tasklocal::unload();
}

fn in_plain_task_everything_is_refused(rt: &Runtime) {
    rt.block_on(async {
        tokio::spawn(async {
            assert_reads_see_nothing();
            tokio::task::yield_now().await;
            assert_writes_refused();
            tokio::task::yield_now().await;
            assert_reads_see_nothing();
        })
        .await
        .unwrap();
        tokio::task::spawn_blocking(|| {
            assert_reads_see_nothing();
            assert_writes_refused();
            assert_reads_see_nothing();
        })
        .await
        .unwrap();
    });
}

#[test]
fn plain_tasks_without_any_thread_storage_refuse_writes() {
    // A fresh thread: nobody has created a storage on it.
    std::thread::spawn(|| {
        let rt = current_thread();
        in_plain_task_everything_is_refused(&rt);
        // The attempts did not create the thread's storage either.
        rt.block_on(async {
            assert_eq!(PLAIN.get(), None);
            assert_eq!(INHERIT.get(), None);
            assert_eq!(tasklocal::get::<_, u64>(&"dyn"), None);
        });
    })
    .join()
    .unwrap();
}

#[test]

fn plain_task_on_a_thread_with_storage_sees_and_writes_nothing_of_it() {
    std::thread::spawn(|| {
        let rt = current_thread();
        // `block_on` is not a task: this is the worker thread's own storage.
        let thread_id = rt.block_on(async {
            set_thread_values(1);
            tasklocal::id()
        });
        in_plain_task_everything_is_refused(&rt);
        // From the worker thread's perspective nothing changed: same values, same id.
        rt.block_on(async {
            assert_thread_values(1);
            assert_eq!(tasklocal::id(), thread_id);
        });
    })
    .join()
    .unwrap();
}

#[test]

fn plain_task_never_registers_exit_handlers_on_the_worker_thread() {
    static RAN: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        let rt = current_thread();
        rt.block_on(async {
            PLAIN.set(1); // the thread's storage exists
            tokio::spawn(async {
                let _ = tasklocal::try_at_exit(|| RAN.store(true, Ordering::SeqCst));
                let _ = catch_unwind(|| tasklocal::at_exit(|| RAN.store(true, Ordering::SeqCst)));
            })
            .await
            .unwrap();
        });
        drop(rt);
        // The thread's storage is torn down at thread exit, right after this.
    })
    .join()
    .unwrap();
    assert!(
        !RAN.load(Ordering::SeqCst),
        "a handler registered in a plain tokio task ran at the worker thread's exit"
    );
}

#[test]

fn plain_tasks_on_multi_thread_workers_with_storage_see_nothing() {
    const WORKERS: usize = 4;
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let rt = Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        // Every runtime thread (workers and blocking threads) gets values of its own.
        .on_thread_start(|| set_thread_values(1000 + STARTED.fetch_add(1, Ordering::SeqCst) as u64))
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..64 {
            handles.push(tokio::spawn(async {
                for _ in 0..4 {
                    assert_reads_see_nothing();
                    assert_no_storage("Local::try_set", PLAIN.try_set(1));
                    assert_no_storage("tasklocal::try_id", tasklocal::try_id());
                    tokio::task::yield_now().await;
                }
            }));
            handles.push(tokio::task::spawn_blocking(|| {
                assert_reads_see_nothing();
                assert_no_storage("Local::try_set", PLAIN.try_set(1));
                assert_no_storage("tasklocal::try_id", tasklocal::try_id());
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
}

#[test]
fn initial_values_are_computed_but_not_stored() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static COUNTED: Local<u64> = Local::with_initial(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        5
    });
    let rt = current_thread();
    rt.block_on(async {
        tokio::spawn(async {
            assert_eq!(COUNTED.get(), Some(5));
            assert!(!COUNTED.is_set());
            assert_eq!(COUNTED.get(), Some(5));
            assert_eq!(COUNTED.with(|v| v.copied()), Some(5));
            assert_eq!(COUNTED.try_get(), Ok(Some(5)));
            // Computed on every read: nowhere to keep it.
            assert_eq!(CALLS.load(Ordering::SeqCst), 4);
            assert!(!COUNTED.is_set());
        })
        .await
        .unwrap();
        tokio::task::spawn_blocking(|| {
            assert_eq!(COUNTED.get(), Some(5));
            assert_eq!(COUNTED.get(), Some(5));
            assert_eq!(CALLS.load(Ordering::SeqCst), 6);
        })
        .await
        .unwrap();
        // In an owner, it is computed once and stored.
        tasklocal::spawn(async {
            assert_eq!(COUNTED.get(), Some(5));
            assert_eq!(COUNTED.get(), Some(5));
            assert!(COUNTED.is_set());
        })
        .await
        .unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 7);
    });
}

#[test]
fn tasklocal_tasks_inside_a_plain_task_have_storage() {
    let rt = current_thread();
    rt.block_on(async {
        tokio::spawn(async {
            let inner = tasklocal::task(async {
                PLAIN.set(5);
                tasklocal::set("dyn", 6u64);
                tokio::task::yield_now().await;
                (PLAIN.get(), tasklocal::get::<_, u64>(&"dyn"))
            })
            .await;
            assert_eq!(inner, (Some(5), Some(6)));
            let spawned = tasklocal::spawn(async {
                INHERIT.set("child".into());
                tasklocal::id()
            })
            .await
            .unwrap();
            let blocking = tasklocal::spawn_blocking(|| {
                PLAIN.set(9);
                (PLAIN.get(), tasklocal::id())
            })
            .await
            .unwrap();
            assert_eq!(blocking.0, Some(9));
            assert_ne!(spawned, blocking.1);
            // Nothing of theirs is visible in the plain task afterwards.
            assert_reads_see_nothing();
        })
        .await
        .unwrap();
    });
}

#[test]
fn tasklocal_spawned_tasks_on_a_thread_with_storage_do_not_see_it() {
    // The correct way round: `tasklocal::spawn` from `block_on` inherits the
    // thread's inheritable values and nothing else; its writes stay its own.
    std::thread::spawn(|| {
        let rt = current_thread();
        rt.block_on(async {
            set_thread_values(3);
            let thread_id = tasklocal::id();
            let (paused, child_paused) = tokio::sync::oneshot::channel();
            let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
            let child = tasklocal::spawn(async move {
                // A write first: the child's storage exists before the reads below
                // (reads from a child without a storage yet have their own test in
                // tests/inheritance.rs).
                tasklocal::set("child", true);
                assert_eq!(PLAIN.get(), None);
                assert_eq!(INHERIT.get().as_deref(), Some("inherit 3"));
                assert_eq!(tasklocal::get::<_, u64>(&"dyn"), None);
                assert_ne!(tasklocal::id(), thread_id);
                PLAIN.set(4);
                INHERIT.set("child".into());
                paused.send(()).unwrap();
                resumed.await.unwrap();
                assert_eq!(PLAIN.get(), Some(4));
                assert_eq!(INHERIT.get().as_deref(), Some("child"));
            });
            // If the child failed, the sender is gone and this fails instead of hanging.
            child_paused.await.expect("the child task failed");
            // The child is suspended mid-way on this very thread.
            assert_thread_values(3);
            resume.send(()).unwrap();
            child.await.unwrap();
            assert_thread_values(3);
            assert_eq!(tasklocal::id(), thread_id);
        });
    })
    .join()
    .unwrap();
}

#[test]
fn plain_threads_are_owners_even_when_a_runtime_is_around() {
    // `std::thread::spawn` from inside a plain tokio task: a thread is an owner of its
    // own, so writes there work (only tokio tasks lack a storage).
    let rt = current_thread();
    let seen = rt.block_on(async {
        tokio::spawn(async {
            std::thread::spawn(|| {
                PLAIN.set(1);
                PLAIN.get()
            })
            .join()
            .unwrap()
        })
        .await
        .unwrap()
    });
    assert_eq!(seen, Some(1));
}

#[test]
fn misuse_is_caught_on_every_worker_concurrently() {
    // Many plain tasks at once on a multi-thread runtime, none of which can write,
    // interleaved with `tasklocal::spawn`ed ones that can.
    let rt = multi_thread(4);
    rt.block_on(async {
        let mut plain = Vec::new();
        let mut owned = Vec::new();
        for i in 0..200u64 {
            plain.push(tokio::spawn(async move {
                assert_no_storage("Local::try_set", PLAIN.try_set(i));
                tokio::task::yield_now().await;
                assert_eq!(PLAIN.get(), None);
            }));
            owned.push(tasklocal::spawn(async move {
                PLAIN.set(i);
                tokio::task::yield_now().await;
                assert_eq!(PLAIN.get(), Some(i));
            }));
        }
        for h in plain.into_iter().chain(owned) {
            h.await.unwrap();
        }
    });
}

#[test]
fn a_plain_local_task_polled_inside_a_task_runs_in_that_task_like_a_task_local() {
    // Code of the `Task`'s poll (the crate docs, "Automatic mode"): the plain task
    // polled by `run_until` inside it sees and writes the `Task`'s values, as it sees
    // a tokio `task_local!` bound around the `LocalSet`. Outside any owner, the same
    // plain task is refused (`plain_task_on_a_thread_with_storage_sees_...`).
    tokio::task_local!(static TOKIO: u64);
    let rt = current_thread();
    let (seen, after) = rt.block_on(tasklocal::task(TOKIO.scope(1, async {
        PLAIN.set(7);
        let local = tokio::task::LocalSet::new();
        let seen = local
            .run_until(async {
                tokio::task::spawn_local(async {
                    let seen = (PLAIN.get(), TOKIO.try_with(|v| *v).ok());
                    PLAIN.try_set(8).map(|()| seen)
                })
                .await
                .unwrap()
            })
            .await;
        (seen, PLAIN.get())
    })));
    assert_eq!(seen.unwrap(), (Some(7), Some(1)));
    assert_eq!(after, Some(8));
}
