//! [`Carrier`]: the header collections [`inject`] and [`extract`] work over — HTTP's
//! `HeaderMap`, a `HashMap<String, String>`, a message queue's own header type.

use std::collections::HashMap;
use std::hash::BuildHasher;

use ::http::header::{HeaderMap, HeaderName, HeaderValue};

#[cfg(doc)]
use super::{extract, inject};

/// A string-keyed collection of headers that a context can travel in: what [`inject`]
/// writes into and [`extract`] reads from, so that the context crosses any transport —
/// HTTP (`http::HeaderMap`), a message queue's message headers (with feature `amqp`,
/// lapin's `FieldTable`), a `HashMap<String, String>` carried in a job's payload.
///
/// `inject` and `extract` follow the same codec rules over every carrier (W3C
/// `baggage`, `traceparent`, `tracestate`; the limits, the encoding, whole members
/// only): the carrier only stores and hands back header values. The names they use are
/// lowercase (`baggage`, `traceparent`, `tracestate`); the values they write are
/// visible ASCII. What they read may be any bytes: a value that is not valid is dropped
/// (by member, for `baggage`), never a panic.
///
/// Implement it for another transport's header type in a few lines:
///
/// ```
/// use tasklocal::http::{extract, inject, Carrier};
///
/// /// A message's headers, as some queue client keeps them.
/// #[derive(Default)]
/// struct Headers(Vec<(String, Vec<u8>)>);
///
/// impl Carrier for Headers {
///     fn get_all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
///         self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_slice())
///     }
///     fn set(&mut self, name: &str, value: String) {
///         self.remove(name);
///         self.0.push((name.to_owned(), value.into_bytes()));
///     }
///     fn remove(&mut self, name: &str) {
///         self.0.retain(|(n, _)| n != name);
///     }
///     fn keys(&self) -> impl Iterator<Item = &str> {
///         self.0.iter().map(|(n, _)| n.as_str())
///     }
/// }
///
/// let mut headers = Headers::default();
/// tasklocal::mdc::scope([("request_id", "r-7")], || inject(&mut headers));
/// assert_eq!(headers.get("baggage"), Some(&b"request_id=r-7"[..]));
/// let seen = extract(&headers).run(|| tasklocal::mdc::get("request_id"));
/// assert_eq!(seen.as_deref(), Some("r-7"));
/// ```
pub trait Carrier {
    /// Every value stored under `name`, in order (an HTTP header may have several
    /// lines; a `baggage` or `tracestate` list may be split over them). Names are
    /// matched as the transport does (HTTP: case-insensitively).
    ///
    /// ```
    /// use tasklocal::http::Carrier;
    /// let mut headers = http::HeaderMap::new();
    /// headers.append("baggage", "a=1".parse().unwrap());
    /// headers.append("baggage", "b=2".parse().unwrap());
    /// let lines: Vec<&[u8]> = Carrier::get_all(&headers, "baggage").collect();
    /// assert_eq!(lines, [&b"a=1"[..], &b"b=2"[..]]);
    /// ```
    fn get_all(&self, name: &str) -> impl Iterator<Item = &[u8]>;

    /// The first value stored under `name`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tasklocal::http::Carrier;
    /// let headers = HashMap::from([("traceparent".to_string(), "x".to_string())]);
    /// assert_eq!(Carrier::get(&headers, "traceparent"), Some(&b"x"[..]));
    /// ```
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// Replaces every value stored under `name` with `value`. A carrier that cannot
    /// store this name or value leaves the name out: it never panics.
    ///
    /// ```
    /// use tasklocal::http::Carrier;
    /// let mut headers = http::HeaderMap::new();
    /// Carrier::set(&mut headers, "baggage", "a=1".to_string());
    /// assert_eq!(headers["baggage"], "a=1");
    /// ```
    fn set(&mut self, name: &str, value: String);

