//! Peers: what this node hears of the others through their heartbeats,
//! who counts as alive, and how a node that does not run Raft learns who
//! the master is.
//!
//! Liveness comes from heartbeats (transient, every few hundred
//! milliseconds), never from connection events: a peer is alive while its
//! last heartbeat is younger than the node timeout. Members broadcast
//! theirs; a follower sends its own to the members only (`fan_in`), so a
//! member hears every node and a follower hears the members. The master's failure
//! detector (`master::liveness`) turns the same sightings into logged
//! `NodeLiveness` events.

use super::catch_up::Source;
use super::io::{Output, PeerSummary};
use super::master::liveness::heard_lately;
use super::Node;
use crate::log_store::LogStore;
use crate::placement::Capacities;
use crate::wire::{Direct, Gossip};
use shoal_model::{
    ClusterId, EventIdx, Heartbeat, LeaderReason, Liveness, NodeId, Role, Standing, Term,
    TransientEvent,
};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::time::Duration;

/// Peers remembered at most; past it the long-silent ones are dropped.
const MAX_PEERS: usize = 2048;
/// How long a silent peer is remembered once the map is full.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Peer {
    last_seen: Duration,
    hb: Heartbeat,
    cluster: Option<ClusterId>,
}

/// Every peer heard from, with its latest heartbeat.
#[derive(Debug)]
pub struct Peers {
    map: BTreeMap<NodeId, Peer>,
    node_timeout: Duration,
    /// What `named_master` last counted, and for which cluster: a joiner
    /// asks on every heartbeat it hears, and counting is a pass over every
    /// peer. Cleared when a claim it counted may have changed (`record`)
    /// and on each `recount`, so a claim gone stale with its heartbeat
    /// drops out at the next one.
    named: OnceCell<(Option<ClusterId>, Option<NodeId>)>,
}

impl Peers {
    pub fn new(node_timeout: Duration) -> Self {
        Peers {
            map: BTreeMap::new(),
            node_timeout,
            named: OnceCell::new(),
        }
    }

    /// Records a heartbeat; `cluster` is the one its frame was sent in.
    pub fn record(
        &mut self,
        from: NodeId,
        cluster: Option<ClusterId>,
        hb: Heartbeat,
        now: Duration,
    ) {
        let claim_kept = self.map.get(&from).is_some_and(|p| {
            self.fresh(p, now) && p.cluster == cluster && p.hb.leader == hb.leader
        });
        if !claim_kept {
            self.named.take();
        }
        self.map.insert(
            from,
            Peer {
                last_seen: now,
                hb,
                cluster,
            },
        );
        if self.map.len() > MAX_PEERS {
            self.map
                .retain(|_, p| now.saturating_sub(p.last_seen) < FORGET_AFTER);
        }
    }

    /// Counts the named master afresh when next asked (claims go stale
    /// with their heartbeats; a node calls this once a heartbeat interval).
    pub fn recount(&mut self) {
        self.named.take();
    }

    pub fn known(&self, node: &NodeId) -> bool {
        self.map.contains_key(node)
    }

    pub fn last_seen(&self, node: &NodeId) -> Option<Duration> {
        self.map.get(node).map(|p| p.last_seen)
    }

    /// Heard from within the node timeout.
    pub fn heard(&self, node: &NodeId, now: Duration) -> bool {
        self.map.get(node).is_some_and(|p| self.fresh(p, now))
    }

    /// Heard from within half the node timeout, as the master's failure
    /// detector counts (`liveness::heard_lately`).
    pub fn heard_lately(&self, node: &NodeId, now: Duration) -> bool {
        heard_lately(self.last_seen(node), now, self.node_timeout)
    }

    /// Heard from since `since` (a master's election), and lately.
    pub fn heard_lately_since(&self, node: &NodeId, since: Duration, now: Duration) -> bool {
        let seen = self.last_seen(node);
        seen >= Some(since) && heard_lately(seen, now, self.node_timeout)
    }

    fn fresh(&self, p: &Peer, now: Duration) -> bool {
        now.saturating_sub(p.last_seen) < self.node_timeout
    }

