//! Finding the cluster and joining it (invariant 8).
//!
//! A node with no cluster listens for `discovery_window`: if it hears a
//! heartbeat of a cluster it adopts that cluster's id (and loads State by
//! snapshot); if it only hears other empty nodes, the one with the smallest
//! id founds a cluster and the others join it. A node with State but not
//! recorded as a member (or recorded at another address) asks the master
//! to record it (`Direct::Join` → `Event::NodeJoined`).
//!
//! A node given explicit peers (`--peer`) founds only once it has heard
//! one: while none answers (down, a wrong address, or a cluster key that
//! does not match) it waits and says so, rather than found a second
//! cluster that the peers' cluster would never merge with.
//!
//! Nodes started at the same moment can miss each other in the window: a
//! node that heard no one founds a cluster alone while the others form
//! one. So a node whose cluster holds nothing a client wrote (no keys,
//! tasks, deployments or command outcomes, nothing in flight) gives it up
//! when it hears a heartbeat of another cluster that stands before its own
//! (`rank`: one that holds data, else the one founded first): it forgets
//! the cluster and joins the other as an empty node would. Each node of
//! such a cluster decides alone and only ever moves forward in one fixed
//! order, so nodes started together end in one cluster; a cluster that
//! holds anything of a client's is never given up.
//!
//! Members' addresses are in State; the node asks its shell to keep a
//! connection to each (`Output::Dial`), so the mesh does not depend on the
//! peers a node happened to be started with.

use super::catch_up::CatchUp;
use super::io::Output;
use super::timers::Timer;
use super::MasterView;
use super::Node;
use crate::consensus::RaftBase;
use crate::log_store::LogStore;
use crate::wire::{Direct, PROTOCOL_VERSION};
use crate::worker::Worker;
use rand::Rng;
use shoal_log::{HardState, MembershipRecord};
use shoal_model::{
    ClusterId, Event, EventIdx, Heartbeat, Liveness, NodeId, RaftId, Role, Standing, State,
};
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::time::Duration;

/// A join is asked for again after this long without being recorded.
const JOIN_RETRY: Duration = Duration::from_secs(1);
/// A node waiting for its peers says so this often.
const PEER_WAIT_SAY_EVERY: Duration = Duration::from_secs(10);

impl<L: LogStore> Node<L> {
    /// This node now belongs to `cluster`.
    pub(super) fn adopt_cluster(&mut self, cluster: ClusterId, out: &mut Vec<Output>) {
        self.cluster = Some(cluster.clone());
        out.push(Output::ClusterAdopted(cluster));
        self.timers.cancel(Timer::Discovery);
        self.timers.set(Timer::Metrics, self.now);
    }

    /// On the discovery timer: found a cluster if none showed up within
    /// the window and no smaller empty node is in sight.
    pub(super) fn discover(&mut self, out: &mut Vec<Output>) {
        if self.cluster.is_some() {
            return;
        }
        let window_ends = self.started + self.cfg.discovery_window;
        if self.now < window_ends || self.peers.smaller_empty_peer(&self.cfg.node, self.now) {
            // Look again soon: the smaller node may found, or fall silent.
            let at = window_ends.max(self.now + self.cfg.heartbeat_every);
            self.timers.set(Timer::Discovery, at);
            return;
        }
        let no_peer = self.cfg.found_with_peers_only && !self.peers.any_heard(self.now);
        if no_peer || !self.cfg.voter {
            if self
                .peer_wait_said
                .is_none_or(|t| self.now >= t + PEER_WAIT_SAY_EVERY)
            {
                self.peer_wait_said = Some(self.now);
                if !self.cfg.voter {
                    tracing::warn!(
                        "this node runs with --no-voter: it joins a cluster and never founds \
                         one; waiting for a node that may vote to found it"
                    );
                } else {
                    tracing::warn!(
                        "no peer given by --peer answers; waiting for one rather than founding \
                         a second cluster (check the peers' addresses and that every node has \
                         the same --cluster-key; start the first node without --peer to found \
                         one)"
                    );
                }
            }
            self.timers
                .set(Timer::Discovery, self.now + self.cfg.heartbeat_every);
            return;
        }
        let id = ClusterId(format!("{:032x}", self.rng.gen::<u128>()));
        tracing::info!(node = %self.cfg.node, cluster = %id, "no cluster in sight; founding one");
        self.adopt_cluster(id, out);
        let base = RaftBase {
            voters: vec![RaftId(1)],
            ..Default::default()
        };
        if let Err(e) = self.start_raft(RaftId(1), base) {
            self.fail(format!("could not start raft: {e}"), out);
            return;
        }
        if let Some(r) = self.raft.as_mut() {
            let _ = r.campaign();
        }
    }

