//! `tasklocal::http` end to end inside one process: what `extract` seeds and who
//! inherits it, what `inject` writes (and nothing else), registered keys, the limits,
//! and the tower layers on axum and on a tower client.
#![cfg(all(feature = "http", feature = "tokio", feature = "rayon"))]

mod support;

use std::convert::Infallible;

use http::{HeaderMap, HeaderValue, Request};
use support::pairs;
use support::runtime::{current_thread, multi_thread};
use tasklocal::http::{
    dropped_members, extract, inject, propagate, Baggage, ClientLayer, ServerLayer, TraceContext,
    TraceParent,
};
use tasklocal::{mdc, Local, Snapshot};
use tower::{service_fn, Layer, ServiceExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

/// What `inject` writes inside the context `seed` starts, after `setup`.
fn injected(seed: &Snapshot, setup: impl FnOnce()) -> HeaderMap {
    seed.run(|| {
        setup();
        let mut out = HeaderMap::new();
        inject(&mut out);
        out
    })
}

fn traceparent(headers: &HeaderMap) -> TraceParent {
    TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap()
}

#[test]
fn extract_fills_the_mdc_from_baggage_only() {
    let incoming = headers(&[
        ("baggage", "request_id=r-1,tenant=acme"),
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-request-id", "not-this"),
    ]);
    let seen = extract(&incoming).run(mdc::to_vec);
    assert_eq!(seen, pairs(&[("request_id", "r-1"), ("tenant", "acme")]));
}

#[test]
fn extract_starts_from_nothing_of_the_caller() {
    static CALLER: Local<u32> = Local::inheritable();
    let seen = Snapshot::empty().run(|| {
        CALLER.set(1);
        mdc::insert("caller", "yes");
        extract(&HeaderMap::new()).run(|| (CALLER.get(), mdc::to_vec()))
    });
    assert_eq!(seen, (None, vec![]));
}

#[test]
fn the_request_context_is_inherited_by_tasks_threads_and_pools() {
    let incoming = headers(&[
        ("baggage", "request_id=r-9"),
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
    ]);
    let seen = || {
        (
            mdc::get("request_id"),
            TraceContext::current().map(|t| t.traceparent().trace_id()),
        )
    };
    let expected = (Some("r-9".to_owned()), Some(TRACE_ID.to_owned()));
    let rt = multi_thread(2);
    let (task, blocking, thread, pool) = rt.block_on(extract(&incoming).task(async move {
        let task = tasklocal::spawn(async move { seen() }).await.unwrap();
        let blocking = tasklocal::spawn_blocking(seen).await.unwrap();
        let thread = tasklocal::thread::spawn(seen).join().unwrap();
        let pool = tasklocal::rayon::join(seen, || ()).0;
        (task, blocking, thread, pool)
    }));
    for got in [task, blocking, thread, pool] {
        assert_eq!(got, expected);
    }
}

#[test]
fn inject_continues_the_trace_with_a_new_parent_id() {
    let seed = extract(&headers(&[
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-ff")),
        ("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
    ]));
    let first = injected(&seed, || ());
    let second = injected(&seed, || ());
    let (a, b) = (traceparent(&first), traceparent(&second));
    assert_eq!(a.trace_id(), TRACE_ID);
    assert_eq!(b.trace_id(), TRACE_ID);
    assert!(
        a.parent_id() != PARENT_ID && b.parent_id() != PARENT_ID && a.parent_id() != b.parent_id()
    );
    // Version 00, `sampled` and `random` carried, undefined bits zeroed.
    assert_eq!(
        first["traceparent"],
        format!("00-{TRACE_ID}-{}-03", a.parent_id())
    );
    assert_eq!(
        first["tracestate"],
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
}

#[test]
fn an_invalid_traceparent_starts_a_new_trace_without_tracestate() {
    for bad in [
        vec![(
            "traceparent",
            format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()),
        )],
        vec![(
            "traceparent",
            format!("00-{}-{PARENT_ID}-01", "0".repeat(32)),
        )],
        vec![
            ("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01")),
            ("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-00")),
        ],
        vec![],
    ] {
        let mut incoming = HeaderMap::new();
        for (name, value) in &bad {
            incoming.append(*name, value.parse().unwrap());
        }
        incoming.append("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let seed = extract(&incoming);
        let trace = seed.run(TraceContext::current).unwrap();
        assert_ne!(trace.traceparent().trace_id(), TRACE_ID, "{bad:?}");
        assert!(trace.traceparent().random() && !trace.traceparent().sampled());
        let out = injected(&seed, || ());
        assert_eq!(traceparent(&out).trace_id(), trace.traceparent().trace_id());
        assert!(!out.contains_key("tracestate"), "{bad:?}");
    }
}

#[test]
fn inject_without_any_context_starts_a_trace_per_call() {
    let (a, b) = Snapshot::empty().run(|| {
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        inject(&mut a);
        inject(&mut b);
        (traceparent(&a), traceparent(&b))
    });
    assert_ne!(a.trace_id(), b.trace_id());
    // One trace for a whole job: set it.
    let (a, b) = Snapshot::empty().run(|| {
        TraceContext::new_trace().set_current();
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        inject(&mut a);
        inject(&mut b);
        (traceparent(&a), traceparent(&b))
    });
    assert_eq!(a.trace_id(), b.trace_id());
}

#[test]
fn inject_replaces_stale_headers_and_removes_empty_ones() {
    let out = Snapshot::empty().run(|| {
        let mut out = headers(&[
            ("baggage", "stale=1"),
            ("baggage", "stale=2"),
            ("tracestate", "stale=1"),
            ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
            ("x-kept", "yes"),
        ]);
        inject(&mut out);
        out
    });
    assert!(!out.contains_key("baggage") && !out.contains_key("tracestate"));
    assert_eq!(out.get_all("traceparent").iter().count(), 1);
    assert_ne!(traceparent(&out).trace_id(), TRACE_ID);
    assert_eq!(out["x-kept"], "yes");
}

#[test]
fn only_the_mdc_and_registered_keys_leave_the_process() {
    static SECRET: Local<String> = Local::inheritable();
    static SESSION: Local<String> = Local::inheritable();
    propagate(&SESSION, "session");
    let out = injected(&Snapshot::empty(), || {
        SECRET.set("do-not-send".into());
        tasklocal::set("dynamic", String::from("do-not-send"));
        SESSION.set("s-1".into());
        mdc::insert("request_id", "r-1");
    });
    assert_eq!(out["baggage"], "request_id=r-1,session=s-1");
    assert_eq!(out.len(), 2);
}

#[test]
fn registered_keys_round_trip_and_bad_values_are_dropped() {
    static USER_ID: Local<u64> = Local::inheritable();
    propagate(&USER_ID, "user_id");
    let out = injected(&Snapshot::empty(), || {
        USER_ID.set(42);
        // The registered key wins over an MDC entry of the same name.
        mdc::insert("user_id", "ignored");
        mdc::insert("tenant", "acme");
    });
    assert_eq!(out["baggage"], "tenant=acme,user_id=42");
    let (user, seen) = extract(&out).run(|| (USER_ID.get(), mdc::to_vec()));
    assert_eq!(user, Some(42));
    assert_eq!(seen, pairs(&[("tenant", "acme")]), "not in the MDC too");

    let bad = headers(&[("baggage", "user_id=forty-two,tenant=acme")]);
    let (user, seen) = extract(&bad).run(|| (USER_ID.get(), mdc::to_vec()));
    assert_eq!(user, None);
    assert_eq!(seen, pairs(&[("tenant", "acme")]));
}

#[test]
fn registering_a_name_again_replaces_it() {
    static OLD: Local<u32> = Local::inheritable();
    static NEW: Local<u32> = Local::inheritable();
    propagate(&OLD, "replaced_name");
    propagate(&NEW, "replaced_name");
    let out = injected(&Snapshot::empty(), || {
        OLD.set(1);
        NEW.set(2);
    });
    assert_eq!(out["baggage"], "replaced_name=2");
    assert_eq!(
        extract(&out).run(|| (OLD.get(), NEW.get())),
        (None, Some(2))
    );
}

#[test]
#[should_panic(expected = "not a valid baggage key")]
fn registering_a_name_that_is_not_a_token_panics() {
    static KEY: Local<u32> = Local::inheritable();
    propagate(&KEY, "user id");
}

#[test]
fn over_the_limits_whole_members_are_dropped_and_counted() {
    let before = dropped_members();
    let out = injected(&Snapshot::empty(), || {
        for i in 0..100 {
            mdc::insert(format!("key{i}"), format!("value{i}"));
        }
    });
    let sent = extract(&out).run(mdc::to_vec);
    assert_eq!(sent.len(), 64);
    assert_eq!(sent[63], ("key63".to_owned(), "value63".to_owned()));
    assert!(dropped_members() - before >= 36);

    // Bytes: one oversized entry goes, everything else stays.
    let out = injected(&Snapshot::empty(), || {
        mdc::insert("request_id", "r-1");
        mdc::insert("blob", "x".repeat(10_000));
        mdc::insert("tenant", "acme");
    });
    assert_eq!(out["baggage"], "request_id=r-1,tenant=acme");

    // Within the limits everything goes: 64 members, 8,192 bytes exactly.
    let out = injected(&Snapshot::empty(), || {
        for i in 0..64 {
            let value = if i == 0 {
                "v".repeat(8192 - 63 * 7 - 63 - 4)
            } else {
                "v".repeat(3)
            };
            mdc::insert(format!("k{i:02}"), value);
        }
    });
    assert_eq!(out["baggage"].len(), 8192);
    assert_eq!(extract(&out).run(mdc::to_vec).len(), 64);
}

#[test]
fn baggage_current_is_what_inject_writes() {
    let (current, out) = Snapshot::empty().run(|| {
        mdc::insert("request_id", "r 1");
        let mut out = HeaderMap::new();
        inject(&mut out);
        (Baggage::current(), out)
    });
    assert_eq!(current.to_string(), out["baggage"]);
}

#[test]
fn a_plain_tokio_task_injects_an_empty_context_without_panicking() {
    let rt = current_thread();
    let out = rt.block_on(async {
        tokio::spawn(async {
            let mut out = HeaderMap::new();
            inject(&mut out);
            out
        })
        .await
        .unwrap()
    });
    assert!(!out.contains_key("baggage"));
    assert!(out.contains_key("traceparent"));
}

// ---------------------------------------------------------------------------
// The layers.

#[test]
fn the_server_layer_runs_each_axum_request_in_its_own_context() {
    use axum::routing::get;

    async fn handler() -> String {
        mdc::insert("step", "handled"); // stays in this request
        let child = tasklocal::spawn(async { mdc::to_vec() }).await.unwrap();
        let trace = TraceContext::current().unwrap().traceparent().trace_id();
        format!("{child:?} {trace}")
    }

    let app = axum::Router::new()
        .route("/", get(handler))
        .layer(ServerLayer);
    let rt = multi_thread(2);
    let replies = rt.block_on(async {
        let requests = (0..50).map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let request = Request::builder()
                    .uri("/")
                    .header("baggage", format!("request_id=r-{i}"))
                    .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (i, String::from_utf8(body.to_vec()).unwrap())
            })
        });
        futures::future::join_all(requests).await
    });
    for reply in replies {
        let (i, body) = reply.unwrap();
        assert_eq!(
            body,
            format!("[(\"request_id\", \"r-{i}\"), (\"step\", \"handled\")] {TRACE_ID}")
        );
    }
}

