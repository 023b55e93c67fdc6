//! What tests/faults.rs and tests/automatic_faults.rs share: counted values (some of
//! whose `Drop`s panic), an axum server behind `ServerLayer` whose handlers hold
//! counted values and exit handlers, and raw loopback clients that abort, stall or
//! drop the connection mid-body.
#![allow(dead_code)] // each test binary uses a part

use std::future::Future;
use std::net::SocketAddr;
use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::routing::{get, post};
use tasklocal::http::ServerLayer;
use tasklocal::Local;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// How long a test waits for something that must happen before it fails. A failure
/// guard only: nothing waits for it to pass.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Fails the test (instead of hanging it) if `future` does not finish in [`PATIENCE`].
pub(crate) async fn with_timeout<F: Future>(what: &'static str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what} (deadlock or leak)"))
}

/// Silences the panics the tests cause on purpose (their message says "deliberate");
/// any other panic is reported as usual.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !message.contains("deliberate") {
                default(info);
            }
        }));
    });
}

/// Counts values made and dropped; one per test, so tests run in parallel.
#[derive(Debug)]
pub(crate) struct Tally {
    created: AtomicUsize,
    dropped: watch::Sender<usize>,
    /// Exit handlers run.
    exits: watch::Sender<usize>,
}

impl Tally {
    pub(crate) fn new() -> Arc<Tally> {
        Arc::new(Tally {
            created: AtomicUsize::new(0),
            dropped: watch::channel(0).0,
            exits: watch::channel(0).0,
        })
    }

    pub(crate) fn created(&self) -> usize {
        self.created.load(SeqCst)
    }

    pub(crate) fn dropped(&self) -> usize {
        *self.dropped.borrow()
    }

    /// Exit handlers run so far.
    pub(crate) fn exits(&self) -> usize {
        *self.exits.borrow()
    }

    fn exit_one(&self) {
        self.exits.send_modify(|n| *n += 1);
    }

    /// Waits until `n` exit handlers have run, failing after [`PATIENCE`]. In automatic
    /// mode a joined task may still be tearing down on its worker (tokio wakes the
    /// `JoinHandle` before the terminate hook): values its handlers make come later.
    pub(crate) async fn exited(&self, n: usize) {
        let mut exits = self.exits.subscribe();
        let waited = tokio::time::timeout(PATIENCE, exits.wait_for(|&e| e >= n)).await;
        assert!(waited.is_ok(), "{} of {n} exit handlers ran", self.exits());
    }

    fn drop_one(&self) {
        self.dropped.send_modify(|n| *n += 1);
    }

    /// Waits until every value made so far has been dropped (teardowns may still run
    /// on workers when a handle has been joined), failing after [`PATIENCE`]; then
    /// checks that none was dropped twice.
    pub(crate) async fn all_dropped(&self) {
        let created = self.created();
        let mut dropped = self.dropped.subscribe();
        let waited = tokio::time::timeout(PATIENCE, dropped.wait_for(|&n| n >= created)).await;
        assert!(
            waited.is_ok(),
            "leaked: {} of {created} values dropped",
            self.dropped()
        );
        assert_eq!(self.dropped(), created, "a value was dropped twice");
        assert_eq!(self.created(), created, "values made after the end");
    }

    /// [`Tally::exited`] (`exits` handlers), then [`Tally::all_dropped`], from outside
    /// any runtime.
    pub(crate) fn settled_blocking(&self, exits: usize) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                self.exited(exits).await;
                self.all_dropped().await;
            });
    }
}

/// A value whose drops are counted.
#[derive(Debug)]
pub(crate) struct Counted {
    pub(crate) tag: u64,
    tally: Arc<Tally>,
}

