//! tonic (SPEC 11): `ServerLayer` on a real tonic server and `ClientLayer` on a real
//! tonic channel, over 127.0.0.1 — unary and server-streaming calls. The items of a
//! server stream are made while the response body is polled, after the handler
//! returned: they see the request's context because `ServerLayer` polls the body inside
//! the request's owner (SPEC 10). The messages are derived with prost by hand: no protoc.
#![cfg(all(feature = "http", feature = "tokio"))]

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
use tasklocal::mdc;
use tokio::sync::{mpsc, oneshot};
use tonic::body::Body;
use tonic::client::Grpc;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{service_fn, Layer, Service};

/// What the client asks.
#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    tag: String,
    /// For `Stream`: how many items (0: one, then none ever).
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// The context the server saw.
#[derive(Clone, PartialEq, prost::Message)]
struct Seen {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(string, tag = "2")]
    request_id: String,
    #[prost(string, tag = "3")]
    trace_id: String,
    /// The request id a `tasklocal::spawn`ed child of the handler saw.
    #[prost(string, tag = "4")]
    in_child: String,
}

fn seen(tag: String, in_child: String) -> Seen {
    Seen {
        tag,
        request_id: mdc::get("request_id").unwrap_or_default(),
        trace_id: TraceContext::current()
            .map(|t| t.traceparent().trace_id())
            .unwrap_or_default(),
        in_child,
    }
}

type Items = Pin<Box<dyn Stream<Item = Result<Seen, Status>> + Send>>;

/// `test.Echo`, written as tonic's generated code would be: `Context` (unary) and
/// `Stream` (server streaming).
#[derive(Clone)]
struct Echo {
    /// Told the tag of each `Stream` call whose owner ended.
    ended: mpsc::UnboundedSender<String>,
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ended = self.ended.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Seen, Ask>::default());
            Ok(match request.uri().path() {
                "/test.Echo/Context" => grpc.unary(service_fn(context), request).await,
                "/test.Echo/Stream" => {
                    let items = service_fn(move |ask| items(ask, ended.clone()));
                    grpc.server_streaming(items, request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn context(request: Request<Ask>) -> Result<Response<Seen>, Status> {
    let in_child = tasklocal::spawn(async { mdc::get("request_id").unwrap_or_default() })
        .await
        .map_err(|_| Status::internal("child failed"))?;
    Ok(Response::new(seen(request.into_inner().tag, in_child)))
}

async fn items(
    request: Request<Ask>,
    ended: mpsc::UnboundedSender<String>,
) -> Result<Response<Items>, Status> {
    let Ask { tag, count } = request.into_inner();
    let on_exit = tag.clone();
    tasklocal::at_exit(move || {
        let _ = ended.send(on_exit);
    });
    // Made one by one as the server sends them, after this handler returned.
    let made = move |i: u32| {
        let tag = format!("{tag} #{i}");
        async move {
            tokio::task::yield_now().await;
            Ok(seen(tag, String::new()))
        }
    };
    let items: Items = if count == 0 {
        Box::pin(futures::stream::once(made(0)).chain(futures::stream::pending()))
    } else {
        Box::pin(futures::stream::iter(0..count).then(made))
    };
    Ok(Response::new(items))
}

/// A guard against a hung test, not a timing assertion.
async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what}"),
    }
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    ended: mpsc::UnboundedReceiver<String>,
}

/// A tonic server with `ServerLayer` on 127.0.0.1.
async fn start() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let server = Server::builder()
        .layer(ServerLayer)
        .add_service(Echo { ended: ended_tx })
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

impl Running {
    /// Stops the server and waits until its connections are closed; what is left of
    /// the owners' end reports.
    async fn stop(mut self) -> Vec<String> {
        let _ = self.stop.send(());
        guard("server shutdown", self.done).await.unwrap();
        let mut rest = Vec::new();
        while let Some(tag) = self.ended.recv().await {
            rest.push(tag);
        }
        rest
    }
}

type Client = Grpc<ClientService<Channel>>;

/// A tonic channel through `ClientLayer`.
async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Grpc::new(ClientLayer.layer(channel))
}

async fn call_context(client: &mut Client, tag: &str) -> Seen {
    client.ready().await.unwrap();
    let ask = Ask {
        tag: tag.into(),
        count: 0,
    };
    let path = PathAndQuery::from_static("/test.Echo/Context");
    let codec = ProstCodec::<Ask, Seen>::default();
    client
        .unary(Request::new(ask), path, codec)
        .await
        .unwrap()
        .into_inner()
}

