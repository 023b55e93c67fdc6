//! The end of an owner (SPEC section 5), for tasks spawned on tokio runtimes: torn down
//! on completion, abort, panic and runtime shutdown. The same probes as `cleanup.rs`
//! (`support::teardown`).
#![cfg(feature = "tokio")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use support::runtime::{current_thread, multi_thread};
use support::teardown::{
    assert_busy_torn_down, assert_failing_torn_down, populate, populate_busy, populate_failing,
    Probe,
};
use tasklocal::{Local, Task};

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
    let rt = multi_thread(4);
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
    let rt = multi_thread(4);
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
            "multi_thread" => multi_thread(4),
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
    let rt = multi_thread(4);
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
    let rt = multi_thread(4);
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
