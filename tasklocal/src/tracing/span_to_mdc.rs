//! [`SpanToMdc`]: fields of `tracing` spans into the MDC of the owner that enters them.

use std::borrow::Cow;
use std::fmt;

use ::tracing::field::{Field, Visit};
use ::tracing::span::{self, Attributes, Record};
use ::tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::local::Local;
use crate::mdc;

/// A [`Layer`] that puts fields of a span into the [MDC](crate::mdc) of the owner
/// (task, thread, [`Snapshot::run`](crate::Snapshot::run)) that enters the span, and
/// takes them out again when it exits: the previous values of those keys come back,
/// or the keys go if they had none.
///
/// While the span is entered, the fields are ordinary MDC entries: log lines show
/// them, and tasks spawned with [`tasklocal::spawn`](crate::spawn) (or in automatic
/// mode) inherit them — also when the child is not instrumented.
///
/// ```
/// use tasklocal::{mdc, tracing::SpanToMdc};
/// use tracing_subscriber::prelude::*;
///
/// let subscriber = tracing_subscriber::registry().with(SpanToMdc::fields(["request_id"]));
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("request", request_id = "req-7", user = "ada");
///     span.in_scope(|| {
///         assert_eq!(mdc::get("request_id").as_deref(), Some("req-7"));
///         assert_eq!(mdc::get("user"), None); // not chosen
///         // Any child owner inherits it, with or without the span:
///         let child = tasklocal::thread::spawn(|| mdc::get("request_id"));
///         assert_eq!(child.join().unwrap().as_deref(), Some("req-7"));
///     });
///     assert_eq!(mdc::get("request_id"), None);
/// });
/// ```
///
/// Values are taken as they are recorded (`span.record(..)` included): strings as
/// they are, other values in their `Debug` form (which, for `%value`, is its
/// `Display` form). In a tokio task without storage of its own (plain `tokio::spawn`),
/// entering a span changes nothing.
///
/// The owner is the one current when the span is entered: for
/// `tasklocal::spawn(future.instrument(span))` that is the task. A span entered
/// *around* a task (`tasklocal::task(future).instrument(span)`) is entered by the
/// owner polling the task, and the task, which has its own MDC, does not see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpanToMdc {
    fields: Fields,
}

#[derive(Debug, Clone)]
enum Fields {
    All,
    Named(Vec<Cow<'static, str>>),
}

impl Fields {
    fn wants(&self, name: &str) -> bool {
        match self {
            Fields::All => true,
            Fields::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

impl SpanToMdc {
    /// Puts the fields with these names into the MDC, under the same names.
    ///
    /// ```
    /// let layer = tasklocal::tracing::SpanToMdc::fields(["request_id", "tenant"]);
    /// # let _ = layer;
    /// ```
    pub fn fields<I>(names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Cow<'static, str>>,
    {
        SpanToMdc {
            fields: Fields::Named(names.into_iter().map(Into::into).collect()),
        }
    }

    /// Puts every field of every span into the MDC.
    ///
    /// ```
    /// let layer = tasklocal::tracing::SpanToMdc::all_fields();
    /// # let _ = layer;
    /// ```
    pub fn all_fields() -> Self {
        SpanToMdc {
            fields: Fields::All,
        }
    }
}

/// The chosen fields of a span, kept in its extensions.
struct SpanValues(Vec<(&'static str, String)>);

/// Records the chosen fields.
struct Collect<'a> {
    fields: &'a Fields,
    values: &'a mut Vec<(&'static str, String)>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if !self.fields.wants(field.name()) {
            return;
        }
        match self
            .values
            .iter_mut()
            .find(|(name, _)| *name == field.name())
        {
            Some(entry) => entry.1 = value,
            None => self.values.push((field.name(), value)),
        }
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// What entering a span changed in an owner's MDC, to be undone at exit.
struct Entered {
    span: span::Id,
    previous: Vec<(&'static str, Option<String>)>,
}

/// The spans entered by the current owner that changed its MDC, innermost last.
static ENTERED: Local<Vec<Entered>> = Local::new();

impl<S> Layer<S> for SpanToMdc
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut values = Vec::new();
        attrs.record(&mut Collect {
            fields: &self.fields,
            values: &mut values,
        });
        if let (false, Some(span)) = (values.is_empty(), ctx.span(id)) {
            span.extensions_mut().insert(SpanValues(values));
        }
    }

    fn on_record(&self, id: &span::Id, record: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanValues>() {
            Some(SpanValues(values)) => record.record(&mut Collect {
                fields: &self.fields,
                values,
            }),
            None => {
                let mut values = Vec::new();
                record.record(&mut Collect {
                    fields: &self.fields,
                    values: &mut values,
                });
                if !values.is_empty() {
                    extensions.insert(SpanValues(values));
                }
            }
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let values = match span.extensions().get::<SpanValues>() {
            Some(SpanValues(values)) => values.clone(),
            None => return,
        };
        let previous = values.iter().map(|(k, _)| (*k, mdc::get(k))).collect();
        if mdc::try_extend(values).is_err() {
            return; // no storage here: nothing changed, nothing to undo
        }
        let entered = Entered {
            span: id.clone(),
            previous,
        };
        let mut entered = Some(entered);
        let pushed = ENTERED.try_with_mut(|stack| stack.extend(entered.take()));
        if let (Ok(None), Some(entered)) = (pushed, entered) {
            let _ = ENTERED.try_set(vec![entered]);
        }
    }

    fn on_exit(&self, id: &span::Id, _ctx: Context<'_, S>) {
        let entered = ENTERED.try_with_mut(|stack| {
            let at = stack.iter().rposition(|e| e.span == *id)?;
            Some(stack.remove(at))
        });
        // Not found: the span was entered by another owner, or changed nothing.
        let Ok(Some(Some(entered))) = entered else {
            return;
        };
        for (key, previous) in entered.previous.into_iter().rev() {
            let _ = match previous {
                Some(value) => mdc::try_insert(key, value),
                None => mdc::try_remove(key).map(drop),
            };
        }
    }
}

// `SpanToMdc` composes with any subscriber that stores spans (the registry).
const _: fn() = || {
    fn assert_layer<L: Layer<tracing_subscriber::Registry>>() {}
    assert_layer::<SpanToMdc>();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SpanToMdc>();
};
