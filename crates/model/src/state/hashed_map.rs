//! A persistent map that keeps its own share of the state hash: every
//! insert adds its entry's hash, every removal or replacement subtracts the
//! old one, so the map's hash is always the sum over what it holds and
//! State's hash is the sum over its maps.

use crate::hash::{entry_hash, Family, KeyHasher, StateHash};
use crate::tree::{NotAscending, SortedBuilder, TreeMap};
use std::borrow::Borrow;
use std::hash::Hash;

#[derive(Clone)]
pub(crate) struct HashedMap<K, V> {
    map: TreeMap<K, V>,
    family: Family,
    hash: StateHash,
}

impl<K: Ord + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for HashedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedMap")
            .field("family", &self.family)
            .field("len", &self.map.len())
            .field("hash", &self.hash)
            .finish()
    }
}

impl<K: Ord + Clone + Hash, V: Clone + Hash> HashedMap<K, V> {
    pub fn new(family: Family) -> Self {
        HashedMap {
            map: TreeMap::new(),
            family,
            hash: StateHash::default(),
        }
    }

    pub fn as_map(&self) -> &TreeMap<K, V> {
        &self.map
    }

    /// The sum of its entries' hashes.
    pub fn hash(&self) -> StateHash {
        self.hash
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: Ord + ?Sized,
        K: Borrow<Q>,
    {
        self.map.get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: Ord + ?Sized,
        K: Borrow<Q>,
    {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        // The key is hashed once, before it moves into the map, for both
        // the new entry and the one it replaces.
        let h = KeyHasher::new(self.family, &key);
        self.hash.add(h.with(&value));
        let old = self.map.insert(key, value);
        if let Some(o) = &old {
            self.hash.sub(h.with(o));
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        Q: Ord + ?Sized,
        K: Borrow<Q>,
    {
        let (k, old) = self.map.remove_with_key(key)?;
        self.hash.sub(entry_hash(self.family, &k, &old));
        Some(old)
    }

    /// Changes the entry under `key`, if there is one. Returns whether
    /// there was.
    pub fn update<Q>(&mut self, key: &Q, f: impl FnOnce(&mut V)) -> bool
    where
        Q: Ord + ?Sized + ToOwned<Owned = K>,
        K: Borrow<Q>,
    {
        let Some(mut v) = self.map.get(key).cloned() else {
            return false;
        };
        f(&mut v);
        self.insert(key.to_owned(), v);
        true
    }

    /// Hashes every entry from scratch (equal to `hash` unless corrupt).
    pub fn recompute(&self) -> StateHash {
        let mut h = StateHash::default();
        for (k, v) in &self.map {
            h.add(entry_hash(self.family, k, v));
        }
        h
    }
}

/// Builds a `HashedMap` from entries in strictly ascending key order (a
/// snapshot's sorted batches), hashing each as it comes.
#[derive(Debug)]
pub(crate) struct SortedHashedBuilder<K, V> {
    entries: SortedBuilder<K, V>,
    family: Family,
    hash: StateHash,
}

impl<K: Ord + Clone + Hash, V: Clone + Hash> SortedHashedBuilder<K, V> {
    pub fn new(family: Family) -> Self {
        SortedHashedBuilder {
            entries: SortedBuilder::default(),
            family,
            hash: StateHash::default(),
        }
    }

    pub fn push(&mut self, key: K, value: V) -> Result<(), NotAscending> {
        let h = entry_hash(self.family, &key, &value);
        self.entries.push(key, value)?;
        self.hash.add(h);
        Ok(())
    }

    pub fn finish(self) -> HashedMap<K, V> {
        HashedMap {
            map: self.entries.finish(),
            family: self.family,
            hash: self.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_inserts_replacements_and_removals() {
        let mut m: HashedMap<String, u32> = HashedMap::new(Family::Kv);
        assert_eq!(m.hash(), StateHash::default());
        m.insert("a".into(), 1);
        m.insert("b".into(), 2);
        let with_ab = m.hash();
        assert_eq!(with_ab, m.recompute());
        assert_eq!(m.insert("a".into(), 3), Some(1));
        assert_ne!(m.hash(), with_ab);
        assert!(m.update("a", |v| *v = 1));
        assert_eq!(m.hash(), with_ab, "back to the same content, same hash");
        assert!(!m.update("zz", |v| *v = 9));
        assert_eq!(m.remove("a"), Some(1));
        assert_eq!(m.remove("b"), Some(2));
        assert_eq!(m.hash(), StateHash::default());
        // The family is part of an entry's hash.
        let mut other: HashedMap<String, u32> = HashedMap::new(Family::Node);
        other.insert("a".into(), 1);
        let mut same: HashedMap<String, u32> = HashedMap::new(Family::Kv);
        same.insert("a".into(), 1);
        assert_ne!(other.hash(), same.hash());
    }
}
