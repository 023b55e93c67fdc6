//! [`Task`]: a future that owns a storage.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::bridge;
use crate::current::{self, Frame};

/// Wraps `future` in a [`Task`] with its own storage, which starts with the
/// inheritable values of the code calling `task` (captured now, in O(1)).
///
/// Works on any executor; on tokio, [`spawn`](crate::spawn) does
/// `tokio::spawn(task(future))` for you.
///
/// ```
/// use tasklocal::Local;
/// static REQUEST_ID: Local<u64> = Local::inheritable();
///
/// REQUEST_ID.set(7);
/// let child = tasklocal::task(async {
///     let inherited = REQUEST_ID.get();
///     REQUEST_ID.set(8); // the child's own copy
///     inherited
/// });
/// assert_eq!(futures::executor::block_on(child), Some(7));
/// assert_eq!(REQUEST_ID.get(), Some(7)); // writes never flow back
/// ```
#[inline]
pub fn task<F: Future>(future: F) -> Task<F> {
    Task::with_frame(future, Frame::new(current::capture()))
}

pin_project! {
    /// A future with its own storage: while it is polled, its storage is the current
    /// one on the polling thread, whichever thread that is.
    ///
    /// Made by [`task`] (inheriting the caller's inheritable values),
    /// [`Task::isolated`] (inheriting nothing) or [`Snapshot::task`](crate::Snapshot::task).
    ///
    /// A `Task` ends when its future completes or when the `Task` is dropped —
    /// cancelled, aborted, dropped at runtime shutdown, or unwound by a panic. Then its
    /// exit handlers run, last registered first, with its values still readable, and
    /// then its values are dropped: exactly once. The inner future itself is dropped
    /// while the storage is still current, so its `Drop` can read the task's values.
    ///
    /// A `Task` that never touches its storage allocates nothing.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// static DONE: AtomicBool = AtomicBool::new(false);
    ///
    /// let t = tasklocal::Task::isolated(async {
    ///     tasklocal::at_exit(|| DONE.store(true, Ordering::SeqCst));
    ///     std::future::pending::<()>().await
    /// });
    /// let mut t = Box::pin(t);
    /// let waker = futures::task::noop_waker();
    /// let _ = t.as_mut().poll(&mut std::task::Context::from_waker(&waker));
    /// assert!(!DONE.load(Ordering::SeqCst));
    /// drop(t); // cancelled: the handler runs now
    /// assert!(DONE.load(Ordering::SeqCst));
    /// # use std::future::Future;
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct Task<F> {
        #[pin]
        future: Option<F>,
        frame: Frame,
    }

    impl<F> PinnedDrop for Task<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Completed: already torn down (the common case, inline).
            if this.future.is_some() {
                cancel(this.future, this.frame);
            }
        }
    }
}

/// The end of a `Task` dropped before it completed: cancelled, aborted, dropped at
/// runtime shutdown, or unwound by a panic. Also the end of any other value that
/// continues an owner's work (`http::ResponseBody`) dropped before it was done.
#[inline(never)]
pub(crate) fn cancel<F>(mut future: Pin<&mut Option<F>>, frame: &mut Frame) {
    {
        // The future goes first, while its storage is still readable. (Dropped inside
        // a `with` closure on this thread, or while the thread's locals are destroyed,
        // no switch is possible: the future just goes, and the frame's own `Drop` runs
        // the handlers and drops the values.)
        let _entered = current::try_enter(frame);
        future.set(None);
    }
    current::end(frame);
}

impl<F> Task<F> {
    pub(crate) fn with_frame(future: F, frame: Frame) -> Task<F> {
        Task {
            future: Some(future),
            frame,
        }
    }

    /// Wraps `future` in a `Task` whose storage starts empty: nothing is inherited.
    ///
    /// ```
    /// static USER: tasklocal::Local<&str> = tasklocal::Local::inheritable();
    /// USER.set("ada");
    /// let t = tasklocal::Task::isolated(async { USER.get() });
    /// assert_eq!(futures::executor::block_on(t), None);
    /// ```
    pub fn isolated(future: F) -> Task<F> {
        Task::with_frame(future, Frame::new(None))
    }
}

impl<F: Future> Future for Task<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if bridge::any() {
            return poll_bridged(self, cx);
        }
        let this = self.project();
        let poll = poll_owned(this.future, this.frame, false, |f| f.poll(cx), |_| true);
        if poll.is_ready() {
            // Then the owner ends (out of line: the frequent path is `Pending`).
            current::end_outlined(this.frame);
        }
        poll
    }
}

#[cfg(feature = "http")]
impl<F: Future> Task<F> {
    /// Polls like [`Future::poll`], but when the future completes the owner does not
    /// end: its frame is handed out with the output, to whatever continues the owner's
    /// work (`http::ResponseBody`), which must end it with [`current::end`]. The `Task`
    /// is left completed, with nothing to tear down.
    pub(crate) fn poll_handing_over(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<(F::Output, Frame)> {
        let this = self.project();
        let bridged = bridge::any();
        let poll = poll_owned(this.future, this.frame, bridged, |f| f.poll(cx), |_| true);
        poll.map(|output| (output, std::mem::replace(this.frame, Frame::new(None))))
    }
}

/// [`Task::poll`] when [bridges](crate::bridge) are registered: the same, entered
/// through the guard that calls them.
#[cold]
#[inline(never)]
fn poll_bridged<F: Future>(task: Pin<&mut Task<F>>, cx: &mut Context<'_>) -> Poll<F::Output> {
    let this = task.project();
    let poll = poll_owned(this.future, this.frame, true, |f| f.poll(cx), |_| true);
    if poll.is_ready() {
        current::end_outlined(this.frame);
    }
    poll
}

/// Polls the value in `slot` (a future, a response body) with `frame` as the current
/// owner — through the guard that calls the [bridges](crate::bridge) when `bridged` —
/// and when the poll is ready and `done` says the value has finished, drops the value,
/// still inside the owner. The owner does not end here.
///
/// # Panics
///
/// When `slot` is empty: the value finished earlier.
#[inline(always)]
pub(crate) fn poll_owned<T, R>(
    mut slot: Pin<&mut Option<T>>,
    frame: &mut Frame,
    bridged: bool,
    poll: impl FnOnce(Pin<&mut T>) -> Poll<R>,
    done: impl FnOnce(&R) -> bool,
) -> Poll<R> {
    let run = || {
        let Some(inner) = slot.as_mut().as_pin_mut() else {
            polled_after_completion()
        };
        let poll = poll(inner);
        if matches!(&poll, Poll::Ready(output) if done(output)) {
            // The value goes while its storage is current.
            slot.set(None);
        }
        poll
    };
    if bridged {
        current::entered_bridged(frame, run)
    } else {
        current::entered(frame, run)
    }
}

#[cold]
#[track_caller]
fn polled_after_completion() -> ! {
    panic!("`Task` polled after completion")
}

impl<F> fmt::Debug for Task<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("completed", &self.future.is_none())
            .finish_non_exhaustive()
    }
}
