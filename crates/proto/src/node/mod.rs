//! The node core: one sans-IO state machine per node that ties the
//! protocol's parts together. `handle_all(inputs, now)` returns what the
//! shell must send, run, persist elsewhere or answer, and when to wake the
//! core next.
//!
//! Where each rule lives, by file:
//!
//! | file | what it decides |
//! | --- | --- |
//! | `catch_up` | ordering of committed entries; fetch ranges or ask for a snapshot, choose among offers |
//! | `apply` | applying entries, the follower's log, local snapshots, start-up replay |
//! | `raft` | running Raft while a member; the master role starts and ends |
//! | `master/` | the master's state and plan tick: liveness, voters, expiry, placement |
//! | `peers` | heartbeats (a follower's go to the members only), who is alive, how followers learn the master |
//! | `discovery` | founding or adopting a cluster, joining it, dialling members |
//! | `messages` | frames in and out: framing, admission, routing each message to its part |
//! | `commands` | admission of client commands, routing to the master, replies |
//! | `serve` | ranges, snapshot offers and chunks for other replicas; snapshot points |
//! | `work` | tasks and replicas run here, leases, capacity, task output |
//! | `reports` | the reports a member relays to a follower whose API is read |
//! | `leave` | leaving on purpose |
//! | `storage` | a disk that stops taking writes, and recovering from it |
//! | `timers` | the core's timers; the one wake-up it asks for |
//!
//! Every replica, voter or not, applies committed entries through the same
//! ordered buffer. Storage is the one effect inside `handle`: the core
//! writes through the `LogStore` it was given (see the crate docs for why).

mod apply;
pub mod catch_up;
pub mod commands;
mod config;
mod discovery;
mod io;
mod leave;
pub mod master;
mod messages;
mod peers;
mod publish;
mod raft;
mod reads;
mod reports;
mod serve;
mod storage;
mod timers;
mod trust;
mod work;

pub use catch_up::{BadRange, CatchUpAction, CatchUpConfig, Source};
pub use config::NodeConfig;
pub use io::{
    HostMeasure, Input, Metrics, NodeRole, Output, PeerSummary, RangeRead, Saved, Status,
};
pub use peers::{MasterView, Peers};
pub use timers::{Timer, Timers};

use crate::consensus::{RaftCore, RaftError};
use crate::log_store::LogStore;
use crate::pending::PendingCommands;
use crate::placement::Capacities;
use crate::reads::Reads;
use crate::replicas::Replicas;
use crate::snapshot_transfer::SnapshotServer;
use crate::task_output::OutputHub;

