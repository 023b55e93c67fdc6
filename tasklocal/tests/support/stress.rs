//! Helpers of the automatic-mode stress tests (`automatic_stress.rs`,
//! `automatic_shutdown.rs`, `automatic_blocking.rs`): checks collected inside tasks and
//! asserted on the test's thread, counters, task ids, quiet deliberate panics, and a
//! runtime whose threads hold values of their own.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once};

use tasklocal::Local;
use tokio::runtime::Builder;
use tokio::task::JoinHandle;

use super::automatic::PATIENCE;

/// Silences the deliberate panics of these tests (only those).
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let deliberate = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|s| s.starts_with("deliberate"));
            if !deliberate {
                previous(info);
            }
        }));
    });
}

pub fn id_of<T>(handle: &JoinHandle<T>) -> u64 {
    handle.id().to_string().parse().unwrap()
}

pub fn counters(n: usize) -> &'static [AtomicU32] {
    Box::leak(
        (0..n)
            .map(|_| AtomicU32::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// Collects mismatches instead of panicking inside tasks.
pub struct Mismatches(Mutex<Vec<String>>);

impl Mismatches {
    pub const fn new() -> Self {
        Mismatches(Mutex::new(Vec::new()))
    }
    pub fn check<T: PartialEq + std::fmt::Debug>(&self, what: &str, seen: T, expected: T) {
        if seen != expected {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{what}: saw {seen:?}, expected {expected:?}"));
        }
    }
    #[track_caller]
    pub fn assert_none(&self) {
        let all = self.0.lock().unwrap();
        assert!(
            all.is_empty(),
            "{} mismatches, first: {:?}",
            all.len(),
            &all[..all.len().min(10)]
        );
    }
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// A runtime whose threads (workers and blocking threads) set values of their own in
/// `on_thread_start`.
pub fn runtime_with_thread_values(
    workers: usize,
    key: &'static Local<u64>,
) -> tokio::runtime::Runtime {
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(workers)
        .max_blocking_threads(2)
        .enable_all()
        .on_thread_start(move || key.set(u64::MAX));
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

/// Two threads that keep waking tasks from outside the runtime (`wake(0)` and
/// `wake(1)`, each waking every other task), until [`stop`](Wakers::stop)ped.
pub struct Wakers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Wakers {
    pub fn start(wake: impl Fn(usize) + Send + Sync + 'static) -> Wakers {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(wake);
        let threads = (0..2)
            .map(|k| {
                let (wake, stop) = (wake.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        wake(k);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        Wakers { stop, threads }
    }

    /// Stops both threads and waits for them.
    pub fn stop(self) {
        self.stop.store(true, SeqCst);
        self.threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
