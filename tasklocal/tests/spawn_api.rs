//! The spawners, rayon, plain tokio tasks and `isolated` as their docs promise (SPEC
//! sections 1, 4, 5 and 10). tokio's spawners outside a runtime or a `LocalSet` panic
//! as tokio's do and leave the caller intact; rayon's `wrap` captures at the call and
//! runs each call in an owner of its own, and `join`, `install` and `spawn` run owners
//! that end before they return; exit handlers see the ending owner's id and values in
//! every kind of owner; owners entered inside a dynamic `with`, rayon inside `with`. In
//! a plain tokio task: every MDC write refused in both forms, and the rest of the API —
//! writes of inheritable keys refused, `reset`/`unload`/`isolated` served, owners of
//! their own served. `isolated`: inside `with`/`with_mut` closures, on a thread with no
//! storage yet, and for every tokio spawner. Each write refused in a plain task:
//! `misuse.rs`; each spawner's inheritance: `inheritance.rs`.
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::executor::block_on;
use support::runtime::{current_thread, multi_thread};
use support::{fresh, message};
use tasklocal::{mdc, Carried, Local, Snapshot, TaskId};

/// Runs `f`, which must panic, and returns its panic message.
#[track_caller]
fn panics(f: impl FnOnce()) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a panic"),
        Err(payload) => message(payload),
    }
}

/// Runs `f` inside a plain `tokio::spawn` task (no storage of its own).
fn in_plain_task<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    current_thread().block_on(async move { tokio::spawn(async move { f() }).await.unwrap() })
}

// ---------------------------------------------------------------------------------
// Spawners and rayon
// ---------------------------------------------------------------------------------

/// Outside a runtime (and, for `spawn_local`, outside a `LocalSet`) each spawner panics
/// with tokio's own message.
#[test]
fn spawners_outside_a_runtime_panic_like_tokio() {
    let ours = panics(|| drop(tasklocal::spawn(async {})));
    let tokios = panics(|| drop(tokio::spawn(async {})));
    assert_eq!(ours, tokios);
    let ours = panics(|| drop(tasklocal::spawn_blocking(|| ())));
    let tokios = panics(|| drop(tokio::task::spawn_blocking(|| ())));
    assert_eq!(ours, tokios);
    let ours = panics(|| drop(tasklocal::spawn_local(async {})));
    let tokios = panics(|| drop(tokio::task::spawn_local(async {})));
    assert_eq!(ours, tokios);
    // Inside a runtime but outside a LocalSet.
    let (ours, tokios) = current_thread().block_on(async {
        (
            panics(|| drop(tasklocal::spawn_local(async {}))),
            panics(|| drop(tokio::task::spawn_local(async {}))),
        )
    });
    assert_eq!(ours, tokios);
}

/// A spawn that panics inside an owner leaves the owner intact: its values stay, and it
/// writes and captures on.
#[test]
fn failed_spawns_leave_the_caller_intact() {
    static FS: Local<u32> = Local::inheritable();
    fresh(|| {
        FS.set(1);
        let _ = panics(|| drop(tasklocal::spawn(async {})));
        let _ = panics(|| drop(tasklocal::spawn_blocking(|| ())));
        assert_eq!(FS.get(), Some(1));
        FS.set(2);
        assert_eq!(Snapshot::capture().get(&FS), Some(2));
    });
}

