//! Many typed keys of one value type: every key reads and writes its own value, in a
//! `Task`, on a thread and in a child, for keys of both kinds among a storage's first
//! cells and beyond them. The fast paths tell a key's kind and cell from its index
//! alone; with the same value type everywhere, a key that found another key's cell
//! would read a wrong value rather than fail a type check.

use futures::executor::block_on;
use tasklocal::{task, Local, Snapshot};

/// More than a storage's inline cells (8) of each kind.
const KEYS: usize = 12;

static PLAIN: [Local<u64>; KEYS] = [const { Local::new() }; KEYS];
static INHERITED: [Local<u64>; KEYS] = [const { Local::inheritable() }; KEYS];

fn plain(i: usize, round: u64) -> u64 {
    round * 1_000 + i as u64
}

fn inherited(i: usize, round: u64) -> u64 {
    round * 1_000 + 500 + i as u64
}

/// Sets every key for `round` (twice, so the second write replaces in place), reads
/// every key back, and binds every plain key in a scope.
fn exercise(round: u64) {
    for _ in 0..2 {
        for (i, (p, h)) in PLAIN.iter().zip(&INHERITED).enumerate() {
            p.set(plain(i, round));
            h.set(inherited(i, round));
        }
    }
    assert_round(round);
    for (i, key) in PLAIN.iter().enumerate() {
        key.scope(7, || {
            assert_eq!(key.get(), Some(7), "plain key {i} in its scope");
            for (j, other) in PLAIN.iter().enumerate().filter(|&(j, _)| j != i) {
                assert_eq!(other.get(), Some(plain(j, round)), "plain key {j}");
            }
        });
    }
    assert_round(round);
}

fn assert_round(round: u64) {
    for (i, (p, h)) in PLAIN.iter().zip(&INHERITED).enumerate() {
        assert_eq!(p.get(), Some(plain(i, round)), "plain key {i}");
        assert_eq!(p.with(|v| v.copied()), Some(plain(i, round)));
        assert_eq!(h.get(), Some(inherited(i, round)), "inheritable key {i}");
    }
}

/// What a child of an owner that ran `exercise(round)` sees: the inheritable keys, and
/// no plain key.
fn assert_child_of(round: u64) {
    for (i, (p, h)) in PLAIN.iter().zip(&INHERITED).enumerate() {
        assert_eq!(p.get(), None, "plain key {i} is not inherited");
        assert_eq!(h.get(), Some(inherited(i, round)), "key {i}");
    }
}

#[test]
fn every_key_keeps_its_own_value_in_a_task_a_thread_and_a_child() {
    // Keys first used in a child (no index yet), then in a task and on a thread.
    Snapshot::empty().run(assert_child_of_nothing);
    block_on(task(async {
        exercise(1);
        let snapshot = Snapshot::capture();
        std::thread::spawn(move || snapshot.run(|| assert_child_of(1)))
            .join()
            .unwrap();
        // A child task, created here (so inheriting), polled on another thread.
        let child = task(async { assert_child_of(1) });
        std::thread::spawn(move || block_on(child)).join().unwrap();
    }));
    std::thread::spawn(|| {
        exercise(2);
        Snapshot::capture().run(|| {
            assert_child_of(2);
            exercise(3);
        });
        assert_round(2);
    })
    .join()
    .unwrap();
}

fn assert_child_of_nothing() {
    for (p, h) in PLAIN.iter().zip(&INHERITED) {
        assert_eq!((p.get(), h.get()), (None, None));
    }
}
