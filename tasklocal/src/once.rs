//! [`Once`]: a value handed to a closure that may not run.

/// A value (often a closure) moved into a closure that may not run — a thread-local
/// access, a lookup that finds nothing. The closure [`take`](Once::take)s it when it
/// uses it; [`or`](Once::or) afterwards returns the closure's result, or hands the
/// value, still there, to a fallback.
pub(crate) struct Once<A>(Option<A>);

impl<A> Once<A> {
    #[inline(always)]
    pub(crate) fn new(value: A) -> Once<A> {
        Once(Some(value))
    }

    /// The value, to be used by the closure that produces the result; `None` if taken.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Option<A> {
        self.0.take()
    }

    /// `result` when there is one (then the value was taken to produce it), else
    /// `fallback` of the value.
    #[inline(always)]
    pub(crate) fn or<R>(self, result: Option<R>, fallback: impl FnOnce(A) -> R) -> R {
        match (result, self.0) {
            (Some(result), _) => result,
            (None, Some(value)) => fallback(value),
            // The value is taken only by the call that produced a result.
            (None, None) => unreachable!("taken without a result"),
        }
    }
}
