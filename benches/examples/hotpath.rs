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
//! by 1,000,000 is the instructions of one call; `objdump -d -C` on the binary shows
//! them.

use std::cell::Cell;
use std::hint::black_box;

use tasklocal::Local;

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
}

tokio::task_local! {
    static TOKIO_LOCAL: u64;
}

static LOCAL: Local<u64> = Local::new();
static INHERITABLE: Local<u64> = Local::inheritable();

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

fn calls<R>(f: fn() -> R) {
    let f = black_box(f);
    for _ in 0..N {
        black_box(f());
    }
}

fn main() {
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
        calls(inheritable_set);
        calls(dynamic_get);
        calls(id);
    }));
}
