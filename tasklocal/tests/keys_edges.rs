//! Typed and dynamic keys (SPEC sections 2 and 3), the edges: dynamic keys of different
//! types that compare alike, type mismatches, `Drop`s of dynamic values that use the
//! API, ids, `reset` and `unload` with exit handlers; reentrancy — the borrowed dynamic
//! key refused, `with_mut` of an inheritable key inside its own `with`, children created
//! inside `with_mut`, many keys' first use inside a borrow, initializers that panic or
//! enter other owners; `scope` restoring the previous state, also after a caught panic;
//! a panic inside `with`/`with_mut` releasing the borrow.
#![cfg(all(feature = "tokio", feature = "rayon"))]

mod support;

use std::collections::HashSet;
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use support::runtime::multi_thread;
use support::teardown::{Counted, Probe};
use support::{fresh, message};
use tasklocal::{Local, Snapshot, Task};

static INHERITED: Local<String> = Local::inheritable();
static PLAIN: Local<String> = Local::new();

/// Values dropped so far.
fn dropped(probe: &Probe) -> usize {
    probe.dropped.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------
// Dynamic keys.
// ---------------------------------------------------------------------------

#[derive(Hash, PartialEq, Eq, Clone, Copy, Debug)]
struct KeyA(u32);
#[derive(Hash, PartialEq, Eq, Clone, Copy, Debug)]
struct KeyB(u32);

#[test]
fn keys_of_different_types_with_equal_hashes_are_different_keys() {
    fresh(|| {
        tasklocal::set(KeyA(1), 1u32);
        tasklocal::set(KeyB(1), 2u32);
        tasklocal::set("k", String::from("str"));
        tasklocal::set(String::from("k"), String::from("string"));
        tasklocal::set(1u32, 'a');
        tasklocal::set(1i32, 'b');
        tasklocal::set(1u64, 'c');
        assert_eq!(tasklocal::get(&KeyA(1)), Some(1u32));
        assert_eq!(tasklocal::get(&KeyB(1)), Some(2u32));
        assert_eq!(tasklocal::get::<_, String>(&"k").as_deref(), Some("str"));
        assert_eq!(
            tasklocal::get::<_, String>(&String::from("k")).as_deref(),
            Some("string")
        );
        assert_eq!(tasklocal::get(&1u32), Some('a'));
        assert_eq!(tasklocal::get(&1i32), Some('b'));
        assert_eq!(tasklocal::get(&1u64), Some('c'));
        assert!(tasklocal::remove(&KeyA(1)));
        assert!(!tasklocal::remove(&KeyA(1)));
        assert_eq!(tasklocal::get(&KeyB(1)), Some(2u32));
        assert_eq!(
            tasklocal::take::<_, String>(&String::from("k")).as_deref(),
            Some("string")
        );
        assert_eq!(tasklocal::get::<_, String>(&"k").as_deref(), Some("str"));
        assert!(!tasklocal::remove(&String::from("k")));
        assert!(tasklocal::remove(&"k"));
        assert_eq!(tasklocal::get(&1i32), Some('b'));
    });
}

#[test]
fn type_mismatches_leave_the_value_in_place_for_every_reader() {
    let probe = Probe::new();
    fresh(|| {
        tasklocal::set("v", vec![1u8, 2]);
        assert_eq!(tasklocal::get::<_, Vec<i8>>(&"v"), None);
        assert!(!tasklocal::with(&"v", |v: Option<&Vec<u16>>| v.is_some()));
        assert_eq!(tasklocal::take::<_, Vec<i8>>(&"v"), None);
        assert_eq!(tasklocal::try_take::<_, u8>(&"v"), Ok(None));
        assert_eq!(tasklocal::get::<_, Vec<u8>>(&"v"), Some(vec![1, 2]));
        // `set` with another type replaces the old value, which is dropped.
        tasklocal::set("c", probe.value("counted"));
        assert!(tasklocal::take::<_, u8>(&"c").is_none());
        assert_eq!(dropped(&probe), 0);
        tasklocal::set("c", 5u8);
        assert_eq!(dropped(&probe), 1);
        assert_eq!(tasklocal::get(&"c"), Some(5u8));
    });
}

#[test]
fn many_other_dynamic_keys_can_be_set_inside_a_dynamic_with() {
    fresh(|| {
        tasklocal::set("anchor", String::from("held"));
        let seen = tasklocal::with(&"anchor", |v: Option<&String>| {
            for i in 0..2000u32 {
                tasklocal::set(i, i);
            }
            for i in 0..2000u32 {
                assert_eq!(tasklocal::get(&i), Some(i));
            }
            for i in 0..1000u32 {
                assert!(tasklocal::remove(&i));
            }
            v.cloned()
        });
        assert_eq!(seen.as_deref(), Some("held"));
        assert_eq!(
            tasklocal::get::<_, String>(&"anchor").as_deref(),
            Some("held")
        );
        assert_eq!(tasklocal::get(&1999u32), Some(1999u32));
    });
}

#[test]
fn writes_of_the_borrowed_dynamic_key_are_refused_and_reads_served() {
    fresh(|| {
        tasklocal::set("k", 1u32);
        tasklocal::with(&"k", |v: Option<&u32>| {
            assert_eq!(v, Some(&1));
            assert!(tasklocal::try_set("k", 2u32).unwrap_err().is_borrowed());
            assert!(tasklocal::try_remove(&"k").unwrap_err().is_borrowed());
            assert!(tasklocal::try_take::<_, u32>(&"k")
                .unwrap_err()
                .is_borrowed());
            assert_eq!(tasklocal::get::<_, u32>(&"k"), Some(1));
            let msg = message(catch_unwind(|| tasklocal::remove(&"k")).unwrap_err());
            assert!(msg.contains("tasklocal"), "{msg}");
        });
        assert_eq!(tasklocal::get(&"k"), Some(1u32));
    });
}

/// Its `Drop` reads its own key (while it is being replaced or removed), sets another
/// key and removes a third.
struct Rewriter(Arc<Probe>);

impl Drop for Rewriter {
    fn drop(&mut self) {
        let now = tasklocal::get::<_, u32>(&"r");
        self.0.log(format!("drop sees {now:?}"));
        let _ = tasklocal::try_set("other", 9u32);
        let _ = tasklocal::try_remove(&"gone");
    }
}

#[test]
fn a_dynamic_values_drop_may_use_the_api_when_set_remove_or_reset_drops_it() {
    let log = Probe::new();
    fresh(|| {
        tasklocal::set("gone", 1u8);
        tasklocal::set("r", Rewriter(log.clone()));
        tasklocal::set("r", 7u32);
        assert_eq!(tasklocal::get(&"r"), Some(7u32));
        assert_eq!(tasklocal::get(&"other"), Some(9u32));
        assert_eq!(tasklocal::get::<_, u8>(&"gone"), None);
        tasklocal::set("r", Rewriter(log.clone()));
        assert!(tasklocal::remove(&"r"));
        tasklocal::set("r", Rewriter(log.clone()));
        tasklocal::reset();
        // What the `Drop` set during `reset` may stay (set after the drop began) or be
        // gone; either way nothing hangs and "r" is gone.
        assert_eq!(tasklocal::get::<_, u32>(&"r"), None);
    });
    assert_eq!(log.entries().len(), 3);
}

#[test]
fn ids_are_unique_across_tasks_runs_blocking_calls_and_unloads() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let all = ids.clone();
    multi_thread(2).block_on(async move {
        let mut tasks = Vec::new();
        for n in 0..500u32 {
            let all = all.clone();
            tasks.push(tasklocal::spawn(async move {
                let mut mine = vec![tasklocal::id()];
                tokio::task::yield_now().await;
                assert_eq!(mine[0], tasklocal::id(), "the id is stable across polls");
                if n % 2 == 0 {
                    tasklocal::unload();
                    mine.push(tasklocal::id());
                }
                mine.push(Snapshot::empty().run(tasklocal::id));
                mine.push(tasklocal::spawn_blocking(tasklocal::id).await.unwrap());
                all.lock().unwrap().extend(mine);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let ids = ids.lock().unwrap();
    let unique: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len());
    let numbers: HashSet<u64> = ids.iter().map(|i| i.as_u64()).collect();
    assert_eq!(numbers.len(), ids.len());
    assert!(ids.iter().all(|i| !i.to_string().is_empty()));
}

#[test]
fn unload_drops_discarded_handlers_without_running_them_and_later_handlers_run() {
    let probe = Probe::new();
    let marker = Arc::new(());
    let (p, m) = (probe.clone(), marker.clone());
    block_on(Task::isolated(async move {
        tasklocal::set("v", p.value("before unload"));
        let (p1, held) = (p.clone(), m.clone());
        tasklocal::at_exit(move || {
            let _held = &held;
            p1.log("discarded handler ran");
        });
        let id = tasklocal::id();
        tasklocal::unload();
        assert_eq!(dropped(&p), 1, "values dropped by unload");
        assert_eq!(
            Arc::strong_count(&m),
            2,
            "discarded handler not dropped by unload"
        );
        assert_ne!(tasklocal::id(), id);
        tasklocal::set("w", p.value("after unload"));
        let p2 = p.clone();
        tasklocal::at_exit(move || p2.log("handler registered after unload ran"));
        drop(m);
    }));
    let log = probe.entries();
    let handlers: Vec<_> = log.iter().filter(|e| e.contains("handler")).collect();
    assert_eq!(handlers, ["handler registered after unload ran"]);
    assert_eq!(dropped(&probe), 2);
    assert_eq!(Arc::strong_count(&marker), 1);
}

#[test]
fn reset_drops_now_handlers_still_run_with_values_set_afterwards() {
    static K: Local<u32> = Local::new();
    let probe = Probe::new();
    let p = probe.clone();
    block_on(Task::isolated(async move {
        K.set(1);
        tasklocal::set(1u8, p.value("before reset"));
        let p1 = p.clone();
        tasklocal::at_exit(move || p1.log(format!("handler sees {:?}", K.get())));
        let id = tasklocal::id();
        tasklocal::reset();
        assert_eq!(dropped(&p), 1);
        assert_eq!(tasklocal::id(), id);
        K.set(2);
        tasklocal::set(1u8, p.value("after reset"));
    }));
    let log = probe.entries();
    let handlers: Vec<_> = log.iter().filter(|e| e.contains("handler")).collect();
    assert_eq!(handlers, ["handler sees Some(2)"]);
    assert_eq!(dropped(&probe), 2);
}

// ---------------------------------------------------------------------------
// Reentrancy of typed keys.
// ---------------------------------------------------------------------------

#[test]
fn with_mut_of_an_inheritable_key_inside_its_own_with_is_served_and_copies() {
    fresh(|| {
        INHERITED.set("a".into());
        let snapshot = Snapshot::capture();
        let seen = INHERITED.with(|old| {
            let r = INHERITED.try_with_mut(|v| v.push('b'));
            assert_eq!(r, Ok(Some(())), "documented as served for inheritable keys");
            // The closure keeps seeing the value it started with.
            (
                old.cloned(),
                INHERITED.get(),
                Snapshot::capture().get(&INHERITED),
            )
        });
        assert_eq!(
            seen,
            (Some("a".into()), Some("ab".into()), Some("ab".into()))
        );
        assert_eq!(INHERITED.get().as_deref(), Some("ab"));
        assert_eq!(snapshot.get(&INHERITED).as_deref(), Some("a"));
    });
}

#[test]
fn children_created_inside_with_mut_of_an_inheritable_key_do_not_inherit_it() {
    static OTHER: Local<u32> = Local::inheritable();
    multi_thread(2).block_on(async {
        tasklocal::spawn(async {
            INHERITED.set("v".into());
            OTHER.set(1);
            let both = || (INHERITED.get(), OTHER.get());
            let (task, thread, rayon, snapshot, blocking) = INHERITED
                .with_mut(|v| {
                    v.push('!');
                    OTHER.set(2);
                    (
                        tasklocal::spawn(async move { both() }),
                        tasklocal::thread::spawn(both),
                        tasklocal::rayon::join(both, || ()).0,
                        Snapshot::capture(),
                        tasklocal::spawn_blocking(both),
                    )
                })
                .unwrap();
            assert_eq!(task.await.unwrap(), (None, Some(2)));
            assert_eq!(thread.join().unwrap(), (None, Some(2)));
            assert_eq!(rayon, (None, Some(2)));
            assert_eq!(snapshot.run(both), (None, Some(2)));
            assert_eq!(blocking.await.unwrap(), (None, Some(2)));
            assert_eq!(
                tasklocal::spawn(async { INHERITED.get() })
                    .await
                    .unwrap()
                    .as_deref(),
                Some("v!")
            );
        })
        .await
        .unwrap();
    });
}

/// Calls of `FAILS_ONCE`'s initializer; no other test uses the key.
static INIT_CALLS: AtomicUsize = AtomicUsize::new(0);
static FAILS_ONCE: Local<u32> = Local::with_initial(|| {
    if INIT_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("the first initialization fails");
    }
    5
});

#[test]
fn a_panicking_initializer_does_not_poison_the_key() {
    fresh(|| {
        PLAIN.set("x".into());
        assert!(catch_unwind(|| FAILS_ONCE.get()).is_err());
        assert!(!FAILS_ONCE.is_set());
        assert_eq!(FAILS_ONCE.try_get(), Ok(Some(5)));
        FAILS_ONCE.set(6);
        assert_eq!(FAILS_ONCE.get(), Some(6));
        assert_eq!(PLAIN.get().as_deref(), Some("x"));
        PLAIN.set("y".into());
    });
}

static ENTERS_OWNERS: Local<String> = Local::with_initial(|| {
    let inner = Snapshot::empty().run(|| {
        PLAIN.set("inner".into());
        PLAIN.get()
    });
    let child = tasklocal::thread::spawn(|| INHERITED.get()).join().unwrap();
    tasklocal::at_exit(|| ());
    format!("{inner:?}/{child:?}")
});

#[test]
fn an_initializer_may_enter_other_owners_and_spawn_children() {
    fresh(|| {
        INHERITED.set("p".into());
        PLAIN.set("outer".into());
        assert_eq!(
            ENTERS_OWNERS.get().as_deref(),
            Some("Some(\"inner\")/Some(\"p\")")
        );
        assert_eq!(PLAIN.get().as_deref(), Some("outer"));
        // Inside a `Task` too.
        let seen = block_on(tasklocal::task(async { ENTERS_OWNERS.get() }));
        assert_eq!(seen.as_deref(), Some("Some(\"inner\")/Some(\"p\")"));
    });
}

/// More keys than a storage's inline cells, of each kind.
static MANY_PLAIN: [Local<u32>; 40] = [const { Local::new() }; 40];
static MANY_INHERITED: [Local<u32>; 30] = [const { Local::inheritable() }; 30];

#[test]
fn first_use_of_many_keys_inside_with_and_with_mut_is_served() {
    fresh(|| {
        PLAIN.set("held".into());
        PLAIN.with(|v| {
            for (i, k) in MANY_PLAIN.iter().enumerate() {
                k.set(i as u32);
            }
            for (i, k) in MANY_INHERITED.iter().enumerate() {
                k.set(100 + i as u32);
            }
            assert_eq!(v.map(String::as_str), Some("held"));
        });
        INHERITED.set("i".into());
        INHERITED.with_mut(|v| {
            for (i, k) in MANY_PLAIN.iter().enumerate() {
                k.with_mut(|x| *x += 1000).unwrap();
                assert_eq!(k.get(), Some(1000 + i as u32));
            }
            for k in &MANY_INHERITED {
                k.with_mut(|x| *x += 1000).unwrap();
            }
            v.push('!');
        });
        let (plain, inherited) = Snapshot::capture().run(|| {
            (
                MANY_PLAIN.iter().map(|k| k.get()).collect::<Vec<_>>(),
                MANY_INHERITED.iter().map(|k| k.get()).collect::<Vec<_>>(),
            )
        });
        assert!(plain.iter().all(Option::is_none));
        assert_eq!(
            inherited,
            (0..30).map(|i| Some(1100 + i)).collect::<Vec<_>>()
        );
    });
}

#[test]
fn many_keys_are_isolated_between_tasks_and_inherited_beyond_the_inline_cells() {
    multi_thread(2).block_on(async {
        let mut tasks = Vec::new();
        for t in 0..50u32 {
            tasks.push(tasklocal::spawn(async move {
                for (i, k) in MANY_INHERITED.iter().enumerate() {
                    k.set(t * 1000 + i as u32);
                }
                for (i, k) in MANY_PLAIN.iter().enumerate().rev() {
                    k.set(t * 1000 + i as u32);
                }
                tokio::task::yield_now().await;
                let child = tasklocal::spawn(async {
                    let plain: Vec<_> = MANY_PLAIN.iter().map(|k| k.get()).collect();
                    let inherited: Vec<_> = MANY_INHERITED.iter().map(|k| k.get()).collect();
                    MANY_INHERITED[29].set(0);
                    (plain, inherited)
                });
                MANY_INHERITED[29].set(7);
                let (plain, inherited) = child.await.unwrap();
                assert!(plain.iter().all(Option::is_none));
                for (i, v) in inherited.iter().enumerate() {
                    assert_eq!(*v, Some(t * 1000 + i as u32));
                }
                for (i, k) in MANY_PLAIN.iter().enumerate() {
                    assert_eq!(k.get(), Some(t * 1000 + i as u32));
                }
                assert_eq!(MANY_INHERITED[29].get(), Some(7));
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// `scope`, and panics inside a borrow.
// ---------------------------------------------------------------------------

#[test]
fn scope_restores_an_uncomputed_initial_value_as_unset() {
    static COMPUTED: AtomicUsize = AtomicUsize::new(0);
    static K: Local<u32> = Local::with_initial(|| {
        COMPUTED.fetch_add(1, Ordering::SeqCst);
        9
    });
    fresh(|| {
        assert!(!K.is_set());
        K.scope(1, || assert_eq!(K.get(), Some(1)));
        assert!(!K.is_set(), "unset before the scope, unset after");
        assert_eq!(COMPUTED.load(Ordering::SeqCst), 0);
        assert_eq!(K.get(), Some(9));
    });
}

#[test]
fn scope_does_not_drop_or_lose_the_previous_value_and_drops_its_own_once() {
    static K: Local<Counted> = Local::new();
    let probe = Probe::new();
    let name = || K.with(|v| v.map(|v| v.name));
    fresh(|| {
        K.set(probe.value("previous"));
        K.scope(probe.value("scoped"), || {
            assert_eq!(name(), Some("scoped"));
            assert_eq!(dropped(&probe), 0);
        });
        assert_eq!(dropped(&probe), 1);
        assert_eq!(name(), Some("previous"));
        // The closure replaces the scoped value: the replacement is dropped, the
        // previous value restored.
        K.scope(probe.value("scoped again"), || {
            K.set(probe.value("replacement"));
            K.take();
        });
        assert_eq!(name(), Some("previous"));
        assert_eq!(dropped(&probe), 3);
    });
    assert_eq!(dropped(&probe), 4);
}

#[test]
fn nested_scopes_with_a_caught_panic_restore_each_level() {
    static K: Local<u32> = Local::new();
    fresh(|| {
        K.scope(1, || {
            let r = catch_unwind(|| {
                K.scope(2, || {
                    K.scope(3, || panic!("the innermost scope fails"));
                })
            });
            assert!(r.is_err());
            assert_eq!(K.get(), Some(1));
        });
        assert_eq!(K.get(), None);
        assert!(!K.is_set());
    });
}

#[test]
fn a_panic_inside_with_or_with_mut_releases_the_borrow_and_keeps_captures_intact() {
    static P: Local<Vec<u32>> = Local::new();
    static I: Local<Vec<u32>> = Local::inheritable();
    fresh(|| {
        P.set(vec![1]);
        I.set(vec![1]);
        let snapshot = Snapshot::capture();
        for _ in 0..2 {
            assert!(catch_unwind(|| P.with(|_| panic!("with fails"))).is_err());
            let r = catch_unwind(|| {
                P.with_mut(|v| {
                    v.push(2);
                    panic!("with_mut fails")
                })
            });
            assert!(r.is_err());
            let r = catch_unwind(|| {
                I.with_mut(|v| {
                    v.push(2);
                    panic!("with_mut of a captured value fails")
                })
            });
            assert!(r.is_err());
        }
        // Usable afterwards.
        P.set(vec![9]);
        assert_eq!(P.get(), Some(vec![9]));
        I.with_mut(|v| v.push(3)).unwrap();
        assert_eq!(snapshot.get(&I), Some(vec![1]));
        assert_eq!(snapshot.run(|| I.get()), Some(vec![1]));
        // No stale borrow keeps another owner from being entered.
        assert_eq!(Snapshot::empty().run(|| 1), 1);
    });
}
