//! Benchmarks for tasklocal live in `benches/`.
