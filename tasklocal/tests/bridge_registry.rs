//! The bridge registry (SPEC section 9, `tasklocal::bridge`'s docs): bridges run
//! "around the teardown of an owner", so an exit handler or a value's `Drop` finds the
//! ending owner entered, for every way an owner ends; `register` fails with
//! `RegisterError` once `MAX_BRIDGES` bridges are registered, and every registered
//! bridge is called.
//!
//! A binary of its own: registration fills the process-wide slots for good, so a test
//! binary that shares it could not register its own bridges. This binary's recording
//! bridge takes its slot before any test fills the rest.

mod support;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};

use futures::executor::block_on;
use support::fresh;
use tasklocal::bridge::{self, Bridge, RegisterError, MAX_BRIDGES};
use tasklocal::{Local, TaskId};

thread_local! {
    /// The owners entered on this thread, innermost last.
    static STACK: RefCell<Vec<TaskId>> = const { RefCell::new(Vec::new()) };
    /// Exits seen on this thread with no owner entered.
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Keeps the stack of the owners entered on each thread.
struct Recorder;

impl Bridge for Recorder {
    fn enter(&self) {
        let id = tasklocal::id();
        STACK.with(|s| s.borrow_mut().push(id));
    }

    fn exit(&self) {
        if STACK.with(|s| s.borrow_mut().pop()).is_none() {
            ERRORS.with(|e| e.borrow_mut().push("exit without an enter".to_string()));
        }
    }
}

/// Registers `Recorder`, once, before anything else can fill the slots.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| bridge::register(Recorder).unwrap());
}

/// The innermost owner entered on this thread.
fn top() -> Option<TaskId> {
    STACK.with(|s| s.borrow().last().copied())
}

fn depth() -> usize {
    STACK.with(|s| s.borrow().len())
}

fn errors() -> Vec<String> {
    ERRORS.with(|e| e.borrow().clone())
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    f.poll(&mut Context::from_waker(&waker))
}

/// "around the teardown of an owner (its exit handlers and value drops run with it
/// current)": in a handler and in a value's `Drop`, the bridge has the ending owner
/// entered — for `Snapshot::run`, a completed `Task`, a `Task` dropped unfinished and
/// one dropped before its first poll; every enter is exited.
#[test]
fn teardown_runs_with_the_ending_owner_entered() {
    install();
    /// Records, when dropped, whether the bridge has the current owner entered.
    struct EnteredAtDrop(Arc<Mutex<Vec<bool>>>);
    impl Drop for EnteredAtDrop {
        fn drop(&mut self) {
            let ok = top() == tasklocal::try_id().ok();
            self.0.lock().unwrap().push(ok);
        }
    }
    static PROBE: Local<EnteredAtDrop> = Local::new();
    std::thread::spawn(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let register = |seen: &Arc<Mutex<Vec<bool>>>| {
            let s = seen.clone();
            tasklocal::at_exit(move || {
                let ok = top() == tasklocal::try_id().ok();
                s.lock().unwrap().push(ok);
            });
            PROBE.set(EnteredAtDrop(seen.clone()));
        };
        fresh(|| register(&seen));
        block_on(tasklocal::task({
            let seen = seen.clone();
            async move { register(&seen) }
        }));
        let mut pending = Box::pin(tasklocal::task({
            let seen = seen.clone();
            async move {
                register(&seen);
                std::future::pending::<()>().await
            }
        }));
        assert!(poll_once(pending.as_mut()).is_pending());
        assert_eq!(depth(), 0);
        drop(pending);
        // Dropped without ever being polled.
        drop(tasklocal::task(async {}));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!(
            seen.iter().all(|ok| *ok),
            "teardown ran outside the bridge: {seen:?}"
        );
        assert_eq!(depth(), 0);
        assert!(errors().is_empty(), "{:?}", errors());
    })
    .join()
    .unwrap();
}

/// `register` "Errors: RegisterError when MAX_BRIDGES bridges are registered already",
/// the same error each time, naming the limit; `registered()` counts them; every
/// registered bridge is called.
#[test]
fn register_stops_at_max_bridges() {
    install();
    struct Noop(&'static AtomicUsize);
    impl Bridge for Noop {
        fn enter(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn exit(&self) {}
    }
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let before = bridge::registered();
    assert!((1..=MAX_BRIDGES).contains(&before));
    let mut ok = 0;
    let mut err: Option<RegisterError> = None;
    for _ in 0..MAX_BRIDGES + 3 {
        match bridge::register(Noop(&CALLS)) {
            Ok(()) => ok += 1,
            Err(e) => {
                if let Some(first) = &err {
                    assert_eq!(first, &e);
                }
                err = Some(e);
            }
        }
    }
    assert_eq!(ok, MAX_BRIDGES - before);
    assert_eq!(bridge::registered(), MAX_BRIDGES);
    let err = err.expect("no error past the limit");
    assert!(err.to_string().contains(&MAX_BRIDGES.to_string()), "{err}");
    let _: &dyn std::error::Error = &err;
    // All registered bridges are called.
    let calls = CALLS.load(Ordering::Relaxed);
    std::thread::spawn(|| fresh(|| ())).join().unwrap();
    assert!(CALLS.load(Ordering::Relaxed) >= calls + (MAX_BRIDGES - before));
}
