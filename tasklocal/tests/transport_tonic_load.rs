//! tonic under load (SPEC 11, with the codec rules of SPEC 7): `ServerLayer` on a real
//! tonic server and `ClientLayer` on real tonic channels, over 127.0.0.1 — 120 callers
//! at once over 3 connections, each making unary, server-streaming, bidi and two-hop
//! calls: every call, stream item and downstream hop sees its caller's context, a
//! value set in one call's server-side owner reaches no other call of the connection,
//! and every stream's owner ends once with its values readable (SPEC 5). Also odd
//! values through gRPC metadata, the W3C baggage limits, and callers without context.
//! With `--cfg tokio_unstable` the same callers run in automatic mode (SPEC 6), also as
//! plain `tokio::spawn` tasks. The messages are derived with prost by hand: no protoc.
#![cfg(all(feature = "http", feature = "tokio"))]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tasklocal::http::{
    ClientLayer, ClientService, ServerLayer, TraceContext, TraceParent, TraceState,
};
use tasklocal::{mdc, Local};
use tokio::sync::{mpsc, oneshot};
use tonic::body::Body;
use tonic::client::Grpc;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tower::{service_fn, Layer, Service};

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Seen {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(string, tag = "2")]
    request_id: String,
    #[prost(string, tag = "3")]
    trace_id: String,
    #[prost(string, tag = "4")]
    parent_id: String,
    #[prost(bool, tag = "5")]
    sampled: bool,
    /// The whole MDC, as `key=value` strings in order.
    #[prost(string, repeated, tag = "6")]
    mdc: Vec<String>,
    /// What a `tasklocal::spawn`ed child saw of `request_id`.
    #[prost(string, tag = "7")]
    in_child: String,
    /// The server-side value of `LEAK` when the handler started.
    #[prost(string, tag = "8")]
    leak: String,
    /// For a hop: what the downstream call saw.
    #[prost(message, optional, boxed, tag = "9")]
    downstream: Option<Box<Seen>>,
}

/// Set by the `Leak` method in the server's owner; must not reach other calls.
static LEAK: Local<String> = Local::new();

fn seen(tag: String) -> Seen {
    let trace = TraceContext::current().map(|t| t.traceparent());
    Seen {
        tag,
        request_id: mdc::get("request_id").unwrap_or_default(),
        trace_id: trace.as_ref().map(|t| t.trace_id()).unwrap_or_default(),
        parent_id: trace.as_ref().map(|t| t.parent_id()).unwrap_or_default(),
        sampled: trace.as_ref().is_some_and(|t| t.sampled()),
        mdc: mdc::to_vec()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        in_child: String::new(),
        leak: LEAK.get().unwrap_or_default(),
        downstream: None,
    }
}

type Items = Pin<Box<dyn Stream<Item = Result<Seen, Status>> + Send>>;
type Client = Grpc<ClientService<Channel>>;

#[derive(Clone)]
struct Echo {
    /// A client to this same server, for `Hop`.
    downstream: Client,
    ended: mpsc::UnboundedSender<String>,
}

