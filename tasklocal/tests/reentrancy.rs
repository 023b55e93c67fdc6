//! Reentrancy (SPEC section 2): any method of any key may be called from inside a
//! `with`/`with_mut` closure or an initializer, and never deadlocks; what cannot be
//! served — the value borrowed right now — panics with a clear message, and the
//! `try_` form returns an error for which `is_borrowed()` is true.
//!
//! Every test runs in a fresh owner (`Snapshot::empty().run`), so tests do not share
//! values through the test thread.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tasklocal::{AccessError, Local, Snapshot, Task};

fn fresh<R>(f: impl FnOnce() -> R) -> R {
    Snapshot::empty().run(f)
}

fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "<non-string panic>".into()),
    }
}

/// `f` panics, with a message saying the value is borrowed by `with`/`with_mut`.
#[track_caller]
fn assert_panics_borrowed(what: &str, f: impl FnOnce()) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("`{what}` did not panic"),
        Err(payload) => {
            let msg = message(payload);
            assert!(
                msg.starts_with("tasklocal:") && msg.contains("borrowed") && msg.contains("with"),
                "`{what}` panicked with an unclear message: {msg:?}"
            );
        }
    }
}

#[track_caller]
fn assert_borrowed<T: std::fmt::Debug>(what: &str, result: Result<T, AccessError>) {
    match result {
        Ok(v) => panic!("`{what}` succeeded: {v:?}"),
        Err(err) => {
            assert!(err.is_borrowed(), "`{what}`: {err:?}");
            assert!(
                !err.is_no_storage() && !err.is_destroyed(),
                "`{what}`: {err:?}"
            );
        }
    }
}

// The keys the closures borrow.
static PLAIN: Local<String> = Local::new();
static INH: Local<String> = Local::inheritable();
static INIT: Local<Vec<u32>> = Local::with_initial(|| vec![0]);
static INH_INIT: Local<Vec<u32>> = Local::inheritable_with_initial(|| vec![0]);

// The other keys, used from inside the closures.
static O_PLAIN: Local<u64> = Local::new();
static O_INH: Local<String> = Local::inheritable();
static O_INIT: Local<u32> = Local::with_initial(|| 7);
static O_INH_INIT: Local<u32> = Local::inheritable_with_initial(|| 8);

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

#[test]
fn scope_restores_the_previous_state() {
    fresh(|| {
        // Unset before: unset after.
        assert_eq!(
            PLAIN.scope("a".into(), || PLAIN.get()).as_deref(),
            Some("a")
        );
        assert!(!PLAIN.is_set());
        // Set before: restored, including what the closure wrote meanwhile.
        PLAIN.set("outer".into());
        PLAIN.scope("inner".into(), || {
            assert_eq!(PLAIN.get().as_deref(), Some("inner"));
            PLAIN.set("changed inside".into());
            PLAIN.scope("nested".into(), || {
                assert_eq!(PLAIN.get().as_deref(), Some("nested"));
                PLAIN.take();
            });
            assert_eq!(PLAIN.get().as_deref(), Some("changed inside"));
        });
        assert_eq!(PLAIN.get().as_deref(), Some("outer"));
        // Every kind of key.
        INH.scope("s".into(), || assert_eq!(INH.get().as_deref(), Some("s")));
        assert!(!INH.is_set());
        // An initial value not computed before stays "not computed".
        INIT.scope(vec![9], || assert_eq!(INIT.get(), Some(vec![9])));
        assert!(!INIT.is_set());
        assert_eq!(INIT.get(), Some(vec![0]));
        // A child created inside the scope inherits the scoped value.
        let seen = INH.scope("scoped".into(), || {
            futures::executor::block_on(tasklocal::task(async { INH.get() }))
        });
        assert_eq!(seen.as_deref(), Some("scoped"));
    });
}

#[test]
fn scope_restores_also_when_the_closure_panics() {
    fresh(|| {
        let r = catch_unwind(|| PLAIN.scope("a".into(), || panic!("inside scope")));
        assert!(r.is_err());
        assert!(!PLAIN.is_set());

        PLAIN.set("outer".into());
        INH.set("outer inh".into());
        let r = catch_unwind(|| {
            PLAIN.scope("inner".into(), || {
                INH.scope("inner inh".into(), || {
                    PLAIN.set("overwritten".into());
                    panic!("nested")
                })
            })
        });
        assert!(r.is_err());
        assert_eq!(PLAIN.get().as_deref(), Some("outer"));
        assert_eq!(INH.get().as_deref(), Some("outer inh"));

        let r = catch_unwind(|| INIT.scope(vec![1], || panic!("x")));
        assert!(r.is_err());
        assert!(!INIT.is_set());
    });
}

