//! The [`log-mdc`](https://docs.rs/log-mdc) crate's map follows the current owner:
//! log4rs's `{X(key)}` (and anything else reading `log_mdc`) prints the running
//! task's [`tasklocal::mdc`](crate::mdc).
//!
//! `log-mdc` keeps one map per thread. In async code that map belongs to whatever task
//! the worker polled last. After [`install`], a [bridge] gives it, for
//! as long as an owner runs, exactly that owner's `tasklocal::mdc` entries — changes
//! made during the poll show at once, [`reset`](crate::reset) and
//! [`unload`](crate::unload) included — and puts back what the thread had when the
//! owner stops running (after every poll, also one that panics).
//!
//! `tasklocal::mdc` is the source of truth: write through it. On threads, too, a
//! change of the thread's MDC rewrites the thread's `log-mdc` map; an entry put into
//! `log-mdc` directly lasts until the next change or switch. A tokio task with no
//! owner of its own (plain `tokio::spawn` without automatic mode) sees the worker
//! thread's map, never another task's.
//!
//! ```
//! tasklocal::log_mdc::install();
//!
//! tasklocal::mdc::insert("request_id", "r-1");
//! let task = tasklocal::task(async {
//!     // What log4rs's `{X(request_id)}` prints:
//!     let seen = log_mdc::get("request_id", |v| v.map(str::to_owned));
//!     assert_eq!(seen.as_deref(), Some("r-1"));
//!     tasklocal::mdc::insert("step", "2"); // visible at once
//!     assert!(log_mdc::get("step", |v| v.is_some()));
//! });
//! futures::executor::block_on(task);
//! // The thread's own MDC again.
//! assert!(!log_mdc::get("step", |v| v.is_some()));
//! ```

use std::cell::RefCell;
use std::sync::Once;

use crate::bridge::{self, Bridge, RegisterError};
use crate::mdc;

/// A `log-mdc` map an owner displaced; `None` for an empty one (nothing to copy).
type Displaced = Option<Vec<(String, String)>>;

thread_local! {
    /// What each owner entered on this thread displaced, innermost last.
    static SAVED: RefCell<Vec<Displaced>> = const { RefCell::new(Vec::new()) };
}

static INSTALL: Once = Once::new();

/// Makes the `log-mdc` map show the current owner's MDC (see the [module
/// docs](self)). Idempotent.
///
/// # Panics
///
/// When [`bridge::MAX_BRIDGES`] other bridges are registered already; see
/// [`try_install`].
///
/// ```
/// tasklocal::log_mdc::install();
/// tasklocal::log_mdc::install(); // a second call changes nothing
/// tasklocal::mdc::insert("user", "ada");
/// assert!(log_mdc::get("user", |v| v == Some("ada")));
/// ```
#[track_caller]
pub fn install() {
    if let Err(err) = try_install() {
        panic!("tasklocal::log_mdc::install: {err}");
    }
}

/// Like [`install`], returning an error instead of panicking.
///
/// # Errors
///
/// [`RegisterError`] when the bridge cannot be registered.
///
/// ```
/// assert!(tasklocal::log_mdc::try_install().is_ok());
/// ```
pub fn try_install() -> Result<(), RegisterError> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = bridge::register(LogMdc);
        if result.is_ok() {
            mdc::on_change(show_change);
            // The thread that installs has an MDC of its own already, maybe.
            show();
        }
    });
    result
}

/// The bridge.
struct LogMdc;

impl Bridge for LogMdc {
    fn enter(&self) {
        let mut displaced = Vec::new();
        log_mdc::iter(|k, v| displaced.push((k.to_owned(), v.to_owned())));
        let displaced = (!displaced.is_empty()).then_some(displaced);
        let _ = SAVED.try_with(|saved| saved.borrow_mut().push(displaced));
        show();
    }

    fn exit(&self) {
        let displaced = SAVED
            .try_with(|saved| saved.borrow_mut().pop())
            .ok()
            .flatten()
            .flatten();
        log_mdc::clear();
        if let Some(displaced) = displaced {
            log_mdc::extend(displaced);
        }
    }
}

/// [`show`] after a change of the current owner's MDC — unless a bridge's call runs
/// on this thread: then the current owner is one that call runs, entered with no
/// bridge, and the map is the owner's the call runs for (the change is shown from the
/// owner's next entry).
fn show_change() {
    if !bridge::calling() {
        show();
    }
}

/// Rewrites the thread's `log-mdc` map with the current owner's MDC.
fn show() {
    log_mdc::clear();
    mdc::for_each(|key, value| {
        log_mdc::insert(key, value);
    });
}
