//! Benchmarks of tasklocal built with its default features (no `tokio`): see
//! `benches/lean.rs` and `examples/hotpath_lean.rs`. The crate itself is empty.
