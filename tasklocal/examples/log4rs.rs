//! log4rs prints each task's MDC with `{X(key)}`: the `log-mdc` bridge gives log-mdc's
//! thread-local map the running task's `tasklocal::mdc`, poll by poll.
//!
//! `cargo run -p tasklocal --example log4rs --features tokio,log-mdc`

use log4rs::append::console::ConsoleAppender;
use log4rs::config::{Appender, Config, Root};
use log4rs::encode::pattern::PatternEncoder;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `{X(request_id)}` reads log-mdc's map; "-" when the key is missing.
    let stdout = ConsoleAppender::builder()
        .encoder(Box::new(PatternEncoder::new(
            "[{X(request_id)(-)} {X(step)(-)}] {m}{n}",
        )))
        .build();
    let config = Config::builder()
        .appender(Appender::builder().build("stdout", Box::new(stdout)))
        .build(
            Root::builder()
                .appender("stdout")
                .build(log::LevelFilter::Info),
        )
        .expect("a valid log4rs config");
    log4rs::init_config(config).expect("no other logger");

    // From now on log-mdc shows the current owner's MDC.
    tasklocal::log_mdc::install();

    log::info!("before any request: no request id");
    let requests: Vec<_> = (1..=4)
        .map(|n| {
            tasklocal::spawn(async move {
                tasklocal::mdc::insert("request_id", format!("r-{n}"));
                for step in ["parse", "query", "render"] {
                    tasklocal::mdc::insert("step", step);
                    // Tasks interleave on two workers; each line carries its own id.
                    tokio::task::yield_now().await;
                    log::info!("working");
                }
                // A child task inherits the MDC.
                tasklocal::spawn(async { log::info!("child done") })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
    log::info!("after the requests: the thread's own MDC again");
}