use crate::worker::Worker;
use catch_up::CatchUp;
use leave::Leaving;
use master::MasterState;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use shoal_model::{ApplyError, ClusterId, DecodeError, EventIdx, NodeId, RaftId, State};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a node could not start from what its disk holds.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the local snapshot belongs to cluster {snapshot}, this node to {node}")]
    ClusterMismatch {
        snapshot: ClusterId,
        node: ClusterId,
    },
    #[error("reading the log: {0}")]
    Log(#[from] shoal_log::LogError),
    #[error("log entry {idx} is unreadable: {reason}")]
    Entry { idx: EventIdx, reason: DecodeError },
    #[error("replaying the log: {0}")]
    Apply(#[from] ApplyError),
    #[error("starting raft: {0}")]
    Raft(#[from] RaftError),
}

/// A wake-up is never asked for sooner than this after `now`.
const MIN_WAKE: Duration = Duration::from_millis(1);

pub struct Node<L: LogStore> {
    cfg: NodeConfig,
    log: L,
    state: State,
    cluster: Option<ClusterId>,
    raft: Option<RaftCore>,
    raft_peers: BTreeMap<RaftId, NodeId>,
    master_view: MasterView,
    /// Exists while this node is master.
    master: Option<MasterState>,
    catch_up: CatchUp,
    snapshots: SnapshotServer,
    pending: PendingCommands,
    reads: Reads,
    peers: Peers,
    capacities: Capacities,
    /// Reports asked of a member, or served to followers (`reports`).
    relay: reports::Relay,
    worker: Worker,
    replicas: Replicas,
    /// Placements may have changed: compare the replicas with State.
    replicas_dirty: bool,
    output: OutputHub,
    leaving: Option<Leaving>,
    next_join: Duration,
    /// The disk failed: writes are refused until it works again.
    storage: Option<storage::StorageFault>,
    /// When a node that waits for its `--peer`s last said so.
    peer_wait_said: Option<Duration>,
    /// Members changed since the shell was last told whom to keep.
    keep_pending: bool,
    /// The members' addresses the shell was last told to keep.
    kept: Vec<String>,
    /// Members silent for three heartbeat intervals, reconnected once each
    /// time they fall silent (`reconnect_silent`).
    silent: discovery::Silence,
    /// This host as last measured (free CPU, memory and disk; ports).
    host: HostMeasure,
    last_local_snapshot: EventIdx,
    local_snapshot_building: bool,
    /// State at the last snapshot point (see `serve`).
    point: Option<State>,
    timers: Timers,
    /// The wake-up the shell holds (None once it fired).
    armed: Option<Duration>,
    started: Duration,
    now: Duration,
    wall_ms: u64,
    rng: SmallRng,
    metrics: Metrics,
    fatal: bool,
    /// The log holds a cluster given up: emptied at the next step.
    log_given_up: bool,
    /// Whether the shell was last told to receive committed gossip.
    following_committed: Option<bool>,
    /// What this node committed as master and has yet to gossip.
    publish: publish::Paced,
}

impl<L: LogStore> std::fmt::Debug for Node<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.cfg.node)
            .field("index", &self.state.index())
            .field("raft", &self.raft)
            .finish()
    }
}

impl<L: LogStore> Node<L> {
    /// Starts a node from what its disk holds: the newest local snapshot
    /// (if any), the log, and the persisted cluster id. The committed tail
    /// of the log past the snapshot is replayed here. The shell then
    /// delivers `Input::Wake` at once: the core asks for what follows.
    pub fn new(
        cfg: NodeConfig,
        mut log: L,
        snapshot: Option<State>,
        cluster: Option<ClusterId>,
        now: Duration,
    ) -> Result<Self, StartError> {
        let mut state = snapshot.unwrap_or_default();
        if state.index() == EventIdx::ZERO && state.cluster_id().is_none() {
            state = State::new();
        }
        if let (Some(mine), Some(theirs)) = (&cluster, state.cluster_id()) {
            if mine != theirs {
                return Err(StartError::ClusterMismatch {
                    snapshot: theirs.clone(),
                    node: mine.clone(),
                });
            }
        }
        apply::replay(&mut state, &mut log)?;
        // A founder that gave its cluster up and stopped before it emptied
        // its log is back in that cluster (see `discovery`).
        let cluster = cluster.or_else(|| state.cluster_id().cloned());
        let applied = state.index();
        let mut timers = Timers::default();
        timers.set(Timer::Heartbeat, now);
        if cluster.is_some() {
            timers.set(Timer::Metrics, now);
        } else {
            timers.set(Timer::Discovery, now);
        }
        let mut node = Node {
            catch_up: CatchUp::new(cfg.catch_up, applied.next(), cfg.incarnation, now),
            pending: PendingCommands::new(cfg.pending),
            reads: Reads::default(),
            peers: Peers::new(cfg.node_timeout),
            worker: Worker::new(cfg.worker, applied),
            replicas: Replicas::new(cfg.replicas),
            output: OutputHub::new(cfg.output),
            rng: SmallRng::seed_from_u64(cfg.seed),
            last_local_snapshot: applied,
            state,
            log,
            cluster,
            raft: None,
            raft_peers: BTreeMap::new(),
            master_view: MasterView::default(),
            master: None,
            snapshots: SnapshotServer::default(),
            capacities: Capacities::default(),
            relay: Default::default(),
            replicas_dirty: true,
            leaving: None,
            next_join: now,
            peer_wait_said: None,
            storage: None,
            keep_pending: true,
            kept: Vec::new(),
            silent: Default::default(),
            host: HostMeasure::default(),
            local_snapshot_building: false,
            point: None,
            timers,
            armed: None,
            started: now,
            now,
            wall_ms: 0,
            metrics: Metrics::default(),
            fatal: false,
            log_given_up: false,
            following_committed: None,
            publish: publish::Paced::new(cfg.publish_every),
            cfg,
        };
        node.refresh_raft_peers();
        node.start_raft_from_disk()?;
        Ok(node)
    }

