//! `TreeMap`: the persistent ordered map State's collections are made of.
//!
//! A B+tree whose nodes sit behind `Arc`s: cloning a map is O(1) (a
//! snapshot is encoded from a clone while the event loop keeps applying),
//! and a change copies only the nodes on its path that a clone still
//! shares. Entries live in the leaves; a branch keeps the least key of each
//! child but the first as its separators.
//!
//! It exists beside `imbl::OrdMap` (which it replaced) for one operation
//! that crate lacks: building a map from sorted entries in one pass, with
//! every leaf full. A joiner rebuilds State from a snapshot's sorted
//! batches; inserting 1M keys one by one left imbl's leaves half full and
//! spent most of the decode in node splits (see `bench/README.md`).

mod build;
mod iter;
#[cfg(test)]
mod tests;

pub use build::{NotAscending, SortedBuilder};
pub use iter::Iter;

use arrayvec::ArrayVec;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Entries per leaf and children per branch, at most. Nodes are copied
/// whole when a shared one changes, so they stay small.
const MAX: usize = 32;
/// A node below this many entries after a removal merges with a sibling.
const MIN: usize = MAX / 4;
/// Room in a branch for one child more than `MAX`, until it splits.
const ROOM: usize = MAX + 1;

/// Entries and children are held inline (`ArrayVec`), in the same
/// allocation as the node's reference count: one pointer to follow per
/// level of the tree, not three. A branch is allocated at a leaf's size;
/// there is one branch for about every `MAX` leaves.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Node<K, V> {
    Leaf(ArrayVec<(K, V), MAX>),
    Branch {
        /// `seps[i]` is at most the least key under `children[i + 1]`, and
        /// greater than every key under `children[..=i]`.
        seps: ArrayVec<K, ROOM>,
        children: ArrayVec<Arc<Node<K, V>>, ROOM>,
    },
}

fn leaf_of<K, V>(entry: (K, V)) -> Node<K, V> {
    let mut e = ArrayVec::new();
    e.push(entry);
    Node::Leaf(e)
}

impl<K, V> Node<K, V> {
    fn len(&self) -> usize {
        match self {
            Node::Leaf(e) => e.len(),
            Node::Branch { children, .. } => children.len(),
        }
    }
}

/// Which child of a branch holds (or would hold) `key`.
fn child_for<K: Borrow<Q>, Q: Ord + ?Sized>(seps: &[K], key: &Q) -> usize {
    match search(seps, |s| s.borrow().cmp(key)) {
        Ok(i) => i + 1,
        Err(i) => i,
    }
}

/// Binary search that branches on each comparison and stops at a match.
///
/// std's `binary_search_by` is branchless: each probe's address waits on
/// the comparison before it, so with keys behind pointers (strings) every
/// probe is a cache miss in series. Branching lets the CPU run ahead to
/// the likely next probe; on 1M string keys lookups took half the time.
fn search<T>(slice: &[T], mut cmp: impl FnMut(&T) -> Ordering) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, slice.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match cmp(&slice[mid]) {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// A persistent ordered map (see the module comment).
pub struct TreeMap<K, V> {
    root: Option<Arc<Node<K, V>>>,
    len: usize,
}

impl<K, V> Clone for TreeMap<K, V> {
    fn clone(&self) -> Self {
        TreeMap {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for TreeMap<K, V> {
    fn default() -> Self {
        TreeMap { root: None, len: 0 }
    }
}

impl<K, V> TreeMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> Iter<'_, K, V> {
        let mut it = Iter {
            stack: Vec::new(),
            leaf: [].iter(),
        };
        if let Some(root) = &self.root {
            it.descend_first(root);
        }
        it
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The least entry.
    pub fn first(&self) -> Option<(&K, &V)> {
        self.iter().next()
    }

    /// The greatest entry.
    pub fn last(&self) -> Option<(&K, &V)> {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Leaf(e) => return e.last().map(|(k, v)| (k, v)),
                Node::Branch { children, .. } => node = children.last()?,
            }
        }
    }
}

impl<K: Ord, V> TreeMap<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Leaf(e) => {
                    let i = search(e, |(k, _)| k.borrow().cmp(key)).ok()?;
                    return Some(&e[i].1);
                }
                Node::Branch { seps, children } => node = &children[child_for(seps, key)],
            }
        }
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The entries whose keys fall in `range`, in order.
    pub fn range<Q, R>(&self, range: R) -> impl Iterator<Item = (&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        R: RangeBounds<Q>,
    {
        let mut it = Iter {
            stack: Vec::new(),
            leaf: [].iter(),
        };
        if let Some(root) = &self.root {
            it.descend_to(root, range.start_bound());
        }
        it.take_while(move |(k, _)| match range.end_bound() {
            Bound::Included(end) => (*k).borrow() <= end,
            Bound::Excluded(end) => (*k).borrow() < end,
            Bound::Unbounded => true,
        })
    }
}

impl<K: Ord + Clone, V: Clone> TreeMap<K, V> {
    /// Inserts `value` under `key`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(leaf_of((key, value))));
            self.len = 1;
            return None;
        };
        let (old, split) = insert(root, key, value);
        if let Some((sep, right)) = split {
            let left = self.root.take().expect("a root was there");
            self.root = Some(Arc::new(Node::Branch {
                seps: [sep].into_iter().collect(),
                children: [left, right].into_iter().collect(),
            }));
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.remove_with_key(key).map(|(_, v)| v)
    }

    /// Removes `key`'s entry and returns it.
    pub fn remove_with_key<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let root = self.root.as_mut()?;
        let removed = remove(root, key)?;
        self.len -= 1;
        // A branch left with one child gives way to it; an empty leaf goes.
        loop {
            match self.root.as_deref() {
                Some(Node::Branch { children, .. }) if children.len() == 1 => {
                    self.root = Some(children[0].clone());
                }
                Some(n) if n.len() == 0 => self.root = None,
                _ => break,
            }
        }
        Some(removed)
    }

    /// A map of entries given in strictly ascending key order, built in one
    /// pass with full leaves.
    pub fn from_sorted(entries: impl IntoIterator<Item = (K, V)>) -> Result<Self, NotAscending> {
        let mut b = SortedBuilder::default();
        for (k, v) in entries {
            b.push(k, v)?;
        }
        Ok(b.finish())
    }
}