#[test]
fn the_client_layer_injects_in_the_callers_context() {
    // Stands in for an HTTP client: answers with the headers it was sent.
    let client = ClientLayer.layer(service_fn(|request: Request<()>| async move {
        Ok::<_, Infallible>(request.headers().clone())
    }));
    let rt = current_thread();
    let incoming = headers(&[("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01"))]);
    let sent = rt.block_on(extract(&incoming).task(async move {
        mdc::insert("request_id", "r-5");
        let sent = client.oneshot(Request::new(())).await.unwrap();
        // The caller's later writes are not in the request already made.
        mdc::insert("request_id", "r-6");
        sent
    }));
    assert_eq!(sent["baggage"], "request_id=r-5");
    assert_eq!(traceparent(&sent).trace_id(), TRACE_ID);
}

#[test]
fn server_to_client_through_both_layers() {
    // A service whose handler calls the next one through the client layer.
    // (`ServerLayer` wants `http::Response`s; `into_inner` reads their bodies.)
    let downstream = ServerLayer.layer(service_fn(|_request: Request<()>| async {
        let seen = (mdc::to_vec(), TraceContext::current().unwrap());
        Ok::<_, Infallible>(http::Response::new(seen))
    }));
    let client = ClientLayer.layer(downstream);
    let edge = ServerLayer.layer(service_fn(move |_request: Request<()>| async move {
        mdc::insert("request_id", "from-edge");
        let edge_trace = TraceContext::current().unwrap();
        let response = client.oneshot(Request::new(())).await.unwrap();
        let (seen, trace) = response.into_body().into_inner().unwrap();
        Ok::<_, Infallible>(http::Response::new((seen, trace, edge_trace)))
    }));
    let incoming = Request::builder()
        .header("baggage", "tenant=acme")
        .body(())
        .unwrap();
    let response = futures::executor::block_on(edge.oneshot(incoming)).unwrap();
    let (seen, trace, edge_trace) = response.into_body().into_inner().unwrap();
    assert_eq!(
        seen,
        pairs(&[("tenant", "acme"), ("request_id", "from-edge")])
    );
    assert_eq!(
        trace.traceparent().trace_id(),
        edge_trace.traceparent().trace_id(),
        "one trace across both services"
    );
}