    /// Where each peer of `cluster` heard from within `within` stands
    /// (its applied index, as its last heartbeat said).
    pub fn applied_heard_within(
        &self,
        cluster: Option<&ClusterId>,
        now: Duration,
        within: Duration,
    ) -> Vec<EventIdx> {
        let heard = |p: &&Peer| now.saturating_sub(p.last_seen) < within;
        let of_cluster = self.map.values().filter(|p| p.cluster.as_ref() == cluster);
        of_cluster.filter(heard).map(|p| p.hb.applied).collect()
    }

    /// The address a peer announced in its heartbeats.
    pub fn addr(&self, node: &NodeId) -> Option<&str> {
        self.map.get(node).map(|p| p.hb.addr.as_str())
    }

    /// Live peers of `cluster`.
    pub fn live_members(&self, cluster: Option<&ClusterId>, now: Duration) -> Vec<NodeId> {
        self.map
            .iter()
            .filter(|(_, p)| p.cluster.as_ref() == cluster && self.fresh(p, now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Peers of `cluster` as sources of ranges and snapshots.
    pub fn sources(&self, cluster: Option<&ClusterId>, now: Duration) -> Vec<Source> {
        self.sources_where(cluster, now, |_| true)
    }

    /// As `sources`, only the peers `keep` admits (asked before anything
    /// is copied).
    pub fn sources_where(
        &self,
        cluster: Option<&ClusterId>,
        now: Duration,
        keep: impl Fn(&NodeId) -> bool,
    ) -> Vec<Source> {
        self.map
            .iter()
            .filter(|(n, p)| p.cluster.as_ref() == cluster && keep(n))
            .map(|(n, p)| self.as_source(n, p, now))
            .collect()
    }

    /// `node` as a source, if it is a peer of `cluster`.
    pub fn source(
        &self,
        node: &NodeId,
        cluster: Option<&ClusterId>,
        now: Duration,
    ) -> Option<Source> {
        let p = self
            .map
            .get(node)
            .filter(|p| p.cluster.as_ref() == cluster)?;
        Some(self.as_source(node, p, now))
    }

    fn as_source(&self, node: &NodeId, p: &Peer, now: Duration) -> Source {
        Source {
            node: node.clone(),
            floor: p.hb.log_floor,
            applied: p.hb.applied,
            live: self.fresh(p, now),
        }
    }

    /// What `cluster`'s nodes say of it (the one standing first, should
    /// they differ).
    pub fn standing_of(&self, cluster: &ClusterId) -> Option<Standing> {
        let of_cluster = self
            .map
            .values()
            .filter(|p| p.cluster.as_ref() == Some(cluster));
        let said = of_cluster.filter_map(|p| p.hb.standing);
        said.max_by_key(|s| (s.holds_data, std::cmp::Reverse(s.founded_ms)))
    }

    /// Whether any peer was heard from within the node timeout.
    pub fn any_heard(&self, now: Duration) -> bool {
        self.map.values().any(|p| self.fresh(p, now))
    }

    /// Whether a live peer with a smaller id has no cluster either and may
    /// found one (it may hold a voter seat): then that one founds, and
    /// this one joins it.
    pub fn smaller_empty_peer(&self, me: &NodeId, now: Duration) -> bool {
        self.map
            .iter()
            .any(|(n, p)| p.cluster.is_none() && p.hb.voter && n < me && self.fresh(p, now))
    }

    /// The master more than half of `voters` name in the heartbeats heard
    /// from them within the node timeout, with its term.
    pub fn master_by_voters(&self, voters: &[NodeId], now: Duration) -> Option<(NodeId, Term)> {
        let mut votes: BTreeMap<(&NodeId, Term), usize> = BTreeMap::new();
        for v in voters {
            let Some(p) = self.map.get(v).filter(|p| self.fresh(p, now)) else {
                continue;
            };
            if let Some(l) = &p.hb.leader {
                *votes.entry((l, p.hb.term)).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .find(|(_, n)| n * 2 > voters.len())
            .map(|((l, t), _)| (l.clone(), t))
    }

    /// The latest heartbeat of a peer.
    pub fn heartbeat(&self, node: &NodeId) -> Option<&Heartbeat> {
        self.map.get(node).map(|p| &p.hb)
    }

    /// The node more than half of the live peers of `cluster` that name a
    /// master name, for a node that has no members of its own to ask.
    /// Peers that name none (other joiners, a cluster between masters) say
    /// nothing about who it is and do not count: two nodes joining at once
    /// would otherwise each wait for the other to name a master first.
    pub fn named_master(&self, cluster: Option<&ClusterId>, now: Duration) -> Option<NodeId> {
        if let Some((c, named)) = self.named.get() {
            if c.as_ref() == cluster {
                return named.clone();
            }
        }
        let named = self.count_named(cluster, now);
        // Kept only while no other cluster's count is.
        let _ = self.named.set((cluster.cloned(), named.clone()));
        named
    }

    fn count_named(&self, cluster: Option<&ClusterId>, now: Duration) -> Option<NodeId> {
        let mut votes: BTreeMap<&NodeId, usize> = BTreeMap::new();
        let mut heard = 0;
        for p in self.map.values() {
            if p.cluster.as_ref() == cluster && self.fresh(p, now) {
                if let Some(l) = &p.hb.leader {
                    heard += 1;
                    *votes.entry(l).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .find(|(_, n)| n * 2 > heard)
            .map(|(l, _)| l.clone())
    }

    pub fn summaries(&self, cluster: Option<&ClusterId>, now: Duration) -> Vec<PeerSummary> {
        self.map
            .iter()
            .map(|(n, p)| PeerSummary {
                node: n.clone(),
                addr: p.hb.addr.clone(),
                since_heard: now.saturating_sub(p.last_seen),
                applied: p.hb.applied,
                commit: p.hb.commit,
                same_cluster: p.cluster.as_ref() == cluster,
            })
            .collect()
    }
}

/// Who this node believes is master, and from which term. A member learns
/// it from Raft; a follower from the voters' heartbeats (`learn_master`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterView {
    pub id: Option<NodeId>,
    pub term: Term,
    /// Why this node leads, while it does (from Raft: `Won`).
    pub reason: Option<LeaderReason>,
}

impl<L: LogStore> Node<L> {
    /// This node's heartbeat, on the heartbeat timer (see `announce`).
    pub(super) fn heartbeat(&mut self, out: &mut Vec<Output>) {
        let hb = self.own_heartbeat();
        self.announce(TransientEvent::Heartbeat(hb), out);
    }

    /// A periodic message about this node: broadcast by a Raft member or a
    /// node nobody knows yet, sent one-to-one to the members by a follower
    /// (`fan_in`).
    pub(super) fn announce(&self, ev: TransientEvent, out: &mut Vec<Output>) {
        match self.fan_in() {
            Some(members) => {
                for m in members {
                    self.send(m, Direct::Transient(ev.clone()), out);
                }
            }
            None => out.push(Output::Broadcast(self.frame(Gossip::Transient(ev)))),
        }
    }

    /// Whom a follower's periodic messages (heartbeats, capacity) go to:
    /// the Raft members its State names, which track liveness and place
    /// work and of which any may become master. None for a node that
    /// broadcasts instead: a member, whose heartbeat every node follows
    /// (who leads, how far the log is committed), and a node whose State
    /// names no member (it holds none yet), which nobody would otherwise
    /// hear.
    ///
    /// A node its State does not record yet sends to the members too: the
    /// master, which records it, is one of them. When fifty hosts start at
    /// once, fifty heartbeats broadcast every few hundred milliseconds
    /// until each is recorded cost every node a core's worth of gossip on
    /// a small machine, and the master could not record them for it.
    ///
    /// So each follower sends a fixed number of messages whatever the
    /// cluster's size, and receives only the members' broadcasts; the
    /// master receives one heartbeat per node: traffic grows with N at the
    /// members, not with N squared.
    ///
    /// A joiner (its State names no member yet) that has heard whom its
    /// peers name master sends to that master alone while it loads its
    /// first State: it is the node that records it. Broadcast, each
    /// joiner's heartbeats were relayed by every node of the mesh for as
    /// long as its snapshot took: with twenty joining at once each member
    /// took 46 gossip messages a second instead of 9 (13 this way), and
    /// the joiners, loading, relayed them all.
    pub(super) fn fan_in(&self) -> Option<Vec<NodeId>> {
        if self.raft.is_some() {
            return None;
        }
        let members: Vec<NodeId> = self
            .state
            .nodes()
            .iter()
            .filter(|(id, n)| n.role != Role::Follower && **id != self.cfg.node)
            .map(|(id, _)| id.clone())
            .collect();
        if !members.is_empty() {
            return Some(members);
        }
        let master = self.named_master().filter(|m| *m != self.cfg.node);
        master.map(|m| vec![m])
    }

    /// Whether this node should hear `id`'s heartbeats: a member hears
    /// every node; a follower hears the members (see `fan_in`).
    pub(super) fn expects_heartbeats_from(&self, role: Role) -> bool {
        self.raft.is_some() || role != Role::Follower
    }

    /// The members this node should hear (`expects_heartbeats_from`) and
    /// has not within the node timeout, at most `Capacities::MAX_UNHEARD`:
    /// reported with its capacity, for the dashboard's who-hears-whom.
    pub(super) fn unheard(&self) -> Vec<NodeId> {
        self.state
            .nodes()
            .iter()
            .filter(|(id, n)| {
                **id != self.cfg.node
                    && n.liveness != Liveness::Left
                    && self.expects_heartbeats_from(n.role)
                    && !self.peers.heard(id, self.now)
            })
            .map(|(id, _)| id.clone())
            .take(Capacities::MAX_UNHEARD)
            .collect()
    }

    fn own_heartbeat(&self) -> Heartbeat {
        Heartbeat {
            node: self.cfg.node.clone(),
            addr: self.cfg.addr.clone(),
            cluster_id: self.cluster.clone(),
            incarnation: self.cfg.incarnation,
            started_ms: self.cfg.started_ms,
            sent_ms: self.wall_ms,
            term: self.term(),
            applied: self.state.index(),
            commit: self.commit_index(),
            log_floor: self.log.first_index(),
            leader: self.master_view.id.clone(),
            standing: self.standing(),
            voter: self.cfg.voter,
            leader_reason: self.master_view.reason.clone().filter(|_| self.is_master()),
        }
    }

    /// Why the master this node believes in leads: its own reason on the
    /// master, else what the master's last heartbeat said while it led.
    pub(super) fn master_reason(&self) -> Option<LeaderReason> {
        let m = self.master_view.id.as_ref()?;
        if *m == self.cfg.node {
            return self.master_view.reason.clone().filter(|_| self.is_master());
        }
        let hb = self.peers.heartbeat(m)?;
        hb.leader_reason
            .clone()
            .filter(|_| hb.leader.as_ref() == Some(m))
    }

    pub(super) fn on_heartbeat(
        &mut self,
        from: NodeId,
        cluster: Option<ClusterId>,
        hb: Heartbeat,
        out: &mut Vec<Output>,
    ) {
        if from != hb.node {
            self.metrics.bad_messages += 1;
            return;
        }
        if hb.node == self.cfg.node {
            self.on_own_heartbeat(&hb, out);
            return;
        }
        if self.cluster.is_none() {
            if let Some(c) = &cluster {
                tracing::info!(node = %self.cfg.node, cluster = %c, via = %from, "joining the cluster in sight");
                self.adopt_cluster(c.clone(), out);
            }
        }
        let same_cluster = cluster == self.cluster;
        let commit = hb.commit;
        // A node heard for the first time, or again after a silence, gets
        // this one's heartbeat at once: a joiner then knows the master,
        // the commit and its sources within a round trip of its first
        // heartbeat, and so does a node back from a partition or a cut
        // link (a follower hears the members' heartbeats by gossip, whose
        // connections across the cut may wait seconds for TCP to retry).
        if !self.peers.heard_lately(&from, self.now) {
            let hb = self.own_heartbeat();
            let hb = TransientEvent::Heartbeat(hb);
            self.send(from.clone(), Direct::Transient(hb), out);
        }
        self.peers.record(from.clone(), cluster, hb, self.now);
        if !same_cluster {
            return;
        }
        // A member learns the master from Raft; until Raft names one (a
        // voter removed while it was away hears from no leader), and on a
        // follower, the voters' heartbeats say who it is.
        if self.raft.is_none() || self.master_view.id.is_none() {
            self.learn_master();
        }
        // Only the master is believed about the commit (see `trust`).
        if self.believed(&from) {
            self.catch_up.note_commit(commit);
        }
    }

    /// A heartbeat in this node's name (gossip is signed: only a holder of
    /// its key can send one) from another incarnation: a second live
    /// process has this identity. The one that started later stops; a
    /// heartbeat sent before this process started is an earlier run's,
    /// replayed, and proves nothing.
    fn on_own_heartbeat(&mut self, hb: &Heartbeat, out: &mut Vec<Output>) {
        if hb.incarnation == self.cfg.incarnation || hb.sent_ms <= self.cfg.started_ms {
            return;
        }
        let this_is_later =
            (self.cfg.started_ms, self.cfg.incarnation) > (hb.started_ms, hb.incarnation);
        if this_is_later {
            self.fail(
                format!(
                    "another live process uses this node's identity ({}); refusing to go on. \
                     Was the data directory copied? Give each host its own.",
                    self.cfg.node
                ),
                out,
            );
        } else {
            tracing::warn!(node = %self.cfg.node, "a later process with this node's identity is running; it should stop");
        }
    }

    /// A follower's master: the one a majority of voters name; while State
    /// names no voters (a joiner), the one most peers name. A master whose
    /// own heartbeat says it no longer leads is forgotten.
    fn learn_master(&mut self) {
        let named = if self.knows_members() {
            // Other voters: a member whose Raft names no leader (one removed
            // while away) does not count its own silence.
            let voters: Vec<NodeId> = self
                .state
                .members(shoal_model::Role::Voter)
                .into_iter()
                .map(|(_, n)| n)
                .filter(|n| *n != self.cfg.node)
                .collect();
            self.peers.master_by_voters(&voters, self.now)
        } else {
            self.named_master().map(|m| (m, self.master_view.term))
        };
        match named {
            // Others may still name this node after it stepped down (their
            // heartbeats predate it): only Raft makes it the master.
            Some((id, term)) if id != self.cfg.node => {
                self.master_view = MasterView {
                    id: Some(id),
                    term,
                    reason: None,
                }
            }
            _ => {
                let stepped_down = self.master_view.id.as_ref().is_some_and(|m| {
                    self.peers
                        .heartbeat(m)
                        .is_some_and(|hb| hb.leader.as_ref() != Some(m))
                });
                if stepped_down {
                    self.master_view.id = None;
                }
            }
        }
    }

    /// Whether the master this node believes in was heard from within three
    /// heartbeat intervals: a client's write waits for it only while it
    /// is, so that a write on the minority side of a partition is refused
    /// within a second (`PendingConfig::no_master_grace`), long before the
    /// failure detector's `node_timeout` marks the master suspect.
    /// A master that stepped down (its own heartbeat names no leader, or
    /// another) is not in sight, though it is heard: on the minority side
    /// of a partition, the old master is.
    pub(super) fn master_in_sight(&self) -> bool {
        match &self.master_view.id {
            Some(l) if *l == self.cfg.node => self.is_master(),
            Some(l) => {
                let heard = self
                    .peers
                    .last_seen(l)
                    .is_some_and(|t| self.now.saturating_sub(t) < self.cfg.heartbeat_every * 3);
                let leads = self
                    .peers
                    .heartbeat(l)
                    .is_some_and(|hb| hb.leader.as_ref() == Some(l));
                heard && leads
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
