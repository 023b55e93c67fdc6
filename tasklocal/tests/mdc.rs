//! `tasklocal::mdc`: the map's behaviour against a model, scope restoration, and
//! inheritance into every kind of child — at O(1) cost whatever the map's size.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};

use proptest::prelude::*;
use support::{fresh, pairs};
use tasklocal::{mdc, Snapshot};

/// Counts the allocations made by the current thread, so that a test can show that
/// a spawn allocates the same whatever the size of the map.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a
// const-initialized thread-local without destructor, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_of(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn insert_get_remove_clear_keep_insertion_order() {
    fresh(|| {
        assert_eq!(mdc::get("a"), None);
        assert!(mdc::to_vec().is_empty());
        mdc::insert("a", "1");
        mdc::insert("b".to_string(), "2".to_string());
        mdc::insert("c", "3");
        mdc::insert("a", "4"); // replaced in place
        assert_eq!(mdc::to_vec(), pairs(&[("a", "4"), ("b", "2"), ("c", "3")]));
        assert_eq!(mdc::remove("b").as_deref(), Some("2"));
        assert_eq!(mdc::remove("b"), None);
        mdc::insert("b", "5"); // a removed key comes back last
        assert_eq!(mdc::to_vec(), pairs(&[("a", "4"), ("c", "3"), ("b", "5")]));
        let mut seen = Vec::new();
        mdc::for_each(|k, v| seen.push(format!("{k}={v}")));
        assert_eq!(seen, ["a=4", "c=3", "b=5"]);
        mdc::clear();
        assert!(mdc::to_vec().is_empty());
        assert_eq!(mdc::get("a"), None);
        mdc::insert("", ""); // empty keys and values are values like any other
        assert_eq!(mdc::get("").as_deref(), Some(""));
    });
}

#[test]
fn for_each_closure_may_change_the_map_and_sees_the_old_one() {
    fresh(|| {
        mdc::extend([("a", "1"), ("b", "2")]);
        let mut seen = Vec::new();
        mdc::for_each(|k, v| {
            mdc::insert(format!("{k}{k}"), v);
            mdc::remove("b");
            seen.push((k.to_string(), v.to_string()));
        });
        assert_eq!(seen, pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(
            mdc::to_vec(),
            pairs(&[("a", "1"), ("aa", "1"), ("bb", "2")])
        );
    });
}

#[test]
fn for_each_does_not_allocate() {
    fresh(|| {
        mdc::extend((0..16).map(|i| (format!("k{i}"), format!("v{i}"))));
        let mut total = 0;
        let n = allocations_of(|| mdc::for_each(|k, v| total += k.len() + v.len()));
        assert_eq!(n, 0);
        assert!(total > 0);
    });
}

#[test]
fn scope_restores_the_previous_map() {
    fresh(|| {
        mdc::insert("request_id", "r1");
        let inside = mdc::scope([("user", "ada"), ("request_id", "r2")], || {
            mdc::insert("step", "1");
            mdc::remove("request_id");
            mdc::to_vec()
        });
        assert_eq!(inside, pairs(&[("user", "ada"), ("step", "1")]));
        assert_eq!(mdc::to_vec(), pairs(&[("request_id", "r1")]));
    });
}

#[test]
fn scope_restores_an_absent_map_and_nests() {
    fresh(|| {
        mdc::scope([("a", "1")], || {
            mdc::scope([("b", "2")], || {
                assert_eq!(mdc::to_vec(), pairs(&[("a", "1"), ("b", "2")]));
            });
            assert_eq!(mdc::to_vec(), pairs(&[("a", "1")]));
            mdc::clear();
        });
        assert!(mdc::to_vec().is_empty());
    });
}

#[test]
fn scope_restores_on_panic() {
    fresh(|| {
        mdc::insert("request_id", "r1");
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            mdc::scope([("request_id", "r2"), ("user", "ada")], || {
                mdc::insert("step", "1");
                panic!("handler failed");
            })
        }));
        assert!(result.is_err());
        assert_eq!(mdc::to_vec(), pairs(&[("request_id", "r1")]));
    });
}

