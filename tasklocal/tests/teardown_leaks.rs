//! The end of an owner (SPEC section 5): nothing is leaked. Thread-local destructors
//! that use the API at thread exit, before or after the thread's storage goes; shared
//! inheritable values after captures, copies on write, `inheritable_with` forks,
//! children, `reset`s and `Carried`s; ten thousand tasks on two workers. The other
//! edges of a teardown: `teardown_edges.rs`.
//!
//! Values are `Counted`s, whose drops the `Probe` of the test counts
//! (`support::teardown`).
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use support::runtime::multi_thread;
use support::teardown::{Counted, Probe};
use tasklocal::{Carried, Local, Snapshot};

static NAME: Local<String> = Local::new();
static INHERITED: Local<String> = Local::inheritable();
static VALUE: Local<Counted> = Local::new();

/// Values dropped so far.
fn dropped(probe: &Probe) -> usize {
    probe.dropped.load(Ordering::SeqCst)
}

/// Thread-local destructors that use the API while the thread exits, registered before
/// and after the thread's storage: whatever they set is dropped (or refused), never
/// leaked, and nothing panics out of a destructor.
#[test]
fn thread_local_destructors_using_the_api_at_thread_exit_leak_nothing() {
    /// Sets a typed and a dynamic value and registers a handler holding a third, and
    /// reports what was refused.
    struct Guard {
        values: Arc<Probe>,
        report: Arc<Probe>,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            let typed = VALUE.try_set(self.values.value("typed"));
            let dynamic = tasklocal::try_set("late", self.values.value("dynamic"));
            let held = self.values.value("held by handler");
            let handler = tasklocal::try_at_exit(move || drop(held));
            self.report.log(format!(
                "{:?} {:?} {:?} {:?}",
                typed.as_ref().map_err(|e| e.is_destroyed()),
                dynamic.as_ref().map_err(|e| e.is_destroyed()),
                handler.as_ref().map_err(|e| e.is_destroyed()),
                NAME.try_get().map(|v| v.is_some()),
            ));
        }
    }
    thread_local! {
        static GUARD: std::cell::RefCell<Option<Guard>> = const { std::cell::RefCell::new(None) };
    }
    for order in ["guard first", "storage first"] {
        let (values, report) = (Probe::new(), Probe::new());
        let guard = Guard {
            values: values.clone(),
            report: report.clone(),
        };
        std::thread::spawn(move || {
            let set_guard = || GUARD.with(|g| *g.borrow_mut() = Some(guard));
            if order == "guard first" {
                set_guard();
                NAME.set("thread".into());
            } else {
                NAME.set("thread".into());
                set_guard();
            }
        })
        .join()
        .unwrap();
        let report = report.entries();
        assert_eq!(report.len(), 1, "{order}");
        assert_eq!(dropped(&values), 3, "{order}: {report:?}");
    }
}

static SHARED: Local<Counted> = Local::inheritable();
static SHARED_FORKED: Local<Counted> = Local::inheritable_with(Counted::clone);
static NOT_SHARED: Local<Counted> = Local::new();

#[test]
fn shared_inheritable_values_are_all_dropped_after_captures_copies_and_children() {
    let probe = Probe::new();
    let p = probe.clone();
    let rt = multi_thread(2);
    rt.block_on(async {
        tasklocal::spawn(async move {
            SHARED.set(p.value("shared"));
            SHARED_FORKED.set(p.value("forked"));
            NOT_SHARED.set(p.value("not shared"));
            let mut snapshots = Vec::new();
            let mut children = Vec::new();
            for i in 0..30u32 {
                snapshots.push(Snapshot::capture());
                // Writes in place after a capture: copies.
                SHARED.with_mut(|c| c.name = "written");
                SHARED_FORKED.with_mut(|c| c.name = "written");
                let q = p.clone();
                children.push(tasklocal::spawn(async move {
                    SHARED.with_mut(|c| c.name = "written by child");
                    let _ = SHARED_FORKED.get();
                    if i % 2 == 0 {
                        SHARED.set(q.value("set by child"));
                        SHARED_FORKED.take();
                    }
                    let snapshot = Snapshot::capture();
                    tokio::task::yield_now().await;
                    snapshot.run(|| {
                        SHARED.with_mut(|c| c.name = "written in run");
                        SHARED_FORKED.with_mut(|c| c.name = "written in run");
                    });
                    Carried::new(q.value("carried")).run(|_| SHARED.get())
                }));
                if i % 5 == 0 {
                    tasklocal::reset();
                    SHARED.set(p.value("set after reset"));
                    SHARED_FORKED.set(p.value("set after reset"));
                }
            }
            for child in children {
                child.await.unwrap();
            }
            // Snapshots carried on after their originals are gone.
            let carried: Vec<_> = snapshots
                .iter()
                .map(|s| Carried::with_snapshot((), s.clone()))
                .collect();
            drop(snapshots);
            for c in carried {
                c.run(|_| SHARED_FORKED.get());
            }
        })
        .await
        .unwrap();
    });
    drop(rt);
    assert_eq!(probe.alive(), 0, "inheritable values leaked");
}

#[test]
fn ten_thousand_tasks_with_values_on_two_workers_drop_all() {
    // Every task is awaited: `drop(rt)` is no synchronisation point, as tokio may still
    // be dropping futures of a multi-thread runtime after its `drop` returns (plain
    // `tokio::spawn` too).
    let probe = Probe::new();
    let p = probe.clone();
    multi_thread(2).block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..10_000u32 {
            let p = p.clone();
            tasks.push(tasklocal::spawn(async move {
                VALUE.set(p.value("typed"));
                tasklocal::set(i, p.value("dynamic"));
                INHERITED.set(i.to_string());
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                (i % 7 == 0).then(|| {
                    tasklocal::spawn(async move {
                        VALUE.set(p.value("child's"));
                    })
                })
            }));
        }
        for task in tasks {
            if let Some(child) = task.await.unwrap() {
                child.await.unwrap();
            }
        }
    });
    let expected = 10_000 * 2 + (0..10_000).filter(|i| i % 7 == 0).count();
    assert_eq!(dropped(&probe), expected);
}
