//! Helpers shared by the integration tests. Each test binary declares `mod support;` and
//! uses what it needs; the rest is dead code in that binary, hence the `allow`.
//!
//! One concern per submodule: tokio runtimes, counted drops and owners torn down
//! (`teardown`), the inheritance protocol, the keys borrowed by the reentrancy tests,
//! captured log output, loopback HTTP servers and clients, OpenTelemetry carriers,
//! automatic mode, and a bridge that runs owners of its own (`bridged`).
#![allow(dead_code)]

#[cfg(all(tokio_unstable, feature = "tokio"))]
pub mod automatic;
pub mod borrowed;
pub mod bridged;
pub mod inherit;
pub mod loopback;
#[cfg(feature = "http")]
pub mod otel;
pub mod output;
pub mod runtime;
#[cfg(all(tokio_unstable, feature = "tokio"))]
pub mod stress;
#[cfg(feature = "opentelemetry")]
pub mod tag;
pub mod teardown;

use std::any::Any;

use tasklocal::Snapshot;

/// The message of a panic payload (`panic!` with a literal or a format string).
pub fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "<non-string panic payload>".to_string(),
        },
    }
}

/// Runs `f` as a fresh owner, so that tests sharing a thread never share values.
pub fn fresh<R>(f: impl FnOnce() -> R) -> R {
    Snapshot::empty().run(f)
}

/// Owned `(key, value)` pairs, as `mdc::to_vec` returns them.
pub fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
