//! Snapshots, `Carried` and `inheritable_with` keys as their docs promise (SPEC sections
//! 4 and 10). `Snapshot`: a capture clones no value, whatever their number;
//! `with_value` leaves out keys that are not inheritable and never changes the snapshot
//! it is called on; `default` is empty; `get` computes no initial value and returns an
//! `inheritable_with` value as captured, unforked. `fork`: it runs in the child, with
//! the child's storage current, never at capture, once per owner seeded from a
//! snapshot, also when the child's first access is `take`, `replace` or `scope`; when it
//! panics copying the owner's own captured value, `with_mut` leaves the value and
//! `take`/`replace` remove it. `Carried`: `into_inner` and `into_parts` release the
//! context once no clone holds it, `run` ends its owner before a panic goes on, each
//! clone runs in an owner of its own, and `with_snapshot`, `get_ref`, `get_mut` and
//! `task`. Inheritance into each kind of child: `inheritance*.rs`; forks across many
//! tasks and `Carried` through a channel: `flow.rs`.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use support::{fresh, message};
use tasklocal::{Carried, Local, Snapshot, TaskId};

/// Runs `f`, which must panic, and returns its panic message.
#[track_caller]
fn panics(f: impl FnOnce()) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a panic"),
        Err(payload) => message(payload),
    }
}

// ---------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------

/// "captures the current inheritable values in O(1) (no copying of values, whatever
/// their number)": capturing, creating children and reading in them never clones a
/// value (a write between captures copies the table, not the values); `get` is one
/// clone.
#[test]
fn capture_clones_no_value_whatever_their_number() {
    static CLONES: AtomicUsize = AtomicUsize::new(0);
    #[derive(Debug)]
    struct CountClones(u64);
    impl Clone for CountClones {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::SeqCst);
            CountClones(self.0)
        }
    }
    static COUNTED: Local<CountClones> = Local::inheritable();
    static MANY: [Local<String>; 20] = [const { Local::inheritable() }; 20];
    let clones = || CLONES.load(Ordering::SeqCst);
    fresh(|| {
        COUNTED.set(CountClones(1));
        for (i, key) in MANY.iter().enumerate() {
            key.set(format!("v{i}"));
        }
        let before = clones();
        let mut snaps = Vec::new();
        for i in 0..200 {
            snaps.push(Snapshot::capture());
            // A write between captures: the next capture copies the table once.
            MANY[i % 20].set(format!("w{i}"));
            snaps.push(Snapshot::capture());
            let _task = tasklocal::task(async {});
            let _carried = Carried::new(());
        }
        assert_eq!(clones(), before, "a capture cloned a value");
        // A child reads it by reference without cloning.
        let seen = snaps[7].run(|| COUNTED.with(|c| c.map(|c| c.0)));
        assert_eq!(seen, Some(1));
        assert_eq!(clones(), before);
        // `Snapshot::get` is "a clone": exactly one.
        assert_eq!(snaps[3].get(&COUNTED).map(|c| c.0), Some(1));
        assert_eq!(clones(), before + 1);
        // Every snapshot kept its values as of capture.
        assert_eq!(snaps[0].get(&MANY[0]).as_deref(), Some("v0"));
        assert_eq!(snaps[1].get(&MANY[0]).as_deref(), Some("w0"));
        assert_eq!(snaps[2].get(&MANY[1]).as_deref(), Some("v1"));
    });
}

/// `with_value`: "A key that is not inheritable is never inherited, so it is left out";
/// the snapshot it is called on, empty or captured, is unchanged, and neither sees the
/// owner's later writes.
#[test]
fn with_value_leaves_out_non_inheritable_keys_and_never_changes_the_original() {
    static NOT_INHERITED: Local<u32> = Local::new();
    static NOT_INHERITED_INIT: Local<u32> = Local::with_initial(|| 5);
    static WV: Local<u32> = Local::inheritable();
    let s = Snapshot::empty().with_value(&NOT_INHERITED, 3);
    assert_eq!(s.get(&NOT_INHERITED), None);
    assert_eq!(s.run(|| NOT_INHERITED.get()), None);
    let s = s.with_value(&NOT_INHERITED_INIT, 9);
    assert_eq!(s.get(&NOT_INHERITED_INIT), None);
    assert_eq!(s.run(|| NOT_INHERITED_INIT.get()), Some(5));

    let a = Snapshot::empty().with_value(&WV, 1);
    let b = a.with_value(&WV, 2);
    assert_eq!(a.get(&WV), Some(1));
    assert_eq!(b.get(&WV), Some(2));
    assert_eq!(a.run(|| WV.get()), Some(1));
    assert_eq!(b.run(|| WV.get()), Some(2));
    // A captured snapshot is also unchanged by `with_value`.
    fresh(|| {
        WV.set(10);
        let captured = Snapshot::capture();
        let changed = captured.with_value(&WV, 11);
        assert_eq!(captured.get(&WV), Some(10));
        assert_eq!(changed.get(&WV), Some(11));
        assert_eq!(WV.get(), Some(10));
        // The owner writes on: neither snapshot sees it.
        WV.set(12);
        assert_eq!(captured.get(&WV), Some(10));
        assert_eq!(changed.get(&WV), Some(11));
    });
    // Non-inheritable keys are not part of a capture either.
    fresh(|| {
        NOT_INHERITED.set(4);
        assert_eq!(Snapshot::capture().get(&NOT_INHERITED), None);
        assert_eq!(Snapshot::capture().run(|| NOT_INHERITED.get()), None);
    });
}