/// rayon: `wrap` captures "now" (at the call), each call of the wrapped closure is "an
/// owner of its own" (distinct ids, writes not shared); `join` closures run as owners
/// that end before `join` returns; `install` (nested calls inside it too) and `spawn`
/// likewise see the caller's values, and their writes never come back.
#[test]
fn rayon_wrap_join_install_and_spawn_run_owners_of_their_own() {
    use rayon::prelude::*;
    static RK: Local<u64> = Local::inheritable();
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    fresh(|| {
        RK.set(1);
        let f = tasklocal::rayon::wrap(|i: u64| {
            let seen = RK.get();
            RK.set(i + 100);
            (seen, tasklocal::id())
        });
        RK.set(2);
        let out: Vec<(Option<u64>, TaskId)> = (0..64u64).into_par_iter().map(f).collect();
        assert!(out.iter().all(|(seen, _)| *seen == Some(1)), "{out:?}");
        let ids: HashSet<TaskId> = out.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 64, "calls of a wrapped closure shared an owner");
        assert_eq!(RK.get(), Some(2));

        let me = tasklocal::id();
        let (a, b) = tasklocal::rayon::join(
            || {
                tasklocal::at_exit(|| {
                    ENDED.fetch_add(1, Ordering::SeqCst);
                });
                RK.set(10);
                (RK.get(), tasklocal::id())
            },
            || {
                tasklocal::at_exit(|| {
                    ENDED.fetch_add(1, Ordering::SeqCst);
                });
                (RK.get(), tasklocal::id())
            },
        );
        assert_eq!(
            ENDED.load(Ordering::SeqCst),
            2,
            "join returned before its owners ended"
        );
        assert_eq!(a.0, Some(10));
        assert_eq!(b.0, Some(2));
        assert!(a.1 != b.1 && a.1 != me && b.1 != me);
        assert_eq!(RK.get(), Some(2));

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let inner = tasklocal::rayon::install(&pool, || {
            // Nested rayon calls from inside the pool keep the context.
            let (x, y) = tasklocal::rayon::join(|| RK.get(), || RK.get());
            RK.set(3);
            (x, y, RK.get(), tasklocal::id())
        });
        assert_eq!((inner.0, inner.1, inner.2), (Some(2), Some(2), Some(3)));
        assert_ne!(inner.3, me);
        assert_eq!(RK.get(), Some(2));
        let (tx, rx) = std::sync::mpsc::channel();
        RK.set(4);
        tasklocal::rayon::spawn(move || {
            let seen = RK.get();
            RK.set(5);
            tx.send(seen).unwrap();
        });
        RK.set(6);
        assert_eq!(rx.recv().unwrap(), Some(4));
        assert_eq!(RK.get(), Some(6));
    });
}

/// Exit handlers run "with every value still readable", with the ending owner's id, for
/// `Snapshot::run`, a `Task`, a `thread::spawn` owner and a spawned tokio task.
#[test]
fn handlers_see_the_ending_owners_id_and_values() {
    static HV: Local<u32> = Local::new();
    static SEEN: Mutex<Vec<(bool, Option<u32>)>> = Mutex::new(Vec::new());
    let body = || {
        let me = tasklocal::id();
        HV.set(me.as_u64() as u32);
        tasklocal::at_exit(move || {
            SEEN.lock().unwrap().push((
                tasklocal::id() == me,
                HV.get().map(|v| v ^ me.as_u64() as u32),
            ));
        });
    };
    fresh(body);
    block_on(tasklocal::task(async move { body() }));
    tasklocal::thread::spawn(body).join().unwrap();
    multi_thread(2).block_on(async {
        tasklocal::spawn(async move { body() }).await.unwrap();
    });
    assert_eq!(*SEEN.lock().unwrap(), vec![(true, Some(0)); 4]);
}

/// Entering an owner inside a dynamic `with` closure is served or refused with a clear
/// message, never leaving the value changed; rayon inside `with` of an inheritable key
/// passes the value on.
#[test]
fn owners_inside_a_dynamic_with_and_rayon_inside_with() {
    static RW: Local<u32> = Local::inheritable();
    fresh(|| {
        RW.set(4);
        tasklocal::set("dw", 1u32);
        let r = catch_unwind(AssertUnwindSafe(|| {
            tasklocal::with(&"dw", |_: Option<&u32>| {
                Snapshot::capture().run(|| RW.get())
            })
        }));
        match r {
            Ok(v) => assert_eq!(v, Some(4)),
            Err(p) => {
                let msg = message(p);
                assert!(
                    msg.starts_with("tasklocal:") && msg.contains("with"),
                    "{msg}"
                );
            }
        }
        assert_eq!(tasklocal::get(&"dw"), Some(1u32));
        let (a, b) = RW.with(|_| tasklocal::rayon::join(|| RW.get(), || RW.get()));
        assert_eq!((a, b), (Some(4), Some(4)));
    });
}

