//! The fault scenarios, for `tasklocal::spawn` (tests/faults.rs) and for automatic
//! mode (tests/automatic_faults.rs).

use std::future::Future;
use std::pin::Pin;

use super::*;
use tasklocal::Local;
use tokio::io::AsyncReadExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A boxed task body.
pub(crate) type Body = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a scenario makes its runtime and spawns a task that owns its values.
#[derive(Clone, Copy)]
pub(crate) struct Mode {
    /// A multi-thread runtime with this many workers.
    pub(crate) runtime: fn(usize) -> Runtime,
    /// Spawns a task with storage of its own.
    pub(crate) spawn: fn(&Handle, Body) -> JoinHandle<()>,
}

static VALUE: Local<Counted> = Local::new();
static LATE: Local<Bomb> = Local::new();

const TASKS: u64 = 4_000;

fn tag(key: &'static Local<Counted>) -> Option<u64> {
    key.with(|v| v.map(|v| v.tag))
}

pub(crate) fn thousands_of_tasks_with_panicking_drops_and_handlers_leak_nothing(mode: Mode) {
    quiet_deliberate_panics();
    let tally = Tally::new();
    let rt = (mode.runtime)(4);
    let panicked = rt.block_on(with_timeout("the tasks", async {
        let handles: Vec<_> = (0..TASKS)
            .map(|n| {
                let tally = tally.clone();
                (mode.spawn)(
                    &Handle::current(),
                    Box::pin(async move {
                        VALUE.set(Counted::new(n, &tally));
                        tasklocal::set("bomb", Bomb::new(n, &tally));
                        // Runs last, after the panicking one registered after it.
                        count_exit(&tally, &VALUE, n);
                        tasklocal::at_exit(|| panic!("deliberate panic in an exit handler"));
                        if n % 2 == 0 {
                            // Set during teardown, dropped (panicking) before it finishes.
                            let late = tally.clone();
                            tasklocal::at_exit(move || LATE.set(Bomb::new(n, &late)));
                        }
                        tokio::task::yield_now().await;
                        assert_eq!(tag(&VALUE), Some(n), "a task saw another's value");
                        if n % 10 == 0 {
                            panic!("deliberate panic in task {n}");
                        }
                    }),
                )
            })
            .collect();
        let mut panicked = 0;
        for handle in handles {
            if let Err(err) = handle.await {
                assert!(err.is_panic());
                panicked += 1;
            }
        }
        panicked
    }));
    assert_eq!(
        panicked,
        TASKS / 10,
        "only the tasks that panic on purpose fail"
    );
    // Handlers run last-registered first: the counting one runs after the one that
    // makes a value, so once all have counted, every value has been made.
    tally.settled_blocking(TASKS as usize);
    assert_eq!(tally.created() as u64, TASKS * 2 + TASKS / 2);
    assert_eq!(tally.exits() as u64, TASKS, "every handler ran");
    drop(rt);
}

pub(crate) fn aborted_tasks_leak_nothing(mode: Mode) {
    quiet_deliberate_panics();
    let tally = Tally::new();
    let rt = (mode.runtime)(4);
    rt.block_on(with_timeout("aborts", async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handles: Vec<_> = (0..TASKS)
            .map(|n| {
                let (tally, tx) = (tally.clone(), tx.clone());
                (mode.spawn)(
                    &Handle::current(),
                    Box::pin(async move {
                        VALUE.set(Counted::new(n, &tally));
                        if n % 3 == 0 {
                            tasklocal::set("bomb", Bomb::new(n, &tally));
                        }
                        count_exit(&tally, &VALUE, n);
                        tx.send(()).unwrap();
                        std::future::pending::<()>().await;
                    }),
                )
            })
            .collect();
        // Every task holds its values: abort them all mid-flight.
        entered(&mut rx, TASKS as usize).await;
        for handle in &handles {
            handle.abort();
        }
        for handle in handles {
            assert!(handle.await.unwrap_err().is_cancelled());
        }
        tally.all_dropped().await;
    }));
    assert_eq!(tally.created() as u64, TASKS + TASKS.div_ceil(3));
    assert_eq!(tally.exits() as u64, TASKS);
}

