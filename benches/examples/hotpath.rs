//! The hot paths of SPEC.md section 8, one million calls each through a `black_box`ed
//! function pointer, for counting instructions exactly (the machine's noise does not
//! reach them):
//!
//! ```text
//! cargo build --profile bench -p tasklocal-benches --example hotpath
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/hotpath
//! callgrind_annotate --inclusive=yes cg.out | grep 'hotpath::'
//! ```
//!
//! Each accessor is its own `#[inline(never)]` function, so its inclusive count divided
//! by 1,000,000 is the instructions of one call (`poll_*`: of one poll;
//! `spawn_tokio`/`spawn_tasklocal`: of one spawn, 200,000/600,000 calls; `spawn_await_*`: of
//! 200,000 spawns + awaits, including the parent's polls; 8 inherited values unless
//! the name says 0 or 64); `objdump -d -C` on the binary
//! shows them.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use futures::task::noop_waker_ref;
use tasklocal::{Local, Task};

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
}

tokio::task_local! {
    static TOKIO_LOCAL: u64;
}

static LOCAL: Local<u64> = Local::new();
static INHERITABLE: Local<u64> = Local::inheritable();
/// Set elsewhere, never in the measuring task: read there, they miss.
static UNSET: Local<u64> = Local::inheritable();
static PLAIN_UNSET: Local<u64> = Local::new();

const N: u64 = 1_000_000;

#[inline(never)]
fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
#[inline(never)]
fn std_set() {
    STD_CELL.with(|c| c.set(black_box(2)))
}
#[inline(never)]
fn tokio_get() -> u64 {
    TOKIO_LOCAL.get()
}
#[inline(never)]
fn local_get() -> Option<u64> {
    LOCAL.get()
}
#[inline(never)]
fn local_set() {
    LOCAL.set(black_box(2))
}
#[inline(never)]
fn inheritable_get() -> Option<u64> {
    INHERITABLE.get()
}
/// A child `Task`'s read of a value it inherited, before it has a storage of its own
/// (what a spawned task that reads its context does first).
#[inline(never)]
fn inherited_get() -> Option<u64> {
    INHERITABLE.get()
}
/// A read of an inheritable key the task does not hold (an optional context value).
#[inline(never)]
fn unset_get() -> Option<u64> {
    UNSET.get()
}
/// The same with a plain key.
#[inline(never)]
fn plain_unset_get() -> Option<u64> {
    PLAIN_UNSET.get()
}
#[inline(never)]
fn inheritable_set() {
    INHERITABLE.set(black_box(2))
}
#[inline(never)]
fn dynamic_get() -> Option<u64> {
    tasklocal::get(&"key")
}
#[inline(never)]
fn id() -> tasklocal::TaskId {
    tasklocal::id()
}

/// Returns `Pending` `left` times, then `Ready`; sets `LOCAL` on its first poll if
/// `set`.
struct Yields {
    left: u64,
    set: bool,
}

impl Future for Yields {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::take(&mut self.set) {
            LOCAL.set(1);
        }
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

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
fn poll_tokio(
    f: Pin<&mut tokio::task::futures::TaskLocalFuture<u64, Yields>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    f.poll(cx)
}
#[inline(never)]
fn poll_task(f: Pin<&mut Task<Yields>>, cx: &mut Context<'_>) -> Poll<()> {
    f.poll(cx)
}

/// `N / 10` empty tasks spawned and awaited on a current-thread runtime, from a parent
/// `Task` with 8 inherited values.
#[inline(never)]
fn spawn_await_tokio(rt: &tokio::runtime::Runtime) {
    spawn_await(rt, false, 8)
}
#[inline(never)]
fn spawn_await_tasklocal(rt: &tokio::runtime::Runtime) {
    spawn_await(rt, true, 8)
}
#[inline(never)]
fn spawn_await_tasklocal_0(rt: &tokio::runtime::Runtime) {
    spawn_await(rt, true, 0)
}
#[inline(never)]
fn spawn_await_tasklocal_64(rt: &tokio::runtime::Runtime) {
    spawn_await(rt, true, 64)
}
#[inline(always)]
fn spawn_await(rt: &tokio::runtime::Runtime, wrap: bool, values: usize) {
    static KEYS: [Local<u64>; 64] = [const { Local::inheritable() }; 64];
    rt.block_on(tasklocal::task(async move {
        for key in &KEYS[..values] {
            key.set(1);
        }
        for _ in 0..N / 10 {
            if wrap {
                spawn_tasklocal().await.unwrap();
            } else {
                spawn_tokio().await.unwrap();
            }
        }
    }))
}
#[inline(never)]
fn spawn_tokio() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}
#[inline(never)]
fn spawn_tasklocal() -> tokio::task::JoinHandle<()> {
    tasklocal::spawn(async {})
}

fn calls<R>(f: fn() -> R) {
    let f = black_box(f);
    for _ in 0..N {
        black_box(f());
    }
}

fn main() {
    // An index for `UNSET`, as a key set in other requests has.
    tasklocal::Snapshot::empty().run(|| {
        UNSET.set(1);
        PLAIN_UNSET.set(1);
    });
    calls(std_get);
    calls(std_set);
    TOKIO_LOCAL.sync_scope(1, || calls(tokio_get));
    futures::executor::block_on(tasklocal::task(async {
        LOCAL.set(1);
        INHERITABLE.set(1);
        tasklocal::set("key", 1u64);
        calls(local_get);
        calls(local_set);
        calls(inheritable_get);
        calls(unset_get);
        calls(plain_unset_get);
        calls(inheritable_set);
        calls(dynamic_get);
        calls(id);
        // A child of this task, polled by hand (it completes in one poll).
        let child = pin!(tasklocal::task(async { calls(inherited_get) }));
        let _ = child.poll(&mut Context::from_waker(noop_waker_ref()));
    }));
    let yields = |set| Yields { left: N, set };
    polls(yields(false), poll_bare);
    polls(TOKIO_LOCAL.scope(1, yields(false)), poll_tokio);
    polls(Task::isolated(yields(true)), poll_task);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Warm up, then measure: `spawn_await` is called twice for each.
    spawn_await_tokio(&rt);
    spawn_await_tasklocal(&rt);
    spawn_await_tasklocal_0(&rt);
    spawn_await_tasklocal_64(&rt);
    spawn_await_tokio(&rt);
    spawn_await_tasklocal(&rt);
    spawn_await_tasklocal_0(&rt);
    spawn_await_tasklocal_64(&rt);
}
