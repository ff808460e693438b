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

/// An entry pushed to a `SortedBuilder` whose key is not above the one
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entries are not in strictly ascending key order")]
pub struct NotAscending;

/// Builds a `TreeMap` from entries pushed in strictly ascending key order:
/// leaves are filled to `MAX` as entries arrive, the branches above them
/// at `finish`.
pub struct SortedBuilder<K, V> {
    leaf: ArrayVec<(K, V), MAX>,
    /// Finished leaves with their least keys.
    leaves: Vec<(K, Arc<Node<K, V>>)>,
    len: usize,
}

impl<K, V> fmt::Debug for SortedBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortedBuilder")
            .field("len", &self.len)
            .finish()
    }
}

impl<K, V> Default for SortedBuilder<K, V> {
    fn default() -> Self {
        SortedBuilder {
            leaf: ArrayVec::new(),
            leaves: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, V: Clone> SortedBuilder<K, V> {
    /// The greatest key pushed so far.
    pub fn last_key(&self) -> Option<&K> {
        match self.leaf.last() {
            Some((k, _)) => Some(k),
            None => self.leaves.last().and_then(|(_, l)| match &**l {
                Node::Leaf(e) => e.last().map(|(k, _)| k),
                Node::Branch { .. } => None,
            }),
        }
    }

    /// Adds the next entry; its key must be greater than every key before.
    pub fn push(&mut self, key: K, value: V) -> Result<(), NotAscending> {
        if self.last_key().is_some_and(|last| *last >= key) {
            return Err(NotAscending);
        }
        self.leaf.push((key, value));
        self.len += 1;
        if self.leaf.len() == MAX {
            self.close_leaf();
        }
        Ok(())
    }

    fn close_leaf(&mut self) {
        let entries = std::mem::take(&mut self.leaf);
        let first = entries[0].0.clone();
        self.leaves.push((first, Arc::new(Node::Leaf(entries))));
    }

    pub fn finish(mut self) -> TreeMap<K, V> {
        if !self.leaf.is_empty() {
            self.close_leaf();
        }
        let mut level = self.leaves;
        if level.is_empty() {
            return TreeMap::new();
        }
        while level.len() > 1 {
            // Children spread evenly over as few branches as hold them, so
            // no branch is left with a single child.
            let groups = level.len().div_ceil(MAX);
            let (base, extra) = (level.len() / groups, level.len() % groups);
            let mut up = Vec::with_capacity(groups);
            let mut rest = level.into_iter();
            for g in 0..groups {
                let size = base + usize::from(g < extra);
                let mut group = rest.by_ref().take(size);
                let (first, child) = group.next().expect("groups are not empty");
                let mut seps = ArrayVec::new();
                let mut children = ArrayVec::new();
                children.push(child);
                for (k, c) in group {
                    seps.push(k);
                    children.push(c);
                }
                up.push((first, Arc::new(Node::Branch { seps, children })));
            }
            level = up;
        }
        let (_, root) = level.pop().expect("one node left");
        TreeMap {
            root: Some(root),
            len: self.len,
        }
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

/// A branch's children, and the next of them to visit.
type Siblings<'a, K, V> = (&'a [Arc<Node<K, V>>], usize);

/// In-order iterator over a `TreeMap`'s entries.
pub struct Iter<'a, K, V> {
    /// One for each branch on the path to the current leaf.
    stack: Vec<Siblings<'a, K, V>>,
    leaf: std::slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Iter<'a, K, V> {
    fn descend_first(&mut self, mut node: &'a Node<K, V>) {
        loop {
            match node {
                Node::Leaf(e) => {
                    self.leaf = e.iter();
                    return;
                }
                Node::Branch { children, .. } => {
                    self.stack.push((children, 1));
                    node = &children[0];
                }
            }
        }
    }

    /// Positions the iterator at the first entry within `start`.
    fn descend_to<Q>(&mut self, mut node: &'a Node<K, V>, start: Bound<&Q>)
    where
        K: Ord + Borrow<Q>,
        Q: Ord + ?Sized,
    {
        loop {
            match node {
                Node::Leaf(e) => {
                    let skip = match start {
                        Bound::Included(q) => e.partition_point(|(k, _)| k.borrow() < q),
                        Bound::Excluded(q) => e.partition_point(|(k, _)| k.borrow() <= q),
                        Bound::Unbounded => 0,
                    };
                    self.leaf = e[skip..].iter();
                    return;
                }
                Node::Branch { seps, children } => {
                    let i = match start {
                        Bound::Included(q) | Bound::Excluded(q) => child_for(seps, q),
                        Bound::Unbounded => 0,
                    };
                    self.stack.push((children, i + 1));
                    node = &children[i];
                }
            }
        }
    }
}

impl<K, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("depth", &self.stack.len())
            .finish()
    }
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.leaf.next() {
                return Some((k, v));
            }
            let (children, next) = self.stack.last_mut()?;
            if *next < children.len() {
                let child: &'a Node<K, V> = &children[*next];
                *next += 1;
                self.descend_first(child);
            } else {
                self.stack.pop();
            }
        }
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

#[cfg(test)]
impl<K: Ord + fmt::Debug, V> TreeMap<K, V> {
    /// Checks the tree's shape: keys in order within every separator's
    /// bounds, all leaves at one depth, no node over `MAX` or empty, and
    /// `len` equal to the entries held. Returns the depth.
    fn check(&self) -> usize {
        fn walk<K: Ord + fmt::Debug, V>(
            n: &Node<K, V>,
            lo: Option<&K>,
            hi: Option<&K>,
            count: &mut usize,
        ) -> usize {
            assert!(n.len() > 0 && n.len() <= MAX, "node size {}", n.len());
            match n {
                Node::Leaf(e) => {
                    for w in e.windows(2) {
                        assert!(w[0].0 < w[1].0, "leaf out of order");
                    }
                    for (k, _) in e {
                        assert!(lo.is_none_or(|lo| lo <= k), "{k:?} below its bound");
                        assert!(hi.is_none_or(|hi| k < hi), "{k:?} above its bound");
                    }
                    *count += e.len();
                    1
                }
                Node::Branch { seps, children } => {
                    assert_eq!(seps.len() + 1, children.len());
                    let mut depth = None;
                    for (i, c) in children.iter().enumerate() {
                        let l = if i == 0 { lo } else { Some(&seps[i - 1]) };
                        let h = seps.get(i).or(hi);
                        let d = walk(c, l, h, count);
                        assert!(depth.is_none_or(|x| x == d), "leaves at two depths");
                        depth = Some(d);
                    }
                    depth.expect("a branch has children") + 1
                }
            }
        }
        let mut count = 0;
        let depth = self
            .root
            .as_deref()
            .map_or(0, |r| walk(r, None, None, &mut count));
        assert_eq!(count, self.len, "len differs from the entries held");
        depth
    }

    fn leaves(&self) -> usize {
        fn walk<K, V>(n: &Node<K, V>) -> usize {
            match n {
                Node::Leaf(_) => 1,
                Node::Branch { children, .. } => children.iter().map(|c| walk(c)).sum(),
            }
        }
        self.root.as_deref().map_or(0, walk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u16, u32),
        Remove(u16),
        /// Keep a clone: later changes must not show through it.
        Clone,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Step::Insert(k, v)),
            3 => (0u16..600).prop_map(Step::Remove),
            1 => Just(Step::Clone),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any sequence of inserts and removals, from empty or from a bulk
        /// build, leaves the same entries as std's BTreeMap, a well-formed
        /// tree, and earlier clones unchanged.
        #[test]
        fn behaves_as_a_btreemap(
            start in proptest::collection::btree_map(0u16..600, any::<u32>(), 0..400),
            steps in proptest::collection::vec(step(), 0..400),
        ) {
            let mut model = start.clone();
            let mut tree = TreeMap::from_sorted(start).unwrap();
            tree.check();
            let mut clones: Vec<(TreeMap<u16, u32>, BTreeMap<u16, u32>)> = Vec::new();
            for s in steps {
                match s {
                    Step::Insert(k, v) => prop_assert_eq!(tree.insert(k, v), model.insert(k, v)),
                    Step::Remove(k) => prop_assert_eq!(tree.remove_with_key(&k), model.remove_entry(&k)),
                    Step::Clone => clones.push((tree.clone(), model.clone())),
                }
                tree.check();
                prop_assert_eq!(tree.len(), model.len());
            }
            prop_assert!(tree.iter().eq(model.iter()));
            for (t, m) in &clones {
                prop_assert!(t.iter().eq(m.iter()), "a clone changed");
            }
            for k in 0..600u16 {
                prop_assert_eq!(tree.get(&k), model.get(&k));
            }
            prop_assert_eq!(tree.first(), model.first_key_value());
            prop_assert_eq!(tree.last(), model.last_key_value());
        }

        #[test]
        fn ranges_match_btreemap(
            start in proptest::collection::btree_map(0u16..2000, any::<u8>(), 0..1500),
            a in 0u16..2100,
            b in 0u16..2100,
        ) {
            let tree = TreeMap::from_sorted(start.clone()).unwrap();
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(tree.range(lo..hi).eq(start.range(lo..hi)));
            prop_assert!(tree.range(lo..=hi).eq(start.range(lo..=hi)));
            prop_assert!(tree.range(lo..).eq(start.range(lo..)));
            let excl = (Bound::Excluded(lo), Bound::Unbounded);
            prop_assert!(tree.range::<u16, _>(excl).eq(start.range(excl)));
        }
    }

    #[test]
    fn a_bulk_build_fills_its_leaves_and_stays_shallow() {
        for n in [0, 1, 31, 32, 33, 1023, 1024, 1025, 32 * 32 + 1, 100_000] {
            let t = TreeMap::from_sorted((0..n).map(|i| (i, i))).unwrap();
            let depth = t.check();
            assert_eq!(t.len(), n as usize);
            let mut leaves = 0;
            let mut need = 1usize;
            while need < n as usize {
                need *= MAX;
                leaves += 1;
            }
            assert!(depth <= leaves.max(1), "n = {n}: depth {depth}");
            assert!(t.iter().map(|(k, _)| *k).eq(0..n));
        }
    }

    /// The property test above stays within two levels; this one drives a
    /// three- and four-level tree through splits and merges of branches,
    /// with clones kept along the way.
    #[test]
    fn deep_trees_behave_as_a_btreemap_through_splits_and_merges() {
        for seed in [1u64, 2, 3] {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rand = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let start: BTreeMap<u32, u64> = (0..40_000).map(|k| (k * 2, u64::from(k))).collect();
            let mut model = start.clone();
            let mut tree = TreeMap::from_sorted(start).unwrap();
            assert!(tree.check() >= 4);
            let mut clones = Vec::new();
            for step in 0..120_000u64 {
                let k = rand(100_000) as u32;
                // Removals outnumber inserts in the middle third, so whole
                // branches empty out and merge.
                let removing = if (40_000..80_000).contains(&step) {
                    3
                } else {
                    1
                };
                if rand(4) < removing {
                    assert_eq!(tree.remove_with_key(&k), model.remove_entry(&k));
                } else {
                    assert_eq!(tree.insert(k, step), model.insert(k, step));
                }
                if step % 20_000 == 0 {
                    tree.check();
                    clones.push((tree.clone(), model.clone()));
                }
            }
            tree.check();
            assert!(tree.iter().eq(model.iter()), "seed {seed}");
            for (t, m) in &clones {
                assert!(t.iter().eq(m.iter()), "seed {seed}: a clone changed");
            }
            let (lo, hi) = (25_000u32, 60_000u32);
            assert!(tree.range(lo..hi).eq(model.range(lo..hi)));
        }
    }

    #[test]
    fn keys_inserted_in_order_fill_their_leaves() {
        let mut t = TreeMap::new();
        for i in 0..10_000u32 {
            t.insert(i, ());
        }
        t.check();
        assert_eq!(t.leaves(), 10_000usize.div_ceil(MAX));
        // Out of order, leaves split in halves and fill at random.
        let mut r = TreeMap::new();
        for i in 0..10_000u32 {
            r.insert(i.wrapping_mul(2_654_435_761) % 10_007, ());
        }
        r.check();
        assert!(r.leaves() < 10_000 / (MAX / 2));
    }

    #[test]
    fn a_bulk_build_refuses_keys_out_of_order() {
        assert_eq!(
            TreeMap::from_sorted([(1, ()), (3, ()), (2, ())]).unwrap_err(),
            NotAscending
        );
        assert!(
            TreeMap::from_sorted([(1, ()), (1, ())]).is_err(),
            "a repeat"
        );
    }

    #[test]
    fn string_keys_are_found_by_str() {
        let mut t: TreeMap<String, u8> = TreeMap::new();
        for i in 0..100 {
            t.insert(format!("k{i:03}"), i);
        }
        assert_eq!(t.get("k042"), Some(&42));
        assert!(t
            .range::<str, _>((Bound::Included("k09"), Bound::Unbounded))
            .map(|(k, _)| k.as_str())
            .eq(["k090", "k091", "k092", "k093", "k094", "k095", "k096", "k097", "k098", "k099"]));
        assert_eq!(t.remove("k000"), Some(0));
        assert!(!t.contains_key("k000"));
    }
}
