//! The master's failure detector: from when it last heard each node, the
//! liveness to record in State (by logged `NodeLiveness` events).
//!
//! A node is *suspect* after half the node timeout of silence and *dead*
//! after the whole timeout, but never dead within one node timeout of this
//! master's election: a new master has not had time to hear everyone, and
//! a node's silence is counted from the election at the earliest.

use shoal_model::{Liveness, NodeId, Role, State};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The failure detector's periods.
#[derive(Clone, Copy, Debug)]
pub struct Periods {
    /// Dead after this long silent (suspect after half of it).
    pub node_timeout: Duration,
    /// A node that left is backdated by this much: its voter seat is free
    /// at once.
    pub voter_grace: Duration,
}

/// Whether a node last heard at `seen` was heard within half the node
/// timeout: the detector leaves it alive, and the master places work on
/// it (`placement::HeardLately`).
pub fn heard_lately(seen: Option<Duration>, now: Duration, node_timeout: Duration) -> bool {
    seen.is_some_and(|t| now.saturating_sub(t) < node_timeout / 2)
}

#[derive(Debug, Default)]
pub struct LivenessTracker {
    /// Changes proposed, not yet applied.
    pending: BTreeMap<NodeId, Liveness>,
    /// When each node was first seen dead (or left) in this term.
    dead_since: BTreeMap<NodeId, Duration>,
    /// Departed nodes whose forgetting was proposed, not yet applied.
    forgetting: BTreeSet<NodeId>,
}

impl LivenessTracker {
    /// The liveness changes to propose now. `last_seen` is when this node
    /// last heard each peer; `since` when it became master.
    pub fn plan(
        &mut self,
        state: &State,
        me: &NodeId,
        last_seen: impl Fn(&NodeId) -> Option<Duration>,
        now: Duration,
        since: Duration,
        periods: Periods,
    ) -> Vec<(NodeId, Liveness)> {
        let Periods {
            node_timeout,
            voter_grace,
        } = periods;
        let suspect_after = node_timeout / 2;
        let settled = now.saturating_sub(since) >= node_timeout;
        let mut changes = Vec::new();
        // Removed and forgotten nodes are nobody's concern now.
        self.dead_since.retain(|n, _| state.nodes().contains_key(n));
        for (node, info) in state.nodes() {
            if info.liveness == Liveness::Left {
                self.dead_since
                    .entry(node.clone())
                    .or_insert(now.saturating_sub(voter_grace));
                continue;
            }
            let target = if node == me {
                Liveness::Alive
            } else {
                let seen = last_seen(node);
                let silent = now.saturating_sub(seen.unwrap_or(since).max(since));
                if heard_lately(seen, now, node_timeout) {
                    Liveness::Alive
                } else if silent >= node_timeout && settled {
                    Liveness::Dead
                } else if silent >= suspect_after && info.liveness == Liveness::Alive {
                    Liveness::Suspect
                } else {
                    info.liveness
                }
            };
            if target == Liveness::Dead {
                self.dead_since.entry(node.clone()).or_insert(now);
            } else {
                self.dead_since.remove(node);
            }
            if target != info.liveness && self.pending.get(node) != Some(&target) {
                changes.push((node.clone(), target));
            }
        }
        changes
    }

    /// A change was proposed: not proposed again until it applies.
    pub fn proposed(&mut self, node: NodeId, liveness: Liveness) {
        self.pending.insert(node, liveness);
    }

    pub fn on_applied(&mut self, node: &NodeId, liveness: Liveness) {
        if self.pending.get(node) == Some(&liveness) {
            self.pending.remove(node);
        }
    }

