//! A rayon pipeline that keeps each job's context: every stage (a parallel iterator,
//! `join`, a spawned task) reads the job's id and tenant without a parameter, and a
//! stage's own writes stay in that stage.
//!
//! `cargo run -p tasklocal --example rayon_pipeline --features rayon`

use std::sync::mpsc;

use rayon::prelude::*;
use tasklocal::Local;

/// The job a piece of work belongs to: inherited by every stage.
static JOB: Local<u32> = Local::inheritable();
/// Per-stage scratch: each stage is an owner of its own, starting at 0.
static SCRATCH: Local<u64> = Local::with_initial(|| 0);

/// Scores one record of the job that is current, whichever rayon worker runs it.
fn score(record: u64) -> (u32, u64) {
    SCRATCH.with_mut(|s| *s += record); // never seen by another record or the caller
    tasklocal::mdc::insert("record", record.to_string()); // nor this
    (JOB.get().expect("the job is inherited"), record * 3)
}

fn run_job(job: u32) -> (u64, u64) {
    JOB.set(job);
    tasklocal::mdc::insert("tenant", ["acme", "globex"][job as usize % 2]);
    let records: Vec<u64> = (0..10_000).collect();

    // Stage 1: a parallel iterator; `wrap` gives every call the job's context.
    let scored: Vec<(u32, u64)> = records
        .par_iter()
        .map(tasklocal::rayon::wrap(|&r| score(r)))
        .collect();
    assert!(
        scored.iter().all(|&(j, _)| j == job),
        "a record saw another job"
    );

    // Stage 2: a fork-join over the two halves.
    let (left, right) = scored.split_at(scored.len() / 2);
    let (a, b) = tasklocal::rayon::join(
        || (JOB.get(), left.iter().map(|&(_, s)| s).sum::<u64>()),
        || (JOB.get(), right.iter().map(|&(_, s)| s).sum::<u64>()),
    );
    assert_eq!((a.0, b.0), (Some(job), Some(job)));

    // Stage 3: a fire-and-forget task reporting back with the job's MDC.
    let (tx, rx) = mpsc::channel();
    tasklocal::rayon::spawn(move || {
        let line = format!(
            "job {} done for {:?}",
            JOB.get().unwrap(),
            tasklocal::mdc::get("tenant")
        );
        tx.send(line).unwrap();
    });
    println!("{}", rx.recv().unwrap());

    // The stages' writes never flowed back.
    assert_eq!(SCRATCH.get(), Some(0));
    assert_eq!(tasklocal::mdc::get("record"), None);
    (a.1, b.1)
}

fn main() {
    // Several jobs at once, each on its own thread, sharing rayon's global pool.
    let jobs: Vec<_> = (1..=4)
        .map(|job| tasklocal::thread::spawn(move || (job, run_job(job))))
        .collect();
    let expected: u64 = (0..10_000u64).map(|r| r * 3).sum();
    for job in jobs {
        let (job, (a, b)) = job.join().unwrap();
        assert_eq!(a + b, expected);
        println!("job {job}: total {}", a + b);
    }
    println!("every stage of every job saw its own job's context");
}
