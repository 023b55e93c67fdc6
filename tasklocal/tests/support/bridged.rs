//! A bridge that runs an owner of its own inside its `enter`: such an owner is entered
//! with no bridge (bridges would recurse), which the bridges of the crate must allow
//! for.

use std::cell::Cell;
use std::sync::Once;

use tasklocal::bridge::{self, Bridge};
use tasklocal::Snapshot;

thread_local! {
    /// What the bridge runs at the next switch on this thread (other threads, and
    /// other tests, see nothing of it).
    static NEXT: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Runs `f` in a fresh owner of its own from a bridge's `enter`, at the next owner
/// switch on this thread — after the bridges registered before this one (call this
/// after installing those) have entered the owner switched to.
pub fn run_an_owner_at_the_next_switch(f: fn()) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| bridge::register(RunsAnOwner).unwrap());
    NEXT.with(|next| next.set(Some(f)));
}

/// The bridge.
struct RunsAnOwner;

impl Bridge for RunsAnOwner {
    fn enter(&self) {
        if let Some(f) = NEXT.with(Cell::take) {
            Snapshot::empty().run(f);
        }
    }

    fn exit(&self) {}
}