#[test]
fn children_see_the_map_as_of_creation_and_never_write_back() {
    fresh(|| {
        mdc::extend([("request_id", "r1"), ("tenant", "acme")]);
        let snapshot = Snapshot::capture();
        let thread = tasklocal::thread::spawn(|| {
            mdc::insert("tenant", "child");
            mdc::insert("step", "1");
            mdc::to_vec()
        });
        let task = tasklocal::task(async {
            mdc::remove("request_id");
            mdc::to_vec()
        });
        mdc::insert("late", "parent"); // after creation: no child sees it
        assert_eq!(
            thread.join().unwrap(),
            pairs(&[("request_id", "r1"), ("tenant", "child"), ("step", "1")])
        );
        assert_eq!(
            futures::executor::block_on(task),
            pairs(&[("tenant", "acme")])
        );
        assert_eq!(
            snapshot.run(mdc::to_vec),
            pairs(&[("request_id", "r1"), ("tenant", "acme")])
        );
        assert_eq!(
            mdc::to_vec(),
            pairs(&[("request_id", "r1"), ("tenant", "acme"), ("late", "parent")])
        );
    });
}

/// A replacing insert writes the owner's map in place only while no child or
/// snapshot shares it: here the table of inheritable values is unshared again (another
/// key's write copied it) while the map itself is still the snapshot's.
#[test]
fn a_replacing_insert_never_reaches_a_captured_map() {
    static OTHER: tasklocal::Local<String> = tasklocal::Local::inheritable();
    fresh(|| {
        mdc::extend([("request_id", "r1"), ("tenant", "acme")]);
        OTHER.set("a".into());
        let snapshot = Snapshot::capture();
        OTHER.set("b".into());
        mdc::insert("tenant", "parent");
        mdc::insert("tenant", "parent-2");
        snapshot.run(|| {
            assert_eq!(
                mdc::to_vec(),
                pairs(&[("request_id", "r1"), ("tenant", "acme")])
            );
            mdc::insert("request_id", "child");
            mdc::insert("request_id", "child-2");
            assert_eq!(mdc::get("request_id").as_deref(), Some("child-2"));
        });
        assert_eq!(
            snapshot.run(mdc::to_vec),
            pairs(&[("request_id", "r1"), ("tenant", "acme")])
        );
        assert_eq!(
            mdc::to_vec(),
            pairs(&[("request_id", "r1"), ("tenant", "parent-2")])
        );
    });
}

#[test]
fn isolated_tasks_and_plain_threads_start_empty() {
    fresh(|| {
        mdc::insert("request_id", "r1");
        let isolated = tasklocal::Task::isolated(async { mdc::to_vec() });
        assert!(futures::executor::block_on(isolated).is_empty());
        let plain = std::thread::spawn(mdc::to_vec).join().unwrap();
        assert!(plain.is_empty());
    });
}

#[test]
fn a_child_costs_the_same_whatever_the_size_of_the_map() {
    let cost = |size: usize| {
        fresh(|| {
            mdc::extend((0..size).map(|i| (format!("key-{i}"), format!("value-{i}"))));
            // Warm up whatever is allocated once per thread.
            Snapshot::capture().run(|| mdc::insert("x", "y"));
            let capture = allocations_of(|| {
                let snapshot = Snapshot::capture();
                let task = tasklocal::task(async { mdc::get("key-0") });
                assert_eq!(
                    futures::executor::block_on(task).as_deref(),
                    Some("value-0")
                );
                drop(snapshot);
            });
            // The first write copies the map's pointers, not its keys and values.
            let first_write = allocations_of(|| {
                Snapshot::capture().run(|| mdc::insert("key-0", "changed"));
            });
            (capture, first_write)
        })
    };
    cost(1); // warm up what is allocated once per thread
    let small = cost(1);
    assert_eq!(cost(1_000), small);
    assert_eq!(cost(10_000), small);
}

