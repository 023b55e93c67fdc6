//! Inheritance (SPEC sections 4 and 10), the edges: a child's `take`, `reset`, `unload`
//! and `scope` of values it holds only in what it inherited, never reaching back to the
//! parent nor on to its own children; writes in place after each capture, which
//! earlier captures and children never see; `inheritable_with` keys, forked once per
//! child owner on first access and by `take`/`replace`/`with_mut` after a capture;
//! `Carried::task`; `isolated` around owners entered inside it. Owners that end while
//! holding shared inheritable values: `teardown_edges.rs`; random operations against a
//! model: `inheritance_model.rs`.
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::executor::block_on;
use support::fresh;
use support::runtime::multi_thread;
use support::teardown::Probe;
use tasklocal::{Carried, Local, Snapshot, Task};

static WITH_INIT: Local<u32> = Local::inheritable_with_initial(|| 1000);
static NAME: Local<String> = Local::inheritable();

// ---------------------------------------------------------------------------
// A child's first access is a write to what it inherited.
// ---------------------------------------------------------------------------

#[test]
fn take_of_an_inherited_value_does_not_come_back_from_the_seed() {
    fresh(|| {
        NAME.set("parent".into());
        WITH_INIT.set(5);
        Snapshot::capture().run(|| {
            assert_eq!(NAME.take().as_deref(), Some("parent"));
            assert_eq!(NAME.get(), None);
            assert!(!NAME.is_set());
            assert_eq!(WITH_INIT.take(), Some(5));
            // The initial value, not the inherited one.
            assert_eq!(WITH_INIT.get(), Some(1000));
        });
        assert_eq!(NAME.get().as_deref(), Some("parent"));
        assert_eq!(WITH_INIT.get(), Some(5));
    });
}

#[test]
fn take_as_a_tasks_first_access_returns_the_value_of_its_creation_and_leaves_none() {
    fresh(|| {
        NAME.set("parent".into());
        let task = tasklocal::task(async {
            let taken = NAME.take();
            let after = NAME.get();
            let grandchild = tasklocal::task(async { NAME.get() }).await;
            (taken, after, grandchild)
        });
        NAME.set("later".into());
        assert_eq!(block_on(task), (Some("parent".to_string()), None, None));
        assert_eq!(NAME.get().as_deref(), Some("later"));
    });
}

/// `drop_all` (`reset` or `unload`) as a child's first access, in a snapshot's run and in
/// a task: the child and its own children see nothing of what it inherited (initial
/// values again), and the parent keeps it.
fn assert_child_drops_what_it_inherited(drop_all: fn()) {
    fresh(|| {
        NAME.set("parent".into());
        WITH_INIT.set(7);
        let seen = Snapshot::capture().run(|| {
            drop_all();
            (NAME.get(), WITH_INIT.get(), Snapshot::capture().get(&NAME))
        });
        assert_eq!(seen, (None, Some(1000), None));
        block_on(tasklocal::task(async move {
            drop_all();
            assert_eq!(NAME.get(), None);
            assert_eq!(tasklocal::task(async { NAME.get() }).await, None);
        }));
        assert_eq!(NAME.get().as_deref(), Some("parent"));
    });
}

#[test]
fn reset_in_a_child_drops_what_it_inherited() {
    assert_child_drops_what_it_inherited(tasklocal::reset);
}

#[test]
fn unload_in_a_child_drops_what_it_inherited_and_gives_it_a_new_id() {
    assert_child_drops_what_it_inherited(tasklocal::unload);
    fresh(|| {
        NAME.set("parent".into());
        WITH_INIT.set(7);
        Snapshot::capture().run(|| {
            let before = tasklocal::id();
            tasklocal::unload();
            assert_ne!(tasklocal::id(), before);
            assert_eq!(NAME.get(), None);
            assert_eq!(WITH_INIT.get(), Some(1000));
        });
    });
}

#[test]
fn scope_in_a_child_restores_the_inherited_value() {
    fresh(|| {
        NAME.set("parent".into());
        Snapshot::capture().run(|| {
            let inner = NAME.scope("scoped".into(), || {
                (NAME.get(), Snapshot::capture().run(|| NAME.get()))
            });
            assert_eq!(inner, (Some("scoped".into()), Some("scoped".into())));
            assert_eq!(NAME.get().as_deref(), Some("parent"));
            assert_eq!(
                Snapshot::capture().run(|| NAME.get()).as_deref(),
                Some("parent")
            );
        });
    });
}

#[test]
fn captures_made_inside_a_scope_keep_the_scoped_value() {
    fresh(|| {
        NAME.set("a".into());
        let (snapshot, task) = NAME.scope("b".into(), || {
            (Snapshot::capture(), tasklocal::task(async { NAME.get() }))
        });
        assert_eq!(NAME.get().as_deref(), Some("a"));
        assert_eq!(snapshot.get(&NAME).as_deref(), Some("b"));
        assert_eq!(snapshot.run(|| NAME.get()).as_deref(), Some("b"));
        assert_eq!(block_on(task).as_deref(), Some("b"));
    });
}

