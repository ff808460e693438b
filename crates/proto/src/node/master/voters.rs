//! Keeping `--voters` healthy voters, one membership change at a time: a
//! caught-up learner is promoted, a learner that died is removed, a voter
//! dead past the grace period is removed (as Consul's autopilot does), and
//! when short of voters a live follower is added as a learner. A voter
//! that was unheard for a moment and came back leaves a seat too many (a
//! learner added meanwhile, or promoted): the learner is removed, or the
//! voter that joined the cluster last (the highest Raft id, never the
//! master), so the cluster goes back to `--voters` and to an odd quorum.
//! A node that says it may not vote (`--no-voter`) is never added, and
//! loses a seat it holds as a dead voter would; when no node can take a
//! seat, `voter_shortfall` says why.

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

/// What the master heard a node say of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Nothing yet (a learner must be reachable, and say it may vote).
    Nothing,
    /// That it may hold a voter seat.
    MayVote,
    /// That it may not (`--no-voter`).
    MayNotVote,
}

/// Voter seats as the master sees them.
struct Seats<'a> {
    voters: Vec<(RaftId, NodeId)>,
    learners: Vec<(RaftId, NodeId)>,
    /// Seats wanted: `--voters`, or fewer while fewer nodes are alive.
    want: usize,
    /// Voters alive that may vote.
    healthy: usize,
    state: &'a State,
    me: &'a NodeId,
}

impl<'a> Seats<'a> {
    fn new(
        state: &'a State,
        me: &'a NodeId,
        want: usize,
        heard: &impl Fn(&NodeId) -> Heard,
    ) -> Self {
        let voters = state.members(Role::Voter);
        let alive_count = state
            .nodes()
            .iter()
            .filter(|(n, i)| i.liveness == Liveness::Alive || *n == me)
            .count();
        let mut seats = Seats {
            learners: state.members(Role::Learner),
            want: want.min(alive_count).max(1),
            healthy: 0,
            voters,
            state,
            me,
        };
        seats.healthy = seats
            .voters
            .iter()
            .filter(|(_, n)| seats.alive(n) && heard(n) != Heard::MayNotVote)
            .count();
        seats
    }

    fn alive(&self, n: &NodeId) -> bool {
        n == self.me
            || self
                .state
                .nodes()
                .get(n)
                .is_some_and(|i| i.liveness == Liveness::Alive)
    }

    /// Alive followers that said they may vote.
    fn candidates<'s>(
        &'s self,
        heard: &'s impl Fn(&NodeId) -> Heard,
    ) -> impl Iterator<Item = (&'s NodeId, &'s shoal_model::NodeInfo)> + 's {
        self.state.nodes().iter().filter(move |(n, i)| {
            i.role == Role::Follower && self.alive(n) && heard(n) == Heard::MayVote
        })
    }
}

/// Why the master cannot fill every voter seat, when no node can take the
/// next one: said in `shoal status` and logged.
pub fn voter_shortfall(
    state: &State,
    me: &NodeId,
    want: usize,
    heard: impl Fn(&NodeId) -> Heard,
) -> Option<String> {
    let s = Seats::new(state, me, want, &heard);
    if s.healthy + s.learners.len() >= s.want || s.candidates(&heard).next().is_some() {
        return None;
    }
    let followers: Vec<&NodeId> = state
        .nodes()
        .iter()
        .filter(|(n, i)| i.role == Role::Follower && s.alive(n))
        .map(|(n, _)| n)
        .collect();
    let refuse = followers
        .iter()
        .filter(|n| heard(n) == Heard::MayNotVote)
        .count();
    let why = match (followers.len(), refuse) {
        (0, _) => "no live follower to take it".to_owned(),
        (f, r) if r == f => format!("every live follower ({f}) runs with --no-voter"),
        (f, r) => format!(
            "of {f} live followers, {r} run with --no-voter and the others have not reported yet"
        ),
    };
    Some(format!(
        "{} of {} voter seats held by healthy voters; no node can take another: {why}",
        s.healthy, s.want
    ))
}

