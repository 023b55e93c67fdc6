//! Bridges at their edges (SPEC 9): the log-mdc map and OpenTelemetry's
//! `Context::current()` next to entries and contexts the thread set directly, nested
//! owners, `attach()` guards, a panic in `mdc::scope`, teardowns and spawns; and a
//! custom bridge whose callbacks write values, use the API or panic (SPEC 5: what they
//! set is dropped, nothing deadlocks, neither the thread nor the task is corrupted).
//!
//! Bridges are process-wide: every test installs the same three first (OpenTelemetry,
//! log-mdc and `Custom`, which acts only in owners that set a `Local` of its own), so
//! each runs the same way whatever order the tests run in. Tests that read a bridged
//! thread-local run on a std thread of their own, whose thread-locals nobody else
//! touches.
#![cfg(all(
    feature = "tokio",
    feature = "opentelemetry",
    feature = "log-mdc",
    feature = "http"
))]

mod support;

use std::cell::RefCell;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context as TaskContext, Poll};

use futures::executor::block_on;
use support::pairs;
use support::tag::{tag, with_tag};
use tasklocal::bridge::{self, Bridge};
use tasklocal::{mdc, Local, Snapshot, Task};

fn log_mdc_get(key: &str) -> Option<String> {
    log_mdc::get(key, |v| v.map(str::to_owned))
}

/// An MDC's entries, as `mdc::to_vec` and `support::pairs` return them.
type Entries = Vec<(String, String)>;

/// The log-mdc map, sorted by key.
fn log_mdc_all() -> Entries {
    let mut all = Vec::new();
    log_mdc::iter(|k, v| all.push((k.to_owned(), v.to_owned())));
    all.sort();
    all
}

/// Installs the bridges every test here runs with.
fn install_bridges() {
    static CUSTOM: Once = Once::new();
    tasklocal::opentelemetry::install();
    tasklocal::log_mdc::install();
    CUSTOM.call_once(|| bridge::register(Custom).unwrap());
}

/// Runs `f` on a fresh std thread (its own thread-locals: otel stack, log-mdc map).
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

/// Polls `fut` once with a no-op waker.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    Pin::new(fut).poll(&mut TaskContext::from_waker(&waker))
}

/// A future that is pending once (waking itself), then ready: a second poll.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

// ---------------------------------------------------------------------------------
// log-mdc

/// An entry put into log-mdc directly on the thread is not part of any owner's MDC:
/// while a task runs, the map holds exactly the task's entries; afterwards the
/// thread's map is put back as it was.
#[test]
fn log_mdc_holds_exactly_the_owner_entries_and_the_thread_map_comes_back() {
    install_bridges();
    on_thread(|| {
        log_mdc::insert("direct", "x");
        let (first, later) = block_on(Task::isolated(async {
            let first = log_mdc_all();
            mdc::insert("k", "v");
            yield_once().await;
            (first, log_mdc_all())
        }));
        assert_eq!(first, pairs(&[]));
        assert_eq!(later, pairs(&[("k", "v")]));
        assert_eq!(log_mdc_all(), pairs(&[("direct", "x")]));
    });
}

/// A nested owner (`Snapshot::run` inside a task) shows its own MDC, and when it
/// returns the task's map — including writes the task made before — is shown again,
/// without the nested owner's writes.
#[test]
fn log_mdc_shows_the_task_map_again_after_a_nested_run() {
    install_bridges();
    on_thread(|| {
        block_on(Task::isolated(async {
            mdc::insert("a", "1");
            let snapshot = Snapshot::capture();
            mdc::insert("b", "2");
            snapshot.run(|| {
                assert_eq!(log_mdc_all(), pairs(&[("a", "1")]));
                mdc::insert("c", "3");
                assert_eq!(log_mdc_all(), pairs(&[("a", "1"), ("c", "3")]));
            });
            assert_eq!(log_mdc_all(), pairs(&[("a", "1"), ("b", "2")]));
        }));
        assert!(log_mdc_all().is_empty());
    });
}

/// A child `Task` created before the parent changes its MDC shows the MDC as of its
/// creation (plus its own writes); after its poll, the parent's current MDC is shown
/// again.
#[test]
fn log_mdc_shows_a_child_its_map_as_of_creation_and_the_parent_its_own() {
    install_bridges();
    on_thread(|| {
        block_on(Task::isolated(async {
            mdc::insert("step", "1");
            let child = tasklocal::task(async {
                let seen = log_mdc_all();
                mdc::insert("child", "yes");
                yield_once().await;
                (seen, log_mdc_all())
            });
            mdc::insert("step", "2");
            let (seen, later) = child.await;
            assert_eq!(seen, pairs(&[("step", "1")]));
            assert_eq!(later, pairs(&[("child", "yes"), ("step", "1")]));
            assert_eq!(log_mdc_all(), pairs(&[("step", "2")]));
        }));
    });
}