// ---------------------------------------------------------------------------
// Copies on write: a value captured is written in place only after it is copied.
// ---------------------------------------------------------------------------

static LIST: Local<Vec<u32>> = Local::inheritable();
static OTHER_LIST: Local<Vec<u32>> = Local::inheritable();

#[test]
fn with_mut_after_each_capture_never_changes_earlier_captures() {
    fresh(|| {
        LIST.set(vec![0]);
        let mut snapshots = Vec::new();
        let mut tasks = Vec::new();
        for i in 1..=5 {
            snapshots.push(Snapshot::capture());
            tasks.push(tasklocal::task(async { LIST.get() }));
            LIST.with_mut(|v| v.push(i));
            LIST.with_mut(|v| v.push(100 + i));
        }
        for (i, (snapshot, task)) in snapshots.iter().zip(tasks).enumerate() {
            let mut expected = vec![0];
            for j in 1..=i as u32 {
                expected.push(j);
                expected.push(100 + j);
            }
            assert_eq!(snapshot.get(&LIST), Some(expected.clone()), "snapshot {i}");
            assert_eq!(
                snapshot.run(|| LIST.get()),
                Some(expected.clone()),
                "run {i}"
            );
            assert_eq!(block_on(task), Some(expected), "task {i}");
        }
    });
}

#[test]
fn with_mut_in_a_child_copies_for_that_child_alone() {
    fresh(|| {
        LIST.set(vec![1]);
        OTHER_LIST.set(vec![2]);
        let snapshot = Snapshot::capture();
        let (before, after) = snapshot.run(|| {
            let before = Snapshot::capture();
            LIST.with_mut(|v| v.push(10));
            OTHER_LIST.with_mut(|v| v.push(20));
            let after = Snapshot::capture();
            LIST.with_mut(|v| v.push(11));
            (before, after)
        });
        // Neither the parent nor a sibling (another run of the same snapshot) sees it.
        assert_eq!(LIST.get(), Some(vec![1]));
        assert_eq!(OTHER_LIST.get(), Some(vec![2]));
        assert_eq!(
            snapshot.run(|| (LIST.get(), OTHER_LIST.get())),
            (Some(vec![1]), Some(vec![2]))
        );
        // The child's own captures see it as of each capture.
        assert_eq!(before.get(&LIST), Some(vec![1]));
        assert_eq!(before.get(&OTHER_LIST), Some(vec![2]));
        assert_eq!(after.get(&LIST), Some(vec![1, 10]));
        assert_eq!(after.get(&OTHER_LIST), Some(vec![2, 20]));
        // The parent's writes in place after the child ran reach neither.
        LIST.with_mut(|v| v.push(3));
        assert_eq!(snapshot.get(&LIST), Some(vec![1]));
        assert_eq!(after.run(|| LIST.get()), Some(vec![1, 10]));
    });
}

#[test]
fn children_spawned_between_writes_in_place_see_the_value_as_of_their_spawn() {
    let rt = multi_thread(2);
    let _runtime = rt.enter();
    rt.block_on(tasklocal::spawn(async {
        LIST.set(vec![]);
        let mut children = Vec::new();
        for i in 0..20u32 {
            LIST.with_mut(|v| v.push(i));
            children.push((i, tasklocal::spawn(async { LIST.get().unwrap() })));
            tokio::task::yield_now().await;
            LIST.with_mut(|v| v.push(1000 + i));
        }
        for (i, child) in children {
            let mut expected = Vec::new();
            for j in 0..i {
                expected.push(j);
                expected.push(1000 + j);
            }
            expected.push(i);
            assert_eq!(child.await.unwrap(), expected);
        }
    }))
    .unwrap();
}

// ---------------------------------------------------------------------------
// `inheritable_with`: a child starts with `fork(&value)`.
// ---------------------------------------------------------------------------

/// Forks of `DEPTH`, counted; no other test uses `DEPTH`.
static FORKS: AtomicUsize = AtomicUsize::new(0);
static DEPTH: Local<u32> = Local::inheritable_with(|d| {
    FORKS.fetch_add(1, Ordering::SeqCst);
    d + 1
});

fn forks() -> usize {
    FORKS.load(Ordering::SeqCst)
}

