//! OpenTelemetry contexts told apart by a value they hold: `with_tag(n)` is a context
//! holding `Tag(n)`, `tag()` the tag of `Context::current()`.

use opentelemetry::Context;

/// The value a tagged context holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tag(pub u64);

/// The tag of `Context::current()`, if it has one.
pub fn tag() -> Option<u64> {
    Context::map_current(|cx| cx.get::<Tag>().map(|t| t.0))
}

/// A new context holding `Tag(n)`.
pub fn with_tag(n: u64) -> Context {
    Context::new().with_value(Tag(n))
}
