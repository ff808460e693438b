//! The ordered buffer: committed entries arrive in any order, duplicated or
//! not at all; they leave strictly in index order (invariant 3).
//!
//! The buffer holds only a bounded window ahead of the next index. Anything
//! beyond it is dropped and fetched again later: the gap fetcher sees the
//! hole and asks for it.

use shoal_model::{EventIdx, LogEntry};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// How far past the next index an entry may be and still be kept.
    pub window: u64,
    /// Bytes held at most (by `LogEntry::size_hint`).
    pub max_bytes: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits {
            window: 1 << 16,
            max_bytes: 64 << 20,
        }
    }
}

/// What happened to an inserted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// It is the next one, or kept until the ones before it arrive.
    Accepted,
    /// It was applied or buffered before.
    Duplicate,
    /// Outside the window or over the byte cap: dropped, fetched later.
    Dropped,
}

#[derive(Debug)]
pub struct OrderedBuffer {
    next: EventIdx,
    pending: BTreeMap<EventIdx, LogEntry>,
    bytes: usize,
    limits: BufferLimits,
}

impl OrderedBuffer {
    /// A buffer whose next expected entry is `next`.
    pub fn new(next: EventIdx, limits: BufferLimits) -> Self {
        OrderedBuffer {
            next,
            pending: BTreeMap::new(),
            bytes: 0,
            limits,
        }
    }

