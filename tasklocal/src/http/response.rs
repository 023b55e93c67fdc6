//! The response side of [`ServerLayer`](super::ServerLayer): the request's owner lives
//! on in the response body, so that a streamed body (SSE, a chunked download, a gRPC
//! stream) is produced with the request's context, and the owner ends when the body
//! ends or is dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::Response;
use http_body::{Body, SizeHint};
use pin_project_lite::pin_project;

use crate::current::{self, Frame};
use crate::task::{self, Task};

pin_project! {
    /// The future of [`ServerService`](super::ServerService): the inner service's
    /// response future, run in the request's own [`Task`]. When it yields a response,
    /// the owner is not ended but handed to the response's [`ResponseBody`]; when it
    /// fails, or is dropped first, the owner ends there.
    ///
    /// ```
    /// use tasklocal::http::ServerLayer;
    /// use tower::{service_fn, Layer, Service};
    ///
    /// let mut service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new("hi"))
    /// }));
    /// let future: tasklocal::http::ResponseFuture<_> = service.call(http::Request::new(()));
    /// let response = futures::executor::block_on(future).unwrap();
    /// assert_eq!(response.body().get_ref(), Some(&"hi"));
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        task: Task<F>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(task: Task<F>) -> Self {
        ResponseFuture { task }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (output, mut frame) = match self.project().task.poll_handing_over(cx) {
            Poll::Ready(ready) => ready,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match output {
            Ok(response) => Ok(response.map(|body| ResponseBody {
                inner: Some(body),
                frame,
            })),
            Err(err) => {
                // No body to continue the request's work: the owner ends now.
                current::end(&mut frame);
                Err(err)
            }
        })
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("task", &self.task)
            .finish()
    }
}

pin_project! {
    /// A response body polled inside the request's owner: while [`ServerLayer`]'s
    /// server polls it for data, the request's values, [MDC](crate::mdc) and trace
    /// context are current, as they were in the handler. The owner ends — its exit
    /// handlers run, then its values are dropped, exactly once — when the body ends
    /// (yields its last frame) or is dropped unfinished (the client went away), not
    /// when the handler returns.
    ///
    /// Data frames, trailers, [`size_hint`](Body::size_hint) and
    /// [`is_end_stream`](Body::is_end_stream) pass through unchanged.
    ///
    /// [`ServerLayer`]: super::ServerLayer
    ///
    /// ```
    /// use http_body_util::{BodyExt, StreamBody};
    /// use tasklocal::http::ServerLayer;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let service = ServerLayer.layer(service_fn(|_: http::Request<()>| async {
    ///     // Each chunk is made when the server polls the body, after the handler returned.
    ///     let chunks = futures::stream::iter(0..3).map(|i| {
    ///         let id = tasklocal::mdc::get("request_id").unwrap_or_default();
    ///         let chunk = hyper::body::Bytes::from(format!("{id}:{i} "));
    ///         Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk))
    ///     });
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(chunks)))
    /// }));
    /// let request = http::Request::builder().header("baggage", "request_id=r-7").body(()).unwrap();
    /// let response = futures::executor::block_on(service.oneshot(request)).unwrap();
    /// let body = futures::executor::block_on(response.into_body().collect()).unwrap();
    /// assert_eq!(body.to_bytes(), "r-7:0 r-7:1 r-7:2 ");
    /// # use futures::StreamExt;
    /// ```
    pub struct ResponseBody<B> {
        // `None` once the body ended: it was dropped inside the owner, which then ended.
        #[pin]
        inner: Option<B>,
        frame: Frame,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_some() {
                // Dropped unfinished: the body goes inside the owner, then the owner ends.
                task::cancel(this.inner, this.frame);
            }
        }
    }
}

impl<B> ResponseBody<B> {
    /// The inner body, until it ended.
    ///
    /// ```
    /// use tasklocal::http::ServerService;
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let service = ServerService::new(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    /// }));
    /// let response = futures::executor::block_on(service.oneshot(http::Request::new(()))).unwrap();
    /// assert_eq!(response.body().get_ref().map(String::as_str), Some("hi"));
    /// ```
    pub fn get_ref(&self) -> Option<&B> {
        self.inner.as_ref()
    }

    /// Ends the request's owner now (exit handlers, then values dropped) and returns
    /// the inner body, to be used outside it; `None` when the body already ended.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use tasklocal::http::ServerService;
    /// use tower::{service_fn, ServiceExt};
    ///
    /// static ENDED: AtomicBool = AtomicBool::new(false);
    /// let service = ServerService::new(service_fn(|_: http::Request<()>| async {
    ///     tasklocal::at_exit(|| ENDED.store(true, Ordering::SeqCst));
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(7))
    /// }));
    /// let response = futures::executor::block_on(service.oneshot(http::Request::new(()))).unwrap();
    /// assert!(!ENDED.load(Ordering::SeqCst)); // the owner lives on in the body
    /// assert_eq!(response.into_body().into_inner(), Some(7));
    /// assert!(ENDED.load(Ordering::SeqCst));
    /// ```
    pub fn into_inner(mut self) -> Option<B> {
        let inner = self.inner.take();
        current::end(&mut self.frame);
        inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        let poll = task::poll_owned(
            this.inner,
            this.frame,
            crate::bridge::any(),
            |body| body.poll_frame(cx),
            Option::is_none,
        );
        if let Poll::Ready(None) = poll {
            // The body ended (and was dropped inside the owner): the owner ends.
            current::end(this.frame);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().map_or(true, B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("ended", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}
