//! Reentrancy (SPEC section 2): any method of any key may be called from inside a
//! `with`/`with_mut` closure or an initializer, and never deadlocks; what cannot be
//! served — the value borrowed right now — panics with a clear message, and the
//! `try_` form returns an error for which `is_borrowed()` is true. `scope`, drops,
//! dynamic keys and whole-owner operations under a borrow: `reentrancy_owner.rs`.
//!
//! Every test runs in a fresh owner (`Snapshot::empty().run`), so tests do not share
//! values through the test thread.

mod support;

use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::borrowed::{
    assert_borrowed, assert_panics_borrowed, INH, INH_INIT, INIT, O_INH, O_INH_INIT, O_INIT,
    O_PLAIN, PLAIN,
};
use support::{fresh, message};
use tasklocal::{Local, Snapshot};

/// Every operation on keys other than the one borrowed, with checked results.
/// Returns a snapshot captured in the middle (`O_INH` is "other" in it), and a counter the exit handler bumps.
fn exercise_other_keys(handlers: &Arc<AtomicUsize>) -> Snapshot {
    assert_eq!(O_PLAIN.get(), None);
    O_PLAIN.set(1);
    assert_eq!(O_PLAIN.replace(2), Some(1));
    assert_eq!(O_PLAIN.with(|v| v.copied()), Some(2));
    assert_eq!(O_PLAIN.with_mut(|v| *v += 1), Some(()));
    assert_eq!(O_PLAIN.take(), Some(3));
    assert!(!O_PLAIN.is_set());
    assert_eq!(O_PLAIN.scope(9, || O_PLAIN.get()), Some(9));
    assert_eq!(O_PLAIN.get(), None);
    O_PLAIN.set(4);

    O_INH.set("other".into());
    let snapshot = Snapshot::capture();
    assert_eq!(O_INH.get().as_deref(), Some("other"));
    O_INH.with_mut(|s| s.push('!'));
    assert_eq!(O_INH.with(|s| s.cloned()).as_deref(), Some("other!"));

    assert_eq!(O_INIT.get(), Some(7));
    O_INIT.with_mut(|v| *v += 1);
    assert_eq!(O_INIT.get(), Some(8));
    assert_eq!(O_INH_INIT.with(|v| v.copied()), Some(8));

    tasklocal::set("dyn", 5u32);
    tasklocal::set(String::from("dyn"), 6u64);
    assert_eq!(tasklocal::get::<_, u32>(&"dyn"), Some(5));
    assert_eq!(
        tasklocal::with(&String::from("dyn"), |v: Option<&u64>| v.copied()),
        Some(6)
    );
    assert_eq!(tasklocal::take::<_, u32>(&"dyn"), Some(5));
    assert!(tasklocal::remove(&String::from("dyn")));
    tasklocal::set("dyn", 7u32);

    let id = tasklocal::id();
    assert_eq!(tasklocal::id(), id);
    let h = handlers.clone();
    tasklocal::at_exit(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    snapshot
}

/// After `exercise_other_keys` in the current owner.
fn assert_others_after() {
    assert_eq!(O_PLAIN.get(), Some(4));
    assert_eq!(O_INH.get().as_deref(), Some("other!"));
    assert_eq!(O_INIT.get(), Some(8));
    assert_eq!(tasklocal::get::<_, u32>(&"dyn"), Some(7));
}

#[test]
fn other_keys_work_inside_with_and_with_mut_of_every_kind_of_key() {
    type Borrow = fn(&mut dyn FnMut());
    let borrows: [(&str, Borrow); 6] = [
        ("PLAIN.with", |f| {
            PLAIN.with(|v| {
                assert_eq!(v.map(String::as_str), Some("plain"));
                f()
            })
        }),
        ("INH.with", |f| {
            INH.with(|v| {
                assert_eq!(v.map(String::as_str), Some("inh"));
                f()
            })
        }),
        ("PLAIN.with_mut", |f| {
            PLAIN.with_mut(|v| {
                v.push('+');
                f()
            });
        }),
        ("INH.with_mut", |f| {
            INH.with_mut(|v| {
                v.push('+');
                f()
            });
        }),
        ("INIT.with_mut", |f| {
            INIT.with_mut(|v| {
                v.push(1);
                f()
            });
        }),
        ("INH_INIT.with", |f| {
            INH_INIT.with(|v| {
                assert_eq!(v, Some(&vec![0]));
                f()
            })
        }),
    ];
    for (what, borrow) in borrows {
        let handlers = Arc::new(AtomicUsize::new(0));
        fresh(|| {
            PLAIN.set("plain".into());
            INH.set("inh".into());
            let mut snapshot = None;
            borrow(&mut || snapshot = Some(exercise_other_keys(&handlers)));
            assert_others_after();
            let snapshot = snapshot.unwrap_or_else(|| panic!("{what}: closure did not run"));
            // The snapshot taken inside saw the other keys as they were then.
            snapshot.run(|| {
                assert_eq!(O_INH.get().as_deref(), Some("other"), "{what}");
                assert_eq!(O_PLAIN.get(), None, "{what}");
            });
            assert_eq!(handlers.load(Ordering::SeqCst), 0, "{what}");
        });
        assert_eq!(handlers.load(Ordering::SeqCst), 1, "{what}: at_exit lost");
    }
}

#[test]
fn the_same_key_can_be_read_inside_its_own_with() {
    fresh(|| {
        PLAIN.set("p".into());
        INH.set("i".into());
        PLAIN.with(|v| {
            assert_eq!(v.map(String::as_str), Some("p"));
            assert_eq!(PLAIN.get().as_deref(), Some("p"));
            assert_eq!(PLAIN.try_get(), Ok(Some("p".to_string())));
            assert!(PLAIN.is_set());
            PLAIN.with(|w| assert_eq!(w.map(String::as_str), Some("p")));
        });
        INH.with(|v| {
            assert_eq!(v.map(String::as_str), Some("i"));
            assert_eq!(INH.get().as_deref(), Some("i"));
            INH.with(|w| assert_eq!(w.map(String::as_str), Some("i")));
        });
        // With an initial value computed by the outer `with`.
        INIT.with(|v| {
            assert_eq!(v, Some(&vec![0]));
            assert_eq!(INIT.get(), Some(vec![0]));
            assert!(INIT.is_set());
        });
        INH_INIT.with(|v| {
            assert_eq!(v, Some(&vec![0]));
            assert_eq!(INH_INIT.get(), Some(vec![0]));
        });
    });
}

#[test]
fn writing_the_key_a_with_is_reading_panics_and_try_forms_fail() {
    static PLAIN_INIT: Local<String> = Local::with_initial(String::new);
    for key in [&PLAIN, &PLAIN_INIT] {
        fresh(|| {
            key.set("kept".into());
            key.with(|v| {
                assert_eq!(v.map(String::as_str), Some("kept"));
                assert_panics_borrowed("set", || key.set("new".into()));
                assert_panics_borrowed("replace", || drop(key.replace("new".into())));
                assert_panics_borrowed("take", || drop(key.take()));
                assert_panics_borrowed("with_mut", || {
                    let _ = key.with_mut(|s| s.clear());
                });
                assert_panics_borrowed("scope", || key.scope("new".into(), || ()));
                assert_borrowed("try_set", key.try_set("new".into()));
                assert_borrowed("try_replace", key.try_replace("new".into()));
                assert_borrowed("try_take", key.try_take());
                assert_borrowed("try_with_mut", key.try_with_mut(|s| s.clear()));
                // Still readable, unchanged.
                assert_eq!(v.map(String::as_str), Some("kept"));
                assert_eq!(key.get().as_deref(), Some("kept"));
            });
            assert_eq!(key.get().as_deref(), Some("kept"));
            // And usable again once the `with` returned.
            key.set("after".into());
            assert_eq!(key.get().as_deref(), Some("after"));
        });
    }
}

#[test]
fn writing_an_inheritable_key_inside_its_own_with() {
    // An inheritable value is read through a shared reference the closure holds: the
    // write is served, the closure keeps reading the value it was given, and the new
    // value is there afterwards. (The docs of `Local` list this as panicking: see the
    // report that came with this test.)
    fresh(|| {
        INH.set("old".into());
        let served = INH.with(|v| {
            let served = match INH.try_set("new".into()) {
                Ok(()) => {
                    assert_eq!(INH.get().as_deref(), Some("new"));
                    true
                }
                Err(err) => {
                    assert!(err.is_borrowed());
                    assert_eq!(INH.get().as_deref(), Some("old"));
                    false
                }
            };
            // The closure's reference is unaffected either way.
            assert_eq!(v.map(String::as_str), Some("old"));
            served
        });
        let expected = if served { "new" } else { "old" };
        assert_eq!(INH.get().as_deref(), Some(expected));
        INH.set("x".into());
        assert_eq!(INH.get().as_deref(), Some("x"));
    });
}

#[test]
fn any_access_to_a_key_under_with_mut_panics_and_try_forms_fail() {
    fn check<T: Clone + Send + std::fmt::Debug + PartialEq + 'static>(
        key: &'static Local<T>,
        value: T,
        other: T,
        mutate: fn(&mut T),
    ) {
        fresh(|| {
            key.set(value.clone());
            let outcome = key.with_mut(|v| {
                mutate(v);
                assert_panics_borrowed("get", || drop(key.get()));
                assert_panics_borrowed("with", || key.with(|_| ()));
                assert_panics_borrowed("set", || key.set(other.clone()));
                assert_panics_borrowed("replace", || drop(key.replace(other.clone())));
                assert_panics_borrowed("take", || drop(key.take()));
                assert_panics_borrowed("with_mut", || {
                    let _ = key.with_mut(|_| ());
                });
                assert_panics_borrowed("scope", || key.scope(other.clone(), || ()));
                assert_borrowed("try_get", key.try_get());
                assert_borrowed("try_with", key.try_with(|_| ()));
                assert_borrowed("try_set", key.try_set(other.clone()));
                assert_borrowed("try_replace", key.try_replace(other.clone()));
                assert_borrowed("try_take", key.try_take());
                assert_borrowed("try_with_mut", key.try_with_mut(|_| ()));
                assert!(key.is_set());
                v.clone()
            });
            // The mutation went through; nothing else did.
            let mutated = outcome.expect("with_mut did not run");
            assert_ne!(mutated, value);
            assert_eq!(key.get(), Some(mutated));
        });
    }
    check(&PLAIN, "a".to_string(), "b".to_string(), |s| s.push('!'));
    check(&INH, "a".to_string(), "b".to_string(), |s| s.push('!'));
    check(&INIT, vec![5], vec![6], |v| v.push(1));
    check(&INH_INIT, vec![5], vec![6], |v| v.push(1));
}

