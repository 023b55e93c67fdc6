//! Typed keys, access errors and whole-owner calls as their docs promise (SPEC sections
//! 1, 2, 3 and 5): the traits the public types promise; a `Task` polled after completion
//! panics and was torn down once; `take` and `replace` compute no initial value;
//! `with_mut` of an unset inheritable key and of an inherited one; `scope` restoring
//! every kind of key in a child through nested scopes and a panic, and after `f` unloads
//! or resets the owner; `scope` under a borrow of the same key panics and `try_scope`
//! refuses without running `f`; `reset` and `unload` inside `with` refused in both
//! forms; `Snapshot::run` inside `with`/`with_mut`; each `AccessError` kind, apart and
//! with a message of its own. Every other access under a borrow: `reentrancy*.rs`.

mod support;

use std::collections::HashSet;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use support::{fresh, message};
use tasklocal::{AccessError, Carried, Local, Snapshot, Task, TaskId};

/// Runs `f`, which must panic, and returns its panic message.
#[track_caller]
fn panics(f: impl FnOnce()) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a panic"),
        Err(payload) => message(payload),
    }
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    f.poll(&mut Context::from_waker(&waker))
}

/// The traits of SPEC 3 and 4 and of the crate docs' "Send and Sync": a key holds no
/// value itself, so it is `Sync` and `Debug` whatever `T`.
#[test]
fn public_types_have_the_promised_traits() {
    fn snapshot<T: Clone + Send + Sync + Default + Debug + 'static>() {}
    snapshot::<Snapshot>();
    fn task_id<T: Copy + Eq + Hash + Ord + Debug + Display + Send + Sync + 'static>() {}
    task_id::<TaskId>();
    fn error<T: std::error::Error + Copy + Eq + Send + Sync + 'static>() {}
    error::<AccessError>();
    fn carried<T: Clone + Send + Sync + Debug>() {}
    carried::<Carried<String>>();
    fn register_error<T: std::error::Error + Clone + Eq + Send + Sync + 'static>() {}
    register_error::<tasklocal::bridge::RegisterError>();
    fn send<T: Send>() {}
    send::<Task<std::future::Ready<u8>>>();
    fn sync<T: Sync>() {}
    sync::<Local<std::rc::Rc<u8>>>();
    sync::<Local<std::cell::Cell<u8>>>();
    fn debug<T: Debug>() {}
    debug::<Local<std::rc::Rc<u8>>>();
}

/// A `Task` polled again after it completed panics ("polled after completion"), and its
/// owner, torn down at completion, is not torn down again.
#[test]
fn a_task_polled_after_completion_panics_and_was_torn_down_once() {
    static ENDS: AtomicUsize = AtomicUsize::new(0);
    let mut t = Box::pin(tasklocal::task(async {
        tasklocal::at_exit(|| {
            ENDS.fetch_add(1, Ordering::SeqCst);
        });
        5
    }));
    assert_eq!(poll_once(t.as_mut()), Poll::Ready(5));
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
    let msg = panics(|| {
        let _ = poll_once(t.as_mut());
    });
    assert!(msg.contains("polled after completion"), "{msg}");
    drop(t);
    assert_eq!(ENDS.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------
// `Local`'s methods
// ---------------------------------------------------------------------------------

/// `take`: "An initial value not yet computed is not computed: the result is None, and
/// the next read computes it"; `replace` likewise; `is_set` counts an initial value
/// once computed; `with_mut` computes it.
#[test]
fn take_and_replace_compute_no_initial_value() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static TK: Local<u32> = Local::with_initial(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        7
    });
    fresh(|| {
        assert_eq!(TK.take(), None);
        assert_eq!(TK.try_take(), Ok(None));
        assert_eq!(CALLS.load(Ordering::SeqCst), 0);
        assert!(!TK.is_set());
        assert_eq!(
            TK.with_mut(|v| {
                *v += 1;
                *v
            }),
            Some(8)
        );
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert!(TK.is_set());
        assert_eq!(TK.take(), Some(8));
        assert!(!TK.is_set());
        assert_eq!(
            TK.replace(1),
            None,
            "replace of an uncomputed initial value"
        );
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(TK.take(), Some(1));
        assert_eq!(TK.get(), Some(7));
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    });
}

/// `with_mut`: "None when unset and no initial value", for an inheritable key too; "an
/// inherited value is copied on first write", in the child and in the owner after a
/// capture, so that the snapshot keeps its value.
#[test]
fn with_mut_of_an_unset_and_of_an_inherited_inheritable_key() {
    static WI: Local<Vec<u8>> = Local::inheritable();
    fresh(|| {
        assert_eq!(WI.with_mut(|v| v.len()), None);
        assert!(!WI.is_set());
        WI.set(vec![1]);
        let s = Snapshot::capture();
        let child = s.run(|| {
            WI.with_mut(|v| v.push(2));
            WI.get()
        });
        assert_eq!(child, Some(vec![1, 2]));
        assert_eq!(WI.get(), Some(vec![1]));
        assert_eq!(s.get(&WI), Some(vec![1]));
        // The owner's own with_mut after a capture: the snapshot keeps its value.
        WI.with_mut(|v| v.push(3));
        assert_eq!(s.get(&WI), Some(vec![1]));
        assert_eq!(WI.get(), Some(vec![1, 3]));
    });
}

