use std::sync::Arc;

use super::*;

#[test]
fn insert_replaces_in_place_and_remove_keeps_order() {
    let mut map = Map::default();
    map.insert("a".into(), "1".into());
    map.insert("b".into(), "2".into());
    map.insert("c".into(), "3".into());
    let shared = map.clone();
    map.insert("b".into(), "x".into());
    assert_eq!(map.remove("a").as_deref(), Some("1"));
    let entries: Vec<_> = map.iter().collect();
    assert_eq!(entries, [("b", "x"), ("c", "3")]);
    // The copy is untouched by writes to the other.
    let entries: Vec<_> = shared.iter().collect();
    assert_eq!(entries, [("a", "1"), ("b", "2"), ("c", "3")]);
}

#[cfg(feature = "log")]
#[test]
fn the_plain_cache_follows_every_change() {
    let mut map = Map::default();
    map.insert("a".into(), "1".into());
    assert!(map.is_plain());
    // Asked again: answered from the cache.
    assert!(map.is_plain());
    // Replaced in place: the cache is reset.
    map.insert("a".into(), "x y".into());
    assert!(!map.is_plain());
    let shared = map.clone();
    // Replaced in a copy: a new pair, the shared one keeps its answer.
    map.insert("a".into(), "2".into());
    assert!(map.is_plain());
    assert!(!shared.is_plain());
    map.insert("b c".into(), "3".into());
    assert!(!map.is_plain());
    map.remove("b c");
    assert!(map.is_plain());
}

#[test]
fn a_clone_shares_the_entries() {
    let mut map = Map::default();
    map.insert("k".into(), "v".into());
    let copy = map.clone();
    assert!(Arc::ptr_eq(&map.entries[0], &copy.entries[0]));
}