    /// Followers that left `retention` ago or more, as far as this master
    /// knows: to forget (`Event::NodeForgotten`). A dead node is kept: it
    /// may come back, and an operator removes it (`Op::NodeRemove`).
    pub fn to_forget(
        &self,
        state: &State,
        now: Duration,
        periods: Periods,
        retention: Duration,
    ) -> Vec<NodeId> {
        state
            .nodes()
            .iter()
            .filter(|(node, info)| {
                info.liveness == Liveness::Left
                    && info.role == Role::Follower
                    && !self.forgetting.contains(*node)
                    // Seen left is backdated by the voter grace.
                    && self
                        .dead_for(node, now)
                        .is_some_and(|d| d >= retention + periods.voter_grace)
            })
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// A node's forgetting was proposed: not again until it applies.
    pub fn forgetting(&mut self, node: NodeId) {
        self.forgetting.insert(node);
    }

    pub fn forgotten(&mut self, node: &NodeId) {
        self.forgetting.remove(node);
        self.dead_since.remove(node);
        self.pending.remove(node);
    }

    /// How long `node` has been dead (or gone) as far as this master knows.
    pub fn dead_for(&self, node: &NodeId, now: Duration) -> Option<Duration> {
        self.dead_since.get(node).map(|t| now.saturating_sub(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster_state as cluster;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const PERIODS: Periods = Periods {
        node_timeout: Duration::from_secs(2),
        voter_grace: Duration::from_secs(10),
    };

    #[test]
    fn a_silent_node_is_suspect_then_dead_but_not_before_the_master_settled() {
        let s = cluster(&["m", "a"]);
        let me = NodeId::from("m");
        let a = NodeId::from("a");
        let mut t = LivenessTracker::default();
        let heard_at = |at: u64| move |_: &NodeId| Some(secs(at));
        let plan = |t: &mut LivenessTracker, now| {
            t.plan(&s, &me, heard_at(10), secs(now), secs(10), PERIODS)
        };
        assert!(plan(&mut t, 10).is_empty());
        assert_eq!(plan(&mut t, 11), vec![(a.clone(), Liveness::Suspect)]);
        t.proposed(a.clone(), Liveness::Suspect);
        assert!(plan(&mut t, 11).is_empty(), "proposed once");
        assert_eq!(plan(&mut t, 12), vec![(a.clone(), Liveness::Dead)]);
        assert_eq!(t.dead_for(&a, secs(15)), Some(secs(3)));
    }

    #[test]
    fn a_follower_that_left_is_forgotten_after_the_retention_and_a_dead_one_is_kept() {
        let mut s = cluster(&["m", "a", "b"]);
        let (me, a, b) = (NodeId::from("m"), NodeId::from("a"), NodeId::from("b"));
        crate::testing::apply(&mut s, shoal_model::Event::NodeLeft { node: a.clone() });
        let mut t = LivenessTracker::default();
        let heard_b_at = |at: u64| move |n: &NodeId| (n.as_str() == "b").then_some(secs(at));
        let hour = secs(3600);
        // Seen left at 10 s, b heard last at 10 s: dead from 12 s.
        t.plan(&s, &me, heard_b_at(10), secs(10), secs(0), PERIODS);
        t.plan(&s, &me, heard_b_at(10), secs(20), secs(0), PERIODS);
        assert!(t.to_forget(&s, secs(3609), PERIODS, hour).is_empty());
        assert_eq!(
            t.to_forget(&s, secs(3610), PERIODS, hour),
            std::slice::from_ref(&a)
        );
        t.forgetting(a.clone());
        assert!(
            t.to_forget(&s, secs(3611), PERIODS, hour).is_empty(),
            "proposed once"
        );
        assert_eq!(s.nodes().get(&b).unwrap().role, Role::Follower);
        assert!(t.dead_for(&b, secs(9000)).is_some(), "b is dead, and kept");
    }

    #[test]
    fn a_new_master_counts_silence_from_its_election() {
        let s = cluster(&["m", "a"]);
        let me = NodeId::from("m");
        let mut t = LivenessTracker::default();
        // Never heard `a`, elected at 100 s: dead only at 102 s.
        let never = |_: &NodeId| None;
        assert_eq!(
            t.plan(&s, &me, never, secs(101), secs(100), PERIODS),
            vec![(NodeId::from("a"), Liveness::Suspect)]
        );
        assert_eq!(
            t.plan(&s, &me, never, secs(102), secs(100), PERIODS),
            vec![(NodeId::from("a"), Liveness::Dead)]
        );
    }
}