/// SPEC 8: a `Task` that never touches its storage allocates nothing, also the first
/// one made after its parent wrote; a `set` of a present value allocates nothing. (An
/// owner's inheritable values are copied for its children on capture, into room the
/// write before made ready.)
#[test]
fn children_made_after_writes_and_writes_of_present_values_allocate_nothing() {
    static VALUE: tasklocal::Local<u64> = tasklocal::Local::inheritable();
    // What a child sees: the value, and the MDC's number of fields (read with no
    // allocation of the test's own).
    let child = || {
        let task = tasklocal::task(async {
            let mut fields = 0;
            mdc::for_each(|_, _| fields += 1);
            (VALUE.get(), fields)
        });
        futures::executor::block_on(task)
    };
    fresh(|| {
        VALUE.set(1);
        mdc::insert("tenant", "acme");
        // Warm up what is allocated once per thread (the executor's waker).
        futures::executor::block_on(async {});
        let mut seen = None;
        assert_eq!(allocations_of(|| seen = Some(child())), 0, "first child");
        assert_eq!(seen, Some((Some(1), 1)));
        // No child holds the last capture any more: the write recycles it.
        assert_eq!(allocations_of(|| VALUE.set(2)), 0, "a present value");
        assert_eq!(allocations_of(|| seen = Some(child())), 0, "after a write");
        assert_eq!(seen, Some((Some(2), 1)));
        // A snapshot still holds it: the write makes room, as copy on write copied.
        let held = Snapshot::capture();
        VALUE.set(3);
        assert_eq!(allocations_of(|| seen = Some(child())), 0, "while held");
        assert_eq!(seen.map(|s| s.0), Some(Some(3)));
        assert_eq!(held.get(&VALUE), Some(2), "the snapshot kept its value");
    });
}

/// A request's task inherits a snapshot nobody else holds: its first write moves the
/// snapshot's entries rather than copying them, and keeps the snapshot's `Arc` as the
/// room its next capture copies into. That write allocates the task's storage and
/// room in that `Arc`, nothing else.
#[test]
fn a_first_write_reuses_a_seed_nobody_else_holds() {
    static VALUE: tasklocal::Local<u64> = tasklocal::Local::inheritable();
    let snapshot = fresh(|| {
        VALUE.set(1);
        mdc::insert("tenant", "acme");
        Snapshot::capture()
    });
    // Warm up what is allocated once per thread (the executor's waker).
    futures::executor::block_on(async {});
    // As `ServerLayer` does: the snapshot goes once its task is made.
    let task = snapshot.task(async { allocations_of(|| VALUE.set(2)) });
    drop(snapshot);
    assert_eq!(futures::executor::block_on(task), 2);
}

/// The end of an owner whose storage holds only inheritable values (a request's task:
/// its MDC, its trace) allocates nothing: they are dropped where they are.
#[test]
fn the_end_of_an_owner_with_only_inheritable_values_allocates_nothing() {
    static VALUE: tasklocal::Local<u64> = tasklocal::Local::inheritable();
    let mut task = Box::pin(tasklocal::Task::isolated(async {
        VALUE.set(1);
        mdc::insert("tenant", "acme");
        std::future::pending::<()>().await
    }));
    let waker = futures::task::noop_waker();
    let pending = task
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    assert!(pending.is_pending());
    assert_eq!(allocations_of(|| drop(task)), 0, "cancelled");
}

#[cfg(feature = "tokio")]
mod tokio_children {
    use super::*;
    use crate::support::runtime::{current_thread, multi_thread};

    fn runtime() -> tokio::runtime::Runtime {
        multi_thread(2)
    }

    #[test]
    fn spawn_and_spawn_blocking_inherit() {
        runtime().block_on(async {
            let outer = tasklocal::spawn(async {
                mdc::insert("request_id", "r1");
                let child = tasklocal::spawn(async {
                    mdc::insert("in", "child");
                    mdc::to_vec()
                });
                let blocking = tasklocal::spawn_blocking(mdc::to_vec);
                mdc::insert("late", "1");
                let child = child.await.unwrap();
                let blocking = blocking.await.unwrap();
                (child, blocking, mdc::to_vec())
            });
            let (child, blocking, parent) = outer.await.unwrap();
            assert_eq!(child, pairs(&[("request_id", "r1"), ("in", "child")]));
            assert_eq!(blocking, pairs(&[("request_id", "r1")]));
            assert_eq!(parent, pairs(&[("request_id", "r1"), ("late", "1")]));
        });
    }

    #[test]
    fn plain_tokio_tasks_read_nothing_and_cannot_write() {
        // On a thread of its own, which has no storage (`tests/misuse.rs` covers a
        // worker thread that has one).
        std::thread::spawn(|| {
            let rt = current_thread();
            rt.block_on(async {
                let seen = tokio::spawn(async {
                    let err = mdc::try_insert("k", "v").unwrap_err();
                    assert!(err.is_no_storage());
                    assert!(mdc::try_remove("k").unwrap_err().is_no_storage());
                    assert!(mdc::try_clear().unwrap_err().is_no_storage());
                    assert!(mdc::try_scope([("k", "v")], || ()).is_err());
                    let panicked = panic::catch_unwind(|| mdc::insert("k", "v"));
                    let message = panicked.unwrap_err();
                    let message = message
                        .downcast_ref::<String>()
                        .expect("a formatted panic message");
                    assert!(message.contains("tasklocal::spawn"), "{message}");
                    (mdc::get("request_id"), mdc::to_vec())
                })
                .await
                .unwrap();
                assert_eq!(seen, (None, Vec::new()));
            });
        })
        .join()
        .unwrap();
    }
}