/// The next membership change, if any. `dead_for` says how long the
/// master has seen a node dead or gone; `heard` what the node said of
/// itself (a learner must be reachable and may vote).
pub fn plan_voters(
    state: &State,
    me: &NodeId,
    want: usize,
    progress: &RaftProgress,
    dead_for: impl Fn(&NodeId) -> Option<Duration>,
    voter_grace: Duration,
    heard: impl Fn(&NodeId) -> Heard,
) -> Option<VoterChange> {
    if progress.pending_conf_change {
        return None;
    }
    let seats = Seats::new(state, me, want, &heard);
    let alive = |n: &NodeId| seats.alive(n);
    let refuses = |n: &NodeId| heard(n) == Heard::MayNotVote;
    let (voters, learners) = (&seats.voters, &seats.learners);
    let (want, healthy) = (seats.want, seats.healthy);
    let change = |kind, rid: &RaftId, node: &NodeId, role| VoterChange {
        kind,
        raft_id: *rid,
        node: node.clone(),
        role,
    };

    // A seat (a learner's or a voter's) given up: back to follower.
    let remove = |rid, node| change(MembershipChange::RemoveNode, rid, node, Role::Follower);
    let caught_up = |rid: &RaftId| {
        progress
            .matched
            .get(rid)
            .is_some_and(|m| m.0 + CAUGHT_UP >= progress.last.0)
    };
    if healthy < want {
        if let Some((rid, node)) = learners
            .iter()
            .find(|(rid, n)| alive(n) && !refuses(n) && caught_up(rid))
        {
            return Some(change(MembershipChange::AddNode, rid, node, Role::Voter));
        }
    }
    // A learner is not needed once enough voters are healthy (one unheard
    // for a moment is back), nor when it died or may not vote.
    let unneeded = |n: &NodeId| healthy >= want || !alive(n) || refuses(n);
    if let Some((rid, node)) = learners.iter().rev().find(|(_, n)| unneeded(n)) {
        return Some(remove(rid, node));
    }
    let past_grace = |n: &NodeId| dead_for(n).is_some_and(|d| d >= voter_grace);
    let leaving = |n: &NodeId| n != me && (past_grace(n) || (alive(n) && refuses(n)));
    if let Some((rid, node)) = voters.iter().find(|(_, n)| leaving(n)) {
        // Remove it when that keeps enough healthy voters, or when there is
        // nobody to replace it with anyway (it holds a seat for nothing);
        // else a replacement is added first, below.
        let candidates = seats.candidates(&heard).next().is_some();
        if healthy >= want || !candidates {
            return Some(remove(rid, node));
        }
    }
    // Healthy seats beyond `--voters`: the voter that joined last gives
    // its seat up (the master never does).
    if healthy > want && learners.is_empty() {
        if let Some((rid, node)) = voters.iter().rev().find(|(_, n)| n != me && alive(n)) {
            return Some(remove(rid, node));
        }
    }
    if healthy + learners.len() < want {
        return seats
            .candidates(&heard)
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
        plan_heard(c, progress, dead, &[])
    }

    /// What a node said of itself: those in `no_voter` that they may not
    /// vote, the others that they may.
    fn heard<'a>(no_voter: &'a [&'a str]) -> impl Fn(&NodeId) -> Heard + 'a {
        |n| match no_voter.contains(&n.as_str()) {
            true => Heard::MayNotVote,
            false => Heard::MayVote,
        }
    }

    fn plan_heard(
        c: &Cluster,
        progress: &RaftProgress,
        dead: &[(&str, u64)],
        no_voter: &[&str],
    ) -> Option<VoterChange> {
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
            heard(no_voter),
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

    #[test]
    fn a_node_that_may_not_vote_is_never_added_and_the_master_says_why() {
        let c = Cluster::new(&["m", "a", "b"]);
        let p = RaftProgress::default();
        assert_eq!(plan_heard(&c, &p, &[], &["a", "b"]), None);
        let why = voter_shortfall(&c.0, &NodeId::from("m"), 3, heard(&["a", "b"]));
        assert_eq!(
            why.as_deref(),
            Some(
                "1 of 3 voter seats held by healthy voters; no node can take another: \
                 every live follower (2) runs with --no-voter"
            )
        );
        // b may vote after all: it becomes a learner, and nothing is short.
        let got = plan_heard(&c, &p, &[], &["a"]).unwrap();
        assert_eq!((got.node.as_str(), got.role), ("b", Role::Learner));
        assert_eq!(
            voter_shortfall(&c.0, &NodeId::from("m"), 3, heard(&["a"])),
            None
        );
    }

    #[test]
    fn a_voter_that_may_not_vote_gives_its_seat_up_once_another_holds_one() {
        let mut c = Cluster::new(&["m", "a", "b", "f"]);
        c.role("a", Role::Voter);
        c.role("b", Role::Voter);
        let mut progress = RaftProgress::default();
        // a says it may not vote: f is added and promoted first.
        let got = plan_heard(&c, &progress, &[], &["a"]).unwrap();
        assert_eq!((got.node.as_str(), got.role), ("f", Role::Learner));
        c.role("f", Role::Learner);
        progress.matched.insert(got.raft_id, EventIdx(0));
        let got = plan_heard(&c, &progress, &[], &["a"]).unwrap();
        assert_eq!((got.node.as_str(), got.role), ("f", Role::Voter));
        c.role("f", Role::Voter);
        let got = plan_heard(&c, &progress, &[], &["a"]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str(), got.role),
            (MembershipChange::RemoveNode, "a", Role::Follower)
        );
    }

    #[test]
    fn a_voter_back_from_a_moment_unheard_leaves_no_seat_too_many() {
        let mut c = Cluster::new(&["m", "a", "b", "f"]);
        c.role("a", Role::Voter);
        c.role("b", Role::Voter);
        c.liveness("b", Liveness::Suspect);
        let mut progress = RaftProgress {
            last: EventIdx(100),
            ..Default::default()
        };
        let got = plan(&c, &progress, &[]).unwrap();
        assert_eq!((got.node.as_str(), got.role), ("f", Role::Learner));
        c.role("f", Role::Learner);
        progress.matched.insert(got.raft_id, EventIdx(100));
        // b is heard again before f is promoted: f is not needed.
        c.liveness("b", Liveness::Alive);
        let got = plan(&c, &progress, &[]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str(), got.role),
            (MembershipChange::RemoveNode, "f", Role::Follower)
        );
        // Or b comes back once f holds a seat: four healthy voters of
        // three wanted, and the one that joined last gives its seat up.
        c.role("f", Role::Voter);
        let got = plan(&c, &progress, &[]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str(), got.role),
            (MembershipChange::RemoveNode, "f", Role::Follower)
        );
        c.role("f", Role::Follower);
        assert_eq!(plan(&c, &progress, &[]), None, "three voters, as wanted");
    }

    #[test]
    fn the_master_keeps_its_seat_when_voters_are_too_many() {
        // The master joined last of the voters; the seat given up is the
        // next one.
        let mut c = Cluster::new(&["a", "b", "c", "m"]);
        for n in ["a", "b", "c", "m"] {
            c.role(n, Role::Voter);
        }
        let got = plan(&c, &RaftProgress::default(), &[]).unwrap();
        assert_eq!(
            (got.kind, got.node.as_str()),
            (MembershipChange::RemoveNode, "c")
        );
    }

    #[test]
    fn a_follower_that_comes_after_the_grace_period_still_replaces_a_dead_voter() {
        let mut c = Cluster::new(&["m", "a", "b", "f"]);
        c.role("a", Role::Voter);
        c.role("b", Role::Voter);
        c.liveness("b", Liveness::Dead);
        let got = plan(&c, &RaftProgress::default(), &[("b", 60)]).unwrap();
        assert_eq!((got.node.as_str(), got.role), ("f", Role::Learner));
    }
}
