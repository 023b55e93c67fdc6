//! How dynamic keys are kept: any `Hash + Eq` type, compared by type and value.
//!
//! The common key types — `&'static str`, `String` and the integers — are kept as
//! plain data ([`KeyRepr`]), so that a lookup compares bytes and never makes a dynamic
//! call; keys of other types are boxed behind [`DynKey`]. The index maps a key's hash
//! to the number of the cell that holds its value.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::cells::Cells;
use crate::value::{Small, Value};

/// Dynamic keys of one storage: the index and the cells of their values.
pub(crate) struct Dynamic {
    pub(crate) index: RefCell<HashMap<u64, Bucket, BuildHasherDefault<Prehashed>>>,
    pub(crate) cells: Cells<Value>,
    pub(crate) free: RefCell<Vec<usize>>,
    pub(crate) next: Cell<usize>,
    /// The last `&'static str` key found: its address, its length and its cell. Equal
    /// address and length prove an equal key, so a repeated lookup skips the index.
    pub(crate) recent: Cell<Recent>,
}

/// See [`Dynamic::recent`]; `cell == usize::MAX` when empty.
#[derive(Clone, Copy)]
pub(crate) struct Recent {
    addr: usize,
    len: usize,
    cell: usize,
}

impl Recent {
    pub(crate) const EMPTY: Recent = Recent {
        addr: 0,
        len: 0,
        cell: usize::MAX,
    };
}

/// The keys that share one hash (almost always one).
pub(crate) enum Bucket {
    One(KeyRepr, usize),
    Many(Vec<(KeyRepr, usize)>),
}

impl Dynamic {
    /// The cell number of `key`, if it has one.
    #[inline(always)]
    pub(crate) fn find<K: Hash + Eq + Send + Sync + 'static>(&self, key: &K) -> Option<usize> {
        let key = KeyRef::of(key);
        if let KeyRef::Static(s) = key {
            let recent = self.recent.get();
            // Pointer to number: only compared, never turned back into a pointer.
            if recent.addr == s.as_ptr() as usize && recent.len == s.len() {
                return Some(recent.cell);
            }
        }
        self.find_in_index(key)
    }

    #[inline(never)]
    fn find_in_index(&self, key: KeyRef<'_>) -> Option<usize> {
        let index = self.index.try_borrow().ok()?;
        let n = match index.get(&key.hash())? {
            Bucket::One(repr, n) => key.matches(repr).then_some(*n),
            Bucket::Many(keys) => keys
                .iter()
                .find(|(repr, _)| key.matches(repr))
                .map(|(_, n)| *n),
        }?;
        if let KeyRef::Static(s) = key {
            self.recent.set(Recent {
                addr: s.as_ptr() as usize,
                len: s.len(),
                cell: n,
            });
        }
        Some(n)
    }

    /// Forgets every key (their cells must be empty); returns the index to be dropped.
    pub(crate) fn clear(&self) -> Option<HashMap<u64, Bucket, BuildHasherDefault<Prehashed>>> {
        self.recent.set(Recent::EMPTY);
        self.next.set(0);
        if let Ok(mut free) = self.free.try_borrow_mut() {
            free.clear();
        }
        let mut index = self.index.try_borrow_mut().ok()?;
        (!index.is_empty()).then(|| std::mem::take(&mut *index))
    }

    /// The cell number of `key`, allocated if needed.
    pub(crate) fn find_or_insert<K: Hash + Eq + Send + Sync + 'static>(&self, key: K) -> usize {
        if let Some(n) = self.find(&key) {
            return n;
        }
        let n = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let n = self.next.get();
            self.next.set(n + 1);
            n
        });
        let hash = KeyRef::of(&key).hash();
        let repr = KeyRepr::new(key);
        let mut index = self.index.borrow_mut();
        match index.remove(&hash) {
            None => index.insert(hash, Bucket::One(repr, n)),
            Some(Bucket::One(other, m)) => {
                index.insert(hash, Bucket::Many(vec![(other, m), (repr, n)]))
            }
            Some(Bucket::Many(mut keys)) => {
                keys.push((repr, n));
                index.insert(hash, Bucket::Many(keys))
            }
        };
        n
    }

    /// Forgets `key`, freeing its cell number `n`; the cell must be empty. Returns the
    /// key, to be dropped by the caller with no borrow held.
    pub(crate) fn forget<K: Hash + Eq + Send + Sync + 'static>(
        &self,
        key: &K,
        n: usize,
    ) -> Option<KeyRepr> {
        self.recent.set(Recent::EMPTY);
        let key = KeyRef::of(key);
        let hash = key.hash();
        let mut index = self.index.borrow_mut();
        let removed = match index.remove(&hash)? {
            Bucket::One(repr, _) => repr,
            Bucket::Many(mut keys) => {
                let at = keys.iter().position(|(repr, _)| key.matches(repr))?;
                let (repr, _) = keys.swap_remove(at);
                match keys.len() {
                    0 => {}
                    1 => {
                        let (other, m) = keys.remove(0);
                        index.insert(hash, Bucket::One(other, m));
                    }
                    _ => {
                        index.insert(hash, Bucket::Many(keys));
                    }
                }
                repr
            }
        };
        drop(index);
        self.free.borrow_mut().push(n);
        Some(removed)
    }
}

