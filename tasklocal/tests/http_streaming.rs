//! `ServerLayer` and streamed responses (SPEC 10): the response body is polled inside
//! the request's owner, so every chunk is made with the request's MDC and trace, and
//! the owner ends — exit handlers, then drops, once — when the body ends or is
//! dropped, not when the handler returns. Real axum servers on 127.0.0.1.
#![cfg(all(feature = "http", feature = "tokio"))]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tasklocal::http::{ServerLayer, TraceContext};
use tasklocal::{mdc, Local};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// What a chunk says about the context it was made in: `request_id|trace_id`.
fn context() -> String {
    let id = mdc::get("request_id").unwrap_or_else(|| "-".into());
    let trace = TraceContext::current().map_or_else(|| "-".into(), |t| t.traceparent().trace_id());
    format!("{id}|{trace}")
}

fn trace_id(i: usize) -> String {
    format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_0000_0000_0000_0000_u128 + i as u128
    )
}

fn traceparent(i: usize) -> String {
    format!("00-{}-00f067aa0ba902b7-01", trace_id(i))
}

/// A guard against a hung test, not a timing assertion.
async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what}"),
    }
}

/// A server on 127.0.0.1 that stops (after its connections close) when the sender is
/// dropped or fired; the handle ends when it has.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server { addr, stop, done }
    }

    /// Stops the server and waits until every connection is closed: every response
    /// body has been dropped.
    async fn stop(self) {
        let _ = self.stop.send(());
        guard("server shutdown", self.done).await.unwrap();
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(addr: SocketAddr, path: &str, i: usize) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .header("baggage", format!("request_id=r-{i}"))
        .header("traceparent", traceparent(i))
        .body(Empty::new())
        .unwrap()
}

/// Each chunk is made when the client asks for it, long after the handler returned:
/// it still sees the request's MDC and trace; the owner ends when the body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_made_after_the_handler_returned_see_the_request() {
    struct App {
        chunks: Mutex<Option<mpsc::UnboundedReceiver<&'static str>>>,
        exits: mpsc::UnboundedSender<String>,
    }
    async fn handler(State(app): State<Arc<App>>) -> Body {
        let exits = app.exits.clone();
        tasklocal::at_exit(move || {
            let _ = exits.send(format!("exit {}", context()));
        });
        let chunks = app.chunks.lock().unwrap().take().unwrap();
        let stream = futures::stream::unfold(chunks, |mut chunks| async move {
            let chunk = chunks.recv().await?;
            Some((
                Ok::<_, Infallible>(format!("{chunk}:{};", context())),
                chunks,
            ))
        });
        Body::from_stream(stream)
    }

    let (feed, chunks) = mpsc::unbounded_channel();
    let (exits, mut exited) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        chunks: Mutex::new(Some(chunks)),
        exits,
    });
    let server = Server::start(
        Router::new()
            .route("/", get(handler))
            .with_state(app)
            .layer(ServerLayer),
    )
    .await;

    let response = guard("response", client().request(request(server.addr, "/", 1)))
        .await
        .unwrap();
    // The handler has returned (here is its response); the request's owner lives on.
    let mut body = response.into_body();
    let expected = format!("r-1|{}", trace_id(1));
    for chunk in ["a", "b", "c"] {
        feed.send(chunk).unwrap();
        let frame = guard("chunk", body.frame()).await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(data, format!("{chunk}:{expected};"));
        assert!(
            exited.try_recv().is_err(),
            "the owner ended before the body did"
        );
    }
    drop(feed); // the stream ends, and so the body
    assert!(guard("end of body", body.frame()).await.is_none());
    let exit = guard("exit handler", exited.recv()).await.unwrap();
    assert_eq!(exit, format!("exit {expected}"), "handlers see the values");
    server.stop().await;
    assert!(
        exited.recv().await.is_none(),
        "the handler ran more than once"
    );
}

