//! Context flows wherever work goes (SPEC section 10): `isolated` keeps it out of
//! children, `Local::inheritable_with` forks it for each child, `Carried` takes it
//! through a channel to a long-lived worker. Run on multi-thread runtimes with many
//! tasks at once; values are counted, so that a leak fails a test.
//!
//! The tests that spawn need the `tokio` feature (and `rayon` for `isolated`'s); the
//! others run with no features too.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use futures::executor::block_on;
use tasklocal::{Local, Snapshot};

#[cfg(feature = "tokio")]
use std::{future::Future, time::Duration};
#[cfg(feature = "tokio")]
use tokio::runtime::{Builder, Runtime};

/// How long a test waits for something that must happen before it fails.
#[cfg(feature = "tokio")]
const PATIENCE: Duration = Duration::from_secs(60);

#[cfg(feature = "tokio")]
fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
async fn with_timeout<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

/// Counts values made and dropped; one per test, so tests can run in parallel.
#[derive(Debug)]
struct Tally {
    created: AtomicUsize,
    dropped: AtomicUsize,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    fn created(&self) -> usize {
        self.created.load(SeqCst)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(SeqCst)
    }
}

/// A value whose drops are counted.
#[derive(Debug)]
struct Counted {
    tag: u64,
    tally: &'static Tally,
}

impl Counted {
    fn new(tag: u64, tally: &'static Tally) -> Counted {
        tally.created.fetch_add(1, SeqCst);
        Counted { tag, tally }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.dropped.fetch_add(1, SeqCst);
    }
}

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------
// `isolated`

#[cfg(all(feature = "tokio", feature = "rayon"))]
static REQ: Local<u64> = Local::inheritable();

/// What each way of creating a child sees of `REQ`, in order: `tasklocal::spawn`,
/// `tokio::spawn(task(..))`, `spawn_blocking`, `thread::spawn`, `Snapshot::capture`,
/// `rayon::spawn`, `rayon::join`, `Carried`.
#[cfg(all(feature = "tokio", feature = "rayon"))]
async fn children_see() -> Vec<Option<u64>> {
    let spawned = tasklocal::spawn(async { REQ.get() });
    let task = tokio::spawn(tasklocal::task(async { REQ.get() }));
    let blocking = tasklocal::spawn_blocking(|| REQ.get());
    let thread = tasklocal::thread::spawn(|| REQ.get());
    let snapshot = Snapshot::capture();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tasklocal::rayon::spawn(move || tx.send(REQ.get()).unwrap());
    let joined = tasklocal::rayon::join(|| REQ.get(), || ());
    let carried = tasklocal::Carried::new(());
    vec![
        spawned.await.unwrap(),
        task.await.unwrap(),
        blocking.await.unwrap(),
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap(),
        snapshot.run(|| REQ.get()),
        rx.await.unwrap(),
        joined.0,
        carried.run(|()| REQ.get()),
    ]
}

#[cfg(all(feature = "tokio", feature = "rayon"))]
#[test]
fn isolated_children_see_nothing_while_the_caller_does() {
    const TASKS: u64 = 200;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        let tasks: Vec<_> = (1..=TASKS)
            .map(|i| {
                tasklocal::spawn(async move {
                    REQ.set(i);
                    tokio::task::yield_now().await;
                    // Created inside `isolated`: nothing inherited, whichever way.
                    let isolated = tasklocal::isolated(|| {
                        assert_eq!(REQ.get(), Some(i), "the caller still reads its value");
                        REQ.set(i + 1000); // and writes its own storage
                        tasklocal::task(children_see())
                    });
                    assert_eq!(REQ.get(), Some(i + 1000));
                    let seen = isolated.await;
                    assert!(seen.iter().all(Option::is_none), "task {i}: {seen:?}");
                    // After `isolated`, children inherit again.
                    let seen = children_see().await;
                    assert!(seen.iter().all(|s| *s == Some(i + 1000)), "{seen:?}");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }));
}

#[test]
fn isolated_nests_and_ends_when_it_panics() {
    static N: Local<u64> = Local::inheritable();
    Snapshot::empty().run(|| {
        N.set(1);
        let child = || Snapshot::capture().run(|| N.get());
        let (inner, after_inner) = tasklocal::isolated(|| {
            let inner = tasklocal::isolated(child);
            (inner, child())
        });
        assert_eq!((inner, after_inner), (None, None));
        assert_eq!(child(), Some(1));
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            tasklocal::isolated(|| -> () { panic!("inside isolated") })
        }));
        assert_eq!(message(panicked.unwrap_err()), "inside isolated");
        assert_eq!(child(), Some(1), "the isolation ended with the panic");
    });
}