    pub fn node_id(&self) -> &NodeId {
        &self.cfg.node
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    pub fn into_log(self) -> L {
        self.log
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn cluster(&self) -> Option<&ClusterId> {
        self.cluster.as_ref()
    }

    pub fn raft(&self) -> Option<&RaftCore> {
        self.raft.as_ref()
    }

    /// When a timer is due (for tests and the dashboard).
    pub fn timer(&self, timer: Timer) -> Option<Duration> {
        self.timers.get(timer)
    }

    pub fn commit_index(&self) -> EventIdx {
        let raft_commit = self
            .raft
            .as_ref()
            .map_or(EventIdx::ZERO, |r| r.commit_index());
        self.catch_up
            .known_commit()
            .max(raft_commit)
            .max(self.state.index())
    }

    /// Live peers of this node's cluster.
    pub fn live_peers(&self) -> Vec<NodeId> {
        self.peers.live_members(self.cluster.as_ref(), self.now)
    }

    /// Every peer heard from, with how long ago.
    pub fn peer_summaries(&self) -> Vec<PeerSummary> {
        self.peers.summaries(self.cluster.as_ref(), self.now)
    }

    pub fn status(&self) -> Status {
        let voter = self
            .raft
            .as_ref()
            .is_some_and(|r| r.voters().contains(&r.id()));
        let role = match (self.is_master(), voter) {
            (true, _) => NodeRole::Master,
            (false, true) => NodeRole::Voter,
            (false, false) => NodeRole::Follower,
        };
        Status {
            node_id: self.cfg.node.clone(),
            cluster_id: self.cluster.clone(),
            role,
            master_id: self.master_view.id.clone(),
            master_reason: self.master_reason(),
            term: self.term(),
            applied_index: self.state.index(),
            commit_index: self.commit_index(),
            state_hash: self.state.hash(),
            peers: self.live_peers(),
            storage_error: self.storage_fault().map(str::to_owned),
            voter_shortfall: self.master.as_ref().and_then(|m| m.voter_shortfall.clone()),
        }
    }

    /// Handles one input at monotonic time `now`, with `wall_ms` the wall
    /// clock (stamped into commands this node sequences as master).
    pub fn handle(&mut self, input: Input, now: Duration, wall_ms: u64) -> Vec<Output> {
        self.handle_all(vec![input], now, wall_ms)
    }

    /// Handles a batch of inputs that arrived together, then runs what is
    /// due and drives Raft once: proposals from many clients share one
    /// fsync.
    pub fn handle_all(&mut self, inputs: Vec<Input>, now: Duration, wall_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.fatal {
            return out;
        }
        self.now = now.max(self.now);
        self.wall_ms = wall_ms;
        self.silent.step(self.now, self.cfg.heartbeat_every);
        self.forget_given_up_log(&mut out);
        for input in inputs {
            self.dispatch(input, &mut out);
            if self.fatal {
                return out;
            }
        }
        self.run_timers(&mut out);
        self.settle(&mut out);
        if !self.fatal {
            self.arm(&mut out);
        }
        out
    }

    fn dispatch(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Wake => self.armed = None,
            Input::Direct(frame) => self.on_direct(frame, out),
            Input::Gossip(frame) => self.on_gossip(frame, out),
            Input::Submit { cmd, reply } => self.submit(cmd, reply, out),
            Input::ReadIndex { reply } => self.read_index(reply, out),
            Input::SnapshotBuilt { snap, save } => self.on_snapshot_built(snap, save, out),
            Input::HostCapacity(m) => self.on_host_capacity(m),
            Input::RunExited {
                token,
                exit_code,
                class,
            } => self.on_run_exited(token, exit_code, class, out),
            Input::RunOutput(chunk) => self.record_output(chunk, out),
            Input::WatchOutput(task) => self.watch_output(&task, out),
            Input::WantReports => self.want_reports(out),
            Input::Drain => self.drain(out),
            Input::LogSynced { id, result } => self.on_log_synced(id, result, out),
        }
    }

    /// The periodic duties that are due.
    fn run_timers(&mut self, out: &mut Vec<Output>) {
        for timer in self.timers.take_due(self.now) {
            match timer {
                Timer::Raft => self.raft_tick(out),
                Timer::Heartbeat => {
                    self.timers
                        .set(Timer::Heartbeat, self.now + self.cfg.heartbeat_every);
                    self.peers.recount();
                    self.heartbeat(out);
                    self.reconnect_silent(out);
                }
                Timer::Metrics => self.publish_metrics(out),
                Timer::Plan => self.plan(),
                Timer::Discovery => self.discover(out),
                Timer::Storage => self.retry_storage(out),
                Timer::Publish => self.publish_committed(false, out),
            }
            if self.fatal {
                return;
            }
        }
    }

    /// After any input: the parts' own deadlines, then drive Raft and apply
    /// what is ready (again while either yields more), then the catch-up
    /// decision on the result.
    fn settle(&mut self, out: &mut Vec<Output>) {
        let acts = self.catch_up.tick(self.now);
        self.run_catch_up(acts, out);
        self.tick_pending(out);
        self.tick_reads(out);
        self.leave_step(out);
        if self.cluster.is_some() {
            self.maybe_join(out);
        }
        for _ in 0..8 {
            self.drive_raft(out);
            let applied = self.apply_ready(out);
            if self.fatal {
                return;
            }
            self.sync_master_role();
            // Runs to start or stop, reports to send: proposals that the
            // next round drives.
            self.sync_work(out);
            let more = applied || self.raft.as_ref().is_some_and(|r| r.has_ready());
            if !more {
                break;
            }
        }
        self.follow(out);
        self.keep_members(out);
    }

    /// The next time something is due, as the one wake-up to ask for. A
    /// part's deadline that has passed is waiting for an input (a holder of
    /// a gap, a master to talk to), not for time; a timer set for now
    /// (a new master's first plan tick) runs at once.
    pub fn next_wake(&self) -> Option<Duration> {
        let now = self.now;
        let timers = self.timers.next().map(|t| t.max(now + MIN_WAKE));
        let join = (self.cluster.is_some() && self.raft.is_none()).then_some(self.next_join);
        let parts = [
            self.catch_up.next_wake(now),
            self.pending.next_wake(),
            self.reads.next_wake(),
            self.worker.next_wake(),
            self.replicas.next_wake(),
            self.leave_wake(),
            join,
        ];
        parts
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .chain(timers)
            .min()
    }

    fn arm(&mut self, out: &mut Vec<Output>) {
        let next = self.next_wake();
        if let Some(at) = next.filter(|_| next != self.armed) {
            self.armed = next;
            out.push(Output::Wake { at });
        }
    }

    fn fail(&mut self, why: String, out: &mut Vec<Output>) {
        self.fatal = true;
        out.push(Output::Fatal(why));
    }
}

#[cfg(test)]
mod tests;