/// The `tracestate` cases of the W3C test suite (`w3c/trace-context`, `test/test.py`,
/// strict level 2) run the way the suite runs them: a request through `ServerLayer`
/// whose handler calls out through `ClientLayer`, and the outgoing headers read. Repeated
/// keys keep the state (one of the repeats may go), keys with `@` anywhere but first
/// are kept, a key starting with `@` or over 256 characters drops the whole state.
#[test]
fn w3c_test_suite_tracestate_cases_through_both_layers() {
    const PARENT: &str = "00-12345678901234567890123456789012-1234567890123456-00";
    // The `tracestate` the handler's outgoing call carries, for these incoming lines.
    let outgoing = |lines: &[String]| -> String {
        let client = ClientLayer.layer(service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(request.headers().clone())
        }));
        let service = ServerLayer.layer(service_fn(move |_request: Request<()>| async move {
            let sent = client.oneshot(Request::new(())).await.unwrap();
            Ok::<_, Infallible>(http::Response::new(sent))
        }));
        let mut request = Request::new(());
        let headers = request.headers_mut();
        headers.insert("traceparent", HeaderValue::from_static(PARENT));
        for line in lines {
            headers.append("tracestate", HeaderValue::from_str(line).unwrap());
        }
        let response = futures::executor::block_on(service.oneshot(request)).unwrap();
        let sent = response.into_body().into_inner().unwrap();
        let parent = traceparent(&sent);
        assert_eq!(parent.trace_id(), "12345678901234567890123456789012");
        assert_ne!(parent.parent_id(), "1234567890123456");
        let state: Vec<_> = sent.get_all("tracestate").iter().collect();
        assert!(state.len() <= 1, "{state:?}");
        state
            .first()
            .map_or_else(String::new, |v| v.to_str().unwrap().to_owned())
    };
    let lines = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    // test_tracestate_duplicated_keys: kept, the first of the repeats.
    for repeated in [
        &["foo=1,foo=1"][..],
        &["foo=1,foo=2"],
        &["foo=1", "foo=1"],
        &["foo=1", "foo=2"],
    ] {
        assert_eq!(outgoing(&lines(repeated)), "foo=1", "{repeated:?}");
    }
    // test_tracestate_key_illegal_vendor_format.
    for kept in ["foo@=1,bar=2", "foo@@bar=1,bar=2", "foo@bar@baz=1,bar=2"] {
        assert_eq!(outgoing(&lines(&[kept])), kept);
    }
    assert_eq!(outgoing(&lines(&["@foo=1,bar=2"])), "");
    // test_tracestate_key_length_limit.
    for key in [
        "z".repeat(256),
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
    ] {
        let sent = outgoing(&["foo=1".into(), format!("{key}=1")]);
        assert_eq!(sent, format!("foo=1,{key}=1"));
    }
    assert_eq!(
        outgoing(&["foo=1".into(), format!("{}=1", "z".repeat(257))]),
        ""
    );
}