#[test]
fn isolated_lasts_through_an_unload_or_a_reset_inside_it() {
    // `unload` gives the owner a new storage: the isolation is the owner's, and
    // children created after it, of what is set after it, still start empty.
    static N: Local<u64> = Local::inheritable();
    for end in [tasklocal::unload as fn(), tasklocal::reset] {
        Snapshot::empty().run(|| {
            N.set(1);
            let child = || Snapshot::capture().run(|| N.get());
            let inside = tasklocal::isolated(|| {
                end();
                N.set(2);
                (
                    child(),
                    tasklocal::thread::spawn(|| N.get()).join().unwrap(),
                )
            });
            assert_eq!(inside, (None, None));
            assert_eq!(child(), Some(2), "the isolation ended with `isolated`");
        });
    }
}

/// An owner entered while `isolated` runs (a `Task` polled inside it) is another
/// owner: its children inherit its values.
#[test]
fn owners_entered_inside_isolated_are_not_isolated() {
    static N: Local<u64> = Local::inheritable();
    Snapshot::empty().run(|| {
        N.set(1);
        let (outer, inner) = tasklocal::isolated(|| {
            let outer = Snapshot::capture();
            let inner = block_on(tasklocal::Task::isolated(async {
                N.set(2);
                Snapshot::capture().run(|| N.get())
            }));
            (outer.run(|| N.get()), inner)
        });
        assert_eq!((outer, inner), (None, Some(2)));
    });
}

// ---------------------------------------------------------------------------------
// `Local::inheritable_with`

/// A value with no `Clone`: how many forks made it, the owner's own mark, and a
/// counted part, so that leaks show.
#[derive(Debug)]
struct Gen {
    generation: u64,
    own: u64,
    _counted: Counted,
}

impl Gen {
    fn new(generation: u64, own: u64, tally: &'static Tally) -> Gen {
        Gen {
            generation,
            own,
            _counted: Counted::new(generation, tally),
        }
    }
}

fn gen_of(key: &'static Local<Gen>) -> Option<(u64, u64)> {
    key.with(|g| g.map(|g| (g.generation, g.own)))
}

#[cfg(feature = "tokio")]
#[test]
fn inheritable_with_forks_once_per_child_on_a_multi_thread_runtime() {
    static TALLY: Tally = Tally::new();
    static FORKS: AtomicUsize = AtomicUsize::new(0);
    static KEY: Local<Gen> = Local::inheritable_with(|parent| {
        FORKS.fetch_add(1, SeqCst);
        Gen::new(parent.generation + 1, parent.own, &TALLY)
    });
    const CHILDREN: u64 = 200;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        tasklocal::spawn(async {
            KEY.set(Gen::new(0, 0, &TALLY));
            let children: Vec<_> = (1..=CHILDREN)
                .map(|i| {
                    tasklocal::spawn(async move {
                        // Many accesses, across yields and worker threads: one fork.
                        assert_eq!(
                            gen_of(&KEY),
                            Some((1, 0)),
                            "forked from the value as of creation"
                        );
                        tokio::task::yield_now().await;
                        KEY.with_mut(|g| g.own = i);
                        tokio::task::yield_now().await;
                        assert_eq!(gen_of(&KEY), Some((1, i)));
                        assert!(KEY.is_set());
                        // A grandchild forks from the child's value.
                        let grandchild = tasklocal::spawn(async { gen_of(&KEY) });
                        // Changed after the capture: the grandchild does not see it,
                        // and the child works on a fork of its own (no `Clone`).
                        KEY.with_mut(|g| g.own = i + 1);
                        assert_eq!(gen_of(&KEY), Some((2, i + 1)));
                        assert_eq!(grandchild.await.unwrap(), Some((2, i)));
                    })
                })
                .collect();
            // Children that never touch the key never fork.
            let idle: Vec<_> = (0..CHILDREN)
                .map(|_| tasklocal::spawn(async { tokio::task::yield_now().await }))
                .collect();
            // A write of the parent after the spawns is not seen by the children.
            KEY.set(Gen::new(10, 10, &TALLY));
            for child in children.into_iter().chain(idle) {
                child.await.unwrap();
            }
            // The children's writes never flowed back.
            assert_eq!(gen_of(&KEY), Some((10, 10)));
        })
        .await
        .unwrap();
    }));
    drop(rt);
    // Per child: its own fork, its grandchild's, and the copy for its `with_mut` of
    // a captured value. None for the idle children.
    assert_eq!(FORKS.load(SeqCst), 3 * CHILDREN as usize);
    assert_eq!(TALLY.created(), 2 + 3 * CHILDREN as usize);
    assert_eq!(TALLY.dropped(), TALLY.created(), "values leaked");
}