/// `scope` "restores the previous state (including "unset")", for every kind of key,
/// nested, with a panic in the middle, in a child that inherited a value.
#[test]
fn scope_restores_every_kind_of_key_in_a_child_through_a_panic() {
    static SN: Local<String> = Local::new();
    static SI: Local<String> = Local::inheritable();
    static SF: Local<String> = Local::inheritable_with(|s| format!("{s}+"));
    static SII: Local<String> = Local::inheritable_with_initial(|| "init".into());
    fresh(|| {
        SI.set("parent".into());
        SF.set("parent".into());
        let s = Snapshot::capture();
        s.run(|| {
            for key in [&SN, &SI, &SF, &SII] {
                let before = key.get();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    key.scope("a".into(), || {
                        assert_eq!(key.get().as_deref(), Some("a"));
                        key.scope("b".into(), || {
                            assert_eq!(key.get().as_deref(), Some("b"));
                            panic!("inner");
                        })
                    })
                }));
                assert!(r.is_err());
                assert_eq!(key.get(), before, "scope did not restore {key:?}");
            }
        });
        assert_eq!(SI.get().as_deref(), Some("parent"));
        assert_eq!(SF.get().as_deref(), Some("parent"));
        assert_eq!(SN.get(), None);
        assert!(!SN.is_set());
    });
}

/// `scope` when `f` unloads or resets the owner's storage: it "restores the previous
/// state", a value for a key that had one and "unset" for one that had none.
#[test]
fn scope_restores_after_f_unloads_or_resets_the_owner() {
    static SU: Local<u32> = Local::new();
    static SUI: Local<u32> = Local::inheritable();
    fresh(|| {
        for end in [tasklocal::unload as fn(), tasklocal::reset] {
            SU.set(1);
            SU.scope(2, end);
            assert_eq!(SU.get(), Some(1));
            SUI.set(1);
            SUI.scope(2, end);
            assert_eq!(SUI.get(), Some(1));
        }
        SU.take();
        SU.scope(4, tasklocal::reset);
        assert_eq!(SU.get(), None);
        assert!(!SU.is_set());
    });
}

// ---------------------------------------------------------------------------------
// Refusals under a borrow, and the errors
// ---------------------------------------------------------------------------------

/// Inside `with_mut` of the same key (of either kind) and inside `with` of a key that
/// is not inheritable, `scope` panics naming the borrow and `try_scope` returns an
/// `is_borrowed` error without running `f`; the key is unharmed afterwards.
#[test]
fn scope_under_a_borrow_of_the_same_key_panics_and_try_scope_refuses_without_running_f() {
    static WM: Local<String> = Local::with_initial(String::new);
    static WMI: Local<String> = Local::inheritable();
    fn refused(key: &'static Local<String>) {
        let msg = panics(|| key.scope("c".into(), || ()));
        assert!(msg.starts_with("tasklocal:"), "{msg}");
        assert!(msg.contains("with"), "{msg}");
        let mut ran = false;
        let err = key.try_scope("c".into(), || ran = true).unwrap_err();
        assert!(err.is_borrowed() && !err.is_no_storage(), "{err:?}");
        assert!(!ran, "try_scope ran f although it failed");
    }
    fresh(|| {
        WMI.set("x".into());
        for key in [&WM, &WMI] {
            key.with_mut(|_| {
                refused(key);
                assert!(key.is_set(), "a lent value is present");
            });
            // Unharmed afterwards.
            key.set("ok".into());
            assert_eq!(key.get().as_deref(), Some("ok"));
        }
        WM.with(|v| {
            refused(&WM);
            assert_eq!(v.map(String::as_str), Some("ok"));
        });
        // Outside a borrow, `try_scope` binds and restores like `scope`.
        let inside = WM.try_scope("scoped".into(), || WM.get()).unwrap();
        assert_eq!(inside.as_deref(), Some("scoped"));
        assert_eq!(WM.get().as_deref(), Some("ok"));
    });
}

/// `reset`/`unload` inside a `with` closure: the `try_` forms return `is_borrowed`, the
/// twins panic, and the value stays. `unload` "discards the exit handlers without
/// running them"; handlers registered after it run at the owner's end, after `reset`
/// too.
#[test]
fn reset_and_unload_inside_with_are_refused_and_unload_discards_the_handlers() {
    static RU: Local<u32> = Local::new();
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    fresh(|| {
        RU.set(1);
        RU.with(|_| {
            assert!(tasklocal::try_reset().unwrap_err().is_borrowed());
            assert!(tasklocal::try_unload().unwrap_err().is_borrowed());
            let msg = panics(tasklocal::reset);
            assert!(msg.starts_with("tasklocal:"), "{msg}");
            let msg = panics(tasklocal::unload);
            assert!(msg.starts_with("tasklocal:"), "{msg}");
        });
        assert_eq!(RU.get(), Some(1));
        tasklocal::at_exit(|| LOG.lock().unwrap().push("discarded"));
        tasklocal::unload();
        assert_eq!(RU.get(), None);
        tasklocal::at_exit(|| LOG.lock().unwrap().push("kept"));
        tasklocal::reset();
        tasklocal::at_exit(|| LOG.lock().unwrap().push("after reset"));
    });
    assert_eq!(*LOG.lock().unwrap(), ["after reset", "kept"]);
}

