//! The logging context: an inheritable string map that every log line of the current
//! owner carries (SLF4J's MDC, *Mapped Diagnostic Context*).
//!
//! Put a request id, a user, a tenant into the MDC once, at the edge; every task,
//! thread and pool job the request spawns through tasklocal sees it, and the log
//! integrations (feature `log`: `tasklocal::log::MdcLogger`; feature `tracing`:
//! `tasklocal::tracing::MdcFormat`) print it on every line with
//! no change at the call sites.
//!
//! ```
//! use tasklocal::mdc;
//!
//! mdc::insert("request_id", "req-7");
//! mdc::insert("tenant", "acme");
//!
//! let child = tasklocal::thread::spawn(|| {
//!     // Inherited as of the spawn; the child's writes stay in the child.
//!     mdc::insert("step", "charge");
//!     mdc::to_vec()
//! });
//! assert_eq!(
//!     child.join().unwrap(),
//!     [("request_id", "req-7"), ("tenant", "acme"), ("step", "charge")]
//!         .map(|(k, v)| (k.to_string(), v.to_string()))
//! );
//! assert_eq!(mdc::get("step"), None);
//!
//! mdc::scope([("user", "ada")], || {
//!     assert_eq!(mdc::get("user").as_deref(), Some("ada"));
//! });
//! assert_eq!(mdc::get("user"), None);
//! ```
//!
//! # Semantics
//!
//! * The map belongs to the current owner (task, [`Snapshot::run`](crate::Snapshot::run),
//!   thread), like every [`Local`]: it is one inheritable key. A child owner — made by
//!   [`task`](crate::task), `spawn`, `spawn_blocking`, [`thread::spawn`](crate::thread::spawn),
//!   [`Snapshot`](crate::Snapshot), the rayon helpers, or a task in automatic mode —
//!   starts with its creator's map as of its creation. Afterwards neither sees the
//!   other's writes.
//! * Creating a child costs O(1) whatever the size of the map: the map is shared, and
//!   copied on the first write on either side (the copy shares the keys and values
//!   themselves, it only copies pointers).
//! * Entries keep their insertion order; [`insert`] of a present key replaces its value
//!   in place. [`for_each`] visits the entries in that order without allocating.
//! * Lookups are linear: the MDC is made for the handful of entries a log line carries
//!   (tens, not thousands).
//! * Reads never panic. In a tokio task without storage of its own (plain
//!   `tokio::spawn`) they see an empty map, and writes panic like
//!   [`Local::set`](crate::Local::set); the `try_` forms return the
//!   [`AccessError`] instead.
//! * The functions may be called from anywhere, also from inside a [`for_each`]
//!   closure: that closure goes on seeing the map as it was when `for_each` started.

use crate::current::{self, Here};
use crate::error::{panic_access, AccessError};
use crate::local::Local;

/// The current owner's map.
static MDC: Local<Map> = Local::inheritable();

/// Called after every change of the current owner's map, once set: how the
/// `log-mdc` bridge shows changes at once. (A function pointer: the core knows no
/// integration.)
#[cfg(feature = "log-mdc")]
static ON_CHANGE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the function called after every change of the current owner's map.
#[cfg(feature = "log-mdc")]
pub(crate) fn on_change(f: fn()) {
    let _ = ON_CHANGE.set(f);
}

/// The current owner's map changed.
#[inline]
pub(crate) fn changed() {
    #[cfg(feature = "log-mdc")]
    if let Some(f) = ON_CHANGE.get() {
        f();
    }
}

/// Calls `f` with the current map (`None` when there is none), holding no borrow of
/// the storage: `f` may use the whole API.
pub(crate) fn with_map<R>(f: impl FnOnce(Option<&Map>) -> R) -> R {
    let mut f = Some(f);
    match MDC.with_shared(|map| f.take().map(|f| f(map))) {
        Ok(Some(r)) => r,
        // Only while the map is being written, which runs no user code: not reached.
        _ => (f.take().expect("`f` not called"))(None),
    }
}

/// [`with_map`] read in place (`Local::with_in_place`): `f` runs no user code, writes nothing.
#[cfg(feature = "http")]
pub(crate) fn with_map_in_place<R>(f: impl FnOnce(Option<&Map>) -> R) -> R {
    let mut f = Some(f);
    match MDC.with_in_place(|map| f.take().map(|f| f(map))) {
        Ok(Some(r)) => r,
        _ => (f.take().expect("`f` not called"))(None), // Not reached, as in `with_map`.
    }
}

/// Sets `snapshot`'s MDC to `pairs` (in order; a repeated key keeps its first place and
/// its last value), with no owner run: how `http::extract` seeds a request.
#[cfg(feature = "http")]
pub(crate) fn seed(
    snapshot: &mut crate::Snapshot,
    pairs: impl ExactSizeIterator<Item = (String, String)>,
) {
    // With the room a `Vec`'s first growth gives (4), so that the fields a handler
    // adds to a request's few do not move the entries at once.
    let mut map = Map {
        entries: Vec::with_capacity(pairs.len().max(4)),
    };
    for (key, value) in pairs {
        map.insert(key, value);
    }
    snapshot.set_value(&MDC, map);
}