/// A panic inside `mdc::scope` inside a task: the scope's entries are undone, and
/// log-mdc shows that at once.
#[test]
fn log_mdc_drops_a_scope_unwound_by_a_panic_at_once() {
    install_bridges();
    on_thread(|| {
        block_on(Task::isolated(async {
            mdc::insert("base", "1");
            let unwound = panic::catch_unwind(|| {
                mdc::scope([("scoped", "2")], || {
                    assert_eq!(log_mdc_get("scoped").as_deref(), Some("2"));
                    panic!("inside scope");
                })
            });
            assert_eq!(support::message(unwound.unwrap_err()), "inside scope");
            assert_eq!(log_mdc_all(), pairs(&[("base", "1")]));
        }));
    });
}

// ---------------------------------------------------------------------------------
// OpenTelemetry

/// `attach()` in an outer owner, then an inner Task polled inside: the inner task sees
/// its own (inherited owner) context, and after its poll the attached context is
/// current again; dropping the guard gives back the outer owner's context.
#[test]
fn otel_attach_survives_an_inner_task_poll() {
    install_bridges();
    on_thread(|| {
        block_on(Task::isolated(async {
            tasklocal::opentelemetry::set_current(with_tag(1));
            let mut inner = Box::pin(tasklocal::task(async {
                let first = tag();
                tasklocal::opentelemetry::set_current(with_tag(3));
                yield_once().await;
                (first, tag())
            }));
            let guard = with_tag(2).attach();
            assert_eq!(tag(), Some(2));
            assert!(poll_once(&mut inner).is_pending());
            assert_eq!(tag(), Some(2), "after the inner poll");
            drop(guard);
            assert_eq!(tag(), Some(1));
            assert_eq!(inner.await, (Some(1), Some(3)));
            assert_eq!(tag(), Some(1));
        }));
        assert_eq!(tag(), None);
    });
}

/// `set_current` while a guard of `attach()` is alive: `Context::current()` is the new
/// context at once and stays so after the guard's drop; the end of the poll leaves
/// the thread as it was before the poll.
#[test]
fn otel_set_current_under_an_attach_guard() {
    install_bridges();
    on_thread(|| {
        let _thread = with_tag(100).attach();
        let seen = block_on(Task::isolated(async {
            let guard = with_tag(1).attach();
            tasklocal::opentelemetry::set_current(with_tag(2));
            let under_guard = tag();
            drop(guard);
            let after_guard = tag();
            yield_once().await;
            (under_guard, after_guard, tag())
        }));
        assert_eq!(seen, (Some(2), Some(2), Some(2)));
        assert_eq!(tag(), Some(100));
    });
}

/// Children inherit the context; a child's `set_current` never flows back, on a
/// thread spawned with `tasklocal::thread::spawn` and in a nested `Snapshot::run`.
#[test]
fn otel_children_inherit_and_do_not_write_back() {
    install_bridges();
    on_thread(|| {
        Snapshot::empty().run(|| {
            tasklocal::opentelemetry::set_current(with_tag(5));
            let thread = tasklocal::thread::spawn(|| {
                let seen = tag();
                tasklocal::opentelemetry::set_current(with_tag(6));
                (seen, tag())
            })
            .join()
            .unwrap();
            assert_eq!(thread, (Some(5), Some(6)));
            let run = Snapshot::capture().run(|| {
                tasklocal::opentelemetry::set_current(with_tag(7));
                tag()
            });
            assert_eq!(run, Some(7));
            assert_eq!(tag(), Some(5));
        });
        assert_eq!(tag(), None);
    });
}