async fn call_stream(client: &mut Client, tag: &str, count: u32) -> tonic::Streaming<Seen> {
    client.ready().await.unwrap();
    let ask = Ask {
        tag: tag.into(),
        count,
    };
    let path = PathAndQuery::from_static("/test.Echo/Stream");
    let codec = ProstCodec::<Ask, Seen>::default();
    client
        .server_streaming(Request::new(ask), path, codec)
        .await
        .unwrap()
        .into_inner()
}

fn trace_id(i: u32) -> String {
    format!(
        "{:032x}",
        0x0af7_6519_16cd_43dd_0000_0000_0000_0000_u128 + u128::from(i)
    )
}

/// Runs `future` as a caller in a request of its own: request id `r-{i}`, trace `i`.
fn as_caller<F>(i: u32, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tasklocal::spawn(async move {
        mdc::insert("request_id", format!("r-{i}"));
        let parent = TraceParent::parse(&format!("00-{}-b7ad6b7169203331-01", trace_id(i)));
        TraceContext::new(parent.unwrap(), TraceState::default()).set_current();
        future.await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_carries_the_callers_context() {
    let server = start().await;
    let mut client = connect(server.addr).await;
    let seen = as_caller(1, async move { call_context(&mut client, "unary").await });
    let seen = guard("unary call", seen).await.unwrap();
    assert_eq!(seen.tag, "unary");
    assert_eq!(seen.request_id, "r-1");
    assert_eq!(seen.trace_id, trace_id(1));
    assert_eq!(seen.in_child, "r-1", "the handler's children inherit it");
    assert!(server.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_of_a_server_stream_sees_the_request_context() {
    let mut server = start().await;
    let mut client = connect(server.addr).await;
    let items = as_caller(2, async move {
        let stream = call_stream(&mut client, "stream", 5).await;
        stream.map(Result::unwrap).collect::<Vec<Seen>>().await
    });
    let items = guard("streaming call", items).await.unwrap();
    assert_eq!(items.len(), 5);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item.tag, format!("stream #{i}"));
        assert_eq!(item.request_id, "r-2", "item {i}");
        assert_eq!(item.trace_id, trace_id(2), "item {i}");
    }
    // The stream ended: so did the request's owner, once.
    assert_eq!(
        guard("owner's end", server.ended.recv()).await.as_deref(),
        Some("stream")
    );
    assert!(server.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_cancels_ends_the_owner_once() {
    let mut server = start().await;
    let mut client = connect(server.addr).await;
    let first = as_caller(3, async move {
        let mut stream = call_stream(&mut client, "cancelled", 0).await;
        let first = stream.message().await.unwrap().unwrap();
        drop(stream); // the client cancels the call mid-stream
        first
    });
    let first = guard("first item", first).await.unwrap();
    assert_eq!(
        (first.request_id.as_str(), first.trace_id),
        ("r-3", trace_id(3))
    );
    assert_eq!(
        guard("owner's end", server.ended.recv()).await.as_deref(),
        Some("cancelled")
    );
    assert!(
        server.stop().await.is_empty(),
        "the owner ended more than once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_on_one_channel_each_see_their_own_context() {
    let server = start().await;
    let client = connect(server.addr).await;
    let callers: Vec<_> = (0..24)
        .map(|i| {
            let mut client = client.clone();
            as_caller(i, async move {
                let unary = call_context(&mut client, "c").await;
                let stream = call_stream(&mut client, "s", 4).await;
                let items: Vec<Seen> = stream.map(Result::unwrap).collect().await;
                (i, unary, items)
            })
        })
        .collect();
    for caller in callers {
        let (i, unary, items) = guard("calls", caller).await.unwrap();
        assert_eq!(
            (unary.request_id, unary.in_child),
            (format!("r-{i}"), format!("r-{i}"))
        );
        assert_eq!(unary.trace_id, trace_id(i));
        assert_eq!(items.len(), 4);
        for item in items {
            assert_eq!(
                (item.request_id, item.trace_id),
                (format!("r-{i}"), trace_id(i))
            );
        }
    }
    drop(client);
    assert_eq!(
        server.stop().await.len(),
        24,
        "each stream's owner ended once"
    );
}
