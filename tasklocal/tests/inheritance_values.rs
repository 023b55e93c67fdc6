//! Inheritance (SPEC section 4), what a child gets: snapshots are immutable, isolated
//! tasks start empty, initial values and copies on first write, grandchildren, and keys
//! that are never inherited (non-inheritable, dynamic). The keys and the helpers are
//! those of `inheritance.rs` (`support::inherit`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::executor::block_on;
use support::inherit::{
    assert_inherited, assert_values, set_values, Init, Level, INH, INH_INIT, PLAIN, WITH_INIT,
};
use tasklocal::{Local, Snapshot, Task};

#[test]
fn snapshot_is_clone_send_sync_and_immutable() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Snapshot>();
    Snapshot::empty().run(|| {
        set_values(1);
        let snapshot = Snapshot::capture();
        let clone = snapshot.clone();
        set_values(2);
        tasklocal::reset(); // the owner's values go; the snapshot's stay
        assert_eq!(INH.get(), None);
        snapshot.run(|| assert_inherited(1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = clone.clone();
                std::thread::spawn(move || s.run(|| assert_inherited(1)))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Snapshot::empty().run(|| INH.get()), None);
    });
}

#[test]
fn isolated_task_inherits_nothing() {
    Snapshot::empty().run(|| {
        set_values(1);
        block_on(Task::isolated(async {
            assert_eq!(INH.get(), None);
            assert_eq!(INH_INIT.get(), Some(Level(100)));
            assert_eq!(PLAIN.get(), None);
            assert_eq!(WITH_INIT.get(), Some(Init(7)));
            assert_eq!(tasklocal::get::<_, u32>(&"dyn"), None);
            // Its own children inherit from it, not from the outer owner.
            INH.set("isolated".into());
            let child = tasklocal::task(async { INH.get() }).await;
            assert_eq!(child.as_deref(), Some("isolated"));
        }));
        assert_values(1);
    });
}

#[test]
fn inheritable_with_initial_without_inherited_value_gets_init() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static LEVEL: Local<u8> = Local::inheritable_with_initial(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        3
    });
    Snapshot::empty().run(|| {
        // The parent never touched it: the child computes its own initial value.
        assert_eq!(Snapshot::capture().run(|| LEVEL.get()), Some(3));
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        // The parent's computed initial value is a value: inherited, not recomputed.
        assert_eq!(LEVEL.get(), Some(3));
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
        LEVEL.with_mut(|l| *l = 5);
        assert_eq!(block_on(tasklocal::task(async { LEVEL.get() })), Some(5));
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
        // Taken: the child starts from the initial value again.
        assert_eq!(LEVEL.take(), Some(5));
        assert_eq!(
            tasklocal::thread::spawn(|| LEVEL.get()).join().unwrap(),
            Some(3)
        );
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn with_mut_on_an_inherited_value_copies_on_first_write_only() {
    static CLONES: AtomicUsize = AtomicUsize::new(0);
    #[derive(Debug, PartialEq)]
    struct Counted(Vec<u32>);
    impl Clone for Counted {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::SeqCst);
            Counted(self.0.clone())
        }
    }
    static LIST: Local<Counted> = Local::inheritable();
    let clones = || CLONES.load(Ordering::SeqCst);
    Snapshot::empty().run(|| {
        LIST.set(Counted(vec![1]));
        // Not shared yet: mutated in place.
        LIST.with_mut(|l| l.0.push(2));
        assert_eq!(clones(), 0);
        let snapshot = Snapshot::capture();
        snapshot.run(|| {
            LIST.with_mut(|l| l.0.push(3)); // shared with the parent: copied
            assert_eq!(clones(), 1);
            LIST.with_mut(|l| l.0.push(4)); // now its own: no copy
            assert_eq!(clones(), 1);
            assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2, 3, 4]);
        });
        // The parent and the snapshot still see the old value.
        assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2]);
        snapshot.run(|| assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2]));
        // The parent's own write copies too (the snapshot holds the value), once.
        let before = clones();
        LIST.with_mut(|l| l.0.push(5));
        LIST.with_mut(|l| l.0.push(6));
        assert_eq!(clones(), before + 1);
        assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2, 5, 6]);
        snapshot.run(|| assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2]));
        // A task's first write copies; the parent's value is untouched.
        block_on(tasklocal::task(async {
            LIST.with_mut(|l| l.0.clear());
            assert_eq!(LIST.with(|l| l.unwrap().0.len()), 0);
        }));
        assert_eq!(LIST.with(|l| l.unwrap().0.clone()), vec![1, 2, 5, 6]);
    });
}

