//! Dynamic keys: go-tls's `Set`/`Get`/`Del` with keys of any type.

use std::hash::Hash;

use crate::current::{self, Here};
use crate::error::{panic_access, AccessError, Kind};
use crate::key::KeyRepr;
use crate::once::Once;
use crate::storage::Value;

/// A bound every dynamic key meets: `Hash + Eq + Send + Sync + 'static`.
pub trait Key: Hash + Eq + Send + Sync + 'static {}
impl<K: Hash + Eq + Send + Sync + 'static> Key for K {}

/// Sets the value of a dynamic key in the current storage, dropping the old value
/// (go-tls `Set`). Keys are equal only if they have the same type and compare equal.
///
/// ```
/// tasklocal::set("user", String::from("ada"));
/// assert_eq!(tasklocal::get::<_, String>(&"user").as_deref(), Some("ada"));
/// // Another key type is another key.
/// assert_eq!(tasklocal::get::<_, String>(&String::from("user")), None);
/// ```
///
/// # Panics
///
/// Where [`try_set`] returns an error: in a tokio task without storage of its own,
/// and for a key whose value a [`with`] closure is reading right now.
#[track_caller]
pub fn set<K: Key, V: Send + 'static>(key: K, value: V) {
    if let Err(err) = try_set(key, value) {
        panic_access(err)
    }
}

/// Like [`set`], returning an error instead of panicking.
///
/// ```
/// assert!(tasklocal::try_set(1u8, "one").is_ok());
/// ```
pub fn try_set<K: Key, V: Send + 'static>(key: K, value: V) -> Result<(), AccessError> {
    let old = current::write(|storage| {
        let dynamic = storage.dynamic();
        let n = dynamic.find_or_insert(key);
        let mut slot = dynamic
            .cells
            .get_or_create(n)
            .try_borrow_mut()
            .map_err(|_| AccessError::new(Kind::Borrowed))?;
        Ok::<_, AccessError>(slot.replace(Value::new(value)))
    })??;
    // Dropped with no borrow held: its `Drop` may use the API.
    drop(old);
    Ok(())
}

/// A clone of the value of a dynamic key (go-tls `Get`); `None` when unset or when
/// the value is of another type than `V`.
///
/// ```
/// tasklocal::set("n", 5u64);
/// assert_eq!(tasklocal::get(&"n"), Some(5u64));
/// assert_eq!(tasklocal::get::<_, u32>(&"n"), None);
/// ```
#[inline(always)]
pub fn get<K: Key, V: Clone + 'static>(key: &K) -> Option<V> {
    match current::with_direct_storage(|storage| Some(lookup(storage, key))) {
        Some(value) => value,
        // A tail call: the hit path makes no call and needs no stack frame.
        None => get_miss(key),
    }
}

/// [`get`] when the current owner is not a scoped owner with a storage.
#[inline(never)]
fn get_miss<K: Key, V: Clone + 'static>(key: &K) -> Option<V> {
    current::with_storage(|storage| lookup(storage, key))
}

/// A clone of the value of `key` in `storage`.
#[inline(always)]
fn lookup<K: Key, V: Clone + 'static>(storage: &crate::storage::Storage, key: &K) -> Option<V> {
    let dynamic = storage.dynamic_if_created()?;
    let slot = dynamic.cells.get(dynamic.find(key)?)?.try_borrow().ok()?;
    slot.as_ref()?.downcast_ref::<V>().cloned()
}

/// Calls `f` with a reference to the value of a dynamic key, without cloning.
///
/// ```
/// tasklocal::set("name", String::from("ada"));
/// let len = tasklocal::with(&"name", |name: Option<&String>| name.map(String::len));
/// assert_eq!(len, Some(3));
/// ```
///
/// # Panics
///
/// Never for reads of another key; reading a key while an enclosing call on this
/// thread has its cell mutably borrowed cannot happen (dynamic values have no
/// `with_mut`), so `with` does not panic.
#[inline]
pub fn with<K: Key, V: 'static, R>(key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
    let mut f = Once::new(f);
    let r = current::with_storage(|storage| {
        let dynamic = storage.dynamic_if_created()?;
        let cell = dynamic.cells.get(dynamic.find(key)?)?;
        let slot = cell.try_borrow().ok()?;
        let value = slot.as_ref()?.downcast_ref::<V>()?;
        f.take().map(|f| f(Some(value)))
    });
    f.or(r, |f| f(None))
}

/// Removes the value of a dynamic key, whatever its type, and drops it (go-tls
/// `Del`). Returns whether there was one.
///
/// ```
/// tasklocal::set("k", 1u8);
/// assert!(tasklocal::remove(&"k"));
/// assert!(!tasklocal::remove(&"k"));
/// ```
///
/// # Panics
///
/// Where [`try_remove`] returns an error: in a tokio task without storage of its
/// own, and for a key whose value a [`with`] closure is reading right now.
#[track_caller]
pub fn remove<K: Key>(key: &K) -> bool {
    try_remove(key).unwrap_or_else(|err| panic_access(err))
}

/// Like [`remove`], returning an error instead of panicking.
///
/// ```
/// assert_eq!(tasklocal::try_remove(&"never set"), Ok(false));
/// ```
pub fn try_remove<K: Key>(key: &K) -> Result<bool, AccessError> {
    let old = take_if(key, |_| true)?;
    let removed = old.is_some();
    drop(old);
    Ok(removed)
}

/// Removes the value of a dynamic key and returns it; with a type other than the
/// stored value's, returns `None` and leaves the value in place.
///
/// ```
/// tasklocal::set("k", 1u8);
/// assert_eq!(tasklocal::take::<_, u32>(&"k"), None);
/// assert_eq!(tasklocal::take::<_, u8>(&"k"), Some(1));
/// assert_eq!(tasklocal::take::<_, u8>(&"k"), None);
/// ```
///
/// # Panics
///
/// Where [`try_take`] returns an error: in a tokio task without storage of its own,
/// and for a key whose value a [`with`] closure is reading right now.
#[track_caller]
pub fn take<K: Key, V: 'static>(key: &K) -> Option<V> {
    try_take(key).unwrap_or_else(|err| panic_access(err))
}

/// Like [`take`], returning an error instead of panicking.
///
/// ```
/// assert_eq!(tasklocal::try_take::<_, u8>(&"never set"), Ok(None));
/// ```
pub fn try_take<K: Key, V: 'static>(key: &K) -> Result<Option<V>, AccessError> {
    let old = take_if(key, |value| value.is::<V>())?;
    Ok(old.and_then(|(value, _key)| value.downcast::<V>().ok()))
}

/// Takes the value of `key` out if `keep` approves of it, and forgets the key.
fn take_if<K: Key>(
    key: &K,
    take: impl FnOnce(&Value) -> bool,
) -> Result<Option<(Value, Option<KeyRepr>)>, AccessError> {
    current::read(|here| {
        let storage = match here {
            Here::Storage(storage) => storage,
            Here::Seed(_) => return Ok(None),
            Here::Denied(kind) => return Err(AccessError::new(kind)),
        };
        let Some(dynamic) = storage.dynamic_if_created() else {
            return Ok(None);
        };
        let Some(n) = dynamic.find(key) else {
            return Ok(None);
        };
        let Some(cell) = dynamic.cells.get(n) else {
            return Ok(None);
        };
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| AccessError::new(Kind::Borrowed))?;
        if !slot.as_ref().is_some_and(take) {
            return Ok(None);
        }
        let value = slot.take();
        drop(slot);
        Ok(value.map(|value| (value, dynamic.forget(key, n))))
    })
}