// ---------------------------------------------------------------------------------
// Plain tokio tasks (no storage of their own)
// ---------------------------------------------------------------------------------

/// Every MDC write in a plain tokio task: the `try_` form returns `is_no_storage`
/// (`try_scope` without calling `f`), the twin panics naming the fix; reads see nothing.
#[test]
fn every_mdc_write_in_a_plain_task_is_refused_in_both_forms() {
    in_plain_task(|| {
        assert!(mdc::try_insert("a", "1").unwrap_err().is_no_storage());
        assert!(mdc::try_extend([("a", "1")]).unwrap_err().is_no_storage());
        assert!(mdc::try_extend(Vec::<(String, String)>::new())
            .unwrap_err()
            .is_no_storage());
        assert!(mdc::try_remove("a").unwrap_err().is_no_storage());
        assert!(mdc::try_clear().unwrap_err().is_no_storage());
        let mut called = false;
        let r = mdc::try_scope([("a", "1")], || called = true);
        assert!(r.unwrap_err().is_no_storage());
        assert!(!called, "try_scope called f although it failed");
        assert_eq!(mdc::get("a"), None);
        assert!(mdc::to_vec().is_empty());
        let mut n = 0;
        mdc::for_each(|_, _| n += 1);
        assert_eq!(n, 0);
        for msg in [
            panics(|| mdc::insert("a", "1")),
            panics(|| mdc::extend([("a", "1")])),
            panics(|| drop(mdc::remove("a"))),
            panics(mdc::clear),
            panics(|| mdc::scope([("a", "1")], || ())),
        ] {
            assert!(msg.contains("tasklocal::spawn"), "{msg}");
        }
    });
}

/// The rest of SPEC 1 in a plain tokio task: writes of inheritable keys (also
/// `inheritable_with`) refused, `scope` panicking naming the fix; `reset`/`unload`
/// served (their docs list only the borrow case), `isolated` runs `f`; `Snapshot::run`
/// and `Carried::run`, owners of their own, served, and nothing of theirs stays behind.
#[test]
fn the_rest_of_the_api_in_a_plain_task() {
    static PI: Local<String> = Local::inheritable();
    static PF: Local<u32> = Local::inheritable_with(|v| *v);
    in_plain_task(|| {
        assert!(PI.try_replace("x".into()).unwrap_err().is_no_storage());
        assert!(PI.try_with_mut(|_| ()).unwrap_err().is_no_storage());
        assert!(PF.try_set(1).unwrap_err().is_no_storage());
        let msg = panics(|| PI.scope("x".into(), || ()));
        assert!(msg.contains("tasklocal::spawn"), "{msg}");
        assert!(tasklocal::try_reset().is_ok());
        assert!(tasklocal::try_unload().is_ok());
        tasklocal::reset();
        tasklocal::unload();
        assert_eq!(tasklocal::isolated(|| 5), 5);
        let in_run = fresh(|| {
            PI.set("in run".into());
            PI.get()
        });
        assert_eq!(in_run.as_deref(), Some("in run"));
        let in_carried = Carried::new(1).run(|n| {
            PF.set(n);
            PF.get()
        });
        assert_eq!(in_carried, Some(1));
        assert_eq!(PI.get(), None);
        assert_eq!(PF.get(), None);
        assert!(tasklocal::try_id().unwrap_err().is_no_storage());
    });
}

// ---------------------------------------------------------------------------------
// `isolated` (SPEC 10)
// ---------------------------------------------------------------------------------

