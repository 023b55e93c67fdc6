#![cfg(all(tokio_unstable, feature = "tokio"))]
//! Automatic mode (`tasklocal::tokio::install`, SPEC 6) under load: every task keeps its
//! own storage and inherits its spawner's values (SPEC 4) with thousands of tasks
//! alive — more than the registry's table has cells, so that tasks share cells and
//! live in the shards — through waves of short tasks, children, panics and aborts,
//! overlapping polls woken from other threads, and spawn storms. Every value is dropped
//! once and every exit handler runs once (SPEC 5). The end of tasks under load:
//! `automatic_shutdown.rs`; blocking work, nested wrappers and user hooks under load:
//! `automatic_blocking.rs`. Built only with `--cfg tokio_unstable` (see `automatic.rs`).
//!
//! Checks inside tasks are collected ([`Mismatches`]) and asserted on the test's
//! thread, so that a wrong value fails the test instead of one task.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use support::automatic::{multi_thread, tag, with_timeout, Counted, Tally, PATIENCE};
use support::stress::{counters, id_of, quiet_panics, Mismatches, Wakers};
use tasklocal::Local;
use tokio::task::JoinHandle;

/// The cells of automatic mode's table: tasks whose ids are equal modulo this share one.
const CELLS: u64 = 4096;

/// 10,000 live tasks on 2 workers, each with its own values, yielding many times;
/// some spawn children, some panic, some are aborted mid-way. Every task reads only
/// its own or inherited values; every value is dropped once; every exit handler runs
/// once, with the task's value readable.
#[test]
fn ten_thousand_tasks_with_children_panics_and_aborts() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static INHERITED: Local<u64> = Local::inheritable();
    static POLLS: Local<u32> = Local::with_initial(|| 0);
    static BAD: Mismatches = Mismatches::new();
    const TASKS: usize = 10_000;
    const CHILD: u64 = 1 << 32;
    quiet_panics();
    let exits = counters(2 * TASKS);
    let rt = multi_thread(2);
    let never = Arc::new(tokio::sync::Notify::new());
    let (parked_tx, parked_rx) = std::sync::mpsc::channel::<()>();
    let ids = rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                let never = never.clone();
                let parked = parked_tx.clone();
                tokio::spawn(async move {
                    let n = i as u64;
                    BAD.check("fresh value", tag(&VALUE), None);
                    BAD.check("fresh inherited", INHERITED.get(), None);
                    VALUE.set(Counted::new(n, &TALLY));
                    INHERITED.set(n);
                    tasklocal::set("dyn", n);
                    let id = tasklocal::id();
                    tasklocal::at_exit(move || {
                        exits[i].fetch_add(1, SeqCst);
                        BAD.check("value in handler", tag(&VALUE), Some(n));
                    });
                    let mut child = None;
                    for round in 1..=12u32 {
                        tokio::task::yield_now().await;
                        POLLS.with_mut(|p| *p += 1);
                        BAD.check("value", tag(&VALUE), Some(n));
                        BAD.check("inherited", INHERITED.get(), Some(n));
                        BAD.check("dyn", tasklocal::get::<_, u64>(&"dyn"), Some(n));
                        BAD.check("polls", POLLS.get(), Some(round));
                        BAD.check("id", tasklocal::id(), id);
                        if round == 3 && i % 5 == 0 {
                            child = Some(tokio::spawn(async move {
                                BAD.check("child inherited", INHERITED.get(), Some(n));
                                BAD.check("child value", tag(&VALUE), None);
                                BAD.check("child dyn", tasklocal::get::<_, u64>(&"dyn"), None);
                                BAD.check("child polls", POLLS.get(), Some(0));
                                VALUE.set(Counted::new(CHILD + n, &TALLY));
                                INHERITED.set(CHILD + n);
                                tasklocal::at_exit(move || {
                                    exits[TASKS + i].fetch_add(1, SeqCst);
                                    BAD.check("child handler", tag(&VALUE), Some(CHILD + n));
                                });
                                for _ in 0..5 {
                                    tokio::task::yield_now().await;
                                    BAD.check("child own", tag(&VALUE), Some(CHILD + n));
                                    BAD.check("child own inh", INHERITED.get(), Some(CHILD + n));
                                }
                            }));
                        }
                        if round == 6 && i % 13 == 1 {
                            panic!("deliberate panic in a task");
                        }
                        if round == 7 && i % 17 == 2 {
                            parked.send(()).unwrap();
                            never.notified().await;
                        }
                    }
                    if let Some(child) = child {
                        child.await.unwrap();
                    }
                    BAD.check("inherited after child", INHERITED.get(), Some(n));
                    id
                })
            })
            .collect();
        let parked = (0..TASKS).filter(|i| i % 17 == 2 && i % 13 != 1).count();
        // Wait (off the runtime) until every task to abort is parked, then abort.
        let parked_rx = Arc::new(Mutex::new(parked_rx));
        tokio::task::spawn_blocking(move || {
            for _ in 0..parked {
                parked_rx.lock().unwrap().recv_timeout(PATIENCE).unwrap();
            }
        })
        .await
        .unwrap();
        let mut ids = HashSet::new();
        for (i, handle) in handles.into_iter().enumerate() {
            if i % 17 == 2 && i % 13 != 1 {
                handle.abort();
                assert!(handle.await.unwrap_err().is_cancelled());
            } else if i % 13 == 1 {
                assert!(handle.await.unwrap_err().is_panic());
            } else {
                assert!(ids.insert(handle.await.unwrap()), "an id was shared");
            }
        }
        ids
    }));
    assert!(ids.len() > TASKS / 2);
    TALLY.assert_all_dropped();
    BAD.assert_none();
    for i in 0..TASKS {
        assert_eq!(exits[i].load(SeqCst), 1, "task {i}: exit handler runs");
        let child_expected = u32::from(i % 5 == 0);
        // children of tasks panicking at round 6 were spawned at round 3: they exist.
        assert_eq!(
            exits[TASKS + i].load(SeqCst),
            child_expected,
            "child of {i}"
        );
    }
    drop(rt);
    TALLY.assert_all_dropped();
    assert_eq!(TALLY.dropped(), TALLY.created(), "dropped more than once");
    for (i, e) in exits.iter().enumerate() {
        assert!(e.load(SeqCst) <= 1, "handler {i} ran twice");
    }
}

