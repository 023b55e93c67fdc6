//! Automatic mode per poll, interleaved (SPEC.md 8b's two per-poll lines): polls of
//! tasks yielding, on runtimes without hooks, with no-op hooks and in automatic mode,
//! in rounds ([`tasklocal_benches::rounds`]), each ratio to the runtime of the same
//! kind without hooks in the same round.
//!
//! * Current-thread runtime, one task yielding: `ct_plain` (the baseline),
//!   `ct_noop_hooks` (what tokio's hook calls alone cost), `ct_automatic`,
//!   `ct_automatic_one_value_set` (the task sets a value first).
//! * Multi-thread runtime with 2 workers, 64 tasks yielding: `mt_plain` (the
//!   baseline), `mt_noop_hooks`, `mt_automatic_one_value_set`.
//!
//! The same loops as `benches/automatic.rs` (criterion, one benchmark after another),
//! whose medians drift apart on a shared machine (see [`tasklocal_benches::rounds`]).
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo run --release -p tasklocal-benches --bin polls
//! ```
//!
//! Options: `--json` (for the report), `--rounds N` (default 100), `--batch N` polls
//! per batch (default 100,000).

#[cfg(tokio_unstable)]
fn main() {
    use tasklocal_benches::arg;
    use tasklocal_benches::rounds::{interleave, report};
    use tasklocal_benches::runtimes::{current_thread, multi_thread, polls, Mode};

    static VALUE: tasklocal::Local<u64> = tasklocal::Local::new();

    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 100) as usize;
    let size = arg(&args, "--batch", 100_000);
    let json_out = args.iter().any(|a| a == "--json");

    // Each kind of runtime in rounds of its own: the workers of a multi-thread
    // runtime are still winding down when the next batch starts, which would slow
    // whichever variant comes after a multi-thread one in every round.
    // (name, mode, the task sets a value first)
    let current_thread_variants = [
        ("ct_plain", Mode::Plain, false),
        ("ct_noop_hooks", Mode::NoopHooks, false),
        ("ct_automatic", Mode::Automatic, false),
        ("ct_automatic_one_value_set", Mode::Automatic, true),
    ];
    let multi_thread_variants = [
        ("mt_plain", Mode::Plain, false),
        ("mt_noop_hooks", Mode::NoopHooks, false),
        ("mt_automatic_one_value_set", Mode::Automatic, true),
    ];
    let measure = |variants: &[(&str, Mode, bool)], multi: bool| {
        let runtimes: Vec<_> = variants
            .iter()
            .map(|&(_, mode, _)| match multi {
                true => multi_thread(mode),
                false => current_thread(mode),
            })
            .collect();
        let tasks = if multi { 64 } else { 1 };
        interleave(
            rounds,
            size,
            variants.len(),
            |_| 0,
            |i| {
                let set = variants[i].2;
                polls(&runtimes[i], &VALUE, (tasks, size), (false, set, false))
            },
        )
    };
    let mut measured = measure(&current_thread_variants, false);
    measured.append(measure(&multi_thread_variants, true));
    let names: Vec<&str> = current_thread_variants
        .iter()
        .chain(&multi_thread_variants)
        .map(|v| v.0)
        .collect();
    report(
        "a poll",
        &names,
        &measured,
        "median_ratio_to_plain",
        json_out,
    );
}

#[cfg(not(tokio_unstable))]
fn main() {
    eprintln!(
        "automatic mode needs tokio's task hooks: build with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
    std::process::exit(2);
}