/// Server-sent events: every event is made inside the request's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_the_request_context() {
    async fn events() -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
        let stream = futures::stream::iter(0..4).then(|i| async move {
            tokio::task::yield_now().await;
            Ok(Event::default().data(format!("{i} {}", context())))
        });
        Sse::new(stream)
    }
    let server = Server::start(
        Router::new()
            .route("/events", get(events))
            .layer(ServerLayer),
    )
    .await;

    let response = guard(
        "response",
        client().request(request(server.addr, "/events", 7)),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = guard("body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    let expected: Vec<String> = (0..4).map(|i| format!("{i} r-7|{}", trace_id(7))).collect();
    assert_eq!(data, expected);
    server.stop().await;
}

/// A value whose drop is reported, to check the order of teardown.
struct Reported(mpsc::UnboundedSender<&'static str>);

impl Drop for Reported {
    fn drop(&mut self) {
        let _ = self.0.send("value dropped");
    }
}

static REPORTED: Local<Reported> = Local::new();

/// The client drops the connection in the middle of an endless body: the body is
/// dropped, and the request's owner ends then — handlers first, then values, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_body_ends_the_owner_once() {
    async fn endless(State(events): State<mpsc::UnboundedSender<&'static str>>) -> Body {
        let on_exit = events.clone();
        tasklocal::at_exit(move || {
            // Values are still readable in handlers.
            assert!(REPORTED.is_set());
            let _ = on_exit.send("exit handler");
        });
        REPORTED.set(Reported(events.clone()));
        let stream = futures::stream::once(async { Ok::<_, Infallible>(context()) })
            .chain(futures::stream::pending());
        Body::from_stream(stream)
    }
    let (events, mut seen) = mpsc::unbounded_channel();
    let server = Server::start(
        Router::new()
            .route("/endless", get(endless))
            .with_state(events)
            .layer(ServerLayer),
    )
    .await;

    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /endless HTTP/1.1\r\nhost: localhost\r\nbaggage: request_id=r-3\r\ntraceparent: {}\r\n\r\n",
        traceparent(3)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let first = format!("r-3|{}", trace_id(3));
    let mut received = Vec::new();
    let read_first_chunk = async {
        let mut buf = [0; 1024];
        while !String::from_utf8_lossy(&received).contains(&first) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            received.extend_from_slice(&buf[..n]);
        }
    };
    guard("first chunk", read_first_chunk).await;
    assert!(
        seen.try_recv().is_err(),
        "the owner ended before the body did"
    );
    drop(stream); // the client goes away mid-body

    let first_event = guard("teardown", seen.recv()).await;
    assert_eq!(first_event, Some("exit handler"));
    assert_eq!(seen.recv().await, Some("value dropped"));
    server.stop().await;
    // Every sender is gone (the router's with the server): nothing else was reported.
    assert_eq!(seen.recv().await, None, "the owner ended more than once");
}

/// Many concurrent streamed responses on a multi-thread runtime: every chunk of each
/// sees its own request's context, whichever worker polls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_each_see_their_own_context() {
    const REQUESTS: usize = 64;
    const CHUNKS: usize = 8;
    async fn stream() -> Body {
        let stream = futures::stream::iter(0..CHUNKS).then(|i| async move {
            // Let the other requests' bodies interleave with this one.
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(format!("{i}:{};", context()))
        });
        Body::from_stream(stream)
    }
    let server = Server::start(
        Router::new()
            .route("/stream", get(stream))
            .layer(ServerLayer),
    )
    .await;
    let client = client();

    let bodies = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (client, addr) = (client.clone(), server.addr);
            tokio::spawn(async move {
                let response = client.request(request(addr, "/stream", i)).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (i, String::from_utf8(body.to_vec()).unwrap())
            })
        })
        .buffer_unordered(REQUESTS)
        .collect::<Vec<_>>();
    let bodies = guard("all requests", bodies).await;
    assert_eq!(bodies.len(), REQUESTS);
    for joined in bodies {
        let (i, body) = joined.unwrap();
        let expected: String = (0..CHUNKS)
            .map(|c| format!("{c}:r-{i}|{};", trace_id(i)))
            .collect();
        assert_eq!(body, expected, "request {i}");
    }
    drop(client);
    server.stop().await;
}