/// Whether the current owner may write (not a tokio task without storage of its own).
fn writable() -> Result<(), AccessError> {
    current::read(|here| match here {
        Here::Denied(kind) => Err(AccessError::new(kind)),
        _ => Ok(()),
    })
}

/// Sets `key` to `value` (SLF4J `MDC.put`). A present key keeps its place and gets the
/// new value; a new key goes last.
///
/// ```
/// use tasklocal::mdc;
/// mdc::insert("a", "1");
/// mdc::insert("b", "2");
/// mdc::insert("a", "3");
/// assert_eq!(mdc::get("a").as_deref(), Some("3"));
/// let keys: Vec<String> = mdc::to_vec().into_iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["a", "b"]);
/// ```
///
/// # Panics
///
/// Where [`try_insert`] returns an error: in a tokio task without storage of its own.
#[track_caller]
pub fn insert(key: impl Into<String>, value: impl Into<String>) {
    if let Err(err) = try_insert(key, value) {
        panic_access(err)
    }
}

/// Like [`insert`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::mdc::try_insert("request_id", "r1").is_ok());
/// ```
pub fn try_insert(key: impl Into<String>, value: impl Into<String>) -> Result<(), AccessError> {
    // Convert first: `Into` is user code and must not run while the map is lent out.
    let mut pair = Some((key.into(), value.into()));
    let write = |map: &mut Map| {
        if let Some((key, value)) = pair.take() {
            map.insert(key, value);
        }
    };
    // The usual case — the owner's own map, shared with no child — is written in
    // place; `write` runs no user code (it only drops strings), so it may.
    let inserted = match MDC.with_mut_in_place(write) {
        Ok(()) => Some(()),
        Err(write) => MDC.try_with_mut(write)?,
    };
    if let (None, Some((key, value))) = (inserted, pair) {
        let mut map = Map::default();
        map.insert(key, value);
        MDC.try_set(map)?;
    }
    changed();
    Ok(())
}

/// Inserts every pair, in order, as [`insert`] would; the map is copied at most once.
///
/// ```
/// use tasklocal::mdc;
/// mdc::extend([("request_id", "r1"), ("tenant", "acme")]);
/// assert_eq!(mdc::get("tenant").as_deref(), Some("acme"));
/// ```
///
/// # Panics
///
/// Where [`try_extend`] returns an error: in a tokio task without storage of its own.
#[track_caller]
pub fn extend<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) {
    if let Err(err) = try_extend(pairs) {
        panic_access(err)
    }
}

/// Like [`extend`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::mdc::try_extend([("a", "1")]).is_ok());
/// ```
pub fn try_extend<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Result<(), AccessError> {
    // Convert first: `Into` is user code and must not run while the map is lent out.
    let mut pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    if pairs.is_empty() {
        return writable();
    }
    let write = |map: &mut Map| {
        for (key, value) in pairs.drain(..) {
            map.insert(key, value);
        }
    };
    // In place when the map is the owner's own, as in `try_insert`.
    let inserted = match MDC.with_mut_in_place(write) {
        Ok(()) => Some(()),
        Err(write) => MDC.try_with_mut(write)?,
    };
    if inserted.is_none() {
        let mut map = Map::default();
        for (key, value) in pairs {
            map.insert(key, value);
        }
        MDC.try_set(map)?;
    }
    changed();
    Ok(())
}

/// The value of `key` (SLF4J `MDC.get`).
///
/// ```
/// use tasklocal::mdc;
/// assert_eq!(mdc::get("user"), None);
/// mdc::insert("user", "ada");
/// assert_eq!(mdc::get("user").as_deref(), Some("ada"));
/// ```
pub fn get(key: &str) -> Option<String> {
    // In place: the closure runs no user code.
    match MDC.with_in_place(|map| map?.get(key).map(str::to_owned)) {
        Ok(value) => value,
        Err(_) => with_map(|map| map?.get(key).map(str::to_owned)),
    }
}

/// Removes `key` and returns its value (SLF4J `MDC.remove`); the other entries keep
/// their order.
///
/// ```
/// use tasklocal::mdc;
/// mdc::insert("user", "ada");
/// assert_eq!(mdc::remove("user").as_deref(), Some("ada"));
/// assert_eq!(mdc::remove("user"), None);
/// ```
///
/// # Panics
///
/// Where [`try_remove`] returns an error: in a tokio task without storage of its own.
#[track_caller]
pub fn remove(key: &str) -> Option<String> {
    try_remove(key).unwrap_or_else(|err| panic_access(err))
}

