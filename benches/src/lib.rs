//! Benchmarks for tasklocal live in `benches/`. This library holds what several of
//! them share and is not measured itself.

/// A future to measure polls with: polled by hand, it returns `Pending` again and
/// again (`benches/bridge.rs`, `examples/hotpath_bridge.rs`).
pub mod polls {
    use std::future::Future;
    use std::hint::black_box;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use futures::task::noop_waker_ref;

    /// Returns `Pending` `left` times (waking itself each time), then `Ready`.
    pub struct Yields {
        /// How many more polls return `Pending`.
        pub left: u64,
    }

    impl Future for Yields {
        type Output = ();
        #[inline]
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Polls `future` by hand, with a no-op waker, until it is ready: the time it took.
    pub fn poll_to_end(future: impl Future<Output = ()>) -> Duration {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(noop_waker_ref());
        let start = Instant::now();
        while black_box(future.as_mut()).poll(&mut cx).is_pending() {}
        start.elapsed()
    }
}

/// Runtimes with and without automatic mode, for the automatic-mode benchmarks
/// (`benches/automatic.rs`, `examples/hotpath_auto.rs`). Only with
/// `--cfg tokio_unstable`: tokio's task hooks need it.
#[cfg(tokio_unstable)]
pub mod runtimes {
    use tokio::runtime::{Builder, Runtime};

    /// What a runtime is built with.
    #[derive(Clone, Copy, Debug)]
    pub enum Mode {
        /// No task hooks.
        Plain,
        /// Hooks that do nothing: what the hooks themselves cost.
        NoopHooks,
        /// tasklocal's automatic mode.
        Automatic,
    }

    /// A current-thread runtime in `mode`.
    pub fn current_thread(mode: Mode) -> Runtime {
        build(Builder::new_current_thread(), mode)
    }

    /// A multi-thread runtime with 2 workers in `mode` (SPEC.md 8b's first
    /// automatic-mode line).
    pub fn multi_thread(mode: Mode) -> Runtime {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(2);
        build(builder, mode)
    }

    fn build(mut builder: Builder, mode: Mode) -> Runtime {
        match mode {
            Mode::Plain => {}
            Mode::NoopHooks => {
                builder
                    .on_task_spawn(|_| {})
                    .on_before_task_poll(|_| {})
                    .on_after_task_poll(|_| {})
                    .on_task_terminate(|_| {});
            }
            Mode::Automatic => {
                tasklocal::tokio::install(&mut builder);
            }
        }
        builder.build().expect("a runtime")
    }
}