/// Plain tokio tasks (no storage of their own) polled on the workers between the polls
/// of `tasklocal::spawn` tasks never see those tasks' context or MDC, across many
/// polls on 2 workers; the tasks see theirs after every `.await`, and an `attach()`
/// inside one of their polls is current until its guard drops.
#[test]
fn otel_plain_tasks_never_see_another_tasks_context() {
    install_bridges();
    let rt = support::runtime::multi_thread(2);
    let wrong = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 1..=200u64 {
            let wrong_tag = wrong.clone();
            handles.push(tasklocal::spawn(async move {
                tasklocal::opentelemetry::set_current(with_tag(i));
                mdc::insert("i", i.to_string());
                for _ in 0..10 {
                    {
                        let _guard = with_tag(i + 10_000).attach();
                        if tag() != Some(i + 10_000) {
                            wrong_tag.fetch_add(1, SeqCst);
                        }
                    }
                    tokio::task::yield_now().await;
                    if tag() != Some(i) || log_mdc_get("i") != Some(i.to_string()) {
                        wrong_tag.fetch_add(1, SeqCst);
                    }
                }
            }));
            let wrong_plain = wrong.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                    if tag().is_some() || !log_mdc_all().is_empty() {
                        wrong_plain.fetch_add(1, SeqCst);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(wrong.load(SeqCst), 0);
}

/// An exit handler and a value's `Drop` that read the context and call `set_current`
/// during the teardown: no deadlock, the handler sees the owner's context and then
/// its own write, the `Drop` its own write, and the thread's context is restored
/// afterwards.
#[test]
fn otel_set_current_during_teardown() {
    static SEEN: Mutex<Vec<Option<u64>>> = Mutex::new(Vec::new());
    static HOLDER: Local<SetsOnDrop> = Local::new();
    struct SetsOnDrop;
    impl Drop for SetsOnDrop {
        fn drop(&mut self) {
            SEEN.lock().unwrap().push(tag());
            tasklocal::opentelemetry::set_current(with_tag(99));
            SEEN.lock().unwrap().push(tag());
        }
    }
    install_bridges();
    on_thread(|| {
        let _thread = with_tag(100).attach();
        block_on(Task::isolated(async {
            tasklocal::opentelemetry::set_current(with_tag(1));
            HOLDER.set(SetsOnDrop);
            tasklocal::at_exit(|| {
                SEEN.lock().unwrap().push(tag());
                tasklocal::opentelemetry::set_current(with_tag(2));
                SEEN.lock().unwrap().push(tag());
            });
        }));
        assert_eq!(tag(), Some(100));
    });
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen[..2], [Some(1), Some(2)], "{seen:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3], Some(99), "{seen:?}");
}

/// Exit handlers of a cancelled task run with the owner current: the log-mdc map and
/// `Context::current()` show the task's MDC and context there, and the thread's come
/// back after the teardown.
#[test]
fn teardown_of_a_cancelled_task_shows_the_owner_in_log_mdc_and_otel() {
    static SEEN: Mutex<Vec<(Entries, Option<u64>)>> = Mutex::new(Vec::new());
    install_bridges();
    on_thread(|| {
        mdc::insert("who", "thread");
        let _thread = with_tag(100).attach();
        let mut task = Box::pin(Task::isolated(async {
            mdc::insert("who", "task");
            tasklocal::opentelemetry::set_current(with_tag(1));
            tasklocal::at_exit(|| SEEN.lock().unwrap().push((log_mdc_all(), tag())));
            std::future::pending::<()>().await
        }));
        assert!(poll_once(&mut task).is_pending());
        drop(task);
        assert_eq!(log_mdc_all(), pairs(&[("who", "thread")]));
        assert_eq!(tag(), Some(100));
    });
    assert_eq!(
        *SEEN.lock().unwrap(),
        [(pairs(&[("who", "task")]), Some(1))]
    );
}

// ---------------------------------------------------------------------------------
// a custom bridge

thread_local! {
    /// What `Custom` shows: `MIRRORED` of every owner entered and not yet exited.
    static SHOWN: RefCell<Vec<Option<u64>>> = const { RefCell::new(Vec::new()) };
}

/// The value `Custom` mirrors; only owners of these tests set it.
static MIRRORED: Local<u64> = Local::inheritable();
/// Set in an owner: `Custom`'s `exit` writes a counted value into the owner.
static EXIT_WRITES: Local<bool> = Local::inheritable();
/// Set in an owner: `Custom`'s `enter` writes a counted value into the owner.
static ENTER_WRITES: Local<bool> = Local::inheritable();
/// Set in an owner: `Custom`'s `enter` panics (while `ARMED`).
static ENTER_PANICS: Local<bool> = Local::inheritable();
/// Set in an owner: `Custom`'s `exit` uses the API (an id, a run, the MDC, a task).
static EXIT_BUSY: Local<bool> = Local::inheritable();

/// Only while set does `ENTER_PANICS` make `enter` panic.
static ARMED: AtomicBool = AtomicBool::new(false);

static WRITES: AtomicUsize = AtomicUsize::new(0);
static WRITES_DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A value `Custom` writes; its drops are counted.
struct Written;

impl Drop for Written {
    fn drop(&mut self) {
        WRITES_DROPPED.fetch_add(1, SeqCst);
    }
}

static WRITTEN_BY_EXIT: Local<Written> = Local::new();
static WRITTEN_BY_ENTER: Local<Written> = Local::new();

struct Custom;

impl Bridge for Custom {
    fn enter(&self) {
        if ENTER_PANICS.get() == Some(true) && ARMED.load(SeqCst) {
            panic!("custom enter fails on purpose");
        }
        if ENTER_WRITES.get() == Some(true) {
            WRITES.fetch_add(1, SeqCst);
            WRITTEN_BY_ENTER.set(Written);
        }
        let mirrored = MIRRORED.get();
        SHOWN.with(|s| s.borrow_mut().push(mirrored));
    }

    fn exit(&self) {
        SHOWN.with(|s| s.borrow_mut().pop());
        if EXIT_WRITES.get() == Some(true) {
            WRITES.fetch_add(1, SeqCst);
            WRITTEN_BY_EXIT.set(Written);
        }
        if EXIT_BUSY.get() == Some(true) {
            let _ = tasklocal::id();
            let _ = Snapshot::capture().run(|| MIRRORED.get());
            mdc::insert("exit", "busy");
            let mut inner = Box::pin(tasklocal::task(async { MIRRORED.get() }));
            let _ = poll_once(&mut inner);
        }
    }
}

/// What `Custom` shows on this thread now.
fn shown() -> Option<u64> {
    SHOWN.with(|s| s.borrow().last().copied().flatten())
}

/// How many owners `Custom` has entered and not exited on this thread.
fn shown_depth() -> usize {
    SHOWN.with(|s| s.borrow().len())
}

/// Values a bridge's `exit` or `enter` sets in an owner — also during the owner's
/// teardown — are dropped: "anything it sets during teardown is dropped before
/// teardown finishes", nothing is leaked.
#[test]
fn values_set_by_bridge_callbacks_are_dropped_with_the_owner() {
    install_bridges();
    on_thread(|| {
        block_on(Task::isolated(async {
            EXIT_WRITES.set(true);
            ENTER_WRITES.set(true);
            yield_once().await;
        }));
        Snapshot::empty().run(|| {
            EXIT_WRITES.set(true);
            ENTER_WRITES.set(true);
        });
    });
    // Every write of every owner above was dropped by the time they ended.
    assert_eq!(WRITES.load(SeqCst), WRITES_DROPPED.load(SeqCst));
}

/// A bridge's `exit` that uses the API heavily (id, a Snapshot run, the MDC, a nested
/// task poll) at every switch and in the teardown: no deadlock, no panic, and the
/// thread's owner and log-mdc map are intact afterwards.
#[test]
fn a_busy_bridge_exit_during_teardown_does_not_deadlock() {
    install_bridges();
    on_thread(|| {
        mdc::insert("thread", "t");
        let id = tasklocal::id();
        block_on(tasklocal::task(async {
            EXIT_BUSY.set(true);
            tasklocal::at_exit(|| mdc::insert("handler", "ran"));
            yield_once().await;
        }));
        assert_eq!(tasklocal::id(), id);
        assert_eq!(mdc::to_vec(), pairs(&[("thread", "t")]));
        assert_eq!(log_mdc_all(), pairs(&[("thread", "t")]));
        assert_eq!(shown_depth(), 0);
    });
}

/// A panicking `enter` in a task's poll: the thread's owner is current again where
/// the panic is caught (its values, id, OpenTelemetry context and log-mdc map), and
/// the task's own storage is intact for its next poll.
#[test]
fn a_panicking_enter_does_not_corrupt_the_thread_or_the_task() {
    static OWN: Local<u64> = Local::new();
    install_bridges();
    on_thread(|| {
        OWN.set(1);
        mdc::insert("thread", "t");
        tasklocal::opentelemetry::set_current(with_tag(50));
        let id = tasklocal::id();
        let mut task = Box::pin(Task::isolated(async {
            OWN.set(2);
            MIRRORED.set(7);
            mdc::insert("task", "x");
            tasklocal::opentelemetry::set_current(with_tag(7));
            ENTER_PANICS.set(true);
            yield_once().await;
            (OWN.get(), MIRRORED.get(), mdc::get("task"), tag(), shown())
        }));
        let thread_is_intact = || {
            assert_eq!(OWN.get(), Some(1));
            assert_eq!(tasklocal::id(), id);
            assert_eq!(mdc::to_vec(), pairs(&[("thread", "t")]));
            assert_eq!(log_mdc_all(), pairs(&[("thread", "t")]));
            assert_eq!(tag(), Some(50));
            assert_eq!(shown_depth(), 0);
        };
        ARMED.store(true, SeqCst);
        assert!(poll_once(&mut task).is_pending());
        let unwound = panic::catch_unwind(AssertUnwindSafe(|| poll_once(&mut task)));
        ARMED.store(false, SeqCst);
        let payload = unwound.expect_err("the bridge's panic continues in the poll");
        assert_eq!(support::message(payload), "custom enter fails on purpose");
        thread_is_intact();
        // The task's storage still holds its values: its next poll sees them.
        assert_eq!(
            poll_once(&mut task),
            Poll::Ready((Some(2), Some(7), Some("x".to_string()), Some(7), Some(7)))
        );
        thread_is_intact();
    });
}