/// Like [`remove`], returning an error instead of panicking.
///
/// ```
/// assert_eq!(tasklocal::mdc::try_remove("nothing"), Ok(None));
/// ```
pub fn try_remove(key: &str) -> Result<Option<String>, AccessError> {
    // In place when the map is the owner's own (as in `try_insert`): removing nothing
    // from it is not a change.
    match MDC.with_mut_in_place(|map| map.remove(key)) {
        Ok(None) => return Ok(None),
        Ok(removed) => {
            changed();
            return Ok(removed);
        }
        Err(_) => {}
    }
    let present = MDC.with_in_place(|map| map.is_some_and(|map| map.position(key).is_some()))?;
    if !present {
        // Nothing to remove: an inherited map is not copied for it. In a task without
        // storage, this is still the write it was meant to be.
        return writable().map(|()| None);
    }
    let removed = MDC.try_with_mut(|map| map.remove(key))?.flatten();
    changed();
    Ok(removed)
}

/// Removes every entry (SLF4J `MDC.clear`).
///
/// ```
/// use tasklocal::mdc;
/// mdc::insert("user", "ada");
/// mdc::clear();
/// assert!(mdc::to_vec().is_empty());
/// ```
///
/// # Panics
///
/// Where [`try_clear`] returns an error: in a tokio task without storage of its own.
#[track_caller]
pub fn clear() {
    if let Err(err) = try_clear() {
        panic_access(err)
    }
}

/// Like [`clear`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::mdc::try_clear().is_ok());
/// ```
pub fn try_clear() -> Result<(), AccessError> {
    MDC.try_take()?;
    changed();
    Ok(())
}

/// Runs `f` with `pairs` inserted (as [`extend`] would) on top of the current map, then
/// restores exactly the map there was before — also when `f` panics. Whatever `f`
/// changes in the map is undone too; children spawned by `f` keep what they saw.
///
/// ```
/// use tasklocal::mdc;
/// mdc::insert("request_id", "r1");
/// let seen = mdc::scope([("user", "ada"), ("request_id", "r2")], || {
///     mdc::insert("step", "1");
///     mdc::to_vec()
/// });
/// assert_eq!(seen.len(), 3);
/// assert_eq!(mdc::to_vec(), [("request_id".to_string(), "r1".to_string())]);
/// ```
///
/// # Panics
///
/// Where [`try_scope`] returns an error (in a tokio task without storage of its own),
/// and when `f` panics.
#[track_caller]
pub fn scope<K: Into<String>, V: Into<String>, R>(
    pairs: impl IntoIterator<Item = (K, V)>,
    f: impl FnOnce() -> R,
) -> R {
    try_scope(pairs, f).unwrap_or_else(|err| panic_access(err))
}

/// Like [`scope`], returning an error instead of panicking when the pairs cannot be
/// bound; `f` is not called then.
///
/// ```
/// assert_eq!(tasklocal::mdc::try_scope([("k", "v")], || 1), Ok(1));
/// ```
pub fn try_scope<K: Into<String>, V: Into<String>, R>(
    pairs: impl IntoIterator<Item = (K, V)>,
    f: impl FnOnce() -> R,
) -> Result<R, AccessError> {
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let mut map = with_map(|map| map.cloned().unwrap_or_default());
    for (key, value) in pairs {
        map.insert(key, value);
    }
    let old = MDC.try_replace(map)?;
    let _restore = Restore { old: Some(old) };
    changed();
    Ok(f())
}

/// Puts the map from before a [`scope`] back, also by unwinding.
struct Restore {
    old: Option<Option<Map>>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Errors cannot happen here (the map is not lent out while user code runs);
        // if one did, there would be nothing better to do than to keep going.
        let _undone: Result<(), AccessError> = match self.old.take() {
            Some(Some(old)) => MDC.try_replace(old).map(drop),
            Some(None) => MDC.try_take().map(drop),
            None => Ok(()),
        };
        changed();
    }
}

/// Calls `f` with each entry, in insertion order, without allocating. `f` sees the map
/// as it was when `for_each` was called, even if it changes the map itself.
///
/// ```
/// use tasklocal::mdc;
/// mdc::extend([("request_id", "r1"), ("tenant", "acme")]);
/// let mut line = String::new();
/// mdc::for_each(|k, v| line.push_str(&format!(" {k}={v}")));
/// assert_eq!(line, " request_id=r1 tenant=acme");
/// ```
pub fn for_each(mut f: impl FnMut(&str, &str)) {
    with_map(|map| {
        for (key, value) in map.into_iter().flat_map(Map::iter) {
            f(key, value);
        }
    })
}

/// The entries, in insertion order.
///
/// ```
/// use tasklocal::mdc;
/// mdc::insert("user", "ada");
/// assert_eq!(mdc::to_vec(), [("user".to_string(), "ada".to_string())]);
/// ```
pub fn to_vec() -> Vec<(String, String)> {
    with_map(|map| {
        map.into_iter()
            .flat_map(Map::iter)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// How the log integrations write MDC keys and values so that no key or value can
/// forge a field or a line.
#[cfg(any(feature = "log", feature = "tracing"))]
pub(crate) mod escape;

mod map;
pub(crate) use map::Map;

#[cfg(test)]
mod tests;
