//! [`Carried`]: a value that carries its sender's context through a channel.

use std::fmt;
use std::future::Future;

use crate::snapshot::Snapshot;
use crate::task::Task;

/// A message that carries its sender's context to a long-lived worker: the
/// inheritable values of the code that made it, captured in O(1) by
/// [`Carried::new`], and replayed by [`run`](Self::run) or [`task`](Self::task) in a
/// fresh owner seeded from them — so the worker handles each message with the
/// request id, tenant or MDC of the code that sent it, and never with another
/// message's.
///
/// A worker task or thread lives longer than any request: it cannot inherit from the
/// requests it serves, because it was created before them. `Carried` is to channels
/// what [`Snapshot`] is to thread pools.
///
/// # A worker pool (tokio `mpsc`)
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main]
/// # async fn main() {
/// use std::sync::Arc;
/// use tasklocal::{Carried, Local};
/// use tokio::sync::{mpsc, Mutex};
///
/// static REQUEST_ID: Local<String> = Local::inheritable();
///
/// let (jobs, queue) = mpsc::channel::<Carried<u32>>(16);
/// let (done, mut results) = mpsc::unbounded_channel();
/// let queue = Arc::new(Mutex::new(queue));
/// for _ in 0..4 {
///     let (queue, done) = (queue.clone(), done.clone());
///     tokio::spawn(async move {
///         // A worker takes jobs until the queue closes.
///         while let Some(job) = { let next = queue.lock().await.recv().await; next } {
///             // Each job runs with the request id of the code that sent it.
///             let line = job.run(|n| format!("{}: {}", REQUEST_ID.get().unwrap(), n * n));
///             done.send(line).unwrap();
///         }
///     });
/// }
/// drop(done);
///
/// for request in 0..8u32 {
///     let jobs = jobs.clone();
///     tasklocal::spawn(async move {
///         REQUEST_ID.set(format!("req-{request}"));
///         jobs.send(Carried::new(request)).await.unwrap();
///     });
/// }
/// drop(jobs);
///
/// let mut lines = Vec::new();
/// while let Some(line) = results.recv().await {
///     lines.push(line);
/// }
/// lines.sort();
/// assert_eq!(lines.len(), 8);
/// assert_eq!(lines[3], "req-3: 9");
/// # }
/// # #[cfg(not(feature = "tokio"))] fn main() {}
/// ```
///
/// # A fan-out (tokio `broadcast`)
///
/// `Carried<T>` is `Clone` when `T` is: every subscriber runs the event in an owner
/// of its own, each seeded from the publisher's context.
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # #[tokio::main]
/// # async fn main() {
/// use tasklocal::{Carried, Local};
/// use tokio::sync::broadcast;
///
/// static TENANT: Local<&str> = Local::inheritable();
///
/// let (events, _) = broadcast::channel::<Carried<&str>>(16);
/// let subscribers: Vec<_> = (0..3)
///     .map(|i| {
///         let mut inbox = events.subscribe();
///         tokio::spawn(async move {
///             let event = inbox.recv().await.unwrap();
///             // The subscriber's own writes stay in this event's owner.
///             event.run(|name| {
///                 assert_eq!(TENANT.get(), Some("acme"));
///                 TENANT.set("scratch");
///                 format!("subscriber {i}: {name} for {}", "acme")
///             })
///         })
///     })
///     .collect();
///
/// tasklocal::spawn(async move {
///     TENANT.set("acme");
///     events.send(Carried::new("invoice.paid")).unwrap();
/// })
/// .await
/// .unwrap();
/// for (i, subscriber) in subscribers.into_iter().enumerate() {
///     assert_eq!(subscriber.await.unwrap(), format!("subscriber {i}: invoice.paid for acme"));
/// }
/// # }
/// # #[cfg(not(feature = "tokio"))] fn main() {}
/// ```
///
/// # `Send` and `Sync`
///
/// The context is `Send + Sync`, so `Carried<T>` is `Send` when `T` is, and `Sync`
/// when `T` is:
///
/// ```
/// fn assert_send<T: Send>() {}
/// assert_send::<tasklocal::Carried<String>>();
/// ```
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<tasklocal::Carried<std::rc::Rc<u8>>>();
/// ```
#[derive(Clone)]
#[must_use = "a `Carried` does nothing unless run; `into_inner` drops the context"]
pub struct Carried<T> {
    value: T,
    context: Snapshot,
}