#[test]
fn set_in_the_child_does_not_touch_the_shared_value() {
    // `set` over a value shared with the parent replaces the child's reference only.
    Snapshot::empty().run(|| {
        INH.set("parent".into());
        block_on(tasklocal::task(async {
            INH.set("child".into());
            assert_eq!(INH.replace("child 2".into()).as_deref(), Some("child"));
            assert_eq!(INH.take().as_deref(), Some("child 2"));
            assert_eq!(INH.get(), None);
        }));
        assert_eq!(INH.get().as_deref(), Some("parent"));
        // `take` in the child of an inherited value hands out a copy.
        let taken = block_on(tasklocal::task(async { INH.take() }));
        assert_eq!(taken.as_deref(), Some("parent"));
        assert_eq!(INH.get().as_deref(), Some("parent"));
    });
}

#[test]
fn grandchildren_inherit_through_their_parent() {
    Snapshot::empty().run(|| {
        set_values(1);
        let (child_saw, grand_before, grand_after, great) = block_on(tasklocal::task(async {
            // Created before the child writes, by a child without a storage yet.
            let before = tasklocal::task(async { INH.get() });
            set_values(2);
            let after = tasklocal::task(async {
                assert_inherited(2);
                // A great-grandchild, from a grandchild that never wrote.
                tasklocal::thread::spawn(|| INH.get()).join().unwrap()
            });
            (INH.get(), before.await, after.await, INH_INIT.get())
        }));
        assert_eq!(child_saw.as_deref(), Some("inh 2"));
        assert_eq!(grand_before.as_deref(), Some("inh 1"));
        assert_eq!(grand_after.as_deref(), Some("inh 2"));
        assert_eq!(great, Some(Level(2)));
        assert_values(1);
    });
}

#[test]
fn grandchild_of_a_child_that_never_touched_its_storage() {
    Snapshot::empty().run(|| {
        set_values(1);
        let seen = block_on(tasklocal::task(async {
            tasklocal::task(async { Snapshot::capture().run(|| INH.get()) }).await
        }));
        assert_eq!(seen.as_deref(), Some("inh 1"));
    });
}

#[test]
fn capture_inside_a_child_sees_the_childs_values() {
    Snapshot::empty().run(|| {
        set_values(1);
        let snapshot = Snapshot::capture().run(|| {
            INH.set("inner".into());
            Snapshot::capture()
        });
        assert_eq!(snapshot.run(|| INH.get()).as_deref(), Some("inner"));
        assert_eq!(INH.get().as_deref(), Some("inh 1"));
    });
}

/// Many inheritable keys of one type, and non-inheritable keys of the same and of
/// another type: inheritable and non-inheritable keys are numbered separately, so
/// whatever the order in which this binary's keys are first used, every
/// non-inheritable key here shares its number with one of these inheritable keys.
static INHERITED_U64: [Local<u64>; 256] = [const { Local::inheritable() }; 256];
static PLAIN_U64: [Local<u64>; 32] = [const { Local::new() }; 32];
static PLAIN_INIT_U64: [Local<u64>; 32] = [const { Local::with_initial(|| 0) }; 32];
#[derive(Clone, Debug, PartialEq)]
struct Other(u8);
static PLAIN_INIT_OTHER: [Local<Other>; 32] = [const { Local::with_initial(|| Other(1)) }; 32];

