//! The state hash: a multiset hash over State's entries, kept up to date on
//! every change, so it costs nothing to report and two replicas at the same
//! index compare equal.
//!
//! Each entry `(family, key, value)` hashes to 128 bits with XXH3; the State
//! hash is their wrapping sum. Replacing an entry subtracts its old hash and
//! adds the new one. The per-entry bytes come from `std::hash::Hash`, which
//! is stable for the field types State uses on every 64-bit little-endian
//! host (the platforms shoal runs on).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{Hash, Hasher};
use xxhash_rust::xxh3::Xxh3;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateHash(pub u128);

impl StateHash {
    pub(crate) fn add(&mut self, h: u128) {
        self.0 = self.0.wrapping_add(h);
    }

    pub(crate) fn sub(&mut self, h: u128) {
        self.0 = self.0.wrapping_sub(h);
    }
}

impl fmt::Display for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for StateHash {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(StateHash)
    }
}

/// Which collection an entry belongs to; part of its hash so equal keys in
/// different collections never cancel out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Family {
    Meta = 1,
    Node = 2,
    Kv = 3,
    Task = 4,
    Deployment = 5,
    Outcome = 6,
}

pub(crate) fn entry_hash<K: Hash + ?Sized, V: Hash + ?Sized>(
    family: Family,
    key: &K,
    value: &V,
) -> u128 {
    let mut h = Xxh3::new();
    h.write_u8(family as u8);
    key.hash(&mut h);
    value.hash(&mut h);
    h.digest128()
}

/// An entry's hash with its family and key already taken in: hashes the
/// entry with any value, as `entry_hash` would (for a replaced entry and
/// its replacement, without hashing the key twice).
#[derive(Clone)]
pub(crate) struct KeyHasher(Xxh3);

impl KeyHasher {
    pub(crate) fn new<K: Hash + ?Sized>(family: Family, key: &K) -> Self {
        let mut h = Xxh3::new();
        h.write_u8(family as u8);
        key.hash(&mut h);
        KeyHasher(h)
    }

    pub(crate) fn with<V: Hash + ?Sized>(&self, value: &V) -> u128 {
        let mut h = self.0.clone();
        value.hash(&mut h);
        h.digest128()
    }
}