#[test]
fn default_is_the_empty_snapshot() {
    static D: Local<u32> = Local::inheritable();
    fresh(|| {
        D.set(1);
        assert_eq!(Snapshot::default().run(|| D.get()), None);
        assert_eq!(Snapshot::default().get(&D), None);
    });
}

/// `Snapshot::get`: "initial values are not computed"; a child inherits an initial
/// value once computed, and an owner that inherited nothing computes its own.
#[test]
fn snapshot_get_computes_no_initial_value() {
    static INIT_CALLS: AtomicUsize = AtomicUsize::new(0);
    static IWI: Local<u32> = Local::inheritable_with_initial(|| {
        INIT_CALLS.fetch_add(1, Ordering::SeqCst);
        9
    });
    fresh(|| {
        assert_eq!(Snapshot::capture().get(&IWI), None);
        assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 0);
        assert!(!IWI.is_set());
        assert_eq!(IWI.get(), Some(9));
        assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(Snapshot::capture().get(&IWI), Some(9));
        // A child inherits the computed value (no new init).
        assert_eq!(Snapshot::capture().run(|| IWI.get()), Some(9));
        assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 1);
    });
    // An owner that inherited nothing computes its own.
    assert_eq!(fresh(|| IWI.get()), Some(9));
    assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------
// `inheritable_with`: when and where `fork` runs
// ---------------------------------------------------------------------------------

/// `Snapshot::get` of an `inheritable_with` key returns the value "as captured, not
/// forked"; an owner seeded from a snapshot made by `with_value` forks it "once per
/// child owner"; `is_set` does not fork.
#[test]
fn snapshot_get_is_unforked_and_each_owner_seeded_from_it_forks_once() {
    static FORKS: AtomicUsize = AtomicUsize::new(0);
    static FORKED: Local<u32> = Local::inheritable_with(|v| {
        FORKS.fetch_add(1, Ordering::SeqCst);
        v + 100
    });
    let forks = || FORKS.load(Ordering::SeqCst);
    let s = Snapshot::empty().with_value(&FORKED, 1);
    let before = forks();
    assert_eq!(s.get(&FORKED), Some(1));
    assert_eq!(forks(), before);
    let (a, again, set) = s.run(|| {
        let set = FORKED.is_set();
        let at_start = forks();
        let a = FORKED.get();
        let b = FORKED.get();
        assert_eq!(forks(), at_start + 1, "forked more than once");
        (a, b, set)
    });
    assert!(set, "an inherited value is present");
    assert_eq!((a, again), (Some(101), Some(101)));
    assert_eq!(forks(), before + 1);
    // A second owner from the same snapshot forks its own copy.
    assert_eq!(s.run(|| FORKED.get()), Some(101));
    assert_eq!(forks(), before + 2);
    // Captured in an owner: get is the unforked value.
    fresh(|| {
        FORKED.set(7);
        let n = forks();
        let captured = Snapshot::capture();
        assert_eq!(captured.get(&FORKED), Some(7));
        assert_eq!(forks(), n);
        // `is_set` in a child does not fork.
        assert!(captured.run(|| FORKED.is_set()));
        assert_eq!(forks(), n);
    });
}

/// A child's first access is `take` or `replace`: `fork` runs once, what comes back is
/// the forked value (the child's own), and nothing comes back from the seed after it.
#[test]
fn take_and_replace_as_a_childs_first_access_fork_exactly_once() {
    static K_FORKS: AtomicUsize = AtomicUsize::new(0);
    static K: Local<Vec<u32>> = Local::inheritable_with(|v| {
        K_FORKS.fetch_add(1, Ordering::SeqCst);
        let mut v = v.clone();
        v.push(0);
        v
    });
    fresh(|| {
        K.set(vec![1]);
        let s = Snapshot::capture();
        let taken = s.run(|| {
            let t = K.take();
            (t, K.get())
        });
        assert_eq!(taken, (Some(vec![1, 0]), None));
        assert_eq!(K_FORKS.load(Ordering::SeqCst), 1);
        let replaced = s.run(|| {
            let old = K.replace(vec![9]);
            (old, K.get())
        });
        assert_eq!(replaced, (Some(vec![1, 0]), Some(vec![9])));
        assert_eq!(K_FORKS.load(Ordering::SeqCst), 2);
        // The creator's value is untouched.
        assert_eq!(K.get(), Some(vec![1]));
    });
}