impl NamedService for Echo {
    const NAME: &'static str = "load.Echo";
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Seen, Ask>::default());
            Ok(match request.uri().path() {
                "/load.Echo/Unary" => grpc.unary(service_fn(unary), request).await,
                "/load.Echo/Leak" => grpc.unary(service_fn(leak), request).await,
                "/load.Echo/Stream" => {
                    let ended = me.ended.clone();
                    grpc.server_streaming(service_fn(move |r| items(r, ended.clone())), request)
                        .await
                }
                "/load.Echo/Bidi" => grpc.streaming(service_fn(bidi), request).await,
                "/load.Echo/Hop" => {
                    let downstream = me.downstream.clone();
                    grpc.unary(service_fn(move |r| hop(r, downstream.clone())), request)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn unary(request: Request<Ask>) -> Result<Response<Seen>, Status> {
    let mut out = seen(request.into_inner().tag);
    tokio::task::yield_now().await;
    out.in_child = tasklocal::spawn(async {
        tokio::task::yield_now().await;
        mdc::get("request_id").unwrap_or_default()
    })
    .await
    .map_err(|_| Status::internal("child"))?;
    let again = seen(out.tag.clone());
    if again.request_id != out.request_id || again.trace_id != out.trace_id {
        return Err(Status::internal("context changed across an await"));
    }
    Ok(Response::new(out))
}

async fn leak(request: Request<Ask>) -> Result<Response<Seen>, Status> {
    let tag = request.into_inner().tag;
    let out = seen(tag.clone());
    LEAK.set(tag.clone());
    mdc::insert("leak", tag);
    Ok(Response::new(out))
}

async fn items(
    request: Request<Ask>,
    ended: mpsc::UnboundedSender<String>,
) -> Result<Response<Items>, Status> {
    let Ask { tag, count } = request.into_inner();
    let on_exit = tag.clone();
    tasklocal::at_exit(move || {
        // Values readable in the handler: report the request id seen at exit.
        let _ = ended.send(format!(
            "{on_exit}|{}",
            mdc::get("request_id").unwrap_or_default()
        ));
    });
    // Items produced by a spawned producer task, through a channel, and tagged in
    // the stream's own owner.
    let (tx, rx) = mpsc::channel::<Seen>(1);
    let producer_tag = tag.clone();
    tasklocal::spawn(async move {
        for i in 0..count {
            tokio::task::yield_now().await;
            if tx.send(seen(format!("{producer_tag} #{i}"))).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream_from(rx).map(|mut s| {
        // in_child: what the stream's owner itself sees when the item is sent.
        s.in_child = mdc::get("request_id").unwrap_or_default();
        Ok(s)
    });
    Ok(Response::new(Box::pin(stream) as Items))
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Seen>) -> impl Stream<Item = Seen> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn bidi(request: Request<Streaming<Ask>>) -> Result<Response<Items>, Status> {
    let incoming = request.into_inner();
    let out = incoming.then(|ask| async move {
        let ask = ask?;
        tokio::task::yield_now().await;
        Ok(seen(ask.tag))
    });
    Ok(Response::new(Box::pin(out) as Items))
}

async fn hop(request: Request<Ask>, mut downstream: Client) -> Result<Response<Seen>, Status> {
    let ask = request.into_inner();
    let mut here = seen(ask.tag.clone());
    // A value added at this hop travels on.
    mdc::insert("hop", "1");
    downstream
        .ready()
        .await
        .map_err(|_| Status::internal("ready"))?;
    let path = PathAndQuery::from_static("/load.Echo/Unary");
    let there = downstream
        .unary(Request::new(ask), path, ProstCodec::<Ask, Seen>::default())
        .await?
        .into_inner();
    here.downstream = Some(Box::new(there));
    Ok(Response::new(here))
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    ended: mpsc::UnboundedReceiver<String>,
}

async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what}"),
    }
}

async fn start() -> Running {
    let (listener, addr) = support::loopback::listen().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let echo = Echo {
        downstream: Grpc::new(ClientLayer.layer(channel)),
        ended: ended_tx,
    };
    let server = Server::builder()
        .layer(ServerLayer)
        .add_service(echo)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        });
    let done = tokio::spawn(async move { server.await.unwrap() });
    Running {
        addr,
        stop,
        done,
        ended,
    }
}

async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Grpc::new(ClientLayer.layer(channel))
}

async fn call(client: &mut Client, method: &'static str, tag: &str) -> Result<Seen, Status> {
    client.ready().await.unwrap();
    let ask = Ask {
        tag: tag.into(),
        count: 0,
    };
    let path = PathAndQuery::from_static(method);
    client
        .unary(Request::new(ask), path, ProstCodec::<Ask, Seen>::default())
        .await
        .map(Response::into_inner)
}

async fn call_stream(client: &mut Client, tag: &str, count: u32) -> Vec<Seen> {
    client.ready().await.unwrap();
    let ask = Ask {
        tag: tag.into(),
        count,
    };
    let path = PathAndQuery::from_static("/load.Echo/Stream");
    let stream = client
        .server_streaming(Request::new(ask), path, ProstCodec::<Ask, Seen>::default())
        .await
        .unwrap()
        .into_inner();
    stream.map(Result::unwrap).collect().await
}

