//! Choosing among snapshot offers.
//!
//! Only a snapshot that a replica whose word counts offered is loaded (a
//! member; for a joiner, the master its peers name: see `trust`). Any
//! other replica's offer of the same bytes makes it one more source: its
//! chunks are checked against the hashes the trusted offer gave, so it
//! cannot slip in bytes of its own.

use crate::wire::SnapshotOffer;
use shoal_model::NodeId;

#[derive(Debug)]
pub(super) struct Offered {
    pub from: NodeId,
    pub offer: SnapshotOffer,
    pub vouched: bool,
}

/// The snapshot to load and whom to pull it from: of the snapshots a
/// trusted replica offered, the one `parked` names (part of it is here:
/// its offer is vouched for by the hashes it came with), else the one the
/// most replicas offer (the newest among equals); its sources those
/// replicas, the least busy first and the master last, at most `max` (the
/// receiver spares the master while two others serve).
pub(super) fn choose(
    offers: &[Offered],
    parked: Option<&SnapshotOffer>,
    master: Option<&NodeId>,
    max: usize,
) -> Option<(SnapshotOffer, Vec<NodeId>)> {
    let holders = |o: &SnapshotOffer| -> Vec<&Offered> {
        offers.iter().filter(|x| x.offer.same_snapshot(o)).collect()
    };
    let is_parked = |o: &SnapshotOffer| parked.is_some_and(|p| p.same_snapshot(o));
    let best = offers
        .iter()
        .filter(|o| o.vouched || is_parked(&o.offer))
        .max_by_key(|o| (is_parked(&o.offer), holders(&o.offer).len(), o.offer.index))?;
    let mut sources = holders(&best.offer);
    sources.sort_by_key(|o| (Some(&o.from) == master, o.offer.busy, o.from.clone()));
    let mut offer = best.offer.clone();
    offer.busy = 0;
    let sources = sources
        .into_iter()
        .take(max.max(1))
        .map(|o| o.from.clone())
        .collect();
    Some((offer, sources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::EventIdx;

    fn offer(index: u64, tag: u8, busy: u32) -> SnapshotOffer {
        SnapshotOffer {
            session: 1,
            index: EventIdx(index),
            total_len: 10,
            sha256: [tag; 32],
            chunk_bytes: 10,
            chunks: vec![[tag; 32]],
            busy,
        }
    }

    fn from(node: &str, o: SnapshotOffer, vouched: bool) -> Offered {
        Offered {
            from: NodeId::from(node),
            offer: o,
            vouched,
        }
    }

    fn names(v: &[NodeId]) -> Vec<&str> {
        v.iter().map(NodeId::as_str).collect()
    }

    #[test]
    fn an_offer_nobody_trusted_vouched_for_is_never_loaded() {
        let offers = [
            from("x", offer(9, 1, 0), false),
            from("y", offer(9, 1, 0), false),
        ];
        assert!(choose(&offers, None, None, 4).is_none());
    }

    #[test]
    fn others_offering_the_vouched_bytes_become_sources_the_master_last() {
        let m = NodeId::from("m");
        let offers = [
            from("m", offer(8, 1, 0), true),
            from("a", offer(8, 1, 5), true),
            from("b", offer(8, 1, 1), false),
            // Same index, other bytes: not a source.
            from("evil", offer(8, 2, 0), false),
        ];
        let (o, sources) = choose(&offers, None, Some(&m), 4).unwrap();
        assert_eq!(o.sha256, [1; 32]);
        assert_eq!(names(&sources), ["b", "a", "m"]);
        assert_eq!(
            names(&choose(&offers, None, Some(&m), 2).unwrap().1),
            ["b", "a"]
        );
    }

    #[test]
    fn the_snapshot_most_replicas_hold_wins_then_the_newest() {
        let offers = [
            from("m", offer(16, 2, 0), true),
            from("a", offer(8, 1, 0), true),
            from("b", offer(8, 1, 0), false),
        ];
        assert_eq!(choose(&offers, None, None, 4).unwrap().0.index, EventIdx(8));
        let offers = [
            from("m", offer(16, 2, 0), true),
            from("a", offer(8, 1, 0), true),
        ];
        assert_eq!(
            choose(&offers, None, None, 4).unwrap().0.index,
            EventIdx(16)
        );
    }

    #[test]
    fn the_snapshot_part_of_which_is_here_wins_offered_by_anyone() {
        let offers = [
            from("m", offer(16, 2, 0), true),
            from("a", offer(16, 2, 0), true),
            from("b", offer(8, 1, 3), false),
        ];
        let parked = offer(8, 1, 0);
        let (o, sources) = choose(&offers, Some(&parked), None, 4).unwrap();
        assert_eq!(o.index, EventIdx(8));
        assert_eq!(names(&sources), ["b"]);
        // Nobody offers it: the usual choice.
        let (o, _) = choose(&offers[..2], Some(&parked), None, 4).unwrap();
        assert_eq!(o.index, EventIdx(16));
        // The same index with other bytes is not it, nor vouched for.
        let evil = [from("x", offer(8, 3, 0), false)];
        assert!(choose(&evil, Some(&parked), None, 4).is_none());
    }
}