#[cfg(feature = "rayon")]
#[test]
fn rayon_work_inherits() {
    use rayon::prelude::*;
    fresh(|| {
        mdc::insert("request_id", "r1");
        let (a, b) = tasklocal::rayon::join(
            || {
                mdc::insert("side", "a");
                mdc::to_vec()
            },
            || mdc::get("side"),
        );
        assert_eq!(a, pairs(&[("request_id", "r1"), ("side", "a")]));
        assert_eq!(b, None);
        let ids: Vec<Option<String>> = (0..64)
            .into_par_iter()
            .map(tasklocal::rayon::wrap(|_| mdc::get("request_id")))
            .collect();
        assert!(ids.iter().all(|id| id.as_deref() == Some("r1")));
        assert_eq!(mdc::to_vec(), pairs(&[("request_id", "r1")]));
    });
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, String),
    Remove(String),
    Get(String),
    Clear,
    Extend(Vec<(String, String)>),
    Scope(Vec<(String, String)>, Box<Op>),
    Child(Box<Op>),
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "request_id", ""]).prop_map(String::from)
}

fn op() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        4 => (key(), "[a-z0-9 =\n]{0,4}").prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key().prop_map(Op::Remove),
        2 => key().prop_map(Op::Get),
        1 => Just(Op::Clear),
        1 => prop::collection::vec((key(), "[a-z]{0,2}"), 0..4).prop_map(Op::Extend),
    ];
    leaf.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            (
                prop::collection::vec((key(), "[a-z]{0,2}"), 0..3),
                inner.clone()
            )
                .prop_map(|(pairs, op)| Op::Scope(pairs, Box::new(op))),
            inner.prop_map(|op| Op::Child(Box::new(op))),
        ]
    })
}

type Model = Vec<(String, String)>;

fn model_insert(model: &mut Model, key: &str, value: &str) {
    match model.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => model.push((key.to_string(), value.to_string())),
    }
}

/// Applies `op` to the MDC and to the model; both must agree afterwards.
fn apply(op: &Op, model: &mut Model) {
    match op {
        Op::Insert(k, v) => {
            mdc::insert(k.as_str(), v.as_str());
            model_insert(model, k, v);
        }
        Op::Remove(k) => {
            let expected = model
                .iter()
                .position(|(mk, _)| mk == k)
                .map(|i| model.remove(i).1);
            assert_eq!(mdc::remove(k), expected);
        }
        Op::Get(k) => {
            let expected = model.iter().find(|(mk, _)| mk == k).map(|(_, v)| v.clone());
            assert_eq!(mdc::get(k), expected);
        }
        Op::Clear => {
            mdc::clear();
            model.clear();
        }
        Op::Extend(pairs) => {
            mdc::extend(pairs.iter().cloned());
            for (k, v) in pairs {
                model_insert(model, k, v);
            }
        }
        Op::Scope(pairs, inner) => {
            let mut inside = model.clone();
            mdc::scope(pairs.iter().cloned(), || {
                for (k, v) in pairs {
                    model_insert(&mut inside, k, v);
                }
                assert_eq!(mdc::to_vec(), inside);
                apply(inner, &mut inside);
                assert_eq!(mdc::to_vec(), inside);
            });
        }
        Op::Child(inner) => {
            let mut child_model = model.clone();
            Snapshot::capture().run(|| {
                apply(inner, &mut child_model);
                assert_eq!(mdc::to_vec(), child_model);
            });
        }
    }
    assert_eq!(mdc::to_vec(), *model);
}

proptest! {
    #[test]
    fn random_operations_match_an_ordered_map_model(ops in prop::collection::vec(op(), 0..40)) {
        fresh(|| {
            let mut model = Model::new();
            for op in &ops {
                apply(op, &mut model);
            }
        });
    }
}
