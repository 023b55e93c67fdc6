//! tonic: a gRPC server with `http::ServerLayer` and a channel with `http::ClientLayer`,
//! on 127.0.0.1. The caller's request id and trace reach the handler and every item of
//! its server stream — items made after the handler returned, while the response body
//! is sent (`ServerLayer` polls it inside the request's owner).
//!
//! `cargo run -p tasklocal --example tonic_grpc --features http,tokio`
//!
//! The service is written out by hand (what `tonic-build` would generate), with its
//! messages derived by prost: no `protoc` needed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tasklocal::http::{ClientLayer, ServerLayer, TraceContext};
use tasklocal::mdc;
use tonic::body::Body;
use tonic::transport::{server::TcpIncoming, Channel, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{Layer, Service};

#[derive(Clone, PartialEq, prost::Message)]
struct Watch {
    #[prost(uint32, tag = "1")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(string, tag = "1")]
    text: String,
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// The handler of `demo.Feed/Watch`: streams `count` events.
async fn watch(request: Request<Watch>) -> Result<Response<Events>, Status> {
    println!(
        "server: watch from {}",
        mdc::get("request_id").unwrap_or_default()
    );
    let events = futures::stream::iter(0..request.into_inner().count).map(|i| {
        // Made when sent, after `watch` returned, still in the request's context.
        let request_id = mdc::get("request_id").unwrap_or_default();
        let trace = TraceContext::current().map(|t| t.traceparent().trace_id());
        let text = format!(
            "event {i} of {request_id} in trace {}",
            trace.unwrap_or_default()
        );
        println!("server: sending {text}");
        Ok(Event { text })
    });
    Ok(Response::new(Box::pin(events) as Events))
}

/// The service `demo.Feed`, as `tonic-build` would generate it.
#[derive(Clone)]
struct Feed;

impl tonic::server::NamedService for Feed {
    const NAME: &'static str = "demo.Feed";
}

impl Service<http::Request<Body>> for Feed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Event, Watch>::default());
            Ok(match request.uri().path() {
                "/demo.Feed/Watch" => {
                    grpc.server_streaming(tower::service_fn(watch), request)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[tokio::main]
async fn main() {
    // The server: `ServerLayer` runs each call in the context its metadata carries.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(ServerLayer)
        .add_service(Feed)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);

    // The client: `ClientLayer` writes the caller's context into every call's metadata.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(ClientLayer.layer(channel));

    let events = tasklocal::spawn(async move {
        mdc::insert("request_id", "req-7");
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/demo.Feed/Watch");
        let codec = ProstCodec::<Watch, Event>::default();
        let response = client.server_streaming(Request::new(Watch { count: 3 }), path, codec);
        let stream = response.await.unwrap().into_inner();
        stream
            .map(|event| event.unwrap().text)
            .collect::<Vec<_>>()
            .await
    })
    .await
    .unwrap();

    for text in &events {
        println!("client: received {text}");
        assert!(text.contains("of req-7 in trace"));
    }
    assert_eq!(events.len(), 3);
}