#[test]
fn with_mut_computes_the_initial_value_reentrantly() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static COUNTED: Local<Vec<u32>> = Local::with_initial(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        // An initializer may read and write other keys.
        O_PLAIN.set(O_PLAIN.get().unwrap_or(0) + 1);
        tasklocal::set("init ran", true);
        let _ = tasklocal::id();
        vec![O_INIT.get().unwrap_or(0)]
    });
    fresh(|| {
        COUNTED.with_mut(|v| {
            assert_eq!(v, &vec![7]);
            v.push(1);
            assert_borrowed("try_get", COUNTED.try_get());
        });
        assert_eq!(COUNTED.get(), Some(vec![7, 1]));
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(O_PLAIN.get(), Some(1));
        assert_eq!(tasklocal::get::<_, bool>(&"init ran"), Some(true));
    });
}

#[test]
fn initializers_may_use_other_keys_and_dynamic_ones() {
    static SOURCE: Local<String> = Local::inheritable();
    static DERIVED: Local<String> = Local::with_initial(|| {
        let base = SOURCE.get().unwrap_or_default();
        let suffix: Option<String> = tasklocal::get(&"suffix");
        tasklocal::set("derived computed", true);
        O_INH.set("set by initializer".into());
        format!("{base}{}", suffix.unwrap_or_default())
    });
    static CHAINED: Local<String> = Local::with_initial(|| {
        // An initializer whose initializer-driven key runs another initializer.
        format!("<{}>", DERIVED.get().unwrap())
    });
    fresh(|| {
        SOURCE.set("req-1".into());
        tasklocal::set("suffix", String::from("/a"));
        assert_eq!(CHAINED.get().as_deref(), Some("<req-1/a>"));
        assert_eq!(DERIVED.get().as_deref(), Some("req-1/a"));
        assert_eq!(tasklocal::get::<_, bool>(&"derived computed"), Some(true));
        assert_eq!(O_INH.get().as_deref(), Some("set by initializer"));
        // From inside a `with` of another key, too.
        SOURCE.with(|s| {
            assert_eq!(s.map(String::as_str), Some("req-1"));
            DERIVED.take();
            assert_eq!(DERIVED.get().as_deref(), Some("req-1/a"));
        });
    });
}