/// `Snapshot::run` "When called inside a with/with_mut closure of a non-inheritable key
/// on this thread" panics, and the owner is usable afterwards; inside `with_mut` of an
/// inheritable key it is served (the value is lent out, no borrow held), and the child
/// does not inherit the key; inside `with` of an inheritable key it is served.
#[test]
fn snapshot_run_inside_with_and_with_mut() {
    static NI: Local<u32> = Local::new();
    static INH: Local<u32> = Local::inheritable();
    fresh(|| {
        NI.set(1);
        INH.set(2);
        let msg = panics(|| NI.with(|_| Snapshot::empty().run(|| ())));
        assert!(msg.contains("tasklocal"), "{msg}");
        // The value is still there, and the owner usable afterwards.
        assert_eq!(NI.get(), Some(1));
        let inner = INH.with_mut(|v| {
            *v += 1;
            Snapshot::capture().run(|| INH.get())
        });
        // Children created inside with_mut do not inherit the key.
        assert_eq!(inner, Some(None));
        assert_eq!(INH.get(), Some(3));
        // Inside `with` of an inheritable key, entering an owner is served.
        assert_eq!(INH.with(|_| Snapshot::capture().run(|| INH.get())), Some(3));
    });
}

/// Each documented kind: `is_borrowed` for an initializer reading its own key and for a
/// `fork` reading its own key; `is_fork_panicked` and no other kind for a child whose
/// fork panicked, which then has no value and forks no more; the kinds are apart, their
/// messages differ, and equal errors compare equal.
#[test]
fn access_error_kinds_are_apart_with_a_message_each() {
    static SELF_INIT_ERR: Mutex<Option<AccessError>> = Mutex::new(None);
    static SELF_INIT: Local<u32> = Local::with_initial(|| {
        let err = SELF_INIT.try_get().unwrap_err();
        SELF_INIT_ERR.lock().unwrap().replace(err);
        1
    });
    static SELF_FORK_ERR: Mutex<Option<AccessError>> = Mutex::new(None);
    static SELF_FORK: Local<u32> = Local::inheritable_with(|v| {
        let err = SELF_FORK.try_get().unwrap_err();
        SELF_FORK_ERR.lock().unwrap().replace(err);
        *v
    });
    static PANIC_FORK: Local<u32> = Local::inheritable_with(|_| panic!("fork panics"));
    static HELD: Local<u32> = Local::new();

    fresh(|| {
        assert_eq!(SELF_INIT.get(), Some(1));
        let init_err = SELF_INIT_ERR
            .lock()
            .unwrap()
            .take()
            .expect("initializer ran");
        assert!(init_err.is_borrowed(), "{init_err:?}");
        assert!(
            !init_err.is_no_storage() && !init_err.is_destroyed() && !init_err.is_fork_panicked()
        );

        SELF_FORK.set(3);
        PANIC_FORK.set(4);
        let s = Snapshot::capture();
        let fork_err = s.run(|| {
            assert_eq!(SELF_FORK.get(), Some(3));
            SELF_FORK_ERR.lock().unwrap().take().expect("fork ran")
        });
        assert!(fork_err.is_borrowed(), "{fork_err:?}");
        let panicked = s.run(|| PANIC_FORK.try_get().unwrap_err());
        assert!(panicked.is_fork_panicked());
        assert!(!panicked.is_borrowed() && !panicked.is_no_storage() && !panicked.is_destroyed());
        // The panicking twin panics with that message.
        let msg = s.run(|| {
            panics(|| {
                let _ = PANIC_FORK.get();
            })
        });
        assert!(msg.contains("fork"), "{msg}");
        // After the panic the child has no value and nothing is retried.
        let after = s.run(|| {
            let _ = PANIC_FORK.try_get();
            (PANIC_FORK.try_get(), PANIC_FORK.is_set())
        });
        assert_eq!(after, (Ok(None), false));

        HELD.set(1);
        let borrowed = HELD.with(|_| HELD.try_set(2)).unwrap_err();
        assert!(borrowed.is_borrowed());
        let texts: HashSet<String> = [init_err, fork_err, panicked, borrowed]
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(texts.len(), 4, "kinds share a message: {texts:?}");
        assert!(borrowed.to_string().contains("with"));
        assert_eq!(borrowed, HELD.with(|_| HELD.try_take()).unwrap_err());
        assert_ne!(borrowed, panicked);
    });
}