/// Spawns tasks (each waiting for its verdict) until one's id falls in the same cell
/// as `target`; releases the others. Returns the chosen task's handle and the sender
/// that starts it.
async fn spawn_colliding<F, Fut>(
    target: u64,
    make: F,
) -> (JoinHandle<Fut::Output>, tokio::sync::oneshot::Sender<bool>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + Default + 'static,
{
    for _ in 0..20 * CELLS {
        let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<bool>();
        let body = make();
        let handle = tokio::spawn(async move {
            if verdict_rx.await == Ok(true) {
                body.await
            } else {
                Default::default()
            }
        });
        if id_of(&handle) % CELLS == target % CELLS && id_of(&handle) != target {
            return (handle, verdict_tx);
        }
        let _ = verdict_tx.send(false);
    }
    panic!("no colliding id found");
}

/// Task A holds its cell's window open (it used its storage in this poll) and blocks
/// in `block_in_place` until task B, whose id maps to the same cell, has run and
/// used its own storage. The docs: "holding it through the poll blocks nothing but an
/// overlapping poll of the same task".
#[test]
fn a_task_in_a_taken_cell_runs_while_the_cells_owner_blocks_in_its_poll() {
    static VALUE: Local<u64> = Local::new();
    let rt = multi_thread(2);
    let result = rt.block_on(with_timeout(async {
        let (b_done_tx, b_done_rx) = mpsc::channel::<(Option<u64>, Option<u64>)>();
        let (go_a_tx, go_a_rx) = tokio::sync::oneshot::channel::<()>();
        let (blocking_tx, blocking_rx) = tokio::sync::oneshot::channel::<()>();
        let a = tokio::spawn(async move {
            go_a_rx.await.unwrap();
            VALUE.set(1);
            let _ = blocking_tx.send(());
            let got =
                tokio::task::block_in_place(|| b_done_rx.recv_timeout(Duration::from_secs(10)));
            (got.ok(), VALUE.get())
        });
        let a_id = id_of(&a);
        let b_done = Arc::new(Mutex::new(Some(b_done_tx)));
        let (b, start_b) = spawn_colliding(a_id, || {
            let b_done = b_done.clone();
            async move {
                let Some(tx) = b_done.lock().unwrap().take() else {
                    return;
                };
                let before = VALUE.get();
                VALUE.set(2);
                tokio::task::yield_now().await;
                let _ = tx.send((before, VALUE.get()));
            }
        })
        .await;
        go_a_tx.send(()).unwrap();
        blocking_rx.await.unwrap();
        start_b.send(true).unwrap();
        let a = a.await.unwrap();
        b.await.unwrap();
        a
    }));
    assert_eq!(
        result,
        (Some((None, Some(2))), Some(1)),
        "B ran with its own storage while A blocked"
    );
    drop(rt);
}

/// The same while A holds its window open and C is *spawned* (from another task)
/// into A's cell, then used; then A ends and D takes the freed cell.
#[test]
fn spawn_into_a_locked_cell_then_a_freed_cell() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static SHARED: Local<u64> = Local::inheritable();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (holding_tx, holding_rx) = tokio::sync::oneshot::channel::<()>();
        let a = tokio::spawn(async move {
            VALUE.set(Counted::new(1, &TALLY));
            SHARED.set(1);
            let _ = holding_tx.send(());
            tokio::task::block_in_place(|| release_rx.recv_timeout(Duration::from_secs(10))).is_ok()
                && tag(&VALUE) == Some(1)
        });
        holding_rx.await.unwrap();
        let a_id = id_of(&a);
        // Spawned from a task with a value of its own to inherit.
        let spawner = tokio::spawn(async move {
            SHARED.set(3);
            let (c, go) = spawn_colliding(a_id, || async {
                let inherited = SHARED.get();
                VALUE.set(Counted::new(3, &TALLY));
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                (inherited, tag(&VALUE))
            })
            .await;
            go.send(true).unwrap();
            c.await.unwrap()
        });
        let seen = spawner.await.unwrap();
        assert_eq!(seen, (Some(3), Some(3)), "C in A's cell");
        release_tx.send(()).unwrap();
        assert!(a.await.unwrap(), "A kept its value");
        // A ended; D may take its cell.
        let (d, go) = spawn_colliding(a_id, || async {
            let fresh = (tag(&VALUE), SHARED.get());
            VALUE.set(Counted::new(4, &TALLY));
            tokio::task::yield_now().await;
            (fresh, tag(&VALUE))
        })
        .await;
        go.send(true).unwrap();
        assert_eq!(d.await.unwrap(), ((None, None), Some(4)));
    }));
    TALLY.assert_all_dropped();
    drop(rt);
    assert_eq!(TALLY.dropped(), TALLY.created());
}