    /// A heartbeat of another cluster: this node gives up its own if it
    /// holds nothing of a client's and the other is ahead.
    pub(super) fn heard_other_cluster(
        &mut self,
        version: u16,
        cluster: Option<&ClusterId>,
        hb: &Heartbeat,
        out: &mut Vec<Output>,
    ) {
        let (Some(mine), Some(cluster)) = (self.cluster.clone(), cluster) else {
            return;
        };
        if version != PROTOCOL_VERSION {
            return;
        }
        let Some(theirs) = hb.standing else {
            return;
        };
        // Until this node holds its cluster's State, it goes by what the
        // cluster's nodes say of it; knowing nothing, any cluster stands
        // before it.
        let own = self.standing().or_else(|| self.peers.standing_of(&mine));
        let before = own.is_none_or(|own| rank(theirs, cluster) > rank(own, &mine));
        if cluster == &mine || !before || !self.holds_nothing_of_a_clients() {
            return;
        }
        tracing::warn!(node = %self.cfg.node, gave_up = %mine, joins = %cluster, via = %hb.node,
            "this node's cluster holds nothing a client wrote; joining the cluster in sight");
        self.metrics.clusters_given_up += 1;
        out.push(Output::ClusterGivenUp(mine));
        self.cluster = None;
        self.state = State::new();
        self.raft = None;
        self.master = None;
        self.master_view = MasterView::default();
        self.point = None;
        self.last_local_snapshot = EventIdx::ZERO;
        self.snapshots = Default::default();
        self.worker = Worker::new(self.cfg.worker, EventIdx::ZERO);
        let next = EventIdx::ZERO.next();
        self.catch_up = CatchUp::new(self.cfg.catch_up, next, self.cfg.incarnation, self.now);
        self.members_changed();
        // The log is emptied at the start of the next step, once the shell
        // has forgotten the cluster id (`Output::ClusterGivenUp`): a crash
        // in between restarts the node in its lone cluster, never in none.
        self.log_given_up = true;
    }

    /// This node's cluster as its State shows it (None before it holds
    /// State), sent in its heartbeats.
    pub(super) fn standing(&self) -> Option<Standing> {
        self.state.cluster_id()?;
        Some(Standing {
            holds_data: holds_data(&self.state),
            founded_ms: self.state.meta().founded_at_ms,
        })
    }

    /// No data in State, every entry applied, no command or read waiting.
    fn holds_nothing_of_a_clients(&self) -> bool {
        let s = &self.state;
        let empty = !holds_data(s);
        let settled =
            self.log.last_index() == s.index() && self.pending.is_empty() && self.reads.is_empty();
        let busy = self.leaving.is_some() || self.storage.is_some() || self.local_snapshot_building;
        empty && settled && !busy
    }

    /// Empties the log of a cluster given up in the previous step.
    pub(super) fn forget_given_up_log(&mut self, out: &mut Vec<Output>) {
        if !std::mem::take(&mut self.log_given_up) {
            return;
        }
        let next = EventIdx::ZERO.next();
        let emptied = self.log.reset(next).and_then(|()| {
            self.log.set_hard_state(HardState::default())?;
            self.log.set_membership(MembershipRecord::default())
        });
        if let Err(e) = emptied {
            self.fail(
                format!("could not empty the log of a cluster given up: {e}"),
                out,
            );
        }
    }

    /// After every step: a node with State that is not recorded as a live
    /// member at its address asks the master to record it.
    pub(super) fn maybe_join(&mut self, out: &mut Vec<Output>) {
        if self.leaving.is_some() || self.raft.is_some() || self.now < self.next_join {
            return;
        }
        let joined = self
            .state
            .nodes()
            .get(&self.cfg.node)
            .is_some_and(|n| n.liveness == Liveness::Alive && n.addr == self.cfg.addr);
        if joined || self.state.cluster_id().is_none() {
            return;
        }
        if let Some(master) = self.master_view.id.clone() {
            self.next_join = self.now + JOIN_RETRY;
            let addr = self.cfg.addr.clone();
            self.send(master, Direct::Join { addr }, out);
        }
    }