impl Counted {
    pub(crate) fn new(tag: u64, tally: &Arc<Tally>) -> Counted {
        tally.created.fetch_add(1, SeqCst);
        Counted {
            tag,
            tally: tally.clone(),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(self.tag, &self.tally)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.drop_one();
    }
}

/// A value whose `Drop` counts itself, then panics.
#[derive(Debug)]
pub(crate) struct Bomb(Counted);

impl Bomb {
    pub(crate) fn new(tag: u64, tally: &Arc<Tally>) -> Bomb {
        Bomb(Counted::new(tag, tally))
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("deliberate panic in the drop of value {}", self.0.tag);
    }
}

/// Registers an exit handler that counts itself in `tally`, checking that the value
/// `expect` of `key` is still readable when it runs.
pub(crate) fn count_exit(tally: &Arc<Tally>, key: &'static Local<Counted>, expect: u64) {
    let tally = tally.clone();
    tasklocal::at_exit(move || {
        assert_eq!(
            key.with(|v| v.map(|v| v.tag)),
            Some(expect),
            "values are readable in handlers"
        );
        tally.exit_one();
    });
}

/// The request's value, set by every handler.
pub(crate) static REQUEST: Local<Counted> = Local::new();

/// What the server's handlers share with the test.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) tally: Arc<Tally>,
    /// A handler that never finishes on its own says so here once it holds its values.
    pub(crate) entered: mpsc::UnboundedSender<()>,
}

/// `/fast` answers the request id it finds in the MDC (from `baggage`); `/slow`
/// never answers; `/stream` streams a body with no end; `/upload` reads the request
/// body. Each holds a counted value and an exit handler in its request's owner.
pub(crate) fn app(probe: Probe) -> axum::Router {
    axum::Router::new()
        .route("/fast", get(fast))
        .route("/slow", get(slow))
        .route("/stream", get(stream))
        .route("/upload", post(upload))
        .layer(ServerLayer)
        .with_state(probe)
}

fn hold(probe: &Probe, tag: u64) {
    REQUEST.set(Counted::new(tag, &probe.tally));
    count_exit(&probe.tally, &REQUEST, tag);
}

async fn fast(State(probe): State<Probe>) -> String {
    hold(&probe, 1);
    tokio::task::yield_now().await;
    assert_eq!(REQUEST.with(|v| v.map(|v| v.tag)), Some(1));
    tasklocal::mdc::get("request_id").unwrap_or_default()
}

async fn slow(State(probe): State<Probe>) -> String {
    hold(&probe, 2);
    let _ = probe.entered.send(());
    std::future::pending::<String>().await
}

async fn stream(State(probe): State<Probe>) -> axum::body::Body {
    hold(&probe, 3);
    // The stream owns a counted value of its own; it ends only when dropped.
    let state = (Counted::new(4, &probe.tally), probe.entered.clone(), 0u64);
    let chunks = futures::stream::unfold(state, |(value, entered, n)| async move {
        if n == 1 {
            let _ = entered.send(());
        }
        let chunk = vec![b'x'; 16 * 1024];
        Some((Ok::<_, std::io::Error>(chunk), (value, entered, n + 1)))
    });
    axum::body::Body::from_stream(chunks)
}

async fn upload(State(probe): State<Probe>, request: Request) -> String {
    hold(&probe, 5);
    let _ = probe.entered.send(());
    match axum::body::to_bytes(request.into_body(), 1 << 20).await {
        Ok(body) => body.len().to_string(),
        Err(_) => "broken".into(),
    }
}

/// Serves [`app`] on 127.0.0.1 in a task of the current runtime until `stop` fires;
/// returns the address and the server task.
pub(crate) async fn serve(
    probe: Probe,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(probe))
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .unwrap();
    });
    (addr, server)
}

/// Sends the head of a request (and `body`, which may be a part of what
/// `content_length` announces) on a new connection.
pub(crate) async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_length: usize,
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nbaggage: request_id=r-{path}\r\ncontent-length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// A complete request for `/fast` with request id `id`; the response body.
pub(crate) async fn fast_request(addr: SocketAddr, id: u64) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /fast HTTP/1.1\r\nhost: {addr}\r\nbaggage: request_id=r-{id}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The server still serves, and still runs each request in its own context.
pub(crate) async fn still_serving(addr: SocketAddr) {
    let answers = futures::future::join_all((0..20).map(|id| fast_request(addr, id))).await;
    for (id, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer,
            &format!("r-{id}"),
            "request {id} got another's context"
        );
    }
}

/// Receives `n` signals from handlers, failing after [`PATIENCE`].
pub(crate) async fn entered(rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        with_timeout("a handler to start", rx.recv()).await.unwrap();
    }
}

pub(crate) mod scenarios;
