//! Reentrancy (SPEC section 2), the rest of the API under a borrow: `scope` restores
//! the previous state (also on panic), a replaced value's `Drop` may use the API,
//! dynamic keys inside `with`, and `reset`, `unload` and entering another owner while a
//! key is borrowed. The keys are those of `reentrancy.rs` (`support::borrowed`).

mod support;

use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use support::borrowed::{assert_borrowed, assert_panics_borrowed, INH, INIT, O_PLAIN, PLAIN};
use support::{fresh, message};
use tasklocal::{Local, Snapshot, Task};

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

/// A value that counts its drops, and reads the key it was bound to while dropped.
struct Counted(&'static AtomicUsize);
impl Drop for Counted {
    fn drop(&mut self) {
        // The key is not borrowed while a scope's value is dropped: this must work.
        let _ = COUNTED.is_set();
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
static COUNTED: Local<Counted> = Local::new();

#[test]
fn scope_in_place_restores_whatever_the_closure_did() {
    // `scope` of a key whose slot exists binds and restores in place (its fast path):
    // check it against everything a closure may do to the key and to its owner.
    static OUTER: AtomicUsize = AtomicUsize::new(0);
    static BOUND: AtomicUsize = AtomicUsize::new(0);
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    fresh(|| {
        COUNTED.set(Counted(&OUTER));
        // Written over inside: the bound value goes at the write, the written one at
        // the end of the scope, and the outer one comes back.
        COUNTED.scope(Counted(&BOUND), || COUNTED.set(Counted(&WRITTEN)));
        assert_eq!(
            (BOUND.load(Ordering::SeqCst), WRITTEN.load(Ordering::SeqCst)),
            (1, 1)
        );
        // Taken inside: the outer one comes back into the empty slot.
        let taken = COUNTED.scope(Counted(&BOUND), || COUNTED.take());
        drop(taken);
        assert_eq!(BOUND.load(Ordering::SeqCst), 2);
        // The storage reset inside: the outer value comes back into the new storage.
        COUNTED.scope(Counted(&BOUND), || {
            tasklocal::reset();
            assert!(!COUNTED.is_set());
        });
        assert_eq!(BOUND.load(Ordering::SeqCst), 3);
        assert!(COUNTED.is_set());
        // Unset before, set inside: unset after.
        let outer = COUNTED
            .take()
            .expect("the outer value is back after a reset");
        COUNTED.scope(Counted(&BOUND), || COUNTED.set(Counted(&WRITTEN)));
        assert!(!COUNTED.is_set());
        assert_eq!(
            (BOUND.load(Ordering::SeqCst), WRITTEN.load(Ordering::SeqCst)),
            (4, 2)
        );
        // A panic inside, with a value written meanwhile.
        COUNTED.set(outer);
        let r = catch_unwind(|| {
            COUNTED.scope(Counted(&BOUND), || {
                COUNTED.set(Counted(&WRITTEN));
                panic!("inside scope")
            })
        });
        assert!(r.is_err());
        assert_eq!(
            (BOUND.load(Ordering::SeqCst), WRITTEN.load(Ordering::SeqCst)),
            (5, 3)
        );
        assert_eq!(
            OUTER.load(Ordering::SeqCst),
            0,
            "the outer value is back, not dropped"
        );
        // Read in place under a borrow inside: the scoped value.
        COUNTED.scope(Counted(&WRITTEN), || {
            COUNTED.with(|v| assert!(std::ptr::eq(v.unwrap().0, &WRITTEN)))
        });
        assert_eq!(WRITTEN.load(Ordering::SeqCst), 4);
    });
    // The owner's end drops the outer value, once.
    assert_eq!(OUTER.load(Ordering::SeqCst), 1);
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
