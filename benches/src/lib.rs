//! Benchmarks for tasklocal live in `benches/`. This library holds what several of
//! them share and is not measured itself.

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