#[test]
fn an_initializer_that_sets_its_own_key_is_overwritten_by_its_result() {
    static SELF_SETTING: Local<u32> = Local::with_initial(|| {
        SELF_SETTING.set(5);
        1
    });
    fresh(|| {
        assert_eq!(SELF_SETTING.get(), Some(1));
        assert_eq!(SELF_SETTING.get(), Some(1));
    });
}

/// Reading a key from its own initializer cannot be served (there is no value yet):
/// it must panic clearly, not recurse until the stack overflows — which aborts the
/// whole process and so cannot be caught here. The check runs in a child process.
#[test]
fn an_initializer_reading_its_own_key_panics_instead_of_overflowing() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_initializer_reading_its_own_key",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env("TASKLOCAL_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child process failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn child_initializer_reading_its_own_key() {
    if std::env::var_os("TASKLOCAL_TEST_CHILD").is_none() {
        return; // only meaningful as the child of the test above
    }
    static RECURSIVE: Local<u32> = Local::with_initial(|| RECURSIVE.get().unwrap_or(0) + 1);
    let r = catch_unwind(|| fresh(|| RECURSIVE.get()));
    // Served somehow (e.g. `None` inside, so 1) or a clear panic: both are fine.
    if let Err(payload) = r {
        let msg = message(payload);
        assert!(msg.starts_with("tasklocal:"), "unclear panic: {msg:?}");
    }
}
