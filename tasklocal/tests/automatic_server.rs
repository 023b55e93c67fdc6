#![cfg(tokio_unstable)]
//! Automatic mode (`tasklocal::tokio::install`) under a real third-party server: axum
//! spawns a task per connection (and hyper serves a keep-alive connection's requests in
//! it); its handlers use locals with no wrapper at all — only the runtime is built with
//! `install`. Built only with `--cfg tokio_unstable` (see `automatic.rs`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;
use support::automatic::{multi_thread, tag, with_timeout, Counted, Tally, PATIENCE};
use support::loopback;
use tasklocal::Local;

static TALLY: Tally = Tally::new();
/// Set by the server task, inherited by every connection task axum spawns.
static EDGE: Local<Arc<Counted>> = Local::inheritable();
/// Set by each request's handler.
static REQUEST: Local<Counted> = Local::new();
/// Inheritable, set per request: followed into a task the handler spawns.
static TRACE: Local<u64> = Local::inheritable();
/// Requests served by this task (connection).
static SERVED: Local<u64> = Local::with_initial(|| 0);

const CONCURRENCY: u64 = 300;
const ROUNDS: u64 = 4;

async fn handler(Path(n): Path<u64>) -> String {
    let edge = EDGE.with(|e| e.map(|e| e.tag));
    // The previous request's value on this connection (same task), if any.
    let previous = tag(&REQUEST);
    REQUEST.set(Counted::new(n, &TALLY));
    TRACE.set(n);
    tasklocal::set("request", n);
    SERVED.with_mut(|s| *s += 1);
    let mut own = true;
    for _ in 0..3 {
        tokio::task::yield_now().await;
        own &= tag(&REQUEST) == Some(n) && tasklocal::get::<_, u64>(&"request") == Some(n);
    }
    let child = tokio::spawn(async { TRACE.get() }).await.unwrap();
    own &= tag(&REQUEST) == Some(n);
    format!(
        "{n} {own} {} {} {} {} {}",
        child.map_or(-1, |c| c as i64),
        edge.map_or(-1, |e| e as i64),
        previous.map_or(-1, |p| p as i64),
        tasklocal::id(),
        SERVED.get().unwrap(),
    )
}

struct Reply {
    n: u64,
    own: bool,
    child: i64,
    edge: i64,
    previous: i64,
    task: String,
}

fn parse(body: &str) -> Reply {
    let f: Vec<&str> = body.split(' ').collect();
    assert_eq!(f.len(), 7, "{body}");
    Reply {
        n: f[0].parse().unwrap(),
        own: f[1].parse().unwrap(),
        child: f[2].parse().unwrap(),
        edge: f[3].parse().unwrap(),
        previous: f[4].parse().unwrap(),
        task: f[5].to_string(),
    }
}

#[test]
fn axum_handlers_under_keep_alive_load() {
    let server_rt = multi_thread(2);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(async move {
        EDGE.set(Arc::new(Counted::new(7, &TALLY)));
        let app = axum::Router::new().route("/req/{n}", get(handler));
        let (listener, addr) = loopback::listen().await;
        addr_tx.send(addr).unwrap();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    let addr = addr_rx.recv_timeout(PATIENCE).unwrap();

    // The client runs on a runtime of its own, without automatic mode.
    let client_rt = support::runtime::multi_thread(1);
    let replies = client_rt.block_on(with_timeout(async move {
        let client = loopback::client();
        let mut replies = Vec::new();
        for round in 0..ROUNDS {
            let requests: Vec<_> = (0..CONCURRENCY)
                .map(|i| {
                    let n = round * CONCURRENCY + i;
                    let client = client.clone();
                    let uri: hyper::Uri = format!("http://{addr}/req/{n}").parse().unwrap();
                    tokio::spawn(async move {
                        let response = client.get(uri).await.unwrap();
                        assert!(response.status().is_success());
                        (n, loopback::body_text(response).await)
                    })
                })
                .collect();
            for request in requests {
                replies.push(request.await.unwrap());
            }
        }
        replies
    }));
    // Closes every keep-alive connection.
    drop(client_rt);

    assert_eq!(replies.len(), (CONCURRENCY * ROUNDS) as usize);
    let mut by_task: HashMap<String, Vec<Reply>> = HashMap::new();
    for (n, body) in &replies {
        let reply = parse(body);
        assert_eq!(reply.n, *n, "the response answers its request");
        assert!(
            reply.own,
            "request {n}: the handler saw another request's values"
        );
        assert_eq!(
            reply.child, *n as i64,
            "the handler's child inherited its value"
        );
        assert_eq!(reply.edge, 7, "inherited from the server task through axum");
        by_task.entry(reply.task.clone()).or_default().push(reply);
    }
    // Requests on one connection share its task and nothing else: each one saw
    // nothing or the value of an earlier request of the same connection.
    let mut served = 0;
    for replies in by_task.values() {
        let mine: HashSet<i64> = replies.iter().map(|r| r.n as i64).collect();
        let fresh = replies.iter().filter(|r| r.previous == -1).count();
        assert_eq!(fresh, 1, "one request per connection found it empty");
        assert!(replies
            .iter()
            .all(|r| r.previous == -1 || mine.contains(&r.previous)));
        served += replies.len();
    }
    assert_eq!(served, replies.len());
    assert!(
        by_task.len() < replies.len(),
        "keep-alive connections served several requests"
    );

    stop_tx.send(()).unwrap();
    server_rt
        .block_on(with_timeout(server))
        .expect("the server task");
    // Every connection task has ended: every request's value is dropped.
    let requests = (CONCURRENCY * ROUNDS) as usize;
    assert_eq!(TALLY.created(), requests + 1);
    assert_eq!(
        TALLY.wait_dropped(requests + 1),
        requests + 1,
        "values leaked"
    );
    drop(server_rt);
}
