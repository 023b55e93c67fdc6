//! reqwest: [`ContextMiddleware`], a [`reqwest_middleware`] middleware that writes the
//! current context into every outgoing request — the [MDC](crate::mdc) and
//! [registered](crate::http::propagate) keys as W3C `baggage`, the trace as
//! `traceparent`/`tracestate` (see [`inject`]).
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use tasklocal::reqwest::ContextMiddleware;
//!
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(ContextMiddleware)
//!     .build();
//! // In a request's task: `client.get(url).send().await` carries its context.
//! # drop(client);
//! ```
//!
//! The headers are written when the request is sent, in the task that sends it: call
//! the client in the request's task, or in a task spawned with [`spawn`](crate::spawn)
//! (which inherits it) — not in a plain `tokio::spawn`ed task, which has no context of
//! its own outside [automatic mode](crate#automatic-mode).

use ::http::Extensions;
use ::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use crate::http::inject;

/// A [`reqwest_middleware`] middleware: every request sent through the client gets
/// [`inject`] — the current trace context with a new parent id, the MDC and the
/// registered keys as `baggage`. Headers of these names set on the request before are
/// replaced.
///
/// ```
/// use tasklocal::reqwest::ContextMiddleware;
///
/// // Add it with `ClientBuilder::with` (or `with_arc`); it holds nothing.
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(ContextMiddleware)
///     .build();
/// let request = client.get("http://127.0.0.1:1/").build().unwrap();
/// // The headers are written when the request is sent, not when it is built.
/// assert!(request.headers().get("traceparent").is_none());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextMiddleware;

#[async_trait::async_trait]
impl Middleware for ContextMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        inject(request.headers_mut());
        next.run(request, extensions).await
    }
}
