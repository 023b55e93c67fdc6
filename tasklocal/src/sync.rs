//! The primitives of the crate's concurrent structures — the id allocator
//! ([`TaskId`](crate::TaskId)), the per-thread context and automatic mode's registry —
//! taken from std, or from [loom](https://docs.rs/loom) when the crate's unit tests
//! are built with `--cfg tasklocal_loom`, so that the loom models explore every interleaving of
//! them (the way tokio does it). Run the models with
//!
//! ```text
//! RUSTFLAGS="--cfg tasklocal_loom --cfg tokio_unstable" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p tasklocal --features tokio --release --lib loom
//! ```

// Not every item is used by every feature set.
#![allow(unused_imports)]

#[cfg(not(all(test, tasklocal_loom)))]
pub(crate) use std::{
    hint::spin_loop,
    sync::atomic::{AtomicU64, Ordering},
    sync::{Mutex, MutexGuard},
    thread::yield_now,
    thread_local,
};

#[cfg(all(test, tasklocal_loom))]
pub(crate) use loom::{
    hint::spin_loop,
    sync::atomic::{AtomicU64, Ordering},
    sync::{Mutex, MutexGuard},
    thread::yield_now,
};

/// loom's `thread_local!`, taking std's `const { .. }` initializers (loom's macro, of
/// edition 2018, does not parse them).
#[cfg(all(test, tasklocal_loom))]
macro_rules! loom_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
        ::loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::sync::thread_local!($($rest)*);
    };
}

#[cfg(all(test, tasklocal_loom))]
pub(crate) use loom_thread_local as thread_local;