/// A bidi call: sends `count` asks one by one, each after the previous answer.
async fn call_bidi(client: &mut Client, tag: &str, count: u32) -> Vec<Seen> {
    client.ready().await.unwrap();
    let (tx, rx) = mpsc::channel::<Ask>(1);
    let outgoing = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let path = PathAndQuery::from_static("/load.Echo/Bidi");
    tx.send(Ask {
        tag: format!("{tag} #0"),
        count: 0,
    })
    .await
    .unwrap();
    let mut answers = client
        .streaming(
            Request::new(outgoing),
            path,
            ProstCodec::<Ask, Seen>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    for i in 0..count {
        let answer = answers.message().await.unwrap().expect("an answer");
        out.push(answer);
        if i + 1 < count {
            tx.send(Ask {
                tag: format!("{tag} #{}", i + 1),
                count: 0,
            })
            .await
            .unwrap();
        }
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    out
}

fn trace_id(i: u32) -> String {
    format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_0000_0000_0000_0000_u128 + u128::from(i)
    )
}

const CALLER_PARENT: &str = "00f067aa0ba902b7";

/// Sets the caller's context: request id `r-{i}`, trace `i`, sampled when `i` is even.
fn enter_caller(i: u32) {
    mdc::insert("request_id", format!("r-{i}"));
    let flags = if i % 2 == 0 { "01" } else { "00" };
    let parent =
        TraceParent::parse(&format!("00-{}-{CALLER_PARENT}-{flags}", trace_id(i))).unwrap();
    TraceContext::new(parent, TraceState::default()).set_current();
}

fn as_caller<F>(i: u32, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tasklocal::spawn(async move {
        enter_caller(i);
        future.await
    })
}

#[track_caller]
fn assert_caller(i: u32, seen: &Seen, what: &str) {
    assert_eq!(seen.request_id, format!("r-{i}"), "{what}: request id");
    assert_eq!(seen.trace_id, trace_id(i), "{what}: trace id");
    assert_ne!(
        seen.parent_id, CALLER_PARENT,
        "{what}: inject writes a new parent id"
    );
    assert_eq!(seen.parent_id.len(), 16, "{what}");
    assert_eq!(seen.sampled, i % 2 == 0, "{what}: sampled flag");
    assert_eq!(
        seen.leak, "",
        "{what}: another call's server-side value leaked"
    );
    assert!(
        !seen.mdc.iter().any(|kv| kv.starts_with("leak=")),
        "{what}: leaked mdc {:?}",
        seen.mdc
    );
}

/// Everything of one caller: unary, stream, bidi, hop, checked.
async fn one_caller(i: u32, mut client: Client) {
    let u = call(&mut client, "/load.Echo/Unary", "u").await.unwrap();
    assert_caller(i, &u, "unary");
    assert_eq!(u.in_child, format!("r-{i}"), "unary child");
    // Leave a value in the server's owner: must not reach the next calls.
    let l = call(&mut client, "/load.Echo/Leak", &format!("L{i}"))
        .await
        .unwrap();
    assert_caller(i, &l, "leak call");
    let items = call_stream(&mut client, "s", 6).await;
    assert_eq!(items.len(), 6);
    for (k, item) in items.iter().enumerate() {
        assert_eq!(item.tag, format!("s #{k}"));
        assert_caller(i, item, "stream item (producer)");
        assert_eq!(item.in_child, format!("r-{i}"), "stream item (owner)");
    }
    let answers = call_bidi(&mut client, "b", 4).await;
    assert_eq!(answers.len(), 4);
    for (k, a) in answers.iter().enumerate() {
        assert_eq!(a.tag, format!("b #{k}"));
        assert_caller(i, a, "bidi answer");
    }
    let h = call(&mut client, "/load.Echo/Hop", "h").await.unwrap();
    assert_caller(i, &h, "hop, first service");
    let d = h.downstream.as_deref().expect("downstream");
    assert_eq!(d.request_id, format!("r-{i}"), "hop, second service");
    assert_eq!(d.trace_id, trace_id(i), "hop, second service: same trace");
    assert_ne!(d.parent_id, h.parent_id, "each hop a new parent id");
    assert_eq!(d.sampled, i % 2 == 0);
    assert!(
        d.mdc.contains(&"hop=1".to_string()),
        "a value added at a hop travels: {:?}",
        d.mdc
    );
    assert_eq!(d.leak, "");
}

async fn many_callers(callers: u32, channels: u32) {
    let mut server = start().await;
    let mut clients = Vec::new();
    for _ in 0..channels {
        clients.push(connect(server.addr).await);
    }
    let handles: Vec<_> = (0..callers)
        .map(|i| {
            let client = clients[(i % channels) as usize].clone();
            as_caller(i, one_caller(i, client))
        })
        .collect();
    for h in handles {
        guard("caller", h).await.unwrap();
    }
    // Every stream's owner ended once, with its values readable.
    let mut ended = Vec::new();
    for _ in 0..callers {
        ended.push(
            guard("stream owner end", server.ended.recv())
                .await
                .unwrap(),
        );
    }
    drop(clients);
    let rest = server.stop().await;
    assert!(rest.is_empty(), "owners ended twice: {rest:?}");
    ended.sort();
    let mut expected: Vec<_> = (0..callers).map(|i| format!("s|r-{i}")).collect();
    expected.sort();
    assert_eq!(ended, expected);
}

impl Running {
    async fn stop(mut self) -> Vec<String> {
        let _ = self.stop.send(());
        guard("server shutdown", self.done).await.unwrap();
        let mut rest = Vec::new();
        while let Ok(tag) = self.ended.try_recv() {
            rest.push(tag);
        }
        rest
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_each_keep_their_context() {
    many_callers(120, 3).await;
}

/// Odd characters survive a round trip through gRPC metadata exactly (SPEC 7: "peers
/// ... read them back exactly"; CR/LF come out as `%0D%0A`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_values_round_trip_through_grpc_metadata() {
    let server = start().await;
    let client = connect(server.addr).await;
    let values = [
        "a=b",
        "x,y;z",
        " spaced out ",
        "100%",
        "%41",
        "line\r\nbreak",
        "caf\u{e9} \u{1f600}",
        "\"quoted\"\\",
        "tab\there",
        "",
    ];
    for (n, value) in values.iter().enumerate() {
        let mut client = client.clone();
        let value = value.to_string();
        let seen = tasklocal::spawn(async move {
            mdc::insert("v", value.clone());
            mdc::insert("request_id", "odd");
            call(&mut client, "/load.Echo/Unary", "odd").await.unwrap()
        })
        .await
        .unwrap();
        let v = seen
            .mdc
            .iter()
            .find_map(|kv| kv.strip_prefix("v="))
            .map(str::to_string);
        assert_eq!(
            v.as_deref(),
            Some(values[n]),
            "value {n} {:?}, whole mdc {:?}",
            values[n],
            seen.mdc
        );
        assert_eq!(seen.request_id, "odd");
    }
    drop(client);
    server.stop().await;
}

/// Over the W3C limits only whole members are dropped, and no more than needed:
/// 100 MDC entries reach the server as 64 exact ones; one oversized value is dropped
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_limits_over_grpc() {
    let server = start().await;
    let client = connect(server.addr).await;
    let mut c = client.clone();
    let seen = tasklocal::spawn(async move {
        for k in 0..100 {
            mdc::insert(format!("k{k}"), format!("v{k}"));
        }
        call(&mut c, "/load.Echo/Unary", "many").await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(seen.mdc.len(), 64, "{:?}", seen.mdc);
    for kv in &seen.mdc {
        let (k, v) = kv.split_once('=').unwrap();
        assert_eq!(&k[1..], &v[1..], "a member arrived whole: {kv}");
    }
    let mut c = client.clone();
    let seen = tasklocal::spawn(async move {
        mdc::insert("small1", "a");
        mdc::insert("huge", "x".repeat(9_000));
        mdc::insert("small2", "b");
        mdc::insert("request_id", "big");
        call(&mut c, "/load.Echo/Unary", "huge").await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        seen.mdc,
        ["small1=a", "small2=b", "request_id=big"],
        "only the oversized member is dropped"
    );
    drop(client);
    server.stop().await;
}

/// A caller without any context: the server sees no MDC and a fresh trace; each call
/// a different trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_context_get_fresh_traces() {
    let server = start().await;
    let client = connect(server.addr).await;
    let mut traces = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut c = client.clone();
        let seen =
            tasklocal::spawn(
                async move { call(&mut c, "/load.Echo/Unary", "none").await.unwrap() },
            )
            .await
            .unwrap();
        assert!(seen.mdc.is_empty(), "{:?}", seen.mdc);
        assert_eq!(seen.trace_id.len(), 32);
        assert_ne!(seen.trace_id, "0".repeat(32));
        traces.insert(seen.trace_id);
    }
    assert_eq!(traces.len(), 20, "each call without a trace starts its own");
    drop(client);
    server.stop().await;
}

/// The same callers with the whole stack in automatic mode: plain `tokio::spawn`
/// callers, and tonic's and hyper's own tasks owning storage.
#[cfg(tokio_unstable)]
#[test]
fn many_concurrent_callers_in_automatic_mode() {
    let rt = support::automatic::multi_thread(2);
    rt.block_on(async {
        tokio::spawn(many_callers(120, 3)).await.unwrap();
    });
    // Plain spawns as callers: each sets its own context without a wrapper.
    rt.block_on(async {
        tokio::spawn(async {
            let mut server = start().await;
            let client = connect(server.addr).await;
            let callers: Vec<_> = (0..100u32)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        enter_caller(i);
                        one_caller(i, client).await;
                        // The caller's own context is untouched by its calls.
                        assert_eq!(mdc::get("request_id"), Some(format!("r-{i}")));
                        assert_eq!(mdc::get("hop"), None);
                        assert_eq!(LEAK.get(), None);
                    })
                })
                .collect();
            for c in callers {
                guard("plain caller", c).await.unwrap();
            }
            for _ in 0..100 {
                guard("owner end", server.ended.recv()).await.unwrap();
            }
            drop(client);
            assert!(server.stop().await.is_empty());
        })
        .await
        .unwrap();
    });
    drop(rt);
}
