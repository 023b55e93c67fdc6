//! The keys the reentrancy tests borrow, the other keys they use from inside the
//! closures, and the assertions that an access was refused because of the borrow.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tasklocal::{AccessError, Local};

use super::message;

/// `f` panics, with a message saying the value is borrowed by `with`/`with_mut`.
#[track_caller]
pub fn assert_panics_borrowed(what: &str, f: impl FnOnce()) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("`{what}` did not panic"),
        Err(payload) => {
            let msg = message(payload);
            assert!(
                msg.starts_with("tasklocal:") && msg.contains("borrowed") && msg.contains("with"),
                "`{what}` panicked with an unclear message: {msg:?}"
            );
        }
    }
}

#[track_caller]
pub fn assert_borrowed<T: std::fmt::Debug>(what: &str, result: Result<T, AccessError>) {
    match result {
        Ok(v) => panic!("`{what}` succeeded: {v:?}"),
        Err(err) => {
            assert!(err.is_borrowed(), "`{what}`: {err:?}");
            assert!(
                !err.is_no_storage() && !err.is_destroyed(),
                "`{what}`: {err:?}"
            );
        }
    }
}

// The keys the closures borrow.
pub static PLAIN: Local<String> = Local::new();
pub static INH: Local<String> = Local::inheritable();
pub static INIT: Local<Vec<u32>> = Local::with_initial(|| vec![0]);
pub static INH_INIT: Local<Vec<u32>> = Local::inheritable_with_initial(|| vec![0]);

// The other keys, used from inside the closures.
pub static O_PLAIN: Local<u64> = Local::new();
pub static O_INH: Local<String> = Local::inheritable();
pub static O_INIT: Local<u32> = Local::with_initial(|| 7);
pub static O_INH_INIT: Local<u32> = Local::inheritable_with_initial(|| 8);