/// Automatic mode (`--cfg tokio_unstable`): every task has storage, so plain
/// `tokio::spawn` works everywhere — the server layer's task is still the innermost
/// owner of each request, and plain tasks spawned by the handler inherit from it.
#[cfg(tokio_unstable)]
#[test]
fn both_layers_over_the_network_in_automatic_mode() {
    use axum::routing::get;
    use support::loopback;

    async fn handler() -> String {
        // A plain `tokio::spawn`: in automatic mode it inherits the request's context.
        tokio::spawn(async {
            let id = mdc::get("request_id").unwrap_or_default();
            let trace = TraceContext::current().map(|t| t.traceparent().trace_id());
            format!("{id} {}", trace.unwrap_or_default())
        })
        .await
        .unwrap()
    }

    let rt = support::automatic::multi_thread(2);
    rt.block_on(async {
        let app = axum::Router::new()
            .route("/", get(handler))
            .layer(ServerLayer);
        let addr = loopback::serve(app).await;

        let client = ClientLayer.layer(loopback::client());
        let calls = (0..20).map(|i| {
            let client = client.clone();
            // Plain tasks with storage of their own: the MDC is writable here.
            tokio::spawn(async move {
                mdc::insert("request_id", format!("r-{i}"));
                TraceContext::new_trace().set_current();
                let trace = TraceContext::current().unwrap().traceparent().trace_id();
                let request = Request::get(format!("http://{addr}/"))
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let response = client.oneshot(request).await.unwrap();
                (
                    loopback::body_text(response).await,
                    format!("r-{i} {trace}"),
                )
            })
        });
        for call in futures::future::join_all(calls).await {
            let (got, expected) = call.unwrap();
            assert_eq!(got, expected);
        }
    });
}