/// A stored key.
pub(crate) enum KeyRepr {
    Static(&'static str),
    Owned(Box<str>),
    Small(Small),
    Other(Box<dyn DynKey>),
}

/// A key looked up, borrowed.
#[derive(Clone, Copy)]
enum KeyRef<'a> {
    Static(&'a str),
    Owned(&'a str),
    Small(Small),
    Other(&'a dyn DynKey),
}

impl KeyRepr {
    fn new<K: Hash + Eq + Send + Sync + 'static>(key: K) -> KeyRepr {
        let mut key = Some(key);
        let any = &mut key as &mut dyn Any;
        if let Some(s) = any
            .downcast_mut::<Option<&'static str>>()
            .and_then(Option::take)
        {
            return KeyRepr::Static(s);
        }
        if let Some(s) = any.downcast_mut::<Option<String>>().and_then(Option::take) {
            return KeyRepr::Owned(s.into_boxed_str());
        }
        match key.map(Small::new) {
            Some(Ok(small)) => KeyRepr::Small(small),
            Some(Err(key)) => KeyRepr::Other(Box::new(key)),
            // `key` was taken only by a branch that returned.
            None => KeyRepr::Small(Small::Unit(())),
        }
    }
}

impl<'a> KeyRef<'a> {
    #[inline(always)]
    fn of<K: Hash + Eq + Send + Sync + 'static>(key: &'a K) -> KeyRef<'a> {
        let any = key as &dyn Any;
        if let Some(s) = any.downcast_ref::<&'static str>() {
            return KeyRef::Static(s);
        }
        if let Some(s) = any.downcast_ref::<String>() {
            return KeyRef::Owned(s);
        }
        match Small::of_ref(key) {
            Some(small) => KeyRef::Small(small),
            None => KeyRef::Other(key),
        }
    }

    /// The hash: of the kind of key and its content; for other types, of the type and
    /// the value.
    #[inline(always)]
    fn hash(&self) -> u64 {
        let mut hasher = KeyHasher::default();
        match self {
            KeyRef::Static(s) => {
                hasher.write_u8(0);
                s.hash(&mut hasher);
            }
            KeyRef::Owned(s) => {
                hasher.write_u8(1);
                s.hash(&mut hasher);
            }
            KeyRef::Small(small) => {
                let (tag, bits) = small.bits();
                hasher.write_u8(2 + tag);
                hasher.write_u64(bits);
            }
            KeyRef::Other(key) => hasher.write_u64(key.dyn_hash()),
        }
        hasher.finish_mixed()
    }

    #[inline(always)]
    fn matches(&self, repr: &KeyRepr) -> bool {
        match (self, repr) {
            (KeyRef::Static(a), KeyRepr::Static(b)) => {
                (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
            }
            (KeyRef::Owned(a), KeyRepr::Owned(b)) => *a == &**b,
            (KeyRef::Small(a), KeyRepr::Small(b)) => a.bits() == b.bits(),
            (KeyRef::Other(a), KeyRepr::Other(b)) => a.dyn_eq(&**b),
            _ => false,
        }
    }
}