#[test]
fn inheritable_with_forks_lazily_and_only_for_owners_that_use_the_value() {
    static TALLY: Tally = Tally::new();
    static FORKS: AtomicUsize = AtomicUsize::new(0);
    static KEY: Local<Gen> = Local::inheritable_with(|parent| {
        FORKS.fetch_add(1, SeqCst);
        Gen::new(parent.generation + 1, parent.own, &TALLY)
    });
    let forks = || FORKS.load(SeqCst);
    Snapshot::empty().run(|| {
        KEY.set(Gen::new(0, 7, &TALLY));
        let snapshot = Snapshot::capture();
        assert_eq!(forks(), 0, "capturing forks nothing");
        // Every run of a snapshot is an owner of its own: one fork each.
        for _ in 0..10 {
            snapshot.run(|| {
                assert_eq!(gen_of(&KEY), Some((1, 7)));
                assert_eq!(gen_of(&KEY), Some((1, 7)));
            });
        }
        assert_eq!(forks(), 10);
        // No fork for an owner that only asks whether a value is there, or that
        // overwrites it first.
        snapshot.run(|| assert!(KEY.is_set()));
        snapshot.run(|| {
            KEY.set(Gen::new(5, 5, &TALLY));
            assert_eq!(gen_of(&KEY), Some((5, 5)));
        });
        assert_eq!(forks(), 10);
        // `take` and `replace` in a child hand out the child's value: a fork.
        let taken = snapshot.run(|| KEY.take().map(|g| g.generation));
        assert_eq!(taken, Some(1));
        let replaced = snapshot.run(|| KEY.replace(Gen::new(9, 9, &TALLY)).map(|g| g.generation));
        assert_eq!(replaced, Some(1));
        assert_eq!(forks(), 12);
        // An owner that never used the key passes on what it inherited, unforked.
        let grandchild = snapshot.run(|| Snapshot::capture().run(|| gen_of(&KEY)));
        assert_eq!(grandchild, Some((1, 7)));
        assert_eq!(forks(), 13);
        // Changing a value captured since it was stored works on a fork (the captured
        // context keeps the value as it was)...
        KEY.with_mut(|g| g.own = 8);
        assert_eq!(gen_of(&KEY), Some((1, 8)));
        assert_eq!(forks(), 14);
        assert_eq!(snapshot.run(|| gen_of(&KEY)), Some((1, 7)));
        assert_eq!(forks(), 15);
        // ...whether or not the capture is still alive...
        drop(snapshot);
        drop(Snapshot::capture());
        KEY.with_mut(|g| g.own = 9);
        assert_eq!(gen_of(&KEY), Some((2, 9)));
        assert_eq!(forks(), 16);
        // ...and a value not captured since is changed in place.
        KEY.with_mut(|g| g.own = 10);
        assert_eq!(gen_of(&KEY), Some((2, 10)));
        assert_eq!(forks(), 16);
        // `take` of a captured value hands out a fork, of an uncaptured one the value.
        let held = Snapshot::capture();
        assert_eq!(KEY.take().map(|g| (g.generation, g.own)), Some((3, 10)));
        assert_eq!(held.run(|| gen_of(&KEY)), Some((3, 10)));
        KEY.set(Gen::new(0, 11, &TALLY));
        assert_eq!(KEY.take().map(|g| (g.generation, g.own)), Some((0, 11)));
        assert_eq!(forks(), 18);
        drop(held);
    });
    assert_eq!(TALLY.dropped(), TALLY.created(), "values leaked");
}

