//! Automatic mode (`tasklocal::tokio::install`, `--cfg tokio_unstable`): runtimes built
//! with it, values whose drops are counted, and patience for teardowns that finish on
//! a worker after the `JoinHandle` resolved.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tasklocal::Local;
use tokio::runtime::{Builder, Runtime};

/// How long a test waits for something that must happen before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Counts values made and dropped; one per test, so tests can run in parallel.
#[derive(Debug)]
pub struct Tally {
    created: AtomicUsize,
    dropped: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Tally {
    /// Nothing counted yet.
    pub const fn new() -> Tally {
        Tally {
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// Values made so far.
    pub fn created(&self) -> usize {
        self.created.load(SeqCst)
    }

    /// Values dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(SeqCst)
    }

    /// Waits (at most [`PATIENCE`]) until `n` values have been dropped; returns how
    /// many have.
    pub fn wait_dropped(&self, n: usize) -> usize {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.lock.lock().unwrap();
        while self.dropped() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            guard = self.changed.wait_timeout(guard, left).unwrap().0;
        }
        self.dropped()
    }

    /// Every value made has been dropped (waiting for teardowns still running).
    #[track_caller]
    pub fn assert_all_dropped(&self) {
        let created = self.created();
        assert_eq!(self.wait_dropped(created), created, "values leaked");
    }
}

/// A value whose drops are counted.
#[derive(Debug)]
pub struct Counted {
    pub tag: u64,
    tally: &'static Tally,
}

impl Counted {
    /// A value tagged `tag`, counted by `tally`.
    pub fn new(tag: u64, tally: &'static Tally) -> Counted {
        tally.created.fetch_add(1, SeqCst);
        Counted { tag, tally }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.dropped.fetch_add(1, SeqCst);
        let _guard = self.tally.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.tally.changed.notify_all();
    }
}

/// A multi-thread runtime in automatic mode with `workers` worker threads.
pub fn multi_thread(workers: usize) -> Runtime {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

/// A current-thread runtime in automatic mode.
pub fn current_thread() -> Runtime {
    let mut builder = Builder::new_current_thread();
    builder.enable_all();
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

/// Awaits `future`, failing the test after [`PATIENCE`] instead of hanging.
pub async fn with_timeout<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

/// The tag of this owner's value of `key`, if any.
pub fn tag(key: &'static Local<Counted>) -> Option<u64> {
    key.with(|v| v.map(|v| v.tag))
}

/// What an exit handler of [`set_with_two_handlers`] reports: the task's number, the
/// handler's (2 was registered first), and the task's value the handler saw.
pub type HandlerRun = (u64, u32, Option<u64>);

/// In the current task: sets `value` to a counted value tagged `i` and registers two
/// exit handlers that report on `tx`.
pub fn set_with_two_handlers(
    i: u64,
    value: &'static Local<Counted>,
    tally: &'static Tally,
    tx: &std::sync::mpsc::Sender<HandlerRun>,
) {
    value.set(Counted::new(i, tally));
    let (first, second) = (tx.clone(), tx.clone());
    tasklocal::at_exit(move || first.send((i, 2, tag(value))).unwrap());
    tasklocal::at_exit(move || second.send((i, 1, tag(value))).unwrap());
}

/// Waits for the handlers of `tasks` tasks set up by [`set_with_two_handlers`]:
/// each ran with its task's value readable, the last registered first.
pub fn assert_handlers_ran(rx: &std::sync::mpsc::Receiver<HandlerRun>, tasks: u64) {
    let mut order: std::collections::HashMap<u64, Vec<u32>> = Default::default();
    for _ in 0..2 * tasks {
        let (i, n, seen) = rx.recv_timeout(PATIENCE).expect("a handler did not run");
        assert_eq!(
            seen,
            Some(i),
            "a handler runs with its task's values readable"
        );
        order.entry(i).or_default().push(n);
    }
    assert!(order.values().all(|o| o == &[1, 2]), "handlers run FILO");
}
