//! JSON log lines with the MDC: `tracing-subscriber`'s JSON formatter plus
//! `with_mdc()`, so every event carries the request id and tenant of the task it was
//! emitted in — also from spawned tasks and blocking threads, on any worker.
//!
//! `cargo run -p tasklocal --example tracing_json --features tokio,tracing`

use std::io::Write;
use std::sync::{Arc, Mutex};

use tasklocal::tracing::MdcExt;
use tracing::info;

/// The log lines, kept to be checked after printing.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write_all(buf)?;
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

async fn handle(request: u32) {
    // Set once; every line below carries it, in this task and its children.
    tasklocal::mdc::insert("request_id", format!("req-{request}"));
    tasklocal::mdc::insert("tenant", if request % 2 == 0 { "acme" } else { "globex" });
    info!(request, "accepted");
    let child = tasklocal::spawn(async move { info!(request, "checked stock") });
    let blocking = tasklocal::spawn_blocking(move || info!(request, "priced on a blocking thread"));
    tokio::task::yield_now().await;
    child.await.unwrap();
    blocking.await.unwrap();
    info!(request, "done");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .json()
        .without_time()
        .with_writer(move || writer.clone())
        .with_mdc()
        .init();

    let requests: Vec<_> = (1..=8).map(|n| tasklocal::spawn(handle(n))).collect();
    for request in requests {
        request.await.unwrap();
    }

    // Every line names its own request in the MDC, whatever thread wrote it.
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let request = event["fields"]["request"].as_u64().unwrap();
        assert_eq!(
            event["mdc"]["request_id"],
            format!("req-{request}"),
            "{line}"
        );
        checked += 1;
    }
    assert_eq!(checked, 8 * 4);
    eprintln!("{checked} JSON lines, each with its own request's MDC");
}
