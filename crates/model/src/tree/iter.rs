//! In-order iteration over a `TreeMap`, from the start or from a bound.

use super::{child_for, Node};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

/// A branch's children, and the next of them to visit.
type Siblings<'a, K, V> = (&'a [Arc<Node<K, V>>], usize);

/// In-order iterator over a `TreeMap`'s entries.
pub struct Iter<'a, K, V> {
    /// One for each branch on the path to the current leaf.
    pub(super) stack: Vec<Siblings<'a, K, V>>,
    pub(super) leaf: std::slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Iter<'a, K, V> {
    pub(super) fn descend_first(&mut self, mut node: &'a Node<K, V>) {
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
    pub(super) fn descend_to<Q>(&mut self, mut node: &'a Node<K, V>, start: Bound<&Q>)
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
