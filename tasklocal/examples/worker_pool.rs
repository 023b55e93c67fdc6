//! A pool of long-lived workers fed over a tokio `mpsc` channel: every job is a
//! `Carried` message, so the worker runs it with the request id of the request that
//! sent it — though the workers were started before any request.
//!
//! ```text
//! cargo run -p tasklocal --example worker_pool
//! ```

use std::sync::Arc;

use tasklocal::{Carried, Local};
use tokio::sync::{mpsc, Mutex};

/// Set by each request; inherited by what the request spawns and carried by its jobs.
static REQUEST_ID: Local<String> = Local::inheritable();

const WORKERS: usize = 3;
const REQUESTS: u32 = 6;
const JOBS_PER_REQUEST: u32 = 2;

/// What a worker does with one job: a log line with the job's request id.
fn resize(image: u32) -> String {
    let request = REQUEST_ID.get().unwrap_or_else(|| "<none>".into());
    // Images of request `r` are numbered `r * 100 + n`: the id must match.
    assert_eq!(request, format!("req-{}", image / 100));
    format!("[{request}] resized image {image}")
}

#[tokio::main]
async fn main() {
    let (jobs, queue) = mpsc::channel::<Carried<u32>>(4);
    let queue = Arc::new(Mutex::new(queue));
    let (done, mut results) = mpsc::unbounded_channel();

    // The pool, started before any request: its workers inherit nothing.
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (queue, done) = (queue.clone(), done.clone());
            tokio::spawn(tasklocal::task(async move {
                loop {
                    let job = queue.lock().await.recv().await;
                    let Some(job) = job else { break };
                    // The job runs in an owner of its own, seeded from its sender.
                    let line = job.run(resize);
                    done.send(format!("worker {worker}: {line}")).unwrap();
                }
            }))
        })
        .collect();
    drop(done);

    // Requests: each sets its id and queues its jobs.
    let requests: Vec<_> = (1..=REQUESTS)
        .map(|request| {
            let jobs = jobs.clone();
            tokio::spawn(tasklocal::task(async move {
                REQUEST_ID.set(format!("req-{request}"));
                for n in 0..JOBS_PER_REQUEST {
                    jobs.send(Carried::new(request * 100 + n)).await.unwrap();
                }
            }))
        })
        .collect();
    drop(jobs);
    for request in requests {
        request.await.unwrap();
    }

    let mut handled = 0;
    while let Some(line) = results.recv().await {
        println!("{line}");
        handled += 1;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(handled, REQUESTS * JOBS_PER_REQUEST);
    println!("{handled} jobs, each with its own request id");
}