/// 6,000 long-lived tasks (more than the table's cells) hold values while waves of
/// short tasks are spawned and finish; the long-lived ones then check and end.
#[test]
fn waves_of_tasks_around_thousands_of_long_lived_ones() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    const LONG: u64 = 6_000;
    const WAVES: u64 = 8;
    const WAVE: u64 = 1_500;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let long: Vec<_> = (0..LONG)
            .map(|i| {
                let release = release.clone();
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::set(1u8, i);
                    ready.send(()).unwrap();
                    let _permit = release.acquire().await.unwrap();
                    for _ in 0..5 {
                        BAD.check("long value", tag(&VALUE), Some(i));
                        BAD.check("long dyn", tasklocal::get::<_, u64>(&1u8), Some(i));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for _ in 0..LONG {
            ready_rx.recv().await.unwrap();
        }
        for wave in 0..WAVES {
            let tasks: Vec<_> = (0..WAVE)
                .map(|j| {
                    let n = 1_000_000 * (wave + 1) + j;
                    tokio::spawn(async move {
                        BAD.check("wave fresh", tag(&VALUE), None);
                        VALUE.set(Counted::new(n, &TALLY));
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                            BAD.check("wave value", tag(&VALUE), Some(n));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            // Half the long-lived tasks take one more step between waves.
            if wave == WAVES / 2 {
                release.add_permits((LONG / 2) as usize);
            }
        }
        release.add_permits(LONG as usize);
        for t in long {
            t.await.unwrap();
        }
    }));
    TALLY.assert_all_dropped();
    BAD.assert_none();
    drop(rt);
    assert_eq!(TALLY.dropped(), TALLY.created());
}

/// Overlapping polls of tasks that live in the shards (their cells are taken by
/// long-lived tasks): woken from other threads continuously, each reads only its own
/// value.
#[test]
fn overlapping_polls_of_tasks_in_the_shards() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static BAD: Mismatches = Mismatches::new();
    const FILL: u64 = 4_200;
    const TASKS: usize = 16;
    const WAKES: usize = 3_000;
    let rt = multi_thread(2);
    let notifies: Vec<Arc<tokio::sync::Notify>> = (0..TASKS).map(|_| Arc::default()).collect();
    let wakers = Wakers::start({
        let notifies = notifies.clone();
        move |k| {
            notifies
                .iter()
                .skip(k)
                .step_by(2)
                .for_each(|n| n.notify_one())
        }
    });
    rt.block_on(with_timeout(async {
        // Fill the table with idle tasks, so that the next ones go to the shards.
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let fill: Vec<_> = (0..FILL)
            .map(|_| {
                let release = release.clone();
                tokio::spawn(async move {
                    tasklocal::set("fill", 1u8);
                    let _p = release.acquire().await.unwrap();
                })
            })
            .collect();
        let tasks: Vec<_> = notifies
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, notify)| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i as u64, &TALLY));
                    for _ in 0..WAKES {
                        notify.notified().await;
                        BAD.check("value", tag(&VALUE), Some(i as u64));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        release.add_permits(FILL as usize);
        for f in fill {
            f.await.unwrap();
        }
    }));
    wakers.stop();
    TALLY.assert_all_dropped();
    BAD.assert_none();
    drop(rt);
}