#[cfg(feature = "tokio")]
#[test]
fn a_panicking_fork_fails_the_child_access_and_leaks_nothing() {
    static TALLY: Tally = Tally::new();
    static FORKS: AtomicUsize = AtomicUsize::new(0);
    /// Refuses to fork a value tagged 0.
    static KEY: Local<Counted> = Local::inheritable_with(|parent| {
        FORKS.fetch_add(1, SeqCst);
        assert_ne!(parent.tag, 0, "fork refused");
        Counted::new(parent.tag + 1, &TALLY)
    });
    fn tag() -> Option<u64> {
        KEY.with(|c| c.map(|c| c.tag))
    }
    const CHILDREN: usize = 100;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        tasklocal::spawn(async {
            KEY.set(Counted::new(0, &TALLY));
            let children: Vec<_> = (0..CHILDREN)
                .map(|i| {
                    tasklocal::spawn(async move {
                        if i % 2 == 0 {
                            let err = KEY.try_with(|_| ()).unwrap_err();
                            assert!(err.is_fork_panicked(), "{err}");
                        } else {
                            let panic = catch_unwind(tag).unwrap_err();
                            let message = message(panic);
                            assert!(
                                message.contains("`fork`") && message.contains("panicked"),
                                "{message}"
                            );
                        }
                        tokio::task::yield_now().await;
                        // From then on the child has no value, and forks no more.
                        assert_eq!(tag(), None);
                        assert!(!KEY.is_set());
                        assert!(KEY.take().is_none());
                        // It can set its own, and its children fork that.
                        KEY.set(Counted::new(10, &TALLY));
                        tasklocal::spawn(async { tag() }).await.unwrap()
                    })
                })
                .collect();
            for child in children {
                assert_eq!(child.await.unwrap(), Some(11));
            }
            assert_eq!(tag(), Some(0), "the parent is unaffected");
        })
        .await
        .unwrap();
    }));
    drop(rt);
    assert_eq!(FORKS.load(SeqCst), 2 * CHILDREN);
    assert_eq!(TALLY.created(), 1 + 2 * CHILDREN);
    assert_eq!(TALLY.dropped(), TALLY.created(), "values leaked");
}

#[test]
fn a_fork_that_reads_its_own_key_fails_cleanly() {
    static KEY: Local<u64> = Local::inheritable_with(|n| KEY.get().map_or(*n, |m| m + n));
    Snapshot::empty().run(|| {
        KEY.set(1);
        let err = Snapshot::capture().run(|| KEY.try_get().unwrap_err());
        assert!(err.is_fork_panicked(), "{err}");
        assert_eq!(KEY.get(), Some(1));
    });
}

// ---------------------------------------------------------------------------------
// `Carried`

