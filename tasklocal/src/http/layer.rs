//! tower layers: [`ServerLayer`] runs each request in its own [`Task`] seeded from its
//! headers, [`ClientLayer`] writes the current context into each outgoing request.

use std::task::{Context, Poll};

use ::http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::propagate::{extract, inject};
use super::response::{ResponseBody, ResponseFuture};
#[cfg(doc)]
use crate::Task;

/// A tower layer for servers: each request's response future runs in a [`Task`] of its
/// own, seeded by [`extract`] from the request's headers — the MDC from `baggage`, the
/// trace context from `traceparent`/`tracestate`, the [registered](super::propagate)
/// keys. Everything the handler spawns through tasklocal inherits it.
///
/// The request's owner lives on in the response body ([`ResponseBody`]): the body is
/// polled inside it, so a streamed response (SSE, a chunked download, a gRPC stream)
/// is produced with the request's context, and the owner ends — exit handlers, then
/// values dropped — when the body ends or is dropped (the client went away), not when
/// the handler returns. The inner service must therefore answer with an
/// `http::Response<B>`.
///
/// Works with any tower-based server: axum (`Router::layer`), hyper (through
/// `hyper_util::service::TowerToHyperService`), tonic (`Server::builder().layer`), and
/// also in [automatic mode](crate#automatic-mode), where the request's task is the
/// innermost owner. Put it outermost so that other middleware runs inside the request's
/// context: only the inner service's `call` itself (routing, not the handler) runs
/// before the context is entered.
///
/// ```
/// use tasklocal::http::ServerLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let service = ServerLayer.layer(service_fn(|_request: http::Request<()>| async {
///     let seen = tasklocal::mdc::get("request_id");
///     Ok::<_, std::convert::Infallible>(http::Response::new(seen))
/// }));
/// let request = http::Request::builder()
///     .header("baggage", "request_id=r-7")
///     .body(())
///     .unwrap();
/// let response = futures::executor::block_on(service.oneshot(request)).unwrap();
/// assert_eq!(response.into_body().into_inner().flatten().as_deref(), Some("r-7"));
/// ```
///
/// With axum, `Router::layer(ServerLayer)` works; axum applies it to each route, after
/// routing. Outermost means around the whole router, which axum serves with
/// `axum::ServiceExt::into_make_service` once the body is boxed into axum's own (a
/// request costs about the same either way: axum boxes and clones a layered route for
/// each request, about as much as that box):
///
/// ```
/// use axum::{body::Body, extract::Request, routing::get, Router};
/// use tasklocal::http::ServerLayer;
/// use tower::{Layer, ServiceExt};
///
/// let tenant = || async { tasklocal::mdc::get("tenant").unwrap_or_default() };
/// let router = Router::new().route("/", get(tenant));
/// let app = ServiceExt::<Request>::map_response(ServerLayer.layer(router), |response| {
///     http::Response::map(response, Body::new)
/// });
/// // To serve it: axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app))
/// let request = Request::builder()
///     .header("baggage", "tenant=acme")
///     .body(Body::empty())
///     .unwrap();
/// let response = futures::executor::block_on(app.oneshot(request)).unwrap();
/// let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 64));
/// assert_eq!(body.unwrap(), "acme");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer;

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService { inner }
    }
}

/// The service [`ServerLayer`] makes: runs each request's response future in
/// `extract(request.headers()).task(..)`, and the response body in the same owner
/// ([`ResponseBody`]).
///
/// ```
/// use tasklocal::http::ServerService;
/// use tower::{service_fn, ServiceExt};
///
/// let service = ServerService::new(service_fn(|_request: http::Request<()>| async {
///     let traced = tasklocal::http::TraceContext::current().is_some();
///     Ok::<_, std::convert::Infallible>(http::Response::new(traced))
/// }));
/// let request = http::Request::new(());
/// let response = futures::executor::block_on(service.oneshot(request)).unwrap();
/// assert_eq!(response.body().get_ref(), Some(&true));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerService<S> {
    inner: S,
}

impl<S> ServerService<S> {
    /// Wraps `inner`, as [`ServerLayer`] does.
    ///
    /// ```
    /// let service = tasklocal::http::ServerService::new(());
    /// assert_eq!(service.get_ref(), &());
    /// ```
    pub fn new(inner: S) -> Self {
        ServerService { inner }
    }

    /// The wrapped service.
    ///
    /// ```
    /// let service = tasklocal::http::ServerService::new(1);
    /// assert_eq!(*service.get_ref(), 1);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// ```
    /// let mut service = tasklocal::http::ServerService::new(1);
    /// *service.get_mut() = 2;
    /// assert_eq!(service.into_inner(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    ///
    /// ```
    /// assert_eq!(tasklocal::http::ServerService::new(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture<S::Future> {
        let snapshot = extract(request.headers());
        ResponseFuture::new(snapshot.task(self.inner.call(request)))
    }
}

/// A tower layer for clients: every outgoing request gets [`inject`] — the current
/// trace context with a new parent id, and the MDC and [registered](super::propagate)
/// keys as `baggage`.
///
/// The headers are written in `call`, that is where and when the request is made: in
/// the caller's task, with the caller's context. Works with any tower-based client
/// (hyper-util's `Client`, tonic channels, tower-http stacks); for others (reqwest,
/// ureq), call [`inject`] on the request's headers.
///
/// ```
/// use tasklocal::http::ClientLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// // Stands in for an HTTP client: answers with the baggage it was sent.
/// let client = ClientLayer.layer(service_fn(|request: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(request.headers()["baggage"].clone())
/// }));
/// tasklocal::mdc::insert("request_id", "r-7");
/// let sent = futures::executor::block_on(client.oneshot(http::Request::new(()))).unwrap();
/// assert_eq!(sent, "request_id=r-7");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer;

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService { inner }
    }
}

/// The service [`ClientLayer`] makes: calls [`inject`] on each request's headers, then
/// the wrapped client.
///
/// ```
/// use tasklocal::http::ClientService;
/// use tower::{service_fn, ServiceExt};
///
/// let client = ClientService::new(service_fn(|request: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(request.headers().contains_key("traceparent"))
/// }));
/// assert!(futures::executor::block_on(client.oneshot(http::Request::new(()))).unwrap());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientService<S> {
    inner: S,
}

impl<S> ClientService<S> {
    /// Wraps `inner`, as [`ClientLayer`] does.
    ///
    /// ```
    /// let client = tasklocal::http::ClientService::new(());
    /// assert_eq!(client.get_ref(), &());
    /// ```
    pub fn new(inner: S) -> Self {
        ClientService { inner }
    }

    /// The wrapped service.
    ///
    /// ```
    /// let client = tasklocal::http::ClientService::new(1);
    /// assert_eq!(*client.get_ref(), 1);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// ```
    /// let mut client = tasklocal::http::ClientService::new(1);
    /// *client.get_mut() = 2;
    /// assert_eq!(client.into_inner(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    ///
    /// ```
    /// assert_eq!(tasklocal::http::ClientService::new(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        inject(request.headers_mut());
        self.inner.call(request)
    }
}
