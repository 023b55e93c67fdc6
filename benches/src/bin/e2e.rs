//! SPEC.md 8b's end-to-end line: an axum hello-world server on 2 tokio workers under a
//! bounded load from loopback, in interleaved rounds:
//!
//! * `plain`: plain axum, a handler that answers `"hello"`;
//! * `layer`: the router, with a handler that reads one `Local` value and inserts one
//!   MDC field, inside `ServerLayer` (outermost, as its docs advise: wrapping the
//!   router, served with `axum::ServiceExt::into_make_service`);
//! * `automatic`: the handler that reads and inserts, on a runtime in automatic mode,
//!   without `ServerLayer`;
//! * `automatic_layer`: automatic mode and `layer` (the two automatic modes only when
//!   built with `--cfg tokio_unstable`; otherwise they are skipped).
//!
//! Every request carries a `traceparent` and a 2-member `baggage`, as a traced
//! service's requests do.
//!
//! Each round starts this program again as the server (a second process, so the load
//! generator does not share the server's runtime), loads it for a fixed time with a
//! fixed number of keep-alive HTTP/1.1 connections (hyper client, 127.0.0.1 only), then
//! stops it. Prints JSON: requests/s, p99 latency and the server's CPU time per request
//! (user + system, from `/proc/self/stat`; steadier than requests/s on a machine whose
//! cores the load generator shares) per mode and round, and the median per-round
//! ratios to `plain`.
//!
//! ```text
//! cargo run --release -p tasklocal-benches --bin e2e -- [--rounds 7] [--seconds 3] [--connections 32]
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable \
//!     cargo run --release -p tasklocal-benches --bin e2e
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tasklocal::http::ServerLayer;
use tasklocal::{mdc, Local};
use tasklocal_benches::arg;
use tasklocal_benches::rounds::median;
use tower::Layer as _;

const MODES: [&str; 4] = ["plain", "layer", "automatic", "automatic_layer"];

static USER: Local<u64> = Local::inheritable();

async fn hello() -> &'static str {
    "hello"
}

async fn hello_with_context() -> &'static str {
    std::hint::black_box(USER.get());
    mdc::insert("handler", "hello");
    "hello"
}

/// The server: prints its port, then serves until its stdin closes.
fn serve(mode: &str) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    #[cfg(tokio_unstable)]
    if mode.starts_with("automatic") {
        tasklocal::tokio::install(&mut builder);
    }
    let rt = builder.build().expect("a runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        println!("{}", listener.local_addr().expect("an address").port());
        let stop = async {
            // The parent closes our stdin to stop us.
            let _ = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            })
            .await;
        };
        let with_context = axum::Router::new().route("/", get(hello_with_context));
        let served = match mode {
            "plain" => {
                let router = axum::Router::new().route("/", get(hello));
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }
            "automatic" => {
                axum::serve(listener, with_context)
                    .with_graceful_shutdown(stop)
                    .await
            }
            // `layer`, `automatic_layer`: `ServerLayer` outermost, around the router.
            _ => {
                let app = tower::ServiceExt::<Request>::map_response(
                    ServerLayer.layer(with_context),
                    |response: http::Response<_>| response.map(Body::new),
                );
                let app = axum::ServiceExt::<Request>::into_make_service(app);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        served.expect("serve");
    });
    // For the parent: the CPU time this server used, in clock ticks.
    if let Some(ticks) = cpu_ticks() {
        println!("{ticks}");
    }
}

/// The CPU time (user + system) this process has used, in clock ticks (`USER_HZ`,
/// 100 a second on Linux): `/proc/self/stat`'s `utime` + `stime`. `None` elsewhere.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: state, then 10 fields, utime, stime.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One connection's loop: requests until `until`; returns the latencies in µs.
async fn connection(port: u16, until: Instant) -> Vec<u32> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let request = http::Request::builder()
            .uri("/")
            .header("host", "127.0.0.1")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("baggage", "request_id=4bf92f3577b34da6,tenant=acme")
            .body(Empty::<Bytes>::new())
            .expect("a request");
        let start = Instant::now();
        sender.ready().await.expect("ready");
        let response = sender.send_request(request).await.expect("a response");
        let body = response.into_body().collect().await.expect("a body");
        std::hint::black_box(body);
        latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    latencies
}

