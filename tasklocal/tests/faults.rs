#![cfg(all(feature = "tokio", feature = "http"))]
//! Faults under load, with `tasklocal::spawn` and `ServerLayer` (automatic mode:
//! tests/automatic_faults.rs): thousands of tasks whose values panic in `Drop` and
//! whose exit handlers panic, aborts mid-request, runtime shutdown with requests and
//! tasks in flight, clients that drop the connection mid-body (fault_kit/scenarios.rs).
//!
//! Every test counts the values it makes and checks that each is dropped exactly
//! once and every exit handler ran, and that the server still serves afterwards;
//! timeouts only turn a deadlock into a failure.

mod fault_kit;

use fault_kit::scenarios::{self, Mode};
use tokio::runtime::{Builder, Runtime};

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Tasks own storage through `tasklocal::spawn`'s wrapper.
const WRAPPED: Mode = Mode {
    runtime: multi_thread,
    spawn: |handle, body| handle.spawn(tasklocal::task(body)),
};

#[test]
fn thousands_of_tasks_with_panicking_drops_and_handlers_leak_nothing() {
    scenarios::thousands_of_tasks_with_panicking_drops_and_handlers_leak_nothing(WRAPPED);
}

#[test]
fn aborted_tasks_leak_nothing() {
    scenarios::aborted_tasks_leak_nothing(WRAPPED);
}

#[test]
fn clients_that_abort_mid_request() {
    scenarios::clients_that_abort_mid_request(WRAPPED);
}

#[test]
fn runtime_shutdown_with_requests_and_tasks_in_flight() {
    scenarios::runtime_shutdown_with_requests_and_tasks_in_flight(WRAPPED);
}

#[test]
fn clients_that_drop_the_connection_mid_body() {
    scenarios::clients_that_drop_the_connection_mid_body(WRAPPED);
}
