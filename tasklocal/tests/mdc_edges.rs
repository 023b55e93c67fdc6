//! The MDC and `Carried` at their edges (SPEC 7, 10): the map's order, in-place
//! replacement and empty keys; `scope` restoring values and order over keys already
//! there, through nested panics and a panicking pair iterator, and only in its own
//! owner; a plain tokio task that reads nothing and whose writes fail; `Carried` run on
//! a worker thread in a fresh owner that ends even on a panic, `Carried::task`,
//! `isolated`, and `into_inner`.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{fresh, pairs};
use tasklocal::{mdc, Carried};

// The map.

#[test]
fn the_map_keeps_insertion_order_replaces_in_place_and_takes_empty_keys() {
    fresh(|| {
        mdc::insert("a", "1");
        mdc::insert("b", "2");
        mdc::insert("c", "3");
        mdc::insert("b", "x");
        assert_eq!(mdc::to_vec(), pairs(&[("a", "1"), ("b", "x"), ("c", "3")]));
        // A key removed and inserted again goes last.
        assert_eq!(mdc::remove("a").as_deref(), Some("1"));
        mdc::insert("a", "4");
        assert_eq!(mdc::to_vec(), pairs(&[("b", "x"), ("c", "3"), ("a", "4")]));
        let mut seen = Vec::new();
        mdc::for_each(|k, v| seen.push(format!("{k}={v}")));
        assert_eq!(seen, ["b=x", "c=3", "a=4"]);
        // An empty key and value make an ordinary entry.
        mdc::insert("", "");
        assert_eq!(mdc::get("").as_deref(), Some(""));
        mdc::clear();
        assert!(mdc::to_vec().is_empty());
        assert_eq!(mdc::get("b"), None);
        assert_eq!(mdc::remove("b"), None);
    });
}

#[test]
fn scope_over_keys_already_there_restores_their_values_and_order() {
    fresh(|| {
        mdc::insert("a", "1");
        mdc::insert("b", "2");
        let inside = mdc::scope([("b", "x"), ("c", "y"), ("a", "z"), ("c", "w")], || {
            let inside = mdc::to_vec();
            // Whatever the closure does to the map is undone too.
            mdc::remove("a");
            mdc::insert("d", "4");
            mdc::clear();
            inside
        });
        assert_eq!(inside, pairs(&[("a", "z"), ("b", "x"), ("c", "w")]));
        assert_eq!(mdc::to_vec(), pairs(&[("a", "1"), ("b", "2")]));
    });
}

/// In a fresh owner whose map holds `a=1`, `f` panics, and the map holds `a=1` again.
#[track_caller]
fn assert_a_panic_in_leaves_the_map_as_it_was(f: impl FnOnce()) {
    fresh(|| {
        mdc::insert("a", "1");
        assert!(catch_unwind(AssertUnwindSafe(f)).is_err());
        assert_eq!(mdc::to_vec(), pairs(&[("a", "1")]));
    });
}

#[test]
fn nested_scopes_restore_the_map_when_a_panic_unwinds_through_them() {
    assert_a_panic_in_leaves_the_map_as_it_was(|| {
        mdc::scope([("a", "2")], || {
            mdc::scope([("b", "3")], || {
                mdc::insert("c", "4");
                panic!("boom");
            })
        })
    });
}

#[test]
fn a_scope_whose_pairs_panic_midway_leaves_the_map_as_it_was() {
    let pairs_then_panic = (0..3).map(|i| {
        if i == 2 {
            panic!("iterator failed");
        }
        (format!("k{i}"), "v".to_string())
    });
    assert_a_panic_in_leaves_the_map_as_it_was(|| mdc::scope(pairs_then_panic, || ()));
}

#[test]
fn a_scope_in_a_child_thread_leaves_the_parents_map_alone() {
    fresh(|| {
        mdc::insert("a", "1");
        let child = tasklocal::thread::spawn(|| mdc::scope([("a", "child")], || mdc::get("a")));
        assert_eq!(child.join().unwrap().as_deref(), Some("child"));
        assert_eq!(mdc::get("a").as_deref(), Some("1"));
    });
}

#[cfg(feature = "tokio")]
#[test]
fn a_plain_tokio_task_reads_an_empty_map_and_its_writes_fail() {
    support::runtime::current_thread().block_on(async {
        tasklocal::spawn(async {
            mdc::insert("a", "1");
            let plain = tokio::spawn(async {
                let called = AtomicUsize::new(0);
                (
                    mdc::get("a"),
                    mdc::to_vec(),
                    mdc::try_insert("b", "2").is_err(),
                    mdc::try_remove("a").is_err(),
                    mdc::try_clear().is_err(),
                    mdc::try_scope([("k", "v")], || called.fetch_add(1, Ordering::SeqCst)).is_err(),
                    called.load(Ordering::SeqCst),
                    catch_unwind(|| mdc::insert("b", "2")).is_err(),
                )
            })
            .await
            .unwrap();
            assert_eq!(plain, (None, vec![], true, true, true, true, 0, true));
            // The owner that spawned it keeps its map.
            assert_eq!(mdc::to_vec(), pairs(&[("a", "1")]));
        })
        .await
        .unwrap();
    });
}

// Carried.

#[test]
fn carried_runs_in_a_fresh_owner_on_the_worker_that_ends_even_on_a_panic() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let count_the_end = || {
        tasklocal::at_exit(|| {
            ENDS.fetch_add(1, Ordering::SeqCst);
        })
    };
    let message = fresh(|| {
        mdc::insert("request_id", "r-1");
        Carried::new(5)
    });
    let copy = message.clone();
    let worker = std::thread::spawn(move || {
        mdc::insert("worker", "w");
        let first = message.run(|n| {
            mdc::insert("scratch", "x");
            count_the_end();
            (n, mdc::to_vec())
        });
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            copy.run(|_| {
                count_the_end();
                panic!("job failed")
            })
        }))
        .is_err();
        (first, panicked, ENDS.load(Ordering::SeqCst), mdc::to_vec())
    });
    let (first, panicked, ends, worker_mdc) = worker.join().unwrap();
    assert_eq!(
        first,
        (5, pairs(&[("request_id", "r-1"), ("scratch", "x")]))
    );
    assert!(panicked);
    assert_eq!(ends, 2);
    // The worker's own map is untouched by either run.
    assert_eq!(worker_mdc, pairs(&[("worker", "w")]));
}

#[test]
fn carried_task_calls_its_closure_inside_the_carried_owner() {
    let message = fresh(|| {
        mdc::insert("request_id", "r-1");
        Carried::new(3)
    });
    let task = message.task(|n| {
        let at_call = mdc::get("request_id");
        async move { (n, at_call, mdc::get("request_id")) }
    });
    let seen = fresh(|| futures::executor::block_on(task));
    assert_eq!(seen, (3, Some("r-1".to_string()), Some("r-1".to_string())));
}

#[test]
fn carried_captures_at_new_nothing_inside_isolated_and_into_inner_leaves_the_caller_alone() {
    fresh(|| {
        mdc::insert("request_id", "r-1");
        let message = tasklocal::isolated(|| Carried::new(1));
        assert_eq!(message.run(|_| mdc::to_vec()), vec![]);
        let message = Carried::new(2);
        mdc::insert("request_id", "r-2");
        let task = message
            .clone()
            .task(|n| async move { (n, mdc::get("request_id")) });
        assert_eq!(
            futures::executor::block_on(task),
            (2, Some("r-1".to_string()))
        );
        assert_eq!(message.into_inner(), 2);
        assert_eq!(mdc::get("request_id").as_deref(), Some("r-2"));
    });
}