/// What one round measured of one mode.
struct Round {
    requests_per_s: f64,
    p99_us: f64,
    /// The server's CPU time per request it served (the warm-up's included), in µs.
    cpu_us_per_request: Option<f64>,
}

/// Loads a server of `mode` for `seconds`.
fn round(mode: &str, seconds: u64, connections: u64) -> Round {
    let exe = std::env::current_exe().expect("this program");
    let mut server = Command::new(exe)
        .args(["--serve", mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut stdout = BufReader::new(server.stdout.take().expect("stdout"));
    let mut port = String::new();
    stdout.read_line(&mut port).expect("the port");
    let port: u16 = port.trim().parse().expect("a port number");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Warm-up, then the measured window.
    let (served, count, mut latencies) = rt.block_on(async {
        let load = |d: Duration| async move {
            let until = Instant::now() + d;
            let tasks: Vec<_> = (0..connections)
                .map(|_| tokio::spawn(connection(port, until)))
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("a connection"));
            }
            all
        };
        let warm_up = load(Duration::from_millis(300)).await.len();
        let all = load(Duration::from_secs(seconds)).await;
        (warm_up + all.len(), all.len(), all)
    });
    drop(server.stdin.take());
    // The server's last line: the CPU time it used.
    let mut ticks = String::new();
    let _ = stdout.read_line(&mut ticks);
    let _ = server.wait();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or(0) as f64;
    Round {
        requests_per_s: count as f64 / seconds as f64,
        p99_us: p99,
        // USER_HZ: 100 ticks a second, 10,000 µs a tick.
        cpu_us_per_request: ticks
            .trim()
            .parse::<f64>()
            .ok()
            .map(|ticks| ticks * 10_000.0 / served.max(1) as f64),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(args.get(i + 1).map_or("plain", String::as_str));
        return;
    }
    let rounds = arg(&args, "--rounds", 7).clamp(1, 50);
    let seconds = arg(&args, "--seconds", 3).clamp(1, 30);
    let connections = arg(&args, "--connections", 32).clamp(1, 256);
    let modes: Vec<&str> = MODES
        .iter()
        .copied()
        .filter(|m| cfg!(tokio_unstable) || !m.starts_with("automatic"))
        .collect();
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        // Rotate the order each round so that no mode always runs first.
        for k in 0..modes.len() {
            let i = (k + r as usize) % modes.len();
            let measured = round(modes[i], seconds, connections);
            let (q, p) = (measured.requests_per_s, measured.p99_us);
            let c = measured.cpu_us_per_request.unwrap_or(f64::NAN);
            eprintln!(
                "round {r}: {:16} {q:9.0} req/s  p99 {p:6.0} µs  server CPU {c:5.1} µs/request",
                modes[i]
            );
            rps[i].push(q);
            p99[i].push(p);
            cpu[i].push(c);
        }
    }
    let ratio =
        |v: &[Vec<f64>], i: usize| median(v[i].iter().zip(&v[0]).map(|(a, b)| a / b).collect());
    let mut out = serde_json::Map::new();
    for (i, m) in modes.iter().enumerate() {
        out.insert(
            m.to_string(),
            serde_json::json!({
                "requests_per_s": rps[i],
                "p99_us": p99[i],
                "median_requests_per_s": median(rps[i].clone()),
                "median_p99_us": median(p99[i].clone()),
                "median_ratio_requests_per_s_to_plain": ratio(&rps, i),
                "median_ratio_p99_to_plain": ratio(&p99, i),
                "cpu_us_per_request": cpu[i],
                "median_cpu_us_per_request": median(cpu[i].clone()),
                "median_ratio_cpu_per_request_to_plain": ratio(&cpu, i),
            }),
        );
    }
    out.insert(
        "setup".into(),
        serde_json::json!({
            "rounds": rounds, "seconds": seconds, "connections": connections,
            "server_workers": 2, "client_workers": 2,
            "automatic": cfg!(tokio_unstable),
        }),
    );
    println!("{}", serde_json::Value::Object(out));
}