type Split<K, V> = Option<(K, Arc<Node<K, V>>)>;

fn insert<K: Ord + Clone, V: Clone>(
    node: &mut Arc<Node<K, V>>,
    key: K,
    value: V,
) -> (Option<V>, Split<K, V>) {
    match Arc::make_mut(node) {
        Node::Leaf(e) => match search(e, |(k, _)| k.cmp(&key)) {
            Ok(i) => (Some(std::mem::replace(&mut e[i].1, value)), None),
            Err(i) => {
                if e.len() < MAX {
                    e.insert(i, (key, value));
                    return (None, None);
                }
                // Appending at the end (keys written in order) keeps the
                // left leaf full; otherwise both halves get room.
                if i == e.len() {
                    let sep = key.clone();
                    return (None, Some((sep, Arc::new(leaf_of((key, value))))));
                }
                let mut right: ArrayVec<_, MAX> = e.drain(MAX / 2..).collect();
                if i <= MAX / 2 {
                    e.insert(i, (key, value));
                } else {
                    right.insert(i - MAX / 2, (key, value));
                }
                let sep = right[0].0.clone();
                (None, Some((sep, Arc::new(Node::Leaf(right)))))
            }
        },
        Node::Branch { seps, children } => {
            let i = child_for(seps, &key);
            let (old, split) = insert(&mut children[i], key, value);
            let Some((sep, child)) = split else {
                return (old, None);
            };
            seps.insert(i, sep);
            children.insert(i + 1, child);
            if children.len() <= MAX {
                return (old, None);
            }
            // A new last child (keys written in order) starts the right
            // branch alone, leaving the left one full.
            let at = if i + 2 == children.len() {
                children.len() - 1
            } else {
                children.len() / 2
            };
            let right_children: ArrayVec<_, ROOM> = children.drain(at..).collect();
            let mut right_seps: ArrayVec<_, ROOM> = seps.drain(at - 1..).collect();
            let up = right_seps.remove(0);
            let right = Node::Branch {
                seps: right_seps,
                children: right_children,
            };
            (old, Some((up, Arc::new(right))))
        }
    }
}

fn remove<K, V, Q>(node: &mut Arc<Node<K, V>>, key: &Q) -> Option<(K, V)>
where
    K: Ord + Clone + Borrow<Q>,
    V: Clone,
    Q: Ord + ?Sized,
{
    // Look before copying: a miss leaves shared nodes shared.
    match &**node {
        Node::Leaf(e) => {
            let i = search(e, |(k, _)| k.borrow().cmp(key)).ok()?;
            let Node::Leaf(e) = Arc::make_mut(node) else {
                unreachable!("checked above")
            };
            Some(e.remove(i))
        }
        Node::Branch { seps, .. } => {
            let i = child_for(seps, key);
            let Node::Branch { seps, children } = Arc::make_mut(node) else {
                unreachable!("checked above")
            };
            let removed = remove(&mut children[i], key)?;
            if children[i].len() < MIN {
                rebalance(seps, children, i);
            }
            Some(removed)
        }
    }
}

/// `children[i]` fell below `MIN`: it goes if empty, else merges with a
/// neighbour when both fit in one node.
fn rebalance<K: Ord + Clone, V: Clone>(
    seps: &mut ArrayVec<K, ROOM>,
    children: &mut ArrayVec<Arc<Node<K, V>>, ROOM>,
    i: usize,
) {
    if children[i].len() == 0 {
        children.remove(i);
        if !seps.is_empty() {
            seps.remove(i.saturating_sub(1));
        }
        return;
    }
    if children.len() < 2 {
        return;
    }
    // Merge the pair (l, l + 1) that holds child i.
    let l = if i + 1 < children.len() { i } else { i - 1 };
    if children[l].len() + children[l + 1].len() > MAX {
        return;
    }
    let right = children.remove(l + 1);
    let sep = seps.remove(l);
    let right = Arc::try_unwrap(right).unwrap_or_else(|shared| (*shared).clone());
    match (Arc::make_mut(&mut children[l]), right) {
        (Node::Leaf(a), Node::Leaf(b)) => a.extend(b),
        (
            Node::Branch {
                seps: sa,
                children: ca,
            },
            Node::Branch {
                seps: sb,
                children: cb,
            },
        ) => {
            sa.push(sep);
            sa.extend(sb);
            ca.extend(cb);
        }
        _ => unreachable!("siblings are at the same depth"),
    }
}

impl<'a, K, V> IntoIterator for &'a TreeMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for TreeMap<K, V> {
    /// Later entries under the same key replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let sorted: std::collections::BTreeMap<K, V> = iter.into_iter().collect();
        Self::from_sorted(sorted).expect("a BTreeMap iterates in ascending order")
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for TreeMap<K, V> {
    type Output = V;

    /// The value under `key`; panics when there is none (as `BTreeMap`).
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for TreeMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<K: Eq, V: Eq> Eq for TreeMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for TreeMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
