//! The MDC's map: its entries in insertion order, each shared between the copies of a
//! map (a copy clones pointers only) and written in place while unshared.

#[cfg(feature = "log")]
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

#[cfg(feature = "log")]
use super::escape;

/// One entry; shared between the copies of a map.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) key: String,
    pub(crate) value: String,
    /// Whether key and value are both [plain](escape::is_plain), once a `log` record
    /// has asked: [`UNKNOWN`], [`PLAIN`] or [`QUOTED`]. A cache, so that a log record does
    /// not scan every key and value again. An atomic because pairs are shared across
    /// threads; `Relaxed` is enough, since every thread that fills it in computes the
    /// same answer from the same unchanging texts (only a `&mut Pair` changes them,
    /// and resets it).
    #[cfg(feature = "log")]
    plain: AtomicU8,
}

#[cfg(feature = "log")]
const UNKNOWN: u8 = 0;
#[cfg(feature = "log")]
const PLAIN: u8 = 1;
#[cfg(feature = "log")]
const QUOTED: u8 = 2;

impl Pair {
    pub(super) fn new(key: String, value: String) -> Pair {
        Pair {
            key,
            value,
            #[cfg(feature = "log")]
            plain: AtomicU8::new(UNKNOWN),
        }
    }

    /// Replaces the value of a pair no other map shares.
    pub(super) fn set_value(&mut self, value: String) {
        self.value = value;
        #[cfg(feature = "log")]
        {
            *self.plain.get_mut() = UNKNOWN;
        }
    }

    /// Whether key and value can both be written as they are in a `key=value` text
    /// (see [`escape::is_plain`]).
    #[cfg(feature = "log")]
    pub(crate) fn is_plain(&self) -> bool {
        match self.plain.load(Ordering::Relaxed) {
            PLAIN => true,
            QUOTED => false,
            _ => {
                let plain = escape::is_plain(&self.key) && escape::is_plain(&self.value);
                let state = if plain { PLAIN } else { QUOTED };
                self.plain.store(state, Ordering::Relaxed);
                plain
            }
        }
    }
}

/// An MDC map: entries in insertion order. Cloning copies pointers only.
#[derive(Clone, Default, Debug)]
pub(crate) struct Map {
    pub(super) entries: Vec<Arc<Pair>>,
}

impl Map {
    pub(super) fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|pair| pair.key == key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|pair| pair.key == key)
            .map(|pair| pair.value.as_str())
    }

    pub(super) fn insert(&mut self, key: String, value: String) {
        match self.entries.iter_mut().find(|pair| pair.key == key) {
            Some(entry) => match Arc::get_mut(entry) {
                Some(pair) => pair.set_value(value),
                // Shared with another copy of the map: replace the pointer.
                None => *entry = Arc::new(Pair::new(key, value)),
            },
            None => self.entries.push(Arc::new(Pair::new(key, value))),
        }
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<String> {
        let pair = self.entries.remove(self.position(key)?);
        Some(Arc::try_unwrap(pair).map_or_else(|shared| shared.value.clone(), |pair| pair.value))
    }

    #[cfg(any(feature = "log", feature = "tracing"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every key and value is [plain](escape::is_plain) (cached per entry).
    #[cfg(feature = "log")]
    pub(crate) fn is_plain(&self) -> bool {
        self.entries.iter().all(|pair| pair.is_plain())
    }

    /// The entries in insertion order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.entries
            .iter()
            .map(|pair| (pair.key.as_str(), pair.value.as_str()))
    }
}