/// A dynamic key of a type without a plain-data form.
pub(crate) trait DynKey: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn dyn_eq(&self, other: &dyn DynKey) -> bool;
    fn dyn_hash(&self) -> u64;
}

impl<K: Hash + Eq + Send + Sync + 'static> DynKey for K {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn dyn_eq(&self, other: &dyn DynKey) -> bool {
        other.as_any().downcast_ref::<K>() == Some(self)
    }

    fn dyn_hash(&self) -> u64 {
        let mut hasher = KeyHasher::default();
        std::any::TypeId::of::<K>().hash(&mut hasher);
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// The multiply-rotate hash of rustc's `FxHasher`, for keys hashed once per access.
/// The index is private to one owner, so HashDoS does not reach beyond its own keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }

    /// The hash with its bits mixed, so that both its low bits (the bucket) and its
    /// high bits (the tag) of the index's table vary.
    #[inline(always)]
    fn finish_mixed(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 32);
        h.wrapping_mul(SEED) ^ (h >> 29)
    }
}

impl Hasher for KeyHasher {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline(always)]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline(always)]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline(always)]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline(always)]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hasher of the index, whose keys are hashes already.
#[derive(Default, Clone, Copy)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` hashes are ever written; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline(always)]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of<K: Hash + Eq + Send + Sync + 'static>(k: &K) -> u64 {
        KeyRef::of(k).hash()
    }

    #[test]
    fn keys_compare_by_type_and_value() {
        let s = KeyRepr::new("k");
        assert!(KeyRef::of(&"k").matches(&s));
        assert!(!KeyRef::of(&String::from("k")).matches(&s));
        assert!(KeyRef::of(&String::from("k")).matches(&KeyRepr::new(String::from("k"))));
        assert!(KeyRef::of(&1u64).matches(&KeyRepr::new(1u64)));
        assert!(!KeyRef::of(&1u32).matches(&KeyRepr::new(1u64)));
        assert!(!KeyRef::of(&-1i64).matches(&KeyRepr::new(u64::MAX)));
        assert!(KeyRef::of(&(1u8, "x")).matches(&KeyRepr::new((1u8, "x"))));
        assert!(!KeyRef::of(&(1u8, "x")).matches(&KeyRepr::new((2u8, "x"))));
        assert_eq!(hash_of(&"k"), hash_of(&"k"));
        assert_ne!(hash_of(&"k"), hash_of(&String::from("k")));
    }

    #[test]
    fn the_recent_key_never_outlives_its_cell() {
        crate::Snapshot::empty().run(|| {
            crate::set("a", 1u32);
            assert_eq!(crate::get::<_, u32>(&"a"), Some(1)); // remembered
            assert!(crate::remove(&"a"));
            crate::set("b", 2u32); // takes the freed cell
            assert_eq!(crate::get::<_, u32>(&"a"), None);
            assert_eq!(crate::get::<_, u32>(&"b"), Some(2));
            crate::reset();
            crate::set("c", 3u32);
            assert_eq!(crate::get::<_, u32>(&"b"), None);
            // The same text at another address is the same key.
            let other: &'static str = Box::leak(String::from("c").into_boxed_str());
            assert_eq!(crate::get::<_, u32>(&other), Some(3));
        });
    }

    #[test]
    fn colliding_hashes_share_a_bucket() {
        let d = Dynamic {
            index: RefCell::new(HashMap::default()),
            cells: Cells::new(),
            free: RefCell::new(Vec::new()),
            next: Cell::new(0),
            recent: Cell::new(Recent::EMPTY),
        };
        let a = d.find_or_insert(1u64);
        let b = d.find_or_insert("one");
        // Force a collision by putting both under one hash.
        let mut index = d.index.borrow_mut();
        let one = index.remove(&hash_of(&1u64)).unwrap();
        let two = index.remove(&hash_of(&"one")).unwrap();
        let (Bucket::One(r1, n1), Bucket::One(r2, n2)) = (one, two) else {
            panic!()
        };
        index.insert(hash_of(&1u64), Bucket::Many(vec![(r1, n1), (r2, n2)]));
        drop(index);
        assert_eq!(d.find(&1u64), Some(a));
        assert!(d.forget(&1u64, a).is_some());
        assert_eq!(d.find(&1u64), None);
        assert_ne!(a, b);
    }
}