    /// As master: a node asks to be recorded.
    pub(super) fn on_join(&mut self, from: NodeId, addr: String) {
        if self.state.cluster_id().is_none() {
            return;
        }
        let Some(m) = self.master.as_ref() else {
            return;
        };
        let known = self
            .state
            .nodes()
            .get(&from)
            .is_some_and(|n| n.addr == addr && n.liveness == Liveness::Alive);
        if known || m.join_pending(&from, self.now) {
            return;
        }
        let event = Event::NodeJoined {
            node: from.clone(),
            addr,
            at_ms: self.wall_ms,
        };
        if self.propose(&event).is_ok() {
            if let Some(m) = self.master.as_mut() {
                m.joins.insert(from, self.now);
            }
        }
    }

    /// The members in State changed: Raft's id map follows, and the shell
    /// is asked to keep connections to every member still in the cluster.
    pub(super) fn members_changed(&mut self) {
        self.refresh_raft_peers();
        self.keep_pending = true;
    }

    /// Members heard before and not for three heartbeat intervals are
    /// reconnected, once each time they fall silent: after a cut link or a
    /// partition heals, the connection is a new one at once.
    ///
    /// Silence counts only while this node itself was awake: after its own
    /// loop was held up, what it did not hear may still wait in its queue.
    /// Followers are not reconnected from here: a follower cut off stops
    /// hearing the members and reconnects from its side, while one that is
    /// only starved (a loaded host, a joiner loading a snapshot) would see
    /// its connections cut, transfers under way with them, and meet new
    /// handshakes it is too busy to finish.
    pub(super) fn reconnect_silent(&mut self, out: &mut Vec<Output>) {
        let silence = self.cfg.heartbeat_every * 3;
        let now = self.now;
        let members = self.state.nodes();
        self.silent.silent.retain(|id| members.contains_key(id));
        for (id, n) in self.state.nodes() {
            if *id == self.cfg.node || n.liveness == Liveness::Left || n.role == Role::Follower {
                continue;
            }
            let Some(seen) = self.peers.last_seen(id) else {
                continue;
            };
            if now.saturating_sub(seen.max(self.silent.awake_since)) < silence {
                self.silent.silent.remove(id);
            } else if self.silent.silent.insert(id.clone()) {
                out.push(Output::Reconnect(id.clone()));
            }
        }
    }

    pub(super) fn keep_members(&mut self, out: &mut Vec<Output>) {
        if !std::mem::take(&mut self.keep_pending) {
            return;
        }
        // A follower keeps connections to the members it talks to, not to
        // every other follower: connections grow with N, not N squared.
        let keep = self.state.nodes().iter().filter(|(id, n)| {
            **id != self.cfg.node
                && n.liveness != Liveness::Left
                && !n.addr.is_empty()
                && self.expects_heartbeats_from(n.role)
        });
        let keep: Vec<String> = keep.map(|(_, n)| n.addr.clone()).collect();
        if keep != self.kept {
            self.kept = keep.clone();
            out.push(Output::Keep(keep));
        }
    }
}

/// The members reconnected for their silence, and since when this node's
/// own loop has run without a hold-up.
#[derive(Debug, Default)]
pub(super) struct Silence {
    silent: BTreeSet<NodeId>,
    last_step: Option<Duration>,
    awake_since: Duration,
}

impl Silence {
    /// A step at `now`. One longer than two heartbeat intervals after the
    /// last (every node steps at least once an interval, for its own
    /// heartbeat) means this node was held up: a starved host, a long
    /// install. Heartbeats that came meanwhile may wait in its own queue,
    /// and reconnecting then would only cut transfers under way.
    pub(super) fn step(&mut self, now: Duration, heartbeat_every: Duration) {
        if self
            .last_step
            .is_some_and(|t| now.saturating_sub(t) > heartbeat_every * 2)
        {
            self.awake_since = now;
        }
        self.last_step = Some(now);
    }
}

fn holds_data(s: &State) -> bool {
    let empty = s.kv().is_empty() && s.tasks().is_empty() && s.deployments().is_empty();
    !(empty && s.outcomes().is_empty())
}

/// Clusters in the order their nodes move along: holding data first, then
/// founded first, then the smaller id. The order never changes while the
/// clusters hold nothing, so no node moves back and forth.
fn rank(s: Standing, id: &ClusterId) -> (bool, Reverse<u64>, Reverse<&ClusterId>) {
    (s.holds_data, Reverse(s.founded_ms), Reverse(id))
}