pub(crate) fn clients_that_abort_mid_request(mode: Mode) {
    const CLIENTS: usize = 200;
    let tally = Tally::new();
    let rt = (mode.runtime)(2);
    rt.block_on(with_timeout("aborting clients", async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let probe = Probe {
            tally: tally.clone(),
            entered: tx,
        };
        let (addr, server) = serve(probe, stopped).await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                tokio::spawn(async move {
                    let mut stream = open(addr, "GET", "/slow", 0, b"").await;
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                })
            })
            .collect();
        // Every handler holds its values; the clients give up.
        entered(&mut rx, CLIENTS).await;
        for client in &clients {
            client.abort();
        }
        for client in clients {
            assert!(client.await.unwrap_err().is_cancelled());
        }
        // The server sees each connection close and drops its request.
        tally.all_dropped().await;
        assert_eq!(tally.created(), CLIENTS);
        assert_eq!(tally.exits(), CLIENTS);
        still_serving(addr).await;
        stop.send(()).unwrap();
        server.await.unwrap();
        tally.all_dropped().await;
    }));
}

pub(crate) fn runtime_shutdown_with_requests_and_tasks_in_flight(mode: Mode) {
    const CLIENTS: usize = 100;
    quiet_deliberate_panics();
    let tally = Tally::new();
    let server_rt = (mode.runtime)(2);
    let client_rt = (mode.runtime)(1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop, stopped) = oneshot::channel();
    let probe = Probe {
        tally: tally.clone(),
        entered: tx.clone(),
    };
    let (addr, _server) = server_rt.block_on(serve(probe, stopped));
    // Requests in flight, on connections a client runtime keeps open.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            client_rt.spawn(async move {
                let mut stream = open(addr, "GET", "/slow", 0, b"").await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            })
        })
        .collect();
    // Tasks in flight, some holding values whose drop panics.
    for n in 0..TASKS {
        let (tally, tx) = (tally.clone(), tx.clone());
        (mode.spawn)(
            server_rt.handle(),
            Box::pin(async move {
                VALUE.set(Counted::new(n, &tally));
                if n % 2 == 0 {
                    tasklocal::set("bomb", Bomb::new(n, &tally));
                }
                count_exit(&tally, &VALUE, n);
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
            }),
        );
    }
    client_rt.block_on(entered(&mut rx, CLIENTS + TASKS as usize));
    // Shut the server's runtime down with all of it in flight.
    drop(server_rt);
    tally.settled_blocking(CLIENTS + TASKS as usize);
    assert_eq!(tally.created() as u64, CLIENTS as u64 + TASKS + TASKS / 2);
    assert_eq!(tally.exits() as u64, CLIENTS as u64 + TASKS);
    // The clients see their connections closed.
    client_rt.block_on(with_timeout("clients to see the shutdown", async {
        for client in clients {
            client.await.unwrap();
        }
    }));
}

pub(crate) fn clients_that_drop_the_connection_mid_body(mode: Mode) {
    const CLIENTS: usize = 50;
    let tally = Tally::new();
    let rt = (mode.runtime)(2);
    rt.block_on(with_timeout("broken bodies", async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let probe = Probe {
            tally: tally.clone(),
            entered: tx,
        };
        let (addr, server) = serve(probe, stopped).await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        // Reads part of an endless response body, then hangs up.
                        let mut stream = open(addr, "GET", "/stream", 0, b"").await;
                        let mut buf = vec![0; 64 * 1024];
                        let mut got = 0;
                        while got < 64 * 1024 {
                            let n = stream.read(&mut buf).await.unwrap();
                            assert!(n > 0, "the body ended early");
                            got += n;
                        }
                    } else {
                        // Sends 10 of the 100,000 bytes it announces, then hangs up.
                        let _stream = open(addr, "POST", "/upload", 100_000, &[b'y'; 10]).await;
                    }
                })
            })
            .collect();
        // Each /upload handler waits for its body; each /stream handler has returned
        // and its body has started.
        entered(&mut rx, CLIENTS).await;
        for client in clients {
            client.await.unwrap();
        }
        tally.all_dropped().await;
        // /stream: the handler's value and the body's; /upload: the handler's.
        assert_eq!(tally.created(), CLIENTS / 2 * 3);
        assert_eq!(tally.exits(), CLIENTS);
        still_serving(addr).await;
        stop.send(()).unwrap();
        server.await.unwrap();
        tally.all_dropped().await;
    }));
}
