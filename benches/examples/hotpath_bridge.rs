//! The poll of a future with OpenTelemetry's context, for counting instructions
//! exactly (SPEC section 9): a `Task` whose owner holds a context, with tasklocal's
//! OpenTelemetry bridge installed, against OpenTelemetry's own
//! `FutureExt::with_context` on the same future. A separate program from `hotpath`:
//! installing a bridge changes every switch of the process.
//!
//! ```text
//! cargo build --profile bench -p tasklocal-benches --example hotpath_bridge
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/hotpath_bridge
//! callgrind_annotate --inclusive=yes cg.out | grep 'hotpath_bridge::'
//! ```
//!
//! Each `poll_*` is its own `#[inline(never)]` function called 1,000,000 times: its
//! inclusive count divided by 1,000,000 is the instructions of one poll.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use futures::task::noop_waker_ref;
use opentelemetry::context::{FutureExt as _, WithContext};
use tasklocal::{Snapshot, Task};
use tasklocal_benches::polls::Yields;

const N: u64 = 1_000_000;

#[derive(Clone, Copy)]
struct Value(#[allow(dead_code)] u64);

/// Polls `future` to the end; each poll is one call of `poll_*` below.
fn polls<F: Future<Output = ()>>(future: F, poll: fn(Pin<&mut F>, &mut Context<'_>) -> Poll<()>) {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(noop_waker_ref());
    let poll = black_box(poll);
    while poll(future.as_mut(), &mut cx).is_pending() {}
}

#[inline(never)]
fn poll_bare(f: Pin<&mut Yields>, cx: &mut Context<'_>) -> Poll<()> {
    f.poll(cx)
}
#[inline(never)]
fn poll_with_context(f: Pin<&mut WithContext<Yields>>, cx: &mut Context<'_>) -> Poll<()> {
    f.poll(cx)
}
#[inline(never)]
fn poll_task_bridged(f: Pin<&mut Task<Yields>>, cx: &mut Context<'_>) -> Poll<()> {
    f.poll(cx)
}

fn main() {
    let yields = || Yields { left: N };
    polls(yields(), poll_bare);
    let cx = opentelemetry::Context::new().with_value(Value(1));
    polls(yields().with_context(cx.clone()), poll_with_context);
    tasklocal::opentelemetry::install();
    let seeded = Snapshot::empty().run(|| {
        tasklocal::opentelemetry::set_current(cx);
        Snapshot::capture()
    });
    polls(seeded.task(yields()), poll_task_bridged);
}
