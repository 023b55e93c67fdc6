//! Crossing process boundaries: the W3C `baggage` and `traceparent`/`tracestate`
//! headers, so that a request id set at the edge appears in every service's logs.
//!
//! ```
//! use http::HeaderMap;
//! use tasklocal::{http::{extract, inject}, mdc};
//!
//! // Service A, inside a request: the MDC goes out as `baggage`.
//! let headers = tasklocal::Snapshot::empty().run(|| {
//!     mdc::insert("request_id", "r-7");
//!     let mut headers = HeaderMap::new();
//!     inject(&mut headers); // or `ClientLayer` on a tower client
//!     headers
//! });
//!
//! // Service B: the request runs seeded from the headers (`ServerLayer` does this).
//! extract(&headers).run(|| {
//!     assert_eq!(mdc::get("request_id").as_deref(), Some("r-7"));
//! });
//! ```
//!
//! # What crosses
//!
//! * **Out** ([`inject`], [`ClientLayer`]): the [MDC](crate::mdc) and the keys registered
//!   with [`propagate`] as `baggage`; the current [`TraceContext`] as `traceparent`
//!   (with a new parent id) and `tracestate`. Nothing else of the process leaks out.
//! * **In** ([`extract`], [`ServerLayer`]): a [`Snapshot`](crate::Snapshot) with the MDC
//!   filled from `baggage` (registered names go to their keys instead) and the trace
//!   context from `traceparent`/`tracestate`, or a new trace. The request's task
//!   starts from it; every task, thread and pool job it spawns through tasklocal
//!   inherits it.
//!
//! | tower | server | client |
//! |---|---|---|
//! | axum | `ServerLayer.layer(router)`, or `Router::new()...layer(ServerLayer)` (see [`ServerLayer`]) | — |
//! | hyper / hyper-util | `ServiceBuilder::new().layer(ServerLayer)` | `ServiceBuilder::new().layer(ClientLayer).service(client)` |
//! | tonic | `Server::builder().layer(ServerLayer)` | `ServiceBuilder::new().layer(ClientLayer).service(channel)` |
//! | reqwest (feature `reqwest`) | — | `ClientBuilder::new(client).with(ContextMiddleware)` |
//! | not tower (ureq, message queues) | [`extract`] over any [`Carrier`] | [`inject`] into any [`Carrier`] |
//!
//! [`inject`] and [`extract`] work over any [`Carrier`]: `http::HeaderMap`,
//! `HashMap<String, String>`, and with feature `amqp` the AMQP message headers of lapin
//! (`FieldTable`) — or your transport's header type, in a few lines.
//!
//! # The codecs
//!
//! [`Baggage`] and [`TraceParent`]/[`TraceState`] read and write the headers by the
//! W3C recommendations ([Baggage](https://www.w3.org/TR/baggage/),
//! [Trace Context Level 2](https://www.w3.org/TR/trace-context-2/)); their modules,
//! [`baggage`] and [`traceparent`], list every decision. In short:
//!
//! * Parsing never fails and never panics; a malformed list member is dropped alone,
//!   and memory is bounded by the W3C limits whatever the input.
//! * Writing never exceeds 64 baggage members or 8,192 bytes; over a limit, only as many
//!   whole members as needed are dropped (counted by [`dropped_members`]). Values are
//!   percent-encoded, also `%`, `=`, `,`, `;` and space, so no value can add a member,
//!   a property or a header line (CR and LF come out as `%0D%0A`).
//! * `traceparent` is written as version `00` in lowercase hex, keeping the trace id and
//!   the `sampled` and Level 2 `random` flags, other flag bits zeroed; `tracestate` only
//!   alongside a valid `traceparent`. An invalid `traceparent` starts a new trace; an
//!   invalid `tracestate` (a bad member, over 32 members) is dropped whole and a repeated
//!   key keeps its first member, as the W3C test suite (strict level 2) requires. Keys
//!   follow the current W3C grammar: `@` may appear anywhere after the first character.
//! * W3C's own test suite (`w3c/trace-context`, `test/`, revision `acab820` of June
//!   2026), run against an axum service with only `ServerLayer` and `ClientLayer`, passes
//!   all 41 cases at `SPEC_LEVEL=2` and strict level 2.
//!
//! # With OpenTelemetry
//!
//! The headers are those of OpenTelemetry's `BaggagePropagator` and
//! `TraceContextPropagator`, and each side reads what the other writes (tested against
//! `opentelemetry_sdk` both ways). Where the OpenTelemetry Rust SDK departs from the
//! W3C text, tasklocal follows W3C and writes only what OpenTelemetry reads the same:
//!
//! * it cuts a value at a raw `=` (tasklocal writes `%3D`);
//! * it trims spaces around a decoded value (` x ` reads as `x` there);
//! * it percent-decodes keys (tasklocal takes keys as the tokens they are);
//! * it drops a member whose value is not UTF-8 once decoded (tasklocal reads U+FFFD);
//! * it keeps only the `sampled` flag of `traceparent` (the `random` flag is lost there),
//!   and accepts a version `00` header with trailing data (tasklocal does not);
//! * it keeps the first 32 members of a longer `tracestate` (tasklocal, like the W3C
//!   test suite, drops it) and keeps repeated keys as they came (tasklocal keeps the
//!   first);
//! * it still applies the older `tracestate` key rule, one `@` with at most 13
//!   characters after it, and drops the whole state for keys such as `foo@@bar`,
//!   `foo@bar@baz` or `t@` and 15 characters, which the current W3C grammar and test
//!   suite keep (so does tasklocal).

