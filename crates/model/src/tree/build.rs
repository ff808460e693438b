//! Building a `TreeMap` in one pass from sorted entries.

use super::{Node, TreeMap, MAX};
use arrayvec::ArrayVec;
use std::fmt;
use std::sync::Arc;

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
