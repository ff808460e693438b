//! `TreeMap` against std's `BTreeMap`: properties, a deep tree through
//! splits and merges, bulk builds, ranges.

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