#[test]
fn drop_of_a_replaced_value_may_use_the_api() {
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
    struct Noisy(&'static str);
    impl Drop for Noisy {
        fn drop(&mut self) {
            // Reads the key it was replaced in, other keys, writes others, and
            // finally the same key.
            let now = NOISY.with(|v| v.map(|v| v.0));
            LOG.lock()
                .unwrap()
                .push(format!("drop {} sees {now:?}", self.0));
            O_PLAIN.set(O_PLAIN.get().unwrap_or(0) + 1);
            tasklocal::set("dropped", self.0);
            tasklocal::at_exit(|| ());
            if self.0 == "first" {
                NOISY.set(Noisy("set by drop"));
            }
        }
    }
    static NOISY: Local<Noisy> = Local::new();
    fresh(|| {
        NOISY.set(Noisy("first"));
        NOISY.set(Noisy("second"));
        // The old value is dropped after the new one is in place; its `Drop` then
        // replaced it in turn.
        assert_eq!(NOISY.with(|v| v.map(|v| v.0)), Some("set by drop"));
        assert_eq!(
            LOG.lock().unwrap()[..],
            [
                "drop first sees Some(\"second\")",
                "drop second sees Some(\"set by drop\")"
            ]
        );
        assert_eq!(O_PLAIN.get(), Some(2));
        assert_eq!(tasklocal::get::<_, &str>(&"dropped"), Some("second"));
        // `replace` and `take` hand the value out: dropped by the caller.
        drop(NOISY.replace(Noisy("third")));
        drop(NOISY.take());
        assert_eq!(O_PLAIN.get(), Some(4));
        // Dynamic keys too.
        tasklocal::set("noisy", Noisy("dyn first"));
        tasklocal::set("noisy", Noisy("dyn second"));
        assert_eq!(tasklocal::get::<_, &str>(&"dropped"), Some("dyn first"));
        assert!(tasklocal::remove(&"noisy"));
        assert_eq!(tasklocal::get::<_, &str>(&"dropped"), Some("dyn second"));
    });
}

#[test]
fn dynamic_keys_inside_with() {
    fresh(|| {
        tasklocal::set("k", String::from("v"));
        tasklocal::with(&"k", |v: Option<&String>| {
            assert_eq!(v.map(String::as_str), Some("v"));
            // The same key: reads work.
            assert_eq!(tasklocal::get::<_, String>(&"k").as_deref(), Some("v"));
            tasklocal::with(&"k", |w: Option<&String>| assert_eq!(w, v));
            // The same key: writes cannot be served.
            assert_panics_borrowed("set", || tasklocal::set("k", String::from("w")));
            assert_panics_borrowed("remove", || {
                let _ = tasklocal::remove(&"k");
            });
            assert_panics_borrowed("take", || drop(tasklocal::take::<_, String>(&"k")));
            assert_borrowed("try_set", tasklocal::try_set("k", String::from("w")));
            assert_borrowed("try_remove", tasklocal::try_remove(&"k"));
            assert_borrowed("try_take", tasklocal::try_take::<_, String>(&"k"));
            // Many other keys, forcing the tables to grow while "k" is borrowed.
            for i in 0..200u32 {
                tasklocal::set(i, i);
            }
            for i in 0..200u32 {
                assert_eq!(tasklocal::get::<_, u32>(&i), Some(i));
            }
            assert_eq!(v.map(String::as_str), Some("v"));
            // Typed keys and the rest of the API.
            PLAIN.set("typed".into());
            PLAIN.with(|p| assert_eq!(p.map(String::as_str), Some("typed")));
            let _ = tasklocal::id();
            tasklocal::at_exit(|| ());
            let _ = Snapshot::capture();
        });
        assert_eq!(tasklocal::get::<_, String>(&"k").as_deref(), Some("v"));
        assert_eq!(tasklocal::get::<_, u32>(&199u32), Some(199));
        tasklocal::set("k", String::from("w"));
        assert_eq!(tasklocal::take::<_, String>(&"k").as_deref(), Some("w"));
    });
}

#[test]
fn typed_keys_inside_a_dynamic_with_and_the_other_way_round() {
    fresh(|| {
        tasklocal::set("d", 1u8);
        PLAIN.set("p".into());
        PLAIN.with(|_| {
            tasklocal::with(&"d", |d: Option<&u8>| {
                assert_eq!(d, Some(&1));
                INH.set("set under two borrows".into());
                tasklocal::set("e", 2u8);
                assert_panics_borrowed("PLAIN.set", || PLAIN.set("q".into()));
                assert_panics_borrowed("set d", || tasklocal::set("d", 3u8));
            });
        });
        assert_eq!(INH.get().as_deref(), Some("set under two borrows"));
        assert_eq!(tasklocal::get::<_, u8>(&"e"), Some(2));
    });
}

/// `reset` inside a `with` cannot drop the value being read. Either it panics, or it
/// is served — and then, once the `with` returned, no value of before the reset is
/// left.
#[test]
fn reset_inside_with_is_served_or_refused() {
    fresh(|| {
        PLAIN.set("borrowed".into());
        O_PLAIN.set(1);
        let r = catch_unwind(|| PLAIN.with(|_| tasklocal::reset()));
        if r.is_ok() {
            assert_eq!(O_PLAIN.get(), None);
            assert_eq!(PLAIN.get(), None, "reset left the borrowed value in place");
        }
    });
    fresh(|| {
        tasklocal::set("borrowed", 1u32);
        let r = catch_unwind(|| tasklocal::with(&"borrowed", |_: Option<&u32>| tasklocal::reset()));
        if r.is_ok() {
            assert_eq!(tasklocal::get::<_, u32>(&"borrowed"), None);
        }
    });
}

/// `unload` inside a `with`: either it panics, or it is served (values dropped,
/// handlers discarded, a new id) — never silently ignored.
#[test]
fn unload_inside_with_is_served_or_refused() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    let served = std::cell::Cell::new(false);
    fresh(|| {
        PLAIN.set("borrowed".into());
        O_PLAIN.set(1);
        let id = tasklocal::id();
        tasklocal::at_exit(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        });
        let r = catch_unwind(|| PLAIN.with(|_| tasklocal::unload()));
        served.set(r.is_ok());
        if r.is_ok() {
            assert_eq!(O_PLAIN.get(), None, "unload ignored");
            assert_ne!(tasklocal::id(), id, "unload ignored");
        }
    });
    // Served: the handler was discarded. Refused: the owner kept it, and ran it at its end.
    let expected = if served.get() { 0 } else { 1 };
    assert_eq!(ran.load(Ordering::SeqCst), expected);
}