/// A spawner that has not touched its storage for many polls (its windows are pending
/// again) spawns 9,000 children in one poll: some land in the spawner's own cell,
/// many in each other's. Every child inherits the spawner's value as of its spawn.
#[test]
fn a_spawn_storm_from_a_pending_window_inherits() {
    static SHARED: Local<u64> = Local::inheritable();
    static BAD: Mismatches = Mismatches::new();
    const CHILDREN: u64 = 9_000;
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        tokio::spawn(async {
            SHARED.set(5);
            for _ in 0..64 {
                tokio::task::yield_now().await; // cool down: polls that touch nothing
            }
            // No API call before these spawns in this poll.
            let children: Vec<_> = (0..CHILDREN)
                .map(|_| {
                    tokio::spawn(async {
                        let seen = SHARED.get();
                        SHARED.set(6);
                        tokio::task::yield_now().await;
                        (seen, SHARED.get())
                    })
                })
                .collect();
            SHARED.set(7);
            for c in children {
                BAD.check("child", c.await.unwrap(), (Some(5), Some(6)));
            }
            BAD.check("spawner", SHARED.get(), Some(7));
        })
        .await
        .unwrap();
    }));
    BAD.assert_none();
    drop(rt);
}

/// A spawner living in the shards (its cell is taken by a long-lived task) spawns
/// children that collide with it and each other; they inherit; the long-lived task
/// in the cell keeps its own value.
#[test]
fn a_spawner_in_the_shards_spawns_children_that_inherit() {
    static SHARED: Local<u64> = Local::inheritable();
    static BAD: Mismatches = Mismatches::new();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn(async move {
            SHARED.set(1);
            let _ = release_rx.await;
            SHARED.get()
        });
        let (s, go) = spawn_colliding(id_of(&holder), || async {
            SHARED.set(2);
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            let me: u64 = tokio::task::id().to_string().parse().unwrap();
            let mut children = Vec::new();
            let mut colliding = 0;
            // Until two children landed in the spawner's cell (other tests of this
            // process take ids too, so count rather than assume).
            for k in 0..(10 * CELLS) {
                if colliding >= 2 {
                    break;
                }
                let c = tokio::spawn(async move {
                    let seen = SHARED.get();
                    SHARED.set(100 + k);
                    tokio::task::yield_now().await;
                    (seen, SHARED.get())
                });
                if id_of(&c) % CELLS == me % CELLS {
                    colliding += 1;
                }
                children.push((k, c));
            }
            for (k, c) in children {
                BAD.check("child", c.await.unwrap(), (Some(2), Some(100 + k)));
            }
            BAD.check("spawner", SHARED.get(), Some(2));
            colliding
        })
        .await;
        go.send(true).unwrap();
        let colliding = s.await.unwrap();
        assert!(colliding >= 1, "no child collided with the spawner");
        release_tx.send(()).unwrap();
        BAD.check("holder", holder.await.unwrap(), Some(1));
    }));
    BAD.assert_none();
    drop(rt);
}