/// "`fork` runs in the child, with the child's storage current, and may use the API";
/// "nothing is forked when a child is created" (captures, tasks, `Carried`s, threads
/// that never look at the key).
#[test]
fn fork_runs_in_the_child_and_never_at_capture() {
    static FORK_CALLS: AtomicUsize = AtomicUsize::new(0);
    static FORK_SAW: Mutex<Vec<(TaskId, Option<u32>)>> = Mutex::new(Vec::new());
    static SIDE: Local<u32> = Local::new();
    static CHILD_MARK: Local<u32> = Local::inheritable();
    static FK2: Local<String> = Local::inheritable_with(|v| {
        FORK_CALLS.fetch_add(1, Ordering::SeqCst);
        FORK_SAW
            .lock()
            .unwrap()
            .push((tasklocal::id(), CHILD_MARK.get()));
        SIDE.set(99);
        format!("{v}'")
    });
    fresh(|| {
        FK2.set("p".into());
        CHILD_MARK.set(1);
        let mut keep = Vec::new();
        for _ in 0..50 {
            keep.push(Snapshot::capture());
            keep.push(Carried::new(()).into_parts().1);
            drop(tasklocal::task(async {}));
            block_on(tasklocal::task(async { CHILD_MARK.get() }));
            tasklocal::thread::spawn(|| ()).join().unwrap();
        }
        assert_eq!(FORK_CALLS.load(Ordering::SeqCst), 0, "forked at capture");
        let s = Snapshot::capture();
        let (child, seen, side) = s.run(|| {
            CHILD_MARK.set(2);
            let v = FK2.get();
            (tasklocal::id(), v, SIDE.get())
        });
        assert_eq!(seen.as_deref(), Some("p'"));
        assert_eq!(side, Some(99), "what fork set in the child is the child's");
        assert_eq!(*FORK_SAW.lock().unwrap(), [(child, Some(2))]);
        assert_eq!(SIDE.get(), None, "fork wrote into the creator");
        assert_eq!(FK2.get().as_deref(), Some("p"));
    });
}

/// `scope` as a child's first access to an `inheritable_with` key: the child's value
/// afterwards is what it would have been without the scope (the fork of what it
/// inherited), and a grandchild created inside the scope forks the scoped value.
#[test]
fn scope_as_a_childs_first_access_of_a_forked_key() {
    static SF_FORKS: AtomicUsize = AtomicUsize::new(0);
    static SF2: Local<String> = Local::inheritable_with(|s| {
        SF_FORKS.fetch_add(1, Ordering::SeqCst);
        format!("{s}+")
    });
    fresh(|| {
        SF2.set("parent".into());
        let s = Snapshot::capture();
        let (inside, after, grandchild) = s.run(|| {
            let inside = SF2.scope("scoped".into(), || {
                (SF2.get(), Snapshot::capture().run(|| SF2.get()))
            });
            (inside, SF2.get(), Snapshot::capture().run(|| SF2.get()))
        });
        assert_eq!(inside.0.as_deref(), Some("scoped"));
        assert_eq!(inside.1.as_deref(), Some("scoped+"));
        assert_eq!(after.as_deref(), Some("parent+"));
        assert!(
            grandchild.as_deref() == Some("parent++") || grandchild.as_deref() == Some("parent+"),
            "{grandchild:?}"
        );
        assert_eq!(SF2.get().as_deref(), Some("parent"));
    });
}

