//! SPEC.md 8b's thread-owner read with tasklocal's default features (no `tokio`), one
//! million calls each through a `black_box`ed function pointer, for counting
//! instructions exactly:
//!
//! ```text
//! cargo build --profile bench -p tasklocal-benches-lean --example hotpath_lean
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/hotpath_lean
//! callgrind_annotate --inclusive=yes cg.out | grep 'hotpath_lean::'
//! ```

use std::cell::Cell;
use std::hint::black_box;

use tasklocal::Local;

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
}

static LOCAL: Local<u64> = Local::new();
static INHERITABLE: Local<u64> = Local::inheritable();

const N: u64 = 1_000_000;

#[inline(never)]
fn std_get() -> u64 {
    STD_CELL.with(Cell::get)
}
#[inline(never)]
fn thread_owner_get() -> Option<u64> {
    LOCAL.get()
}
#[inline(never)]
fn thread_owner_inheritable_get() -> Option<u64> {
    INHERITABLE.get()
}
#[inline(never)]
fn thread_owner_set() {
    LOCAL.set(black_box(2))
}

fn calls<R>(f: fn() -> R) {
    let f = black_box(f);
    for _ in 0..N {
        black_box(f());
    }
}

fn main() {
    LOCAL.set(1);
    INHERITABLE.set(1);
    calls(std_get);
    calls(thread_owner_get);
    calls(thread_owner_inheritable_get);
    calls(thread_owner_set);
}
