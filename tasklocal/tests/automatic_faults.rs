#![cfg(all(tokio_unstable, feature = "tokio", feature = "http"))]
//! The fault scenarios of tests/faults.rs in automatic mode: plain `tokio::spawn`
//! tasks and the tasks axum and hyper spawn own storage through the runtime's hooks
//! (`--cfg tokio_unstable`), `ServerLayer` nests each request's owner inside its
//! connection task's. Thousands of tasks whose values panic in `Drop` and whose exit
//! handlers panic, aborts mid-request, runtime shutdown with requests and tasks in
//! flight, clients that drop the connection mid-body.
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo test -p tasklocal --all-features --test automatic_faults
//! ```

mod fault_kit;

use fault_kit::scenarios::{self, Mode};
use tokio::runtime::{Builder, Runtime};

fn multi_thread(workers: usize) -> Runtime {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    tasklocal::tokio::install(&mut builder);
    builder.build().unwrap()
}

/// Every task of the runtime owns storage: plain `tokio::spawn`.
const AUTOMATIC: Mode = Mode {
    runtime: multi_thread,
    spawn: |handle, body| handle.spawn(body),
};

#[test]
fn thousands_of_tasks_with_panicking_drops_and_handlers_leak_nothing() {
    scenarios::thousands_of_tasks_with_panicking_drops_and_handlers_leak_nothing(AUTOMATIC);
}

#[test]
fn aborted_tasks_leak_nothing() {
    scenarios::aborted_tasks_leak_nothing(AUTOMATIC);
}

#[test]
fn clients_that_abort_mid_request() {
    scenarios::clients_that_abort_mid_request(AUTOMATIC);
}

#[test]
fn runtime_shutdown_with_requests_and_tasks_in_flight() {
    scenarios::runtime_shutdown_with_requests_and_tasks_in_flight(AUTOMATIC);
}

#[test]
fn clients_that_drop_the_connection_mid_body() {
    scenarios::clients_that_drop_the_connection_mid_body(AUTOMATIC);
}
