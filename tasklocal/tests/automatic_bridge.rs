//! Bridges in automatic mode (SPEC 9 with SPEC 6, `--cfg tokio_unstable`):
//! OpenTelemetry's context and the log-mdc map follow every plain `tokio::spawn` task of
//! a runtime with `tasklocal::tokio::install`, inherited at spawn, restored after every
//! poll, emptied at once by `reset()`, with `attach()` undone inside the poll; a bridge
//! whose callbacks panic corrupts no task's values and no teardown.
//!
//! Bridges are process-wide: every test installs the same three first (OpenTelemetry,
//! log-mdc and `Flaky`, which panics only in owners that ask it to), so each runs the
//! same way whatever order the tests run in.
#![cfg(all(
    tokio_unstable,
    feature = "tokio",
    feature = "opentelemetry",
    feature = "log-mdc"
))]

mod support;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use opentelemetry::Context;
use support::automatic::{multi_thread, tag as tag_of, with_timeout, Counted, Tally};
use support::tag::{tag, with_tag, Tag};
use tasklocal::bridge::{self, Bridge};
use tasklocal::Local;

thread_local! {
    /// `Flaky`'s enters not yet matched by an exit on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Set in an owner: `Flaky`'s `enter` panics there.
static PANIC_ON_ENTER: Local<bool> = Local::inheritable();
/// Set in an owner: `Flaky`'s `exit` panics there.
static PANIC_ON_EXIT: Local<bool> = Local::inheritable();
/// `Flaky`'s exits that came with no enter on their thread.
static UNMATCHED_EXITS: AtomicUsize = AtomicUsize::new(0);

/// A bridge that counts its enters and exits on each thread and panics where an owner
/// asks it to.
struct Flaky;

impl Bridge for Flaky {
    fn enter(&self) {
        DEPTH.set(DEPTH.get() + 1);
        if PANIC_ON_ENTER.get() == Some(true) {
            panic!("flaky enter");
        }
    }

    fn exit(&self) {
        match DEPTH.get().checked_sub(1) {
            Some(depth) => DEPTH.set(depth),
            None => {
                UNMATCHED_EXITS.fetch_add(1, Ordering::SeqCst);
            }
        }
        if PANIC_ON_EXIT.get() == Some(true) {
            panic!("flaky exit");
        }
    }
}

/// Installs the bridges every test here runs with.
fn install_bridges() {
    static FLAKY: Once = Once::new();
    tasklocal::opentelemetry::install();
    tasklocal::log_mdc::install();
    FLAKY.call_once(|| bridge::register(Flaky).unwrap());
}

#[test]
fn plain_tokio_tasks_each_see_their_own_context_and_mdc() {
    install_bridges();
    let rt = multi_thread(2);
    let wrong = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..200u64 {
            let wrong = wrong.clone();
            handles.push(tokio::spawn(async move {
                tasklocal::opentelemetry::set_current(Context::new().with_value(Tag(i)));
                tasklocal::mdc::insert("request_id", i.to_string());
                // A child inherits both at spawn.
                let child = tokio::spawn(async {
                    (tag(), log_mdc::get("request_id", |v| v.map(str::to_owned)))
                });
                let (child_tag, child_id) = child.await.unwrap();
                if child_tag != Some(i) || child_id != Some(i.to_string()) {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                    let id = log_mdc::get("request_id", |v| v.map(str::to_owned));
                    if tag() != Some(i) || id != Some(i.to_string()) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    // The runtime's threads are back to their own (empty) state between polls.
    let after = rt.block_on(async { tokio::spawn(async { tag() }).await.unwrap() });
    assert_eq!(after, None);
}

/// Bridge callbacks that panic in automatic tasks (`enter` in a third of them, `exit`
/// in another): each task's value stays its own across polls, the other tasks are
/// unaffected, the runtime survives, every handler runs with its task's value, every
/// value is dropped, and no exit comes without its enter.
#[test]
fn panicking_bridge_callbacks_corrupt_no_task() {
    static TALLY: Tally = Tally::new();
    static VALUE: Local<Counted> = Local::new();
    static WRONG: AtomicUsize = AtomicUsize::new(0);
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    const TASKS: u64 = 100;
    install_bridges();
    let rt = multi_thread(2);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        if !message.contains("flaky") {
            eprintln!("{message}");
        }
    }));
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|i| {
                tokio::spawn(async move {
                    VALUE.set(Counted::new(i, &TALLY));
                    tasklocal::at_exit(move || {
                        if tag_of(&VALUE) == Some(i) {
                            ENDED.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    match i % 3 {
                        0 => PANIC_ON_ENTER.set(true),
                        1 => PANIC_ON_EXIT.set(true),
                        _ => {}
                    }
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                        if tag_of(&VALUE) != Some(i) {
                            WRONG.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    i
                })
            })
            .collect();
        for (i, handle) in (0..).zip(handles) {
            assert_eq!(handle.await.unwrap(), i);
        }
    }));
    TALLY.assert_all_dropped();
    drop(rt);
    std::panic::set_hook(hook);
    assert_eq!(WRONG.load(Ordering::SeqCst), 0);
    assert_eq!(ENDED.load(Ordering::SeqCst), TASKS as usize);
    assert_eq!(UNMATCHED_EXITS.load(Ordering::SeqCst), 0);
}

/// `reset()` in an automatic task drops its OpenTelemetry context with its other
/// values: `Context::current()` is empty at once, before the task's next poll.
#[test]
fn otel_context_follows_reset_in_an_automatic_task() {
    install_bridges();
    let rt = multi_thread(2);
    let seen = rt.block_on(with_timeout(async {
        tokio::spawn(async {
            tasklocal::opentelemetry::set_current(with_tag(1));
            tokio::task::yield_now().await;
            tasklocal::reset();
            tag()
        })
        .await
        .unwrap()
    }));
    assert_eq!(seen, None);
}

/// OpenTelemetry in automatic tasks: children of a plain `tokio::spawn` inherit the
/// context, their `set_current` never flows back, and an `attach()` inside the
/// parent's poll is undone when its guard drops.
#[test]
fn otel_children_inherit_and_attach_is_undone_in_automatic_tasks() {
    static WRONG: AtomicUsize = AtomicUsize::new(0);
    install_bridges();
    let rt = multi_thread(2);
    rt.block_on(with_timeout(async {
        let handles: Vec<_> = (1..=100u64)
            .map(|i| {
                tokio::spawn(async move {
                    tasklocal::opentelemetry::set_current(with_tag(i));
                    {
                        let _guard = with_tag(i + 500).attach();
                        if tag() != Some(i + 500) {
                            WRONG.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let child = tokio::spawn(async move {
                        let seen = tag();
                        tasklocal::opentelemetry::set_current(with_tag(i + 1000));
                        tokio::task::yield_now().await;
                        (seen, tag())
                    });
                    if tag() != Some(i) {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                    let (seen, later) = child.await.unwrap();
                    if seen != Some(i) || later != Some(i + 1000) || tag() != Some(i) {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        // The runtime's threads show nothing between polls.
        let plain = tokio::spawn(async { tag() }).await.unwrap();
        assert_eq!(plain, None);
    }));
    assert_eq!(WRONG.load(Ordering::SeqCst), 0);
}
