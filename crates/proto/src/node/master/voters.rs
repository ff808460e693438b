//! Keeping `--voters` healthy voters, one membership change at a time: a
//! caught-up learner is promoted, a learner that died is removed, a voter
//! dead past the grace period is removed (as Consul's autopilot does), and
//! when short of voters a live follower is added as a learner.

use crate::consensus::MembershipChange;
use shoal_model::{EventIdx, Liveness, NodeId, RaftId, Role, State};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the master's Raft says of its members' logs.
#[derive(Clone, Debug, Default)]
pub struct RaftProgress {
    pub last: EventIdx,
    pub pending_conf_change: bool,
    /// How far each member's log matches the leader's.
    pub matched: BTreeMap<RaftId, EventIdx>,
}

/// A learner this close to the leader's last index counts as caught up.
const CAUGHT_UP: u64 = 64;

/// One change to propose.
#[derive(Clone, Debug, PartialEq)]
pub struct VoterChange {
    pub kind: MembershipChange,
    pub raft_id: RaftId,
    pub node: NodeId,
    /// The node's role once the change commits.
    pub role: Role,
}

/// The next membership change, if any. `dead_for` says how long the
/// master has seen a node dead or gone; `known` whether it has ever heard
/// the node (a learner must be reachable).
pub fn plan_voters(
    state: &State,
    me: &NodeId,
    want: usize,
    progress: &RaftProgress,
    dead_for: impl Fn(&NodeId) -> Option<Duration>,
    voter_grace: Duration,
    known: impl Fn(&NodeId) -> bool,
) -> Option<VoterChange> {
    if progress.pending_conf_change {
        return None;
    }
    let nodes = state.nodes();
    let alive = |n: &NodeId| n == me || nodes.get(n).is_some_and(|i| i.liveness == Liveness::Alive);
    let voters = state.members(Role::Voter);
    let learners = state.members(Role::Learner);
    let alive_count = nodes
        .iter()
        .filter(|(n, i)| i.liveness == Liveness::Alive || *n == me)
        .count();
    let want = want.min(alive_count).max(1);
    let healthy = voters.iter().filter(|(_, n)| alive(n)).count();
    let change = |kind, rid: &RaftId, node: &NodeId, role| VoterChange {
        kind,
        raft_id: *rid,
        node: node.clone(),
        role,
    };

    let caught_up = |rid: &RaftId| {
        progress
            .matched
            .get(rid)
            .is_some_and(|m| m.0 + CAUGHT_UP >= progress.last.0)
    };
    if let Some((rid, node)) = learners.iter().find(|(rid, n)| alive(n) && caught_up(rid)) {
        return Some(change(MembershipChange::AddNode, rid, node, Role::Voter));
    }
    if let Some((rid, node)) = learners.iter().find(|(_, n)| !alive(n)) {
        return Some(change(
            MembershipChange::RemoveNode,
            rid,
            node,
            Role::Follower,
        ));
    }
    let past_grace = |n: &NodeId| dead_for(n).is_some_and(|d| d >= voter_grace);
    if let Some((rid, node)) = voters.iter().find(|(_, n)| n != me && past_grace(n)) {
        // Remove it when that keeps enough healthy voters, or when there is
        // nobody to replace it with anyway (it holds a seat for nothing).
        let candidates = nodes
            .iter()
            .any(|(n, i)| i.role == Role::Follower && alive(n));
        return (healthy >= want || !candidates)
            .then(|| change(MembershipChange::RemoveNode, rid, node, Role::Follower));
    }
    if healthy + learners.len() < want {
        return nodes
            .iter()
            .filter(|(n, i)| i.role == Role::Follower && alive(n) && known(n))
            .min_by_key(|(_, i)| i.raft_id)
            .map(|(n, i)| {
                change(
                    MembershipChange::AddLearnerNode,
                    &i.raft_id,
                    n,
                    Role::Learner,
                )
            });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{apply, cluster_state};
    use shoal_model::Event;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    struct Cluster(State);

    impl Cluster {
        fn new(nodes: &[&str]) -> Cluster {
            Cluster(cluster_state(nodes))
        }

        fn apply(&mut self, event: Event) {
            apply(&mut self.0, event);
        }

        fn role(&mut self, node: &str, role: Role) {
            self.apply(Event::Membership {
                node: NodeId::from(node),
                role,
            });
        }

        fn liveness(&mut self, node: &str, liveness: Liveness) {
            self.apply(Event::NodeLiveness {
                node: NodeId::from(node),
                liveness,
            });
        }
    }

    fn plan(c: &Cluster, progress: &RaftProgress, dead: &[(&str, u64)]) -> Option<VoterChange> {
        let dead: BTreeMap<NodeId, Duration> = dead
            .iter()
            .map(|(n, s)| (NodeId::from(*n), secs(*s)))
            .collect();
        plan_voters(
            &c.0,
            &NodeId::from("m"),
            3,
            progress,
            |n| dead.get(n).copied(),
            secs(10),
            |_| true,
        )
    }

    #[test]
    fn short_of_voters_the_oldest_follower_becomes_a_learner_then_a_voter() {
        let mut c = Cluster::new(&["m", "a", "b"]);
        let got = plan(&c, &RaftProgress::default(), &[]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str(), got.role),
            (MembershipChange::AddLearnerNode, "a", Role::Learner)
        );
        c.role("a", Role::Learner);
        let mut progress = RaftProgress {
            last: EventIdx(1000),
            ..Default::default()
        };
        progress.matched.insert(got.raft_id, EventIdx(100));
        // Not caught up: b becomes a learner too meanwhile.
        let next = plan(&c, &progress, &[]).unwrap();
        assert_eq!(
            (next.kind, next.node.as_str()),
            (MembershipChange::AddLearnerNode, "b")
        );
        progress.matched.insert(got.raft_id, EventIdx(990));
        let promote = plan(&c, &progress, &[]).unwrap();
        assert_eq!(
            (promote.kind, promote.node.as_str(), promote.role),
            (MembershipChange::AddNode, "a", Role::Voter)
        );
        progress.pending_conf_change = true;
        assert_eq!(plan(&c, &progress, &[]), None, "one change at a time");
    }

    #[test]
    fn a_voter_dead_past_the_grace_period_gives_its_seat_up() {
        let mut c = Cluster::new(&["m", "a", "b", "f"]);
        c.role("a", Role::Voter);
        c.role("b", Role::Voter);
        c.liveness("b", Liveness::Dead);
        let p = RaftProgress::default();
        // Within the grace period: a follower is added as learner instead.
        let got = plan(&c, &p, &[("b", 5)]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str()),
            (MembershipChange::AddLearnerNode, "f")
        );
        // Past it, with a follower to replace it but only 2 healthy of 3:
        // it waits for the replacement.
        c.role("f", Role::Learner);
        let mut progress = RaftProgress::default();
        progress.matched.insert(shoal_model::RaftId(4), EventIdx(0));
        let got = plan(&c, &progress, &[("b", 20)]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str()),
            (MembershipChange::AddNode, "f")
        );
        c.role("f", Role::Voter);
        let got = plan(&c, &progress, &[("b", 20)]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str(), got.role),
            (MembershipChange::RemoveNode, "b", Role::Follower)
        );
    }
}