#[cfg(feature = "tokio")]
#[test]
fn carried_messages_reach_a_long_lived_worker_with_their_senders_context() {
    static TALLY: Tally = Tally::new();
    static SENDER: Local<Arc<Counted>> = Local::inheritable();
    static SCRATCH: Local<u64> = Local::new();
    const SENDERS: u64 = 300;
    let rt = multi_thread(4);
    rt.block_on(with_timeout(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<tasklocal::Carried<u64>>(8);
        let (async_tx, mut async_rx) = tokio::sync::mpsc::channel::<tasklocal::Carried<u64>>(8);
        // Long-lived workers, created before any request: they inherit nothing.
        let worker = tasklocal::spawn(async move {
            SENDER.set(Arc::new(Counted::new(0, &TALLY)));
            let mut handled = 0;
            while let Some(message) = rx.recv().await {
                let ended = Arc::new(AtomicUsize::new(0));
                let in_handler = ended.clone();
                message.run(|n| {
                    assert_eq!(SENDER.get().map(|s| s.tag), Some(n), "the sender's values");
                    assert_eq!(SCRATCH.get(), None, "nothing left by an earlier message");
                    SCRATCH.set(n);
                    SENDER.set(Arc::new(Counted::new(1_000 + n, &TALLY)));
                    tasklocal::at_exit(move || {
                        in_handler.fetch_add(1, SeqCst);
                    });
                });
                assert_eq!(
                    ended.load(SeqCst),
                    1,
                    "the message's owner ended with `run`"
                );
                // The worker's own storage saw none of it.
                assert_eq!(SENDER.get().map(|s| s.tag), Some(0));
                assert_eq!(SCRATCH.get(), None);
                handled += 1;
            }
            handled
        });
        let async_worker = tasklocal::spawn(async move {
            let mut handled = 0;
            while let Some(message) = async_rx.recv().await {
                let seen = message
                    .task(|n| async move {
                        tokio::task::yield_now().await;
                        assert_eq!(SCRATCH.get(), None);
                        SCRATCH.set(n);
                        (n, SENDER.get().map(|s| s.tag))
                    })
                    .await;
                assert_eq!(seen.1, Some(seen.0));
                assert_eq!(SENDER.get().map(|s| s.tag), None);
                handled += 1;
            }
            handled
        });
        let senders: Vec<_> = (1..=SENDERS)
            .map(|i| {
                let (tx, async_tx) = (tx.clone(), async_tx.clone());
                tasklocal::spawn(async move {
                    SENDER.set(Arc::new(Counted::new(i, &TALLY)));
                    let message = tasklocal::Carried::new(i);
                    let again = tasklocal::Carried::new(i);
                    // Written after the capture: the worker does not see it.
                    SENDER.set(Arc::new(Counted::new(2_000 + i, &TALLY)));
                    tokio::task::yield_now().await;
                    tx.send(message).await.unwrap();
                    async_tx.send(again).await.unwrap();
                })
            })
            .collect();
        drop((tx, async_tx));
        for sender in senders {
            sender.await.unwrap();
        }
        assert_eq!(worker.await.unwrap(), SENDERS);
        assert_eq!(async_worker.await.unwrap(), SENDERS);
    }));
    drop(rt);
    assert_eq!(TALLY.created(), 1 + 3 * SENDERS as usize);
    assert_eq!(TALLY.dropped(), TALLY.created(), "values leaked");
}

#[test]
fn a_carried_dropped_unrun_releases_its_context() {
    static TALLY: Tally = Tally::new();
    static KEY: Local<Arc<Counted>> = Local::inheritable();
    Snapshot::empty().run(|| {
        KEY.set(Arc::new(Counted::new(1, &TALLY)));
        let unrun = tasklocal::Carried::new("job");
        let inner = tasklocal::Carried::new(String::from("job"));
        KEY.set(Arc::new(Counted::new(2, &TALLY)));
        // The first value lives on in the two messages only.
        assert_eq!(TALLY.dropped(), 0);
        drop(unrun);
        assert_eq!(TALLY.dropped(), 0);
        assert_eq!(inner.snapshot().get(&KEY).map(|c| c.tag), Some(1));
        assert_eq!(inner.into_inner(), "job");
        assert_eq!(TALLY.dropped(), 1, "released with the last message");
    });
    assert_eq!(TALLY.dropped(), 2);
    // Sent through a channel and dropped on the other side, unrun.
    let (tx, rx) = std::sync::mpsc::channel();
    Snapshot::empty().run(|| {
        KEY.set(Arc::new(Counted::new(3, &TALLY)));
        tx.send(tasklocal::Carried::new(())).unwrap();
    });
    assert_eq!(TALLY.dropped(), 2);
    std::thread::spawn(move || drop(rx.recv().unwrap()))
        .join()
        .unwrap();
    assert_eq!(TALLY.dropped(), 3);
    assert_eq!(TALLY.created(), 3);
}
