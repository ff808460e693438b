//! What only the master does, and the state it keeps for it.
//!
//! `MasterState` is created when this node becomes the Raft leader and
//! dropped the moment it is not (`Node::sync_master_role`, the one place
//! that decides): nothing of a previous term survives into the next. It
//! holds the sequencer's in-flight proposals, the failure detector's
//! view, pending joins, TTL clocks and the placement planner. Its plan
//! tick (every `plan_every`) founds the cluster, records liveness, keeps
//! the voters, expires keys, outcomes and tasks, places tasks and
//! replicas, and expires leases.

pub mod expiry;
pub mod liveness;
pub mod voters;

use super::timers::Timer;
use super::Node;
use crate::log_store::LogStore;
use crate::placement::Planner;
use crate::sequencer::Sequencer;
use crate::wire::Refusal;
use expiry::{Expiry, Retention};
use liveness::{LivenessTracker, Periods};
use shoal_model::{encode_event, Event, NodeId, RaftId};
use std::collections::BTreeMap;
use std::time::Duration;
use voters::{plan_voters, voter_shortfall, Heard, RaftProgress};

/// Commands in flight at once on the master.
const MAX_IN_FLIGHT: usize = 4096;
/// A proposal not applied after this long may be proposed again.
const PROPOSAL_STALE: Duration = Duration::from_secs(3);
/// A join is proposed again after this long without being applied.
const JOIN_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct MasterState {
    /// When this node became master.
    pub since: Duration,
    founding_proposed: bool,
    pub sequencer: Sequencer,
    pub liveness: LivenessTracker,
    /// Joins proposed, not yet applied.
    pub joins: BTreeMap<NodeId, Duration>,
    pub expiry: Expiry,
    pub planner: Planner,
    /// Why a voter seat stays empty, while one does (`voter_shortfall`).
    pub voter_shortfall: Option<String>,
}

impl MasterState {
    pub fn new(now: Duration) -> Self {
        MasterState {
            since: now,
            founding_proposed: false,
            sequencer: Sequencer::new(MAX_IN_FLIGHT, PROPOSAL_STALE),
            liveness: LivenessTracker::default(),
            joins: BTreeMap::new(),
            expiry: Expiry::new(now),
            planner: Planner::default(),
            voter_shortfall: None,
        }
    }

    /// Whether a join by `node` was proposed lately.
    pub fn join_pending(&self, node: &NodeId, now: Duration) -> bool {
        self.joins
            .get(node)
            .is_some_and(|t| now.saturating_sub(*t) < JOIN_RETRY)
    }

    /// A proposal of this term was applied: what waited for it stops
    /// waiting.
    pub fn on_applied(&mut self, event: &Event) {
        match event {
            Event::NodeJoined { node, .. } => {
                self.joins.remove(node);
            }
            Event::NodeLiveness { node, liveness } => self.liveness.on_applied(node, *liveness),
            Event::NodeForgotten { node } => self.liveness.forgotten(node),
            Event::KvExpired { key, version } => self.expiry.on_applied(key, *version),
            Event::Command { cmd, .. } => self.sequencer.on_applied(&cmd.id),
            _ => {}
        }
    }

    /// An event of the plan tick was proposed: not again until it applies.
    fn proposed(&mut self, event: &Event) {
        match event {
            Event::NodeLiveness { node, liveness } => {
                self.liveness.proposed(node.clone(), *liveness)
            }
            Event::NodeForgotten { node } => self.liveness.forgetting(node.clone()),
            Event::KvExpired { key, version } => self.expiry.proposed(key.clone(), *version),
            _ => {}
        }
    }
}

impl<L: LogStore> Node<L> {
    /// Proposes an event (not a client command) as master.
    pub(super) fn propose(&mut self, event: &Event) -> Result<(), Refusal> {
        let raft = self.raft.as_mut().ok_or(Refusal::NotMaster)?;
        let r = raft.propose(encode_event(event));
        if r.is_err() {
            self.metrics.proposals_refused += 1;
        }
        r
    }

    /// The plan tick, on the plan timer while master.
    pub(super) fn plan(&mut self) {
        let Some(mut m) = self.master.take() else {
            return;
        };
        self.timers.set(Timer::Plan, self.now + self.cfg.plan_every);
        if self.state.cluster_id().is_none() {
            self.plan_founding(&mut m);
        } else {
            // Liveness first: the voter change below reads what it saw.
            let liveness = self.plan_liveness(&mut m);
            self.propose_all(&mut m, liveness);
            let forget = m
                .liveness
                .to_forget(
                    &self.state,
                    self.now,
                    self.periods(),
                    self.cfg.forget_left_after,
                )
                .into_iter()
                .map(|node| Event::NodeForgotten { node })
                .collect();
            self.propose_all(&mut m, forget);
            self.plan_membership(&mut m);
            let rest = self.plan_work(&mut m);
            self.propose_all(&mut m, rest);
        }
        self.master = Some(m);
    }