#[test]
fn inheritable_with_forks_once_per_child_owner() {
    fresh(|| {
        DEPTH.set(0);
        let snapshot = Snapshot::capture();
        let before = forks();
        // Every run of a snapshot is a child of its own; reads within it fork once.
        for _ in 0..3 {
            assert_eq!(
                snapshot.run(|| (DEPTH.get(), DEPTH.get(), DEPTH.with(|d| d.copied()))),
                (Some(1), Some(1), Some(1))
            );
        }
        assert_eq!(forks() - before, 3);
        // So is every clone of a `Carried`.
        let carried = Carried::new(());
        let clone = carried.clone();
        assert_eq!(carried.run(|_| DEPTH.get()), Some(1));
        assert_eq!(clone.run(|_| DEPTH.get()), Some(1));
        assert_eq!(forks() - before, 5);
        // A child that never reads passes on what it inherited, unforked; one that read
        // passes on its fork, forked again.
        assert_eq!(
            snapshot.run(|| Snapshot::capture().run(|| DEPTH.get())),
            Some(1)
        );
        let forked_twice = snapshot.run(|| {
            DEPTH.get();
            Snapshot::capture().run(|| DEPTH.get())
        });
        assert_eq!(forked_twice, Some(2));
        // `is_set` does not fork.
        let before = forks();
        assert!(snapshot.run(|| DEPTH.is_set()));
        assert_eq!(forks(), before);
        // A `Task` polled many times, on two workers, forks once.
        let rt = multi_thread(2);
        let before = forks();
        let _runtime = rt.enter();
        let seen = rt.block_on(tasklocal::spawn(async {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(DEPTH.get());
                tokio::task::yield_now().await;
            }
            seen
        }));
        assert!(seen.unwrap().iter().all(|d| *d == Some(1)));
        assert_eq!(forks(), before + 1);
    });
}

static BUDGET: Local<u32> = Local::inheritable_with(|b| b / 2);

#[test]
fn take_replace_and_with_mut_after_a_capture_return_a_fork() {
    fresh(|| {
        BUDGET.set(100);
        let snapshot = Snapshot::capture();
        // Captured since it was stored: `take` returns `fork(&value)`, the capture keeps
        // the value.
        assert_eq!(BUDGET.take(), Some(50));
        assert_eq!(snapshot.get(&BUDGET), Some(100));
        assert_eq!(snapshot.run(|| BUDGET.get()), Some(50));
        // Not captured since it was stored: moved out as it is.
        BUDGET.set(64);
        assert_eq!(BUDGET.replace(10), Some(64));
        let _captured = Snapshot::capture();
        assert_eq!(BUDGET.replace(11), Some(5));
        // `with_mut` of a captured value works on `fork(&value)`.
        let _captured = Snapshot::capture();
        assert_eq!(BUDGET.with_mut(|b| *b), Some(5));
        assert_eq!(
            BUDGET.with_mut(|b| {
                *b += 1;
                *b
            }),
            Some(6)
        );
        assert_eq!(BUDGET.get(), Some(6));
    });
}

#[test]
fn a_child_that_sets_an_inheritable_with_key_first_passes_its_own_value_on_forked() {
    fresh(|| {
        BUDGET.set(100);
        let seen = Snapshot::capture().run(|| {
            BUDGET.set(8);
            let grandchild = Snapshot::capture().run(|| BUDGET.get());
            (BUDGET.get(), grandchild)
        });
        assert_eq!(seen, (Some(8), Some(4)));
    });
}

// ---------------------------------------------------------------------------
// `Carried::task` and `isolated`.
// ---------------------------------------------------------------------------

#[test]
fn carried_task_calls_f_lazily_inside_the_owner_and_not_at_all_when_dropped() {
    static CALLED: AtomicUsize = AtomicUsize::new(0);
    let probe = Probe::new();
    fresh(|| {
        NAME.set("sender".into());
        let task = Carried::new(probe.value("first")).task(|v| {
            CALLED.fetch_add(1, Ordering::SeqCst);
            let seen = NAME.get();
            async move { (v.name, seen) }
        });
        NAME.set("later".into());
        assert_eq!(CALLED.load(Ordering::SeqCst), 0);
        assert_eq!(block_on(task), ("first", Some("sender".to_string())));
        assert_eq!(CALLED.load(Ordering::SeqCst), 1);
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 1);
        drop(Carried::new(probe.value("second")).task(|v| {
            CALLED.fetch_add(1, Ordering::SeqCst);
            async move { v.name }
        }));
        assert_eq!(CALLED.load(Ordering::SeqCst), 1);
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 2);
        assert_eq!(NAME.get().as_deref(), Some("later"));
    });
}

#[test]
fn isolated_resumes_after_an_owner_entered_inside_it_returns() {
    let in_thread = || tasklocal::thread::spawn(|| NAME.get()).join().unwrap();
    fresh(|| {
        NAME.set("request".into());
        let (inside_run, after_run, captured_after) = tasklocal::isolated(|| {
            // The snapshot is captured inside `isolated`: the run starts empty, and is
            // not isolated itself (its own children inherit from it).
            let inside_run = Snapshot::capture().run(in_thread);
            (inside_run, in_thread(), Snapshot::capture())
        });
        assert_eq!(inside_run, None);
        assert_eq!(after_run, None);
        assert_eq!(captured_after.get(&NAME), None);
        let (inside_task, after_task) = tasklocal::isolated(|| {
            let inside_task = block_on(Task::isolated(async {
                NAME.set("own".into());
                in_thread()
            }));
            (inside_task, in_thread())
        });
        assert_eq!(inside_task.as_deref(), Some("own"));
        assert_eq!(after_task, None);
        assert_eq!(in_thread().as_deref(), Some("request"));
    });
}