/// Sets every key above in the current owner.
fn set_many() {
    for (i, key) in INHERITED_U64.iter().enumerate() {
        key.set(i as u64 + 1);
    }
    for key in PLAIN_U64.iter().chain(&PLAIN_INIT_U64) {
        key.set(u64::MAX);
    }
    for key in &PLAIN_INIT_OTHER {
        key.set(Other(2));
    }
}

// Each check only reads: the first read that stored an initial value would create the
// child's storage and so hide the reads after it.
fn check_plain() {
    for (i, key) in PLAIN_U64.iter().enumerate() {
        assert_eq!(key.get(), None, "non-inheritable key {i}");
        assert!(!key.is_set(), "non-inheritable key {i}");
        assert_eq!(key.with(|v| v.copied()), None, "non-inheritable key {i}");
    }
}

fn check_plain_init() {
    for (i, key) in PLAIN_INIT_U64.iter().enumerate() {
        assert_eq!(
            key.try_with(|v| v.copied()),
            Ok(Some(0)),
            "key with initial value {i}"
        );
    }
}

fn check_plain_init_other_type() {
    for (i, key) in PLAIN_INIT_OTHER.iter().enumerate() {
        assert_eq!(key.get(), Some(Other(1)), "key with initial value {i}");
    }
}

#[test]
fn non_inheritable_keys_are_not_read_from_the_inherited_values() {
    Snapshot::empty().run(|| {
        set_many();
        // Children that only read: none has a storage of its own yet.
        for check in [check_plain, check_plain_init, check_plain_init_other_type] {
            block_on(tasklocal::task(async { check() }));
            Snapshot::capture().run(check);
            tasklocal::thread::spawn(check).join().unwrap();
        }
    });
}

#[test]
fn non_inheritable_keys_are_not_inherited_once_the_child_has_a_storage() {
    Snapshot::empty().run(|| {
        set_many();
        Snapshot::capture().run(|| {
            tasklocal::set("storage", ()); // the child's storage exists now
            check_plain();
            check_plain_init();
            check_plain_init_other_type();
            for (i, key) in INHERITED_U64.iter().enumerate() {
                assert_eq!(key.get(), Some(i as u64 + 1));
            }
        });
    });
}

#[test]
/// Documented on `Local::with_mut`: while its value is being changed, a child
/// created inside the closure does not see the key (it sees neither a half-changed
/// value nor a stale one); the other keys are inherited as usual.
fn child_created_inside_with_mut_does_not_see_the_key_being_changed() {
    Snapshot::empty().run(|| {
        INH.set("request".into());
        INHERITED_U64[0].set(7);
        let (seen, other, snapshot) = INH
            .with_mut(|v| {
                v.push_str("-1");
                (
                    tasklocal::thread::spawn(|| INH.get()).join().unwrap(),
                    tasklocal::thread::spawn(|| INHERITED_U64[0].get())
                        .join()
                        .unwrap(),
                    Snapshot::capture(),
                )
            })
            .unwrap();
        assert_eq!(INH.get().as_deref(), Some("request-1"));
        assert_eq!(seen, None);
        assert_eq!(other, Some(7));
        assert!(!snapshot.run(|| INH.is_set()));
        // Afterwards, children see the new value again.
        assert_eq!(
            Snapshot::capture().run(|| INH.get()).as_deref(),
            Some("request-1")
        );
    });
}

#[test]
fn dynamic_keys_are_never_inherited() {
    Snapshot::empty().run(|| {
        tasklocal::set("k", 1u32);
        tasklocal::set(5u64, String::from("v"));
        let seen = block_on(tasklocal::task(async {
            (
                tasklocal::get::<_, u32>(&"k"),
                tasklocal::get::<_, String>(&5u64),
                tasklocal::take::<_, u32>(&"k"),
                tasklocal::remove(&5u64),
            )
        }));
        assert_eq!(seen, (None, None, None, false));
        assert_eq!(tasklocal::get::<_, u32>(&"k"), Some(1));
    });
}