    fn propose_all(&mut self, m: &mut MasterState, events: Vec<Event>) {
        for e in &events {
            if self.propose(e).is_ok() {
                m.proposed(e);
            }
        }
    }

    /// The founder's first entry records the cluster in State.
    fn plan_founding(&mut self, m: &mut MasterState) {
        if m.founding_proposed {
            return;
        }
        let Some(cluster_id) = self.cluster.clone() else {
            return;
        };
        let event = Event::ClusterFounded {
            cluster_id,
            founder: self.cfg.node.clone(),
            addr: self.cfg.addr.clone(),
            at_ms: self.wall_ms,
        };
        if self.propose(&event).is_ok() {
            m.founding_proposed = true;
        }
    }

    fn periods(&self) -> Periods {
        Periods {
            node_timeout: self.cfg.node_timeout,
            voter_grace: self.cfg.voter_grace,
        }
    }

    fn plan_liveness(&self, m: &mut MasterState) -> Vec<Event> {
        let peers = &self.peers;
        m.liveness
            .plan(
                &self.state,
                &self.cfg.node,
                |n| peers.last_seen(n),
                self.now,
                m.since,
                self.periods(),
            )
            .into_iter()
            .map(|(node, liveness)| Event::NodeLiveness { node, liveness })
            .collect()
    }

    /// Expiries, grants and lease expiries, replica placements.
    fn plan_work(&self, m: &mut MasterState) -> Vec<Event> {
        let now = self.now;
        let settled = now.saturating_sub(m.since) >= self.cfg.node_timeout;
        let mut events = Vec::new();
        let retention = Retention {
            outcomes: self.cfg.outcome_retention,
            tasks: self.cfg.task_retention,
        };
        let earliest = m.since + self.cfg.node_timeout;
        events.extend(
            m.expiry
                .plan(&self.state, now, earliest, self.wall_ms, retention),
        );
        let caps = &self.capacities;
        // Work goes to a node heard in this term, and lately: one cut off
        // with the last master is alive in State until this one's
        // detector has had time to say otherwise.
        let since = m.since;
        let heard =
            |n: &NodeId| *n == self.cfg.node || self.peers.heard_lately_since(n, since, now);
        events.extend(m.planner.plan(
            &self.cfg.placement,
            &self.state,
            caps,
            &heard,
            now,
            m.since,
            self.cfg.node_timeout,
        ));
        events.extend(m.planner.plan_replicas(
            &self.cfg.placement,
            &self.state,
            caps,
            &heard,
            now,
            settled,
        ));
        events
    }

    /// At most one voter change per tick, through Raft's conf change.
    fn plan_membership(&mut self, m: &mut MasterState) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        let progress = RaftProgress {
            last: raft.last_index(),
            pending_conf_change: raft.has_pending_conf_change(),
            matched: self
                .state
                .nodes()
                .values()
                .filter_map(|i| raft.matched(i.raft_id).map(|m| (i.raft_id, m)))
                .collect::<BTreeMap<RaftId, _>>(),
        };
        let change = plan_voters(
            &self.state,
            &self.cfg.node,
            self.cfg.voters,
            &progress,
            |n| m.liveness.dead_for(n, self.now),
            self.cfg.voter_grace,
            |n| self.heard(n),
        );
        let Some(c) = change else {
            let short = voter_shortfall(&self.state, &self.cfg.node, self.cfg.voters, |n| {
                self.heard(n)
            });
            if short.is_some() && short != m.voter_shortfall {
                tracing::warn!(
                    why = short.as_deref().unwrap_or_default(),
                    "voter seats short"
                );
            }
            m.voter_shortfall = short;
            return;
        };
        m.voter_shortfall = None;
        tracing::info!(node = %c.node, raft_id = %c.raft_id, role = ?c.role, "changing membership");
        let context = encode_event(&Event::Membership {
            node: c.node,
            role: c.role,
        });
        if let Some(raft) = self.raft.as_mut() {
            if raft.propose_membership(c.kind, c.raft_id, context).is_err() {
                self.metrics.proposals_refused += 1;
            }
        }
    }

    /// What a node said of itself: whether it may vote (from the capacity
    /// it reports), once it has been heard.
    fn heard(&self, n: &NodeId) -> Heard {
        match self.capacities.get(n).map(|c| c.metrics.voter) {
            Some(false) => Heard::MayNotVote,
            Some(true) if self.peers.known(n) => Heard::MayVote,
            _ => Heard::Nothing,
        }
    }
}