    /// Removes every value stored under `name`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tasklocal::http::Carrier;
    /// let mut headers = HashMap::from([("baggage".to_string(), "a=1".to_string())]);
    /// Carrier::remove(&mut headers, "baggage");
    /// assert!(headers.is_empty());
    /// ```
    fn remove(&mut self, name: &str);

    /// The names stored, each once (to list or copy a message's headers; [`inject`]
    /// and [`extract`] do not need it).
    ///
    /// ```
    /// use tasklocal::http::{inject, Carrier};
    /// let mut headers = http::HeaderMap::new();
    /// inject(&mut headers);
    /// assert_eq!(Carrier::keys(&headers).collect::<Vec<_>>(), ["traceparent"]);
    /// ```
    fn keys(&self) -> impl Iterator<Item = &str>;
}

/// The header names the codecs use, as constants: no parsing on the hot path.
fn header_name(name: &str) -> Option<HeaderName> {
    const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    match name {
        "baggage" => Some(BAGGAGE),
        "traceparent" => Some(TRACEPARENT),
        "tracestate" => Some(TRACESTATE),
        _ => HeaderName::from_bytes(name.as_bytes()).ok(),
    }
}

/// HTTP headers: names are case-insensitive, a header may have several lines.
impl Carrier for HeaderMap {
    fn get_all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        header_name(name)
            .map(|name| HeaderMap::get_all(self, name))
            .into_iter()
            .flatten()
            .map(HeaderValue::as_bytes)
    }

    fn set(&mut self, name: &str, value: String) {
        let Some(name) = header_name(name) else {
            return;
        };
        match HeaderValue::try_from(value) {
            Ok(value) => {
                self.insert(name, value);
            }
            // Not a header value (a control character): nothing half-written stays.
            Err(_) => {
                HeaderMap::remove(self, name);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(name) = header_name(name) {
            HeaderMap::remove(self, name);
        }
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        HeaderMap::keys(self).map(HeaderName::as_str)
    }
}

/// A plain map, for transports that carry headers as strings (a job queue's payload,
/// a database row). Names are matched exactly: [`inject`] writes them in lowercase.
impl<S: BuildHasher> Carrier for HashMap<String, String, S> {
    fn get_all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        HashMap::get(self, name).map(String::as_bytes).into_iter()
    }

    fn set(&mut self, name: &str, value: String) {
        self.insert(name.to_owned(), value);
    }

    fn remove(&mut self, name: &str) {
        HashMap::remove(self, name);
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        HashMap::keys(self).map(String::as_str)
    }
}

#[cfg(feature = "amqp")]
mod amqp {
    use amq_protocol_types::{AMQPValue, FieldTable, LongString, ShortString};

    use super::Carrier;

    /// AMQP 0-9-1 message headers (`BasicProperties::headers` in lapin): values are
    /// written as long strings; long strings, short strings and byte arrays are read.
    /// Names are matched exactly: [`inject`](super::inject) writes them in lowercase.
    impl Carrier for FieldTable {
        fn get_all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
            let value = self.inner().get(name).and_then(|value| match value {
                AMQPValue::LongString(s) => Some(s.as_bytes()),
                AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
                AMQPValue::ByteArray(b) => Some(b.as_slice()),
                _ => None,
            });
            value.into_iter()
        }

        fn set(&mut self, name: &str, value: String) {
            // A name over 255 bytes is not an AMQP short string: left out.
            if let Ok(name) = ShortString::try_new(name) {
                self.insert(name, AMQPValue::LongString(LongString::from(value)));
            }
        }

        fn remove(&mut self, name: &str) {
            // `FieldTable` has no `remove`: rebuilt without the name, when it is there.
            if self.contains_key(name) {
                let mut map = self.inner().clone();
                map.remove(name);
                *self = FieldTable::from(map);
            }
        }

        fn keys(&self) -> impl Iterator<Item = &str> {
            self.inner().keys().map(ShortString::as_str)
        }
    }
}