impl<T> Carried<T> {
    /// `value` with the current owner's inheritable values, captured now in O(1)
    /// ([`Snapshot::capture`]). Inside [`isolated`](crate::isolated), nothing.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let message = tasklocal::Carried::new("job");
    /// N.set(2);
    /// assert_eq!(message.run(|job| (job, N.get())), ("job", Some(1)));
    /// ```
    #[inline]
    pub fn new(value: T) -> Carried<T> {
        Carried {
            value,
            context: Snapshot::capture(),
        }
    }

    /// `value` with the context `snapshot` (for instance one extracted from a message's
    /// headers).
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// let context = tasklocal::Snapshot::empty().with_value(&N, 7);
    /// let message = tasklocal::Carried::with_snapshot("job", context);
    /// assert_eq!(message.run(|_| N.get()), Some(7));
    /// ```
    pub fn with_snapshot(value: T, snapshot: Snapshot) -> Carried<T> {
        Carried {
            value,
            context: snapshot,
        }
    }

    /// Runs `f` with the value, in a fresh owner seeded from the carried context (like
    /// [`Snapshot::run`]): `f` reads the sender's values, its writes stay in that owner,
    /// and when `f` returns or panics the owner ends — its exit handlers run and its
    /// values are dropped, so nothing is left on the worker for the next message.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let message = tasklocal::Carried::new(10);
    /// let worker = std::thread::spawn(move || {
    ///     let sum = message.run(|n| n + N.get().unwrap());
    ///     (sum, N.get()) // the worker's own storage saw nothing
    /// });
    /// assert_eq!(worker.join().unwrap(), (11, None));
    /// ```
    ///
    /// # Panics
    ///
    /// When `f` panics (the owner ends first), and like [`Snapshot::run`] inside a
    /// `with`/`with_mut` closure of a non-inheritable key.
    pub fn run<R>(self, f: impl FnOnce(T) -> R) -> R {
        let Carried { value, context } = self;
        context.run(move || f(value))
    }

    /// A [`Task`] that runs the future `f(value)` in a fresh owner seeded from the
    /// carried context (like [`Snapshot::task`]): for async workers. `f` is called at
    /// the first poll, inside the owner.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(1);
    /// let message = tasklocal::Carried::new(10);
    /// let task = message.task(|n| async move { n + N.get().unwrap() });
    /// assert_eq!(futures::executor::block_on(task), 11);
    /// ```
    pub fn task<F, Fut>(self, f: F) -> Task<impl Future<Output = Fut::Output>>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future,
    {
        let Carried { value, context } = self;
        context.task(async move { f(value).await })
    }

    /// The value, dropping the carried context (its values are released now, unless
    /// another snapshot or owner still shares them).
    ///
    /// ```
    /// let message = tasklocal::Carried::new(5);
    /// assert_eq!(message.into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The value and the carried context.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(3);
    /// let (value, context) = tasklocal::Carried::new('x').into_parts();
    /// assert_eq!((value, context.get(&N)), ('x', Some(3)));
    /// ```
    pub fn into_parts(self) -> (T, Snapshot) {
        (self.value, self.context)
    }

    /// The value, by reference (to route a message before running it).
    ///
    /// ```
    /// assert_eq!(*tasklocal::Carried::new(5).get_ref(), 5);
    /// ```
    pub fn get_ref(&self) -> &T {
        &self.value
    }

    /// The value, by mutable reference.
    ///
    /// ```
    /// let mut message = tasklocal::Carried::new(5);
    /// *message.get_mut() += 1;
    /// assert_eq!(message.into_inner(), 6);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// The carried context.
    ///
    /// ```
    /// static N: tasklocal::Local<u32> = tasklocal::Local::inheritable();
    /// N.set(3);
    /// assert_eq!(tasklocal::Carried::new(()).snapshot().get(&N), Some(3));
    /// ```
    pub fn snapshot(&self) -> &Snapshot {
        &self.context
    }
}

impl<T: fmt::Debug> fmt::Debug for Carried<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carried")
            .field("value", &self.value)
            .field("context", &self.context)
            .finish()
    }
}