/// "When fork panics": "A panic of fork while it copies a captured value of the owner's
/// own (see Writes) propagates: with_mut leaves the value as it was; take and replace
/// have removed it (the captured contexts keep theirs)."
#[test]
fn a_fork_that_panics_on_the_owners_captured_value_leaves_it_to_with_mut_and_not_to_take() {
    static FAIL: AtomicBool = AtomicBool::new(false);
    static PF2: Local<Vec<u32>> = Local::inheritable_with(|v| {
        if FAIL.load(Ordering::SeqCst) {
            panic!("fork fails");
        }
        v.clone()
    });
    fresh(|| {
        PF2.set(vec![1]);
        let s = Snapshot::capture();
        FAIL.store(true, Ordering::SeqCst);
        let msg = panics(|| {
            let _ = PF2.with_mut(|v| v.push(2));
        });
        assert!(msg.contains("fork fails"), "{msg}");
        assert_eq!(PF2.get(), Some(vec![1]), "with_mut changed the value");
        // The try_ form propagates too ("propagates").
        assert!(catch_unwind(AssertUnwindSafe(|| PF2.try_with_mut(|v| v.push(3)))).is_err());
        assert_eq!(PF2.get(), Some(vec![1]), "try_with_mut changed the value");
        FAIL.store(false, Ordering::SeqCst);
        // Not changed by the failed calls, nor is the snapshot.
        assert_eq!(s.get(&PF2), Some(vec![1]));
        FAIL.store(true, Ordering::SeqCst);
        let _ = catch_unwind(AssertUnwindSafe(|| PF2.take()));
        FAIL.store(false, Ordering::SeqCst);
        assert_eq!(PF2.get(), None, "take did not remove the value");
        assert!(!PF2.is_set());
        assert_eq!(s.get(&PF2), Some(vec![1]));
        assert_eq!(s.run(|| PF2.get()), Some(vec![1]));
        // replace
        PF2.set(vec![5]);
        let s2 = Snapshot::capture();
        FAIL.store(true, Ordering::SeqCst);
        let _ = catch_unwind(AssertUnwindSafe(|| PF2.replace(vec![6])));
        FAIL.store(false, Ordering::SeqCst);
        assert_ne!(
            PF2.get(),
            Some(vec![5]),
            "replace did not remove the old value"
        );
        assert_eq!(s2.get(&PF2), Some(vec![5]));
    });
}

// ---------------------------------------------------------------------------------
// Carried
// ---------------------------------------------------------------------------------

/// `into_inner`: "its values are released now, unless another snapshot or owner still
/// shares them"; `into_parts` hands the context over as a snapshot.
#[test]
fn into_inner_and_into_parts_release_the_context_once_no_clone_holds_it() {
    static CARRIED_KEY: Local<Arc<u32>> = Local::inheritable();
    let (carried, weak) = fresh(|| {
        let value = Arc::new(5);
        let weak = Arc::downgrade(&value);
        CARRIED_KEY.set(value);
        (Carried::new("job"), weak)
    });
    assert!(
        weak.upgrade().is_some(),
        "the carried context keeps the value"
    );
    let copy = carried.clone();
    assert_eq!(carried.into_inner(), "job");
    assert!(weak.upgrade().is_some(), "a clone still shares it");
    let (v, snapshot) = copy.into_parts();
    assert_eq!(v, "job");
    assert_eq!(snapshot.get(&CARRIED_KEY).as_deref(), Some(&5));
    drop(snapshot);
    assert!(
        weak.upgrade().is_none(),
        "released when the last holder let go"
    );
}

/// `Carried::run` when `f` panics: "the owner ends first" (its exit handlers ran), and
/// the panic propagates; clones each run in an owner of their own, and one clone's
/// writes are not seen by another.
#[test]
fn run_ends_its_owner_before_a_panic_goes_on_and_each_clone_runs_in_its_own() {
    static RAN: AtomicBool = AtomicBool::new(false);
    static CR: Local<u32> = Local::inheritable();
    let carried = fresh(|| {
        CR.set(1);
        Carried::new(10u32)
    });
    let a = carried.clone();
    let b = carried.clone();
    let msg = panics(move || {
        carried.run(|_| {
            tasklocal::at_exit(|| RAN.store(true, Ordering::SeqCst));
            panic!("boom");
        })
    });
    assert!(msg.contains("boom"));
    assert!(RAN.load(Ordering::SeqCst));
    let (ida, seen_a) = a.run(|n| {
        assert_eq!(CR.get(), Some(1));
        CR.set(n + 1);
        (tasklocal::id(), CR.get())
    });
    let (idb, seen_b) = b.run(|n| (tasklocal::id(), CR.get().map(|c| c + n)));
    assert_eq!(seen_a, Some(11));
    assert_eq!(seen_b, Some(11), "a clone saw another clone's write");
    assert_ne!(ida, idb);
}

/// `Carried::with_snapshot` carries the snapshot given; `get_mut`/`get_ref` reach the
/// value; `task` runs the future in an owner seeded from the snapshot, and the caller
/// sees none of it.
#[test]
fn with_snapshot_get_ref_get_mut_and_task() {
    static CA: Local<u32> = Local::inheritable();
    let mut c = Carried::with_snapshot(vec![1], Snapshot::empty().with_value(&CA, 4));
    c.get_mut().push(2);
    assert_eq!(c.get_ref(), &vec![1, 2]);
    assert_eq!(c.snapshot().get(&CA), Some(4));
    let out = block_on(c.task(|v| async move { (v, CA.get()) }));
    assert_eq!(out, (vec![1, 2], Some(4)));
    assert_eq!(CA.get(), None);
}