/// A `[bool; 256]` of a predicate over every byte, built at compile time: validating a
/// header byte is then one load, not a chain of comparisons.
macro_rules! byte_table {
    (|$c:ident| $is:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $c = i as u8;
            table[i] = $is;
            i += 1;
        }
        table
    }};
}

mod carrier;
mod layer;
mod propagate;
mod response;

pub mod baggage;
pub mod traceparent;

pub use baggage::Baggage;
pub use carrier::Carrier;
pub use layer::{ClientLayer, ClientService, ServerLayer, ServerService};
pub use propagate::{dropped_members, extract, inject, propagate, TraceContext};
pub use response::{ResponseBody, ResponseFuture};
pub use traceparent::{TraceParent, TraceState};

/// Trims HTTP optional whitespace (`OWS = *( SP / HTAB )`, RFC 9110 §5.6.3).
fn trim_ows(s: &str) -> &str {
    // Byte-wise: spaces and tabs are ASCII, so every cut is on a char boundary.
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// `s.split(sep)` for an ASCII separator, by a byte scan: the headers' pieces are a few
/// bytes long, shorter than `memchr`'s set-up pays for.
fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    debug_assert!(sep.is_ascii());
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.bytes().position(|b| b == sep) {
            // `sep` is ASCII: both cuts are on char boundaries.
            Some(at) => {
                rest = Some(&s[at + 1..]);
                Some(&s[..at])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// `s.split_once(sep)` for an ASCII separator, by a byte scan.
fn split_once_ascii(s: &str, sep: u8) -> Option<(&str, &str)> {
    debug_assert!(sep.is_ascii());
    let at = s.bytes().position(|b| b == sep)?;
    Some((&s[..at], &s[at + 1..]))
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn split_ascii_matches_str_split() {
        for s in ["", ",", "a", "a,b", ",a,,b,", "é,ü", "k=v;p"] {
            assert_eq!(
                split_ascii(s, b',').collect::<Vec<_>>(),
                s.split(',').collect::<Vec<_>>()
            );
            assert_eq!(split_once_ascii(s, b'='), s.split_once('='));
        }
        for s in ["", " ", "\t a b \t", "x", " é "] {
            assert_eq!(trim_ows(s), s.trim_matches([' ', '\t']));
        }
    }
}
