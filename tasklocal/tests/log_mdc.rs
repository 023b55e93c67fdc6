//! The log-mdc bridge (SPEC section 9): the `log-mdc` map (log4rs's `{X(key)}`) holds
//! exactly the running owner's MDC, changes show at once, and the thread's map is
//! restored after every poll.
#![cfg(all(feature = "log-mdc", feature = "tokio"))]

mod support;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn log_mdc_get(key: &str) -> Option<String> {
    log_mdc::get(key, |v| v.map(str::to_owned))
}

fn log_mdc_len() -> usize {
    let mut n = 0;
    log_mdc::iter(|_, _| n += 1);
    n
}

#[test]
fn every_task_sees_exactly_its_own_mdc() {
    tasklocal::log_mdc::install();
    let rt = support::runtime::multi_thread(2);
    let wrong = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..300 {
            let mine = wrong.clone();
            handles.push(tasklocal::spawn(async move {
                let id = format!("r-{i}");
                tasklocal::mdc::insert("request_id", id.clone());
                for step in 0..20 {
                    tasklocal::mdc::insert("step", step.to_string());
                    // Visible at once, before any switch.
                    if log_mdc_get("step") != Some(step.to_string()) {
                        mine.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                    if log_mdc_get("request_id").as_ref() != Some(&id) || log_mdc_len() != 2 {
                        mine.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tasklocal::mdc::remove("step");
                if log_mdc_get("step").is_some() {
                    mine.fetch_add(1, Ordering::Relaxed);
                }
            }));
            let plain = wrong.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                    if log_mdc_len() != 0 {
                        plain.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
}

#[test]
fn the_threads_map_is_restored_after_a_poll_also_a_panicking_one() {
    tasklocal::log_mdc::install();
    std::thread::spawn(|| {
        tasklocal::mdc::insert("thread", "main");
        assert_eq!(log_mdc_get("thread").as_deref(), Some("main"));
        let inherited = futures::executor::block_on(tasklocal::task(async {
            tasklocal::mdc::insert("task", "t");
            (log_mdc_get("thread"), log_mdc_get("task"))
        }));
        assert_eq!(inherited, (Some("main".into()), Some("t".into())));
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(tasklocal::Task::isolated(async {
                tasklocal::mdc::insert("task", "doomed");
                assert_eq!(log_mdc_get("thread"), None);
                panic!("the poll fails");
            }))
        }));
        assert!(result.is_err());
        assert_eq!(log_mdc_get("thread").as_deref(), Some("main"));
        assert_eq!(log_mdc_get("task"), None);
        assert_eq!(log_mdc_len(), 1);
        tasklocal::mdc::scope([("scoped", "1")], || {
            assert_eq!(log_mdc_get("scoped").as_deref(), Some("1"));
        });
        assert_eq!(log_mdc_get("scoped"), None);
        tasklocal::mdc::clear();
        assert_eq!(log_mdc_len(), 0);
    })
    .join()
    .unwrap();
}

/// An owner that another bridge's call runs is entered with no bridge (they would
/// recurse): its MDC changes must not rewrite the `log-mdc` map of the owner the call
/// runs for, which is still current around it.
#[test]
fn an_owner_run_by_a_bridge_leaves_the_outer_map_alone() {
    use tasklocal::{mdc, Snapshot};

    tasklocal::log_mdc::install();
    let seen = futures::executor::block_on(tasklocal::Task::isolated(async {
        mdc::insert("who", "outer");
        // Entering the owner below calls the log-mdc bridge (its map: its MDC, empty),
        // then a bridge whose own owner writes its MDC.
        support::bridged::run_an_owner_at_the_next_switch(|| {
            mdc::insert("who", "the bridge's owner")
        });
        let inner = Snapshot::empty().run(|| log_mdc_get("who"));
        (inner, log_mdc_get("who"))
    }));
    assert_eq!(seen, (None, Some("outer".to_owned())));
}

#[test]
fn reset_and_unload_show_at_once() {
    // Both drop the owner's MDC with its other values: the map empties then and
    // there, not at the next switch.
    tasklocal::log_mdc::install();
    std::thread::spawn(|| {
        for end in [tasklocal::reset as fn(), tasklocal::unload] {
            futures::executor::block_on(tasklocal::Task::isolated(async move {
                tasklocal::mdc::insert("request_id", "r-1");
                assert_eq!(log_mdc_get("request_id").as_deref(), Some("r-1"));
                end();
                assert!(tasklocal::mdc::to_vec().is_empty());
                assert_eq!(log_mdc_len(), 0);
            }));
        }
    })
    .join()
    .unwrap();
}