static ISO_KEY: Local<u32> = Local::inheritable();

/// What each kind of child created now sees of `ISO_KEY`.
fn child_values() -> Vec<Option<u32>> {
    let mut out = vec![
        tasklocal::thread::spawn(|| ISO_KEY.get()).join().unwrap(),
        Snapshot::capture().get(&ISO_KEY),
        Snapshot::capture().run(|| ISO_KEY.get()),
        block_on(tasklocal::task(async { ISO_KEY.get() })),
        Carried::new(()).run(|()| ISO_KEY.get()),
        tasklocal::rayon::join(|| ISO_KEY.get(), || ()).0,
    ];
    std::thread::scope(|s| {
        out.push(
            tasklocal::thread::spawn_scoped(s, || ISO_KEY.get())
                .join()
                .unwrap(),
        );
    });
    out
}

/// What the children that can be created under a `with` of a non-inheritable key (no
/// owner entered on this thread) see of `ISO_KEY`.
fn child_values_no_owner_entry() -> Vec<Option<u32>> {
    vec![
        tasklocal::thread::spawn(|| ISO_KEY.get()).join().unwrap(),
        Snapshot::capture().get(&ISO_KEY),
        Carried::new(()).snapshot().get(&ISO_KEY),
    ]
}

/// `isolated` called inside a `with` closure of a non-inheritable key, and inside
/// `with`/`with_mut` of an inheritable one (reentrancy is allowed): children still start
/// empty.
#[test]
fn isolated_inside_with_closures() {
    static NI: Local<u32> = Local::new();
    fresh(|| {
        ISO_KEY.set(1);
        NI.set(1);
        let seen = NI.with(|_| tasklocal::isolated(child_values_no_owner_entry));
        assert!(
            seen.iter().all(Option::is_none),
            "children inherited: {seen:?}"
        );
        let seen = ISO_KEY.with(|_| tasklocal::isolated(child_values));
        assert!(
            seen.iter().all(Option::is_none),
            "children inherited: {seen:?}"
        );
        let seen = ISO_KEY
            .with_mut(|_| tasklocal::isolated(child_values))
            .unwrap();
        assert!(
            seen.iter().all(Option::is_none),
            "children inherited: {seen:?}"
        );
    });
}

/// `isolated` on a plain thread whose storage does not exist yet: `f` creates it and
/// reads its own write; children created inside start empty.
#[test]
fn isolated_on_a_thread_with_no_storage_yet() {
    let seen = std::thread::spawn(|| {
        tasklocal::isolated(|| {
            ISO_KEY.set(5);
            (ISO_KEY.get(), child_values())
        })
    })
    .join()
    .unwrap();
    assert_eq!(seen.0, Some(5));
    assert!(seen.1.iter().all(Option::is_none), "{:?}", seen.1);
}

/// tokio's `spawn`, `spawn_blocking` and `spawn_local` inside `isolated` start empty;
/// `spawn_local` after it inherits again.
#[test]
fn isolated_applies_to_every_tokio_spawner() {
    let seen = current_thread().block_on(tasklocal::task(async {
        ISO_KEY.set(8);
        let (a, b) = tasklocal::isolated(|| {
            (
                tasklocal::spawn(async { ISO_KEY.get() }),
                tasklocal::spawn_blocking(|| ISO_KEY.get()),
            )
        });
        let local = tokio::task::LocalSet::new();
        let c = local
            .run_until(async {
                tasklocal::isolated(|| tasklocal::spawn_local(async { ISO_KEY.get() })).await
            })
            .await;
        let d = local
            .run_until(async { tasklocal::spawn_local(async { ISO_KEY.get() }).await })
            .await;
        (a.await.unwrap(), b.await.unwrap(), c.unwrap(), d.unwrap())
    }));
    assert_eq!(seen, (None, None, None, Some(8)));
}