    /// The index the buffer releases next.
    pub fn next(&self) -> EventIdx {
        self.next
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The lowest buffered index past the next one, if any.
    pub fn first_pending(&self) -> Option<EventIdx> {
        self.pending.keys().next().copied()
    }

    /// The highest index buffered.
    pub fn last_pending(&self) -> Option<EventIdx> {
        self.pending.keys().next_back().copied()
    }

    pub fn insert(&mut self, entry: LogEntry) -> Insert {
        let idx = entry.idx;
        if idx < self.next || self.pending.contains_key(&idx) {
            return Insert::Duplicate;
        }
        let size = entry.size_hint();
        if idx.0 - self.next.0 >= self.limits.window || self.bytes + size > self.limits.max_bytes {
            return Insert::Dropped;
        }
        self.bytes += size;
        self.pending.insert(idx, entry);
        Insert::Accepted
    }

    /// Takes the consecutive run starting at the next index.
    pub fn pop_ready(&mut self) -> Vec<LogEntry> {
        let mut out = Vec::new();
        while let Some(e) = self.pending.remove(&self.next) {
            self.bytes -= e.size_hint();
            self.next = self.next.next();
            out.push(e);
        }
        out
    }

    /// Takes the next entry if it is here.
    pub fn pop_next(&mut self) -> Option<LogEntry> {
        let e = self.pending.remove(&self.next)?;
        self.bytes -= e.size_hint();
        self.next = self.next.next();
        Some(e)
    }

    /// Moves the next index to `next` (after a snapshot at `next - 1` was
    /// loaded) and drops what it covers. Never moves backwards.
    pub fn fast_forward_to(&mut self, next: EventIdx) {
        if next <= self.next {
            return;
        }
        let keep = self.pending.split_off(&next);
        for e in self.pending.values() {
            self.bytes -= e.size_hint();
        }
        self.pending = keep;
        self.next = next;
    }

    /// The first hole: from the next index up to just before the first
    /// buffered entry, or up to `known_commit` when nothing is buffered.
    pub fn first_gap(&self, known_commit: EventIdx) -> Option<(EventIdx, EventIdx)> {
        match self.first_pending() {
            Some(first) if first > self.next => Some((self.next, first.prev())),
            Some(_) => None,
            None if known_commit >= self.next => Some((self.next, known_commit)),
            None => None,
        }
    }

    /// Every hole up to `known_commit`, in order, at most `max` of them.
    pub fn gaps(&self, known_commit: EventIdx, max: usize) -> Vec<(EventIdx, EventIdx)> {
        let mut out = Vec::new();
        let mut cursor = self.next;
        for &idx in self.pending.keys() {
            if out.len() == max {
                return out;
            }
            if idx > cursor {
                out.push((cursor, idx.prev()));
            }
            cursor = idx.next();
        }
        if out.len() < max && known_commit >= cursor {
            out.push((cursor, known_commit));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_model::{EntryKind, Term};

    fn e(i: u64) -> LogEntry {
        LogEntry {
            idx: EventIdx(i),
            term: Term(1),
            kind: EntryKind::Normal,
            data: vec![i as u8; 10],
            context: vec![],
        }
    }

    fn idxs(v: &[LogEntry]) -> Vec<u64> {
        v.iter().map(|e| e.idx.0).collect()
    }

    #[test]
    fn releases_in_order_and_drops_duplicates() {
        let mut b = OrderedBuffer::new(EventIdx(1), BufferLimits::default());
        assert_eq!(b.insert(e(3)), Insert::Accepted);
        assert_eq!(b.insert(e(2)), Insert::Accepted);
        assert!(b.pop_ready().is_empty());
        assert_eq!(b.first_gap(EventIdx(3)), Some((EventIdx(1), EventIdx(1))));
        assert_eq!(b.insert(e(3)), Insert::Duplicate);
        assert_eq!(b.insert(e(1)), Insert::Accepted);
        assert_eq!(idxs(&b.pop_ready()), vec![1, 2, 3]);
        assert_eq!(b.insert(e(2)), Insert::Duplicate);
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn the_window_and_byte_cap_bound_the_buffer() {
        let mut b = OrderedBuffer::new(
            EventIdx(1),
            BufferLimits {
                window: 10,
                max_bytes: 3 * e(1).size_hint(),
            },
        );
        assert_eq!(b.insert(e(11)), Insert::Dropped);
        for i in 2..=4 {
            assert_eq!(b.insert(e(i)), Insert::Accepted);
        }
        assert_eq!(b.insert(e(5)), Insert::Dropped, "byte cap");
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn fast_forward_discards_what_a_snapshot_covers() {
        let mut b = OrderedBuffer::new(EventIdx(1), BufferLimits::default());
        for i in [5, 9, 10, 12] {
            b.insert(e(i));
        }
        b.fast_forward_to(EventIdx(10));
        assert_eq!(b.next(), EventIdx(10));
        assert_eq!(idxs(&b.pop_ready()), vec![10]);
        assert_eq!(
            b.gaps(EventIdx(14), 8),
            vec![(EventIdx(11), EventIdx(11)), (EventIdx(13), EventIdx(14))]
        );
        b.fast_forward_to(EventIdx(3));
        assert_eq!(b.next(), EventIdx(11), "never backwards");
        assert_eq!(b.bytes(), e(12).size_hint());
    }

    proptest! {
        /// Any arrival order with duplicates releases exactly 1..=n in order.
        #[test]
        fn any_arrival_order_releases_in_order(
            order in Just((1..=60u64).collect::<Vec<_>>()).prop_shuffle(),
            dups in prop::collection::vec(1..=60u64, 0..30),
            ff in prop::option::of(0..40u64),
        ) {
            let mut b = OrderedBuffer::new(EventIdx(1), BufferLimits::default());
            let mut out = Vec::new();
            if let Some(f) = ff {
                b.fast_forward_to(EventIdx(f + 1));
            }
            for (n, i) in order.iter().chain(dups.iter()).enumerate() {
                b.insert(e(*i));
                out.extend(idxs(&b.pop_ready()));
                if n % 7 == 0 {
                    // Gaps never cover a buffered entry.
                    for (from, to) in b.gaps(EventIdx(60), 100) {
                        for j in from.0..=to.0 {
                            prop_assert!(j >= b.next().0 && !b.pending.contains_key(&EventIdx(j)));
                        }
                    }
                }
            }
            let start = ff.map_or(1, |f| f + 1).max(1);
            prop_assert_eq!(out, (start..=60).collect::<Vec<_>>());
            prop_assert!(b.is_empty());
            prop_assert_eq!(b.bytes(), 0);
        }
    }
}