#[test]
fn reset_inside_a_dynamic_with_never_mixes_up_keys() {
    fresh(|| {
        tasklocal::set("a", 1u32);
        tasklocal::with(&"a", |_: Option<&u32>| {
            let _ = catch_unwind(|| {
                tasklocal::reset();
                // A new key after the reset: it must not land on "a"'s cell.
                let _ = tasklocal::try_set("b", 2u32);
            });
        });
        let b = tasklocal::get::<_, u32>(&"b");
        assert!(
            b.is_none() || b == Some(2),
            "key \"b\" reads another key's value: {b:?}"
        );
        tasklocal::set("c", 3u32);
        assert_eq!(tasklocal::get::<_, u32>(&"c"), Some(3));
    });
}

#[test]
fn entering_an_owner_inside_with() {
    // Inside `with` of an inheritable key (read through a shared reference): works.
    fresh(|| {
        INH.set("i".into());
        let seen = INH.with(|_| {
            let run = Snapshot::capture().run(|| INH.get());
            let task = futures::executor::block_on(tasklocal::task(async { INH.get() }));
            (run, task)
        });
        assert_eq!(seen, (Some("i".into()), Some("i".into())));
    });
    // Inside `with` of a non-inheritable key: documented to panic, clearly.
    fresh(|| {
        PLAIN.set("p".into());
        for (what, enter) in [
            ("Snapshot::run", (|| Snapshot::empty().run(|| ())) as fn()),
            ("Task poll", || {
                futures::executor::block_on(Task::isolated(async {}));
            }),
        ] {
            let r = catch_unwind(|| PLAIN.with(|_| enter()));
            let msg = message(r.expect_err(what));
            assert!(
                msg.starts_with("tasklocal:") && msg.contains("with"),
                "{what}: {msg}"
            );
        }
        // The owner is intact afterwards.
        assert_eq!(PLAIN.get().as_deref(), Some("p"));
        PLAIN.set("q".into());
    });
}
