//! The node core: one sans-IO state machine per node that ties the pieces
//! together. Raft (when this node is a voter or learner), the ordered
//! buffer, the gap fetcher, snapshot transfer both ways, the sequencer and
//! client requests all live here; `handle(input, now)` returns what the
//! shell must send, persist elsewhere, or answer.
//!
//! Every replica, voter or not, applies committed entries through the same
//! ordered buffer; entries reach it from Raft (members), from gossip (every
//! node), from range fetches and from snapshots. The master additionally
//! sequences commands and runs the plan tick: failure detection, voter
//! membership, TTL expiry, outcome expiry.

use crate::consensus::{MembershipChange, RaftBase, RaftConfig, RaftCore, RaftOutput};
use crate::gap_fetcher::{GapAction, GapConfig, GapFetcher, PeerLog};
use crate::log_store::LogStore;
use crate::ordered_buffer::{BufferLimits, OrderedBuffer};
use crate::placement::{Placement, PlacementConfig};
use crate::replicas::{ReplicaAction, ReplicaConfig, Replicas};
use crate::requests::{ReplyTo, RequestAction, RequestConfig, Requests};
use crate::sequencer::{Sequenced, Sequencer};
use crate::snapshot_transfer::{
    EncodedSnapshot, ReceiveConfig, ReceiveEvent, ServeAction, SnapshotReceiver, SnapshotServer,
};
use crate::wire::{
    CommandReply, Direct, FetchRange, Frame, Gossip, RangeReply, Refusal, SnapshotChunk,
    PROTOCOL_VERSION, RANGE_MAX_BYTES,
};
use crate::worker::{StopReason, Worker, WorkerAction, WorkerConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_log::HardState;
use shoal_model::{
    encode_event, ClusterId, Command, CommandId, Envelope, Event, EventIdx, ExitClass,
    FencingToken, Heartbeat, InstanceSpec, Liveness, LogEntry, NodeId, NodeMetrics, Op, RaftId,
    Role, State, StateHash, TaskId, TaskSpec, Term, TransientEvent,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    /// Where peers reach this node (a multiaddr on a real node).
    pub addr: String,
    /// Random per process start.
    pub incarnation: u64,
    pub seed: u64,
    /// Voters the master aims for.
    pub voters: usize,
    pub node_timeout: Duration,
    pub heartbeat_every: Duration,
    pub raft_tick: Duration,
    pub plan_every: Duration,
    /// How long an empty node listens for a cluster before founding one.
    pub discovery_window: Duration,
    /// Behind by more than this, catch up by snapshot instead of ranges.
    pub snapshot_threshold: u64,
    /// Never ask for a snapshot unless no replica holds the range.
    pub no_snapshot: bool,
    /// Applied events between local snapshots.
    pub local_snapshot_every: u64,
    /// Entries kept in the log below the newest local snapshot, so a
    /// replica that lags a little fetches ranges, not a snapshot.
    pub log_retain: u64,
    /// A dead voter is replaced after this long.
    pub voter_grace: Duration,
    /// Command outcomes are kept at least this long (the retry window).
    pub outcome_retention: Duration,
    /// Finished tasks are forgotten this long after their last change.
    pub task_retention: Duration,
    pub raft: RaftConfig,
    pub gaps: GapConfig,
    pub receive: ReceiveConfig,
    pub buffer: BufferLimits,
    pub requests: RequestConfig,
    /// How often this node gossips its capacity (for placement).
    pub metrics_every: Duration,
    /// This node's labels, matched by tasks that ask for some.
    pub labels: BTreeMap<String, String>,
    /// Whether this node runs user commands (`--allow-exec`).
    pub exec: bool,
    pub placement: PlacementConfig,
    pub worker: WorkerConfig,
    pub replicas: ReplicaConfig,
}

impl NodeConfig {
    pub fn new(node: NodeId, addr: String, seed: u64) -> Self {
        NodeConfig {
            node,
            addr,
            incarnation: seed ^ 0x5eed,
            seed,
            voters: 3,
            node_timeout: Duration::from_secs(2),
            heartbeat_every: Duration::from_millis(300),
            raft_tick: Duration::from_millis(100),
            plan_every: Duration::from_millis(250),
            discovery_window: Duration::from_secs(2),
            snapshot_threshold: 10_000,
            no_snapshot: false,
            local_snapshot_every: 100_000,
            log_retain: 50_000,
            voter_grace: Duration::from_secs(10),
            outcome_retention: Duration::from_secs(600),
            task_retention: Duration::from_secs(3600),
            raft: RaftConfig::default(),
            gaps: GapConfig::default(),
            receive: ReceiveConfig::default(),
            buffer: BufferLimits::default(),
            requests: RequestConfig::default(),
            metrics_every: Duration::from_secs(1),
            labels: BTreeMap::new(),
            exec: false,
            placement: PlacementConfig::default(),
            worker: WorkerConfig::default(),
            replicas: ReplicaConfig::default(),
        }
    }
}

#[derive(Debug)]
pub enum Input {
    /// Time passed; the core runs whatever timers are due.
    Tick,
    Direct(Frame<Direct>),
    Gossip(Frame<Gossip>),
    /// A client command; the answer comes back as `Output::Reply`.
    Submit {
        cmd: Command,
        reply: ReplyTo,
    },
    /// The shell finished `Output::BuildSnapshot`.
    SnapshotBuilt {
        snap: EncodedSnapshot,
        save: Saved,
    },
    SnapshotBuildFailed {
        reason: String,
    },
    /// This host's free capacity, measured by the shell.
    LocalMetrics {
        cpu_free_milli: u32,
        mem_free_bytes: u64,
    },
    /// A run started by `Output::StartRun` ended.
    RunExited {
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
    },
    /// Stop taking work and hand back what runs here (`shoal leave`).
    Drain,
}

/// What became of a build's `save` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    NotAsked,
    Saved,
    Failed,
}

#[derive(Debug)]
pub enum Output {
    Send {
        to: NodeId,
        frame: Frame<Direct>,
    },
    Broadcast(Frame<Gossip>),
    Reply {
        to: ReplyTo,
        reply: CommandReply,
    },
    /// Encode this State off the loop; `save` also writes it to disk.
    BuildSnapshot {
        state: Box<State>,
        save: bool,
    },
    /// This node now belongs to this cluster: persist it.
    ClusterAdopted(ClusterId),
    /// Snapshot download progress while catching up.
    CatchUp {
        received: u64,
        total: u64,
        entries: u64,
    },
    /// A State arrived by snapshot and replaced the local one.
    SnapshotInstalled {
        index: EventIdx,
    },
    /// Start (or restart, after a crash) a replica of a deployment, with
    /// `PORT` in its environment. It is stopped with `StopRun`.
    StartReplica {
        deployment: String,
        replica: u32,
        token: FencingToken,
        port: u16,
        restarts: u32,
        spec: InstanceSpec,
    },
    /// Start a task's run: its process group gets the token and attempt.
    StartRun {
        task: TaskId,
        token: FencingToken,
        attempt: u32,
        spec: TaskSpec,
    },
    /// Stop a run: SIGTERM to its group, a grace period, SIGKILL. Its end
    /// comes back as `Input::RunExited`.
    StopRun {
        token: FencingToken,
        reason: StopReason,
    },
    /// The node cannot go on (duplicate identity, unreadable log entry,
    /// failed storage); the shell logs it and exits.
    Fatal(String),
}

/// Counters for metrics; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub events_applied: u64,
    pub nacks_sent: u64,
    pub ranges_served: u64,
    pub snapshot_bytes_sent: u64,
    pub snapshot_bytes_received: u64,
    pub snapshots_installed: u64,
    pub snapshot_failures: u64,
    pub leader_changes: u64,
    pub bad_messages: u64,
    pub foreign_messages: u64,
    pub proposals_refused: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: NodeId,
    pub cluster_id: Option<ClusterId>,
    pub role: &'static str,
    pub master_id: Option<NodeId>,
    pub term: Term,
    pub applied_index: EventIdx,
    pub commit_index: EventIdx,
    pub state_hash: StateHash,
    pub peers: Vec<NodeId>,
}

/// What this node knows of another from its heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSummary {
    pub node: NodeId,
    pub addr: String,
    pub since_heard: Duration,
    pub applied: EventIdx,
    pub commit: EventIdx,
    pub same_cluster: bool,
}

#[derive(Clone, Debug)]
struct Peer {
    last_seen: Duration,
    hb: Heartbeat,
    cluster: Option<ClusterId>,
}

pub struct Node<L: LogStore> {
    cfg: NodeConfig,
    log: L,
    state: State,
    cluster: Option<ClusterId>,
    raft: Option<RaftCore>,
    raft_peers: BTreeMap<RaftId, NodeId>,
    buffer: OrderedBuffer,
    gaps: GapFetcher,
    need_snapshot: bool,
    snap_server: SnapshotServer,
    snap_rx: Option<SnapshotReceiver>,
    snap_retry_at: Duration,
    session: u64,
    sequencer: Sequencer,
    requests: Requests,
    peers: BTreeMap<NodeId, Peer>,
    known_commit: EventIdx,
    leader: Option<NodeId>,
    leader_term: Term,
    // Master-only volatile state, reset at each election.
    leader_since: Duration,
    founding_proposed: bool,
    pending_liveness: BTreeMap<NodeId, Liveness>,
    pending_joins: BTreeMap<NodeId, Duration>,
    dead_since: BTreeMap<NodeId, Duration>,
    ttl_deadlines: BTreeMap<String, (EventIdx, Duration)>,
    pending_expiry: BTreeSet<(String, EventIdx)>,
    next_outcome_sweep: Duration,
    placement: Placement,
    // Worker side of tasks, on every node.
    worker: Worker,
    replicas: Replicas,
    /// Placements may have changed: compare the replicas with State.
    replicas_dirty: bool,
    /// Leaving on purpose (`Input::Drain`): announce it, hand work and
    /// leadership over.
    leaving: bool,
    next_leave: Duration,
    capacity: (u32, u64),
    next_metrics: Duration,
    // Timers.
    started: Duration,
    now: Duration,
    wall_ms: u64,
    next_raft_tick: Duration,
    next_heartbeat: Duration,
    next_plan: Duration,
    next_join: Duration,
    last_local_snapshot: EventIdx,
    local_snapshot_building: bool,
    rng: SmallRng,
    metrics: Metrics,
    fatal: bool,
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

fn base_of(state: &State) -> RaftBase {
    RaftBase {
        index: state.index(),
        term: state.term(),
        voters: state
            .members(Role::Voter)
            .into_iter()
            .map(|(r, _)| r)
            .collect(),
        learners: state
            .members(Role::Learner)
            .into_iter()
            .map(|(r, _)| r)
            .collect(),
    }
}

impl<L: LogStore> Node<L> {
    /// Starts a node from what its disk holds: the newest local snapshot
    /// (if any), the log, and the persisted cluster id. The committed tail
    /// of the log past the snapshot is replayed here.
    pub fn new(
        cfg: NodeConfig,
        mut log: L,
        snapshot: Option<State>,
        cluster: Option<ClusterId>,
        now: Duration,
    ) -> Result<Self, String> {
        let mut state = snapshot.unwrap_or_default();
        if state.index() == EventIdx::ZERO && state.cluster_id().is_none() {
            state = State::new();
        }
        if let (Some(mine), Some(theirs)) = (&cluster, state.cluster_id()) {
            if mine != theirs {
                return Err(format!(
                    "the local snapshot belongs to cluster {theirs}, this node to {mine}"
                ));
            }
        }
        // Replay the committed local tail.
        let commit = EventIdx(log.hard_state().commit).min(log.last_index());
        let mut from = state.index().next();
        if from >= log.first_index() {
            while from <= commit {
                let batch = log.read(from, commit, 8 << 20).map_err(|e| e.to_string())?;
                if batch.is_empty() {
                    break;
                }
                for entry in &batch {
                    let env = entry
                        .envelope()
                        .map_err(|e| format!("log entry {}: {e}", entry.idx))?;
                    state.apply(&env).map_err(|e| e.to_string())?;
                }
                from = state.index().next();
            }
        }
        let rng = SmallRng::seed_from_u64(cfg.seed);
        let applied_at_start = state.index();
        let mut node = Node {
            buffer: OrderedBuffer::new(state.index().next(), cfg.buffer),
            gaps: GapFetcher::new(cfg.gaps),
            sequencer: Sequencer::new(4096, Duration::from_secs(3)),
            requests: Requests::new(cfg.requests),
            known_commit: state.index(),
            last_local_snapshot: state.index(),
            state,
            log,
            cluster,
            raft: None,
            raft_peers: BTreeMap::new(),
            need_snapshot: false,
            snap_server: SnapshotServer::default(),
            snap_rx: None,
            snap_retry_at: now,
            session: 0,
            peers: BTreeMap::new(),
            leader: None,
            leader_term: Term(0),
            leader_since: now,
            founding_proposed: false,
            pending_liveness: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            dead_since: BTreeMap::new(),
            ttl_deadlines: BTreeMap::new(),
            pending_expiry: BTreeSet::new(),
            next_outcome_sweep: now,
            placement: Placement::default(),
            worker: Worker::new(cfg.worker, applied_at_start),
            replicas: Replicas::new(cfg.replicas),
            replicas_dirty: true,
            leaving: false,
            next_leave: now,
            capacity: (0, 0),
            next_metrics: now,
            started: now,
            now,
            wall_ms: 0,
            next_raft_tick: now,
            next_heartbeat: now,
            next_plan: now,
            next_join: now,
            local_snapshot_building: false,
            rng,
            metrics: Metrics::default(),
            fatal: false,
            cfg,
        };
        node.refresh_raft_peers();
        let founder_restart = node.cluster.is_some()
            && node.state.cluster_id().is_none()
            && node.log.membership().voters == vec![1];
        if founder_restart {
            node.start_raft(
                RaftId(1),
                RaftBase {
                    voters: vec![RaftId(1)],
                    ..Default::default()
                },
            )?;
        } else {
            node.sync_raft_membership()?;
        }
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

    pub fn is_master(&self) -> bool {
        self.raft.as_ref().is_some_and(|r| r.is_leader())
    }

    pub fn raft(&self) -> Option<&RaftCore> {
        self.raft.as_ref()
    }

    pub fn commit_index(&self) -> EventIdx {
        let raft_commit = self
            .raft
            .as_ref()
            .map_or(EventIdx::ZERO, |r| r.commit_index());
        self.known_commit.max(raft_commit).max(self.state.index())
    }

    /// Heard from within the node timeout.
    fn heard(&self, p: &Peer) -> bool {
        self.now.saturating_sub(p.last_seen) < self.cfg.node_timeout
    }

    /// A live peer of this node's own cluster.
    fn live_member(&self, p: &Peer) -> bool {
        p.cluster == self.cluster && self.heard(p)
    }

    /// Peers heard from within the node timeout.
    pub fn live_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| self.live_member(p))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every peer heard from, with how long ago.
    pub fn peer_summaries(&self) -> Vec<PeerSummary> {
        self.peers
            .iter()
            .map(|(n, p)| PeerSummary {
                node: n.clone(),
                addr: p.hb.addr.clone(),
                since_heard: self.now.saturating_sub(p.last_seen),
                applied: p.hb.applied,
                commit: p.hb.commit,
                same_cluster: p.cluster == self.cluster,
            })
            .collect()
    }

    pub fn status(&self) -> Status {
        let role = if self.is_master() {
            "master"
        } else if self
            .raft
            .as_ref()
            .is_some_and(|r| r.voters().contains(&r.id()))
        {
            "voter"
        } else {
            "follower"
        };
        Status {
            node_id: self.cfg.node.clone(),
            cluster_id: self.cluster.clone(),
            role,
            master_id: self.leader.clone(),
            term: self.raft.as_ref().map_or(self.leader_term, |r| r.term()),
            applied_index: self.state.index(),
            commit_index: self.commit_index(),
            state_hash: self.state.hash(),
            peers: self.live_peers(),
        }
    }

    /// Handles one input at monotonic time `now`, with `wall_ms` the wall
    /// clock (stamped into commands this node sequences as master).
    pub fn handle(&mut self, input: Input, now: Duration, wall_ms: u64) -> Vec<Output> {
        self.handle_all(vec![input], now, wall_ms)
    }

    /// Handles a batch of inputs that arrived together, then drives Raft
    /// once: proposals from many clients share one fsync.
    pub fn handle_all(&mut self, inputs: Vec<Input>, now: Duration, wall_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.fatal {
            return out;
        }
        self.now = now.max(self.now);
        self.wall_ms = wall_ms;
        for input in inputs {
            self.dispatch(input, &mut out);
            if self.fatal {
                return out;
            }
        }
        self.settle(&mut out);
        out
    }

    fn dispatch(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Tick => self.on_tick(out),
            Input::Direct(frame) => self.on_direct(frame, out),
            Input::Gossip(frame) => self.on_gossip(frame, out),
            Input::Submit { cmd, reply } => {
                let acts = self.requests.submit(cmd, reply, &self.state, self.now);
                self.run_requests(acts, out);
            }
            Input::SnapshotBuilt { snap, save } => {
                if save == Saved::Failed {
                    self.local_snapshot_building = false;
                }
                if save == Saved::Saved {
                    self.local_snapshot_building = false;
                    self.last_local_snapshot = snap.index;
                    let floor = EventIdx(snap.index.0.saturating_sub(self.cfg.log_retain) + 1);
                    if let Err(e) = self.log.compact(floor) {
                        tracing::warn!(error = %e, "log compaction failed");
                    }
                }
                let acts = self.snap_server.on_built(snap);
                self.serve(acts, out);
            }
            Input::SnapshotBuildFailed { reason } => {
                self.local_snapshot_building = false;
                let acts = self.snap_server.on_build_failed(&reason);
                self.serve(acts, out);
            }
            Input::LocalMetrics {
                cpu_free_milli,
                mem_free_bytes,
            } => self.capacity = (cpu_free_milli, mem_free_bytes),
            Input::RunExited {
                token,
                exit_code,
                class,
            } => {
                if self.replicas.holds(token) {
                    let acts = self.replicas.on_exit(token, exit_code, self.now);
                    self.run_replicas(acts, out);
                } else {
                    let acts =
                        self.worker
                            .on_exit(token, exit_code, class, &self.state, &self.cfg.node);
                    self.run_worker(acts, out);
                }
            }
            Input::Drain => {
                tracing::info!(node = %self.cfg.node, "leaving: handing back runs, replicas and leadership");
                self.leaving = true;
                let acts = self.worker.drain();
                self.run_worker(acts, out);
                let acts = self.replicas.drain();
                self.run_replicas(acts, out);
                self.leave_step(out);
            }
        }
    }

    // ---- tasks ----------------------------------------------------------

    /// Applied events from `from` on, up to about `max_bytes`, for
    /// external subscribers. `Err(floor)` when `from` is below what the
    /// log retains: the subscriber needs State first.
    pub fn read_applied(
        &mut self,
        from: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<Envelope>, EventIdx> {
        let from = from.max(EventIdx(1));
        let floor = self.log.first_index();
        let applied = self.state.index();
        if from > applied {
            return Ok(vec![]);
        }
        if from < floor {
            return Err(floor);
        }
        let entries = self.log.read(from, applied, max_bytes).map_err(|_| floor)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e.envelope() {
                Ok(env) => out.push(env),
                Err(_) => return Err(floor),
            }
        }
        // A log that does not hold `from` (a gap) is treated as compacted.
        if out.first().is_some_and(|e| e.idx != from) || out.is_empty() {
            return Err(applied.next().max(floor));
        }
        Ok(out)
    }

    /// Runs under way on this node.
    pub fn runs(&self) -> usize {
        self.worker.running()
    }

    /// After `Input::Drain`: every run handed back and reported, every
    /// replica stopped, the leave recorded in State, and leadership with
    /// another voter (or this node alone in its cluster).
    pub fn drained(&self) -> bool {
        let alone = self.alone();
        let left = self
            .state
            .nodes()
            .get(&self.cfg.node)
            .is_none_or(|n| n.liveness == Liveness::Left);
        self.worker.drained()
            && self.replicas.running() == 0
            && (alone || (left && !self.is_master()))
    }

    fn alone(&self) -> bool {
        self.state
            .nodes()
            .iter()
            .all(|(n, i)| *n == self.cfg.node || i.liveness != Liveness::Alive)
    }

    /// While leaving: ask the master to record it; as master, record it,
    /// then hand leadership to the most caught-up voter.
    fn leave_step(&mut self, out: &mut Vec<Output>) {
        if !self.leaving || self.now < self.next_leave || self.alone() {
            return;
        }
        self.next_leave = self.now + Duration::from_millis(500);
        let left = self
            .state
            .nodes()
            .get(&self.cfg.node)
            .is_some_and(|n| n.liveness == Liveness::Left);
        if !self.is_master() {
            if let (false, Some(l)) = (left, self.leader.clone()) {
                self.send(l, Direct::Leave, out);
            }
            return;
        }
        if !left {
            let me = self.cfg.node.clone();
            let _ = self.propose(&Event::NodeLeft { node: me });
            return;
        }
        let target = self
            .state
            .members(Role::Voter)
            .into_iter()
            .filter(|(_, n)| *n != self.cfg.node)
            .filter(|(_, n)| {
                self.state
                    .nodes()
                    .get(n)
                    .is_some_and(|i| i.liveness == Liveness::Alive)
            })
            .max_by_key(|(r, _)| self.raft.as_ref().and_then(|x| x.matched(*r)));
        if let (Some((rid, node)), Some(raft)) = (target, self.raft.as_mut()) {
            tracing::info!(to = %node, "handing leadership over");
            raft.transfer_leader(rid);
        }
    }

    /// Whether some live node runs user commands.
    pub fn exec_available(&self) -> bool {
        self.cfg.exec
            || self
                .placement
                .exec_available(&self.state, self.now, self.cfg.node_timeout * 3)
    }

    fn run_worker(&mut self, acts: Vec<WorkerAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                WorkerAction::Start {
                    task,
                    token,
                    attempt,
                    spec,
                } => out.push(Output::StartRun {
                    task,
                    token,
                    attempt,
                    spec,
                }),
                WorkerAction::Stop { token, reason } => out.push(Output::StopRun { token, reason }),
                WorkerAction::Renew { leases, at } => {
                    let at_ms = at.as_millis() as u64;
                    match self.leader.clone() {
                        Some(l) if l == self.cfg.node && self.leads_with_quorum() => {
                            let me = self.cfg.node.clone();
                            let tokens = self.placement.renew(&me, &leases, &self.state, self.now);
                            self.worker.on_renewed(&tokens, at);
                        }
                        Some(l) => self.send(l, Direct::LeaseRenew { leases, at_ms }, out),
                        None => {}
                    }
                }
                WorkerAction::Report(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    fn run_replicas(&mut self, acts: Vec<ReplicaAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ReplicaAction::Start {
                    deployment,
                    replica,
                    token,
                    port,
                    restarts,
                    spec,
                } => out.push(Output::StartReplica {
                    deployment,
                    replica,
                    token,
                    port,
                    restarts,
                    spec,
                }),
                ReplicaAction::Stop { token } => out.push(Output::StopRun {
                    token,
                    reason: StopReason::Cancelled,
                }),
                ReplicaAction::Report(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    fn leads_with_quorum(&self) -> bool {
        self.raft
            .as_ref()
            .is_some_and(|r| r.is_leader() && r.quorum_recently_active())
    }

    fn publish_metrics(&mut self, out: &mut Vec<Output>) {
        let m = NodeMetrics {
            node: self.cfg.node.clone(),
            cpu_free_milli: self.capacity.0,
            mem_free_bytes: self.capacity.1,
            running: (self.worker.running() + self.replicas.running()) as u32,
            labels: self.cfg.labels.clone(),
            exec: self.cfg.exec,
        };
        self.placement.on_metrics(m.clone(), self.now);
        out.push(Output::Broadcast(
            self.frame(Gossip::Transient(TransientEvent::Metrics(m))),
        ));
    }

    // ---- the steady part of every step ---------------------------------

    /// After any input: drive Raft, apply what is ready, fetch what is
    /// missing.
    fn settle(&mut self, out: &mut Vec<Output>) {
        for _ in 0..8 {
            self.drive_raft(out);
            let applied = self.apply_ready(out);
            if self.fatal {
                return;
            }
            if !applied {
                break;
            }
        }
        self.plan_gaps(out);
        self.maybe_snapshot(out);
        let acts = self.worker.sync(&self.cfg.node, &self.state, self.now);
        self.run_worker(acts, out);
        if std::mem::take(&mut self.replicas_dirty) && self.state.cluster_id().is_some() {
            let acts = self
                .replicas
                .sync(&self.cfg.node, &self.state, self.leaving);
            self.run_replicas(acts, out);
        }
    }

    fn fail(&mut self, why: String, out: &mut Vec<Output>) {
        self.fatal = true;
        out.push(Output::Fatal(why));
    }

    /// A frame from this node: protocol version, cluster id, sender.
    pub fn frame<M>(&self, msg: M) -> Frame<M> {
        Frame {
            version: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            from: self.cfg.node.clone(),
            msg,
        }
    }

    fn send(&self, to: NodeId, msg: Direct, out: &mut Vec<Output>) {
        if to == self.cfg.node {
            return;
        }
        out.push(Output::Send {
            to,
            frame: self.frame(msg),
        });
    }

    fn start_raft(&mut self, id: RaftId, base: RaftBase) -> Result<(), String> {
        let seed = self.cfg.seed ^ (id.0 << 32) ^ self.rng.gen::<u32>() as u64;
        let core = RaftCore::start(
            id,
            self.cfg.raft,
            base,
            &mut self.log,
            seed,
            self.cfg.raft_tick,
        )
        .map_err(|e| e.to_string())?;
        self.raft = Some(core);
        Ok(())
    }

    /// Starts or stops the Raft core to match this node's role in State.
    fn sync_raft_membership(&mut self) -> Result<(), String> {
        let Some(me) = self.state.nodes().get(&self.cfg.node).cloned() else {
            return Ok(());
        };
        match (me.role, self.raft.is_some()) {
            (Role::Voter | Role::Learner, false) => {
                let base = base_of(&self.state);
                self.start_raft(me.raft_id, base)?;
            }
            (Role::Follower, true) => {
                tracing::info!(node = %self.cfg.node, "left the voters; continuing as a follower");
                self.raft = None;
                self.sequencer.clear();
            }
            _ => {}
        }
        Ok(())
    }

    fn refresh_raft_peers(&mut self) {
        self.raft_peers = self
            .state
            .nodes()
            .iter()
            .map(|(n, i)| (i.raft_id, n.clone()))
            .collect();
    }

    fn drive_raft(&mut self, out: &mut Vec<Output>) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        let outputs = match raft.drive(&mut self.log) {
            Ok(o) => o,
            Err(e) => {
                // Storage that cannot persist must not acknowledge: stop
                // taking part in Raft and say so.
                tracing::error!(error = %e, "raft storage failed; leaving the voters");
                self.raft = None;
                self.sequencer.clear();
                self.metrics.proposals_refused += 1;
                return;
            }
        };
        let is_leader = raft.is_leader();
        for o in outputs {
            match o {
                RaftOutput::Send { to, msg } => match self.raft_peers.get(&to) {
                    Some(node) => self.send(node.clone(), Direct::Raft(msg), out),
                    None => tracing::debug!(raft_id = %to, "no node for raft id"),
                },
                RaftOutput::Committed(entries) => {
                    if is_leader {
                        self.broadcast_committed(&entries, out);
                    }
                    for e in entries {
                        self.known_commit = self.known_commit.max(e.idx);
                        self.buffer.insert(e);
                    }
                }
                RaftOutput::SnapshotInstalled { index, .. } => {
                    self.known_commit = self.known_commit.max(index);
                }
                RaftOutput::LeaderChanged { leader, term } => {
                    self.metrics.leader_changes += 1;
                    let was_leader = self.leader.as_ref() == Some(&self.cfg.node);
                    self.leader = leader.and_then(|r| self.raft_peers.get(&r).cloned());
                    if leader == Some(RaftId(1)) && self.state.cluster_id().is_none() && is_leader {
                        self.leader = Some(self.cfg.node.clone());
                    }
                    self.leader_term = term;
                    if is_leader && !was_leader {
                        self.on_become_leader();
                    } else if !is_leader {
                        self.sequencer.clear();
                    }
                }
            }
        }
    }

    fn on_become_leader(&mut self) {
        tracing::info!(node = %self.cfg.node, term = %self.leader_term, "became master");
        self.leader_since = self.now;
        self.pending_liveness.clear();
        self.pending_joins.clear();
        self.dead_since.clear();
        self.ttl_deadlines.clear();
        self.pending_expiry.clear();
        self.placement.reset();
        self.next_plan = self.now;
    }

    fn broadcast_committed(&self, entries: &[LogEntry], out: &mut Vec<Output>) {
        const MAX_BATCH_BYTES: usize = 512 << 10;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for e in entries {
            if bytes + e.size_hint() > MAX_BATCH_BYTES && !batch.is_empty() {
                out.push(Output::Broadcast(
                    self.frame(Gossip::Committed(std::mem::take(&mut batch))),
                ));
                bytes = 0;
            }
            bytes += e.size_hint();
            batch.push(e.clone());
        }
        if !batch.is_empty() {
            out.push(Output::Broadcast(self.frame(Gossip::Committed(batch))));
        }
    }

    /// Applies every entry the buffer can release. Returns whether any was.
    fn apply_ready(&mut self, out: &mut Vec<Output>) -> bool {
        let member = self.raft.is_some();
        let mut applied_any = false;
        let mut to_persist = Vec::new();
        let mut membership_changed = false;
        while let Some(entry) = self.buffer.pop_next() {
            let env = match entry.envelope() {
                Ok(env) => env,
                Err(e) => {
                    self.fail(
                        format!("committed entry {} is unreadable: {e}", entry.idx),
                        out,
                    );
                    return false;
                }
            };
            let applied = match self.state.apply(&env) {
                Ok(a) => a,
                Err(e) => {
                    self.fail(format!("apply failed: {e}"), out);
                    return false;
                }
            };
            applied_any = true;
            self.metrics.events_applied += 1;
            // Raft writes a member's log; an entry that reached a member
            // by gossip ahead of Raft is kept too, so that it survives a
            // demotion or restart.
            if !member || entry.idx > self.log.last_index() {
                to_persist.push(entry);
            }
            self.after_apply(&env, out, &mut membership_changed);
            if let Some(result) = applied.command {
                self.sequencer.on_applied(&result.id);
                let acts = self.requests.on_applied(&result);
                self.run_requests(acts, out);
            }
        }
        if !to_persist.is_empty() {
            if let Err(e) = self.persist_applied(to_persist, member) {
                tracing::warn!(error = %e, "could not persist applied entries");
            }
        }
        if membership_changed {
            self.refresh_raft_peers();
            if let Err(e) = self.sync_raft_membership() {
                self.fail(format!("could not start raft: {e}"), out);
            }
        }
        if applied_any {
            self.gaps.on_progress();
            self.maybe_local_snapshot(out);
        }
        applied_any
    }

    fn after_apply(&mut self, env: &Envelope, _out: &mut [Output], membership_changed: &mut bool) {
        match &env.event {
            Event::ClusterFounded { .. }
            | Event::NodeJoined { .. }
            | Event::NodeForgotten { .. }
            | Event::Membership { .. } => {
                *membership_changed = true;
                if let Event::NodeJoined { node, .. } = &env.event {
                    self.pending_joins.remove(node);
                }
            }
            Event::NodeLiveness { node, liveness }
                if self.pending_liveness.get(node) == Some(liveness) =>
            {
                self.pending_liveness.remove(node);
            }
            Event::KvExpired { key, version } => {
                self.pending_expiry.remove(&(key.clone(), *version));
            }
            Event::TaskGranted { task, node, .. } if *node == self.cfg.node => {
                self.worker.note_granted(task.clone());
            }
            Event::ReplicaPlaced { .. } | Event::ReplicaUnplaced { .. } => {
                self.replicas_dirty = true;
            }
            Event::Command { cmd, .. }
                if matches!(cmd.op, Op::Deploy { .. } | Op::Undeploy { .. }) =>
            {
                self.replicas_dirty = true;
            }
            _ => {}
        }
    }

    /// A follower keeps the committed entries it applied, so that it can
    /// restart from its own disk and serve ranges to others.
    fn persist_applied(
        &mut self,
        mut entries: Vec<LogEntry>,
        member: bool,
    ) -> Result<(), shoal_log::LogError> {
        if member {
            // Never reset or overwrite Raft's log: only extend it.
            entries.retain(|e| e.idx > self.log.last_index());
            let next = self.log.last_index().next();
            let run = entries
                .iter()
                .enumerate()
                .take_while(|(i, e)| e.idx.0 == next.0 + *i as u64)
                .count();
            entries.truncate(run);
            if entries.is_empty() {
                return Ok(());
            }
        }
        let first = entries[0].idx;
        let last = entries[entries.len() - 1].idx;
        if self.log.last_index().next() < first || self.log.first_index() > first {
            self.log.reset(first)?;
        }
        let mut skip = 0;
        if first <= self.log.last_index() {
            // Entries already held (a former voter's log): keep those that
            // match, replace from the first that differs.
            let held = self
                .log
                .read(first, self.log.last_index().min(last), usize::MAX)?;
            skip = held
                .iter()
                .zip(&entries)
                .take_while(|(a, b)| a.term == b.term)
                .count();
        }
        if skip < entries.len() {
            self.log.append(&entries[skip..])?;
        }
        let hs = self.log.hard_state();
        self.log.set_hard_state(HardState {
            commit: last.0,
            ..hs
        })?;
        self.log.sync()
    }

    fn maybe_local_snapshot(&mut self, out: &mut Vec<Output>) {
        if !self.local_snapshot_building
            && self.state.index().0 >= self.last_local_snapshot.0 + self.cfg.local_snapshot_every
        {
            self.local_snapshot_building = true;
            out.push(Output::BuildSnapshot {
                state: Box::new(self.state.clone()),
                save: true,
            });
        }
    }

    // ---- timers ---------------------------------------------------------

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        if now >= self.next_raft_tick {
            self.next_raft_tick = now + self.cfg.raft_tick;
            if let Some(r) = self.raft.as_mut() {
                r.tick(now);
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_every;
            self.heartbeat(out);
        }
        if now >= self.next_metrics && self.cluster.is_some() {
            self.next_metrics = now + self.cfg.metrics_every;
            self.publish_metrics(out);
        }
        let acts = self.worker.tick(now);
        self.run_worker(acts, out);
        let acts = self.replicas.tick(now);
        self.run_replicas(acts, out);
        self.leave_step(out);
        if self.cluster.is_none() {
            self.discover(out);
        } else if now >= self.next_join && self.raft.is_none() {
            self.maybe_join(out);
        }
        if now >= self.next_plan {
            self.next_plan = now + self.cfg.plan_every;
            self.plan(out);
        }
        let master_known = self.master_alive();
        let mut acts = self.requests.on_tick(now, master_known);
        // A master that has not heard from a majority cannot commit what
        // waits here: say so now rather than at the time-out.
        if self
            .raft
            .as_ref()
            .is_some_and(|r| r.is_leader() && !r.quorum_recently_active())
            && !self.requests.is_empty()
        {
            acts.extend(self.requests.fail_all(Refusal::NoQuorum));
        }
        self.run_requests(acts, out);
        if let Some(rx) = self.snap_rx.as_mut() {
            let evs = rx.on_tick(now);
            self.on_receive_events(evs, out);
        }
    }

    fn master_alive(&self) -> bool {
        match &self.leader {
            Some(l) if *l == self.cfg.node => self.is_master(),
            Some(l) => self.peers.get(l).is_some_and(|p| self.heard(p)),
            None => false,
        }
    }

    fn heartbeat(&mut self, out: &mut Vec<Output>) {
        let hb = Heartbeat {
            node: self.cfg.node.clone(),
            addr: self.cfg.addr.clone(),
            cluster_id: self.cluster.clone(),
            incarnation: self.cfg.incarnation,
            term: self.raft.as_ref().map_or(self.leader_term, |r| r.term()),
            applied: self.state.index(),
            commit: self.commit_index(),
            log_floor: self.log.first_index(),
            leader: self.leader.clone(),
        };
        out.push(Output::Broadcast(
            self.frame(Gossip::Transient(TransientEvent::Heartbeat(hb))),
        ));
    }

    /// An empty node listens for a cluster; if none shows up within the
    /// window it founds one. Among empty nodes that see each other, the
    /// smallest id founds and the others join it.
    fn discover(&mut self, out: &mut Vec<Output>) {
        if self.now < self.started + self.cfg.discovery_window {
            return;
        }
        let smaller_empty_peer = self
            .peers
            .iter()
            .any(|(n, p)| p.cluster.is_none() && *n < self.cfg.node && self.heard(p));
        if smaller_empty_peer {
            return;
        }
        let id = ClusterId(format!("{:032x}", self.rng.gen::<u128>()));
        tracing::info!(node = %self.cfg.node, cluster = %id, "no cluster in sight; founding one");
        self.cluster = Some(id.clone());
        out.push(Output::ClusterAdopted(id));
        if let Err(e) = self.start_raft(
            RaftId(1),
            RaftBase {
                voters: vec![RaftId(1)],
                ..Default::default()
            },
        ) {
            self.fail(format!("could not start raft: {e}"), out);
            return;
        }
        if let Some(r) = self.raft.as_mut() {
            let _ = r.campaign();
        }
    }

    fn maybe_join(&mut self, out: &mut Vec<Output>) {
        if self.leaving {
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
        if let Some(leader) = self.leader.clone() {
            self.next_join = self.now + Duration::from_secs(1);
            self.send(
                leader,
                Direct::Join {
                    addr: self.cfg.addr.clone(),
                },
                out,
            );
        }
    }

    // ---- the master's plan tick ----------------------------------------

    fn plan(&mut self, out: &mut Vec<Output>) {
        if !self.is_master() {
            return;
        }
        if self.state.cluster_id().is_none() {
            if !self.founding_proposed {
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
                    self.founding_proposed = true;
                }
            }
            return;
        }
        self.plan_liveness();
        self.plan_membership();
        self.plan_expiry();
        let events = self.placement.plan(
            &self.cfg.placement,
            &self.state,
            self.now,
            self.leader_since,
            self.cfg.node_timeout,
        );
        let settled = self.now.saturating_sub(self.leader_since) >= self.cfg.node_timeout;
        let replica_events =
            self.placement
                .plan_replicas(&self.cfg.placement, &self.state, self.now, settled);
        for e in events.iter().chain(&replica_events) {
            let _ = self.propose(e);
        }
        let _ = out;
    }

    fn propose(&mut self, event: &Event) -> Result<(), Refusal> {
        let raft = self.raft.as_mut().ok_or(Refusal::NotMaster)?;
        let r = raft.propose(encode_event(event));
        if r.is_err() {
            self.metrics.proposals_refused += 1;
        }
        r
    }

    fn plan_liveness(&mut self) {
        let now = self.now;
        let suspect_after = self.cfg.node_timeout / 2;
        let settled = now.saturating_sub(self.leader_since) >= self.cfg.node_timeout;
        let mut proposals = Vec::new();
        for (node, info) in self.state.nodes() {
            if info.liveness == Liveness::Left {
                // Gone on purpose: its voter seat is free at once.
                self.dead_since
                    .entry(node.clone())
                    .or_insert(now.saturating_sub(self.cfg.voter_grace));
                continue;
            }
            let target = if *node == self.cfg.node {
                Liveness::Alive
            } else {
                let seen = self.peers.get(node).map(|p| p.last_seen);
                let silent =
                    now.saturating_sub(seen.unwrap_or(self.leader_since).max(self.leader_since));
                let heard_recently = seen.is_some_and(|t| now.saturating_sub(t) < suspect_after);
                if heard_recently {
                    Liveness::Alive
                } else if silent >= self.cfg.node_timeout && settled {
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
            if target != info.liveness && self.pending_liveness.get(node) != Some(&target) {
                proposals.push((node.clone(), target));
            }
        }
        for (node, liveness) in proposals {
            if self
                .propose(&Event::NodeLiveness {
                    node: node.clone(),
                    liveness,
                })
                .is_ok()
            {
                self.pending_liveness.insert(node, liveness);
            }
        }
    }

    /// Keeps `voters` healthy voters: promote a caught-up learner, remove a
    /// voter dead past the grace period, add a learner when short. One
    /// change at a time.
    fn plan_membership(&mut self) {
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        if raft.has_pending_conf_change() {
            return;
        }
        let last = raft.last_index();
        let nodes = self.state.nodes().clone();
        let alive = |n: &NodeId| {
            n == &self.cfg.node || nodes.get(n).is_some_and(|i| i.liveness == Liveness::Alive)
        };
        let voters = self.state.members(Role::Voter);
        let learners = self.state.members(Role::Learner);
        let alive_count = nodes
            .iter()
            .filter(|(n, i)| i.liveness == Liveness::Alive || **n == self.cfg.node)
            .count();
        let want = self.cfg.voters.min(alive_count).max(1);
        let healthy = voters.iter().filter(|(_, n)| alive(n)).count();

        let change = if let Some((rid, node)) = learners
            .iter()
            .find(|(rid, n)| alive(n) && raft.matched(*rid).is_some_and(|m| m.0 + 64 >= last.0))
        {
            Some((MembershipChange::AddNode, *rid, node.clone(), Role::Voter))
        } else if let Some((rid, node)) = learners.iter().find(|(_, n)| !alive(n)) {
            Some((
                MembershipChange::RemoveNode,
                *rid,
                node.clone(),
                Role::Follower,
            ))
        } else if let Some((rid, node)) = voters.iter().find(|(_, n)| {
            *n != self.cfg.node
                && self
                    .dead_since
                    .get(n)
                    .is_some_and(|t| self.now.saturating_sub(*t) >= self.cfg.voter_grace)
        }) {
            let candidates = nodes
                .iter()
                .any(|(n, i)| i.role == Role::Follower && alive(n));
            (healthy >= want || !candidates).then(|| {
                (
                    MembershipChange::RemoveNode,
                    *rid,
                    node.clone(),
                    Role::Follower,
                )
            })
        } else if healthy + learners.len() < want {
            nodes
                .iter()
                .filter(|(n, i)| {
                    i.role == Role::Follower && alive(n) && self.peers.contains_key(*n)
                })
                .min_by_key(|(_, i)| i.raft_id)
                .map(|(n, i)| {
                    (
                        MembershipChange::AddLearnerNode,
                        i.raft_id,
                        n.clone(),
                        Role::Learner,
                    )
                })
        } else {
            None
        };
        if let Some((kind, rid, node, role)) = change {
            tracing::info!(node = %node, raft_id = %rid, ?role, "changing membership");
            let context = encode_event(&Event::Membership { node, role });
            if let Some(raft) = self.raft.as_mut() {
                if raft.propose_membership(kind, rid, context).is_err() {
                    self.metrics.proposals_refused += 1;
                }
            }
        }
    }

    /// TTLs and outcome retention, on the master's clock. A deadline
    /// restarts at each election and never falls within one node timeout of
    /// it.
    fn plan_expiry(&mut self) {
        let now = self.now;
        let earliest = self.leader_since + self.cfg.node_timeout;
        let mut expire = Vec::new();
        let keys: Vec<String> = self.state.expiring().iter().cloned().collect();
        self.ttl_deadlines
            .retain(|k, _| keys.binary_search(k).is_ok());
        for key in keys {
            let Some(entry) = self.state.kv().get(&key) else {
                continue;
            };
            let Some(ttl) = entry.ttl_ms else { continue };
            let deadline = (now + Duration::from_millis(ttl)).max(earliest);
            let d = self
                .ttl_deadlines
                .entry(key.clone())
                .or_insert((entry.version, deadline));
            if d.0 != entry.version {
                *d = (entry.version, deadline);
            }
            if now >= d.1 && !self.pending_expiry.contains(&(key.clone(), entry.version)) {
                expire.push((key, entry.version));
            }
        }
        for (key, version) in expire {
            if self
                .propose(&Event::KvExpired {
                    key: key.clone(),
                    version,
                })
                .is_ok()
            {
                self.pending_expiry.insert((key, version));
            }
        }
        if now >= self.next_outcome_sweep {
            self.next_outcome_sweep = now + Duration::from_secs(30);
            let retention = self.cfg.outcome_retention.as_millis() as u64;
            let cutoff = self.wall_ms.saturating_sub(retention);
            if self.state.oldest_outcome_ms().is_some_and(|t| t < cutoff) {
                let _ = self.propose(&Event::OutcomesExpired { before_ms: cutoff });
            }
            let cutoff = self
                .wall_ms
                .saturating_sub(self.cfg.task_retention.as_millis() as u64);
            let old: Vec<TaskId> = self
                .state
                .tasks()
                .iter()
                .filter(|(_, t)| t.status.is_terminal() && t.updated_at_ms < cutoff)
                .map(|(id, _)| id.clone())
                .take(1000)
                .collect();
            if !old.is_empty() {
                let _ = self.propose(&Event::TasksForgotten { tasks: old });
            }
        }
    }

    // ---- messages -------------------------------------------------------

    /// Frames from another cluster are dropped and counted.
    fn foreign(&mut self, cluster: &Option<ClusterId>) -> bool {
        match (&self.cluster, cluster) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                self.metrics.foreign_messages += 1;
                true
            }
            _ => false,
        }
    }

    fn on_gossip(&mut self, frame: Frame<Gossip>, out: &mut Vec<Output>) {
        if frame.version != PROTOCOL_VERSION {
            self.metrics.bad_messages += 1;
            return;
        }
        if self.foreign(&frame.cluster) {
            return;
        }
        match frame.msg {
            Gossip::Committed(entries) => {
                if self.cluster.is_none() || frame.cluster != self.cluster {
                    return;
                }
                for e in entries {
                    self.known_commit = self.known_commit.max(e.idx);
                    self.buffer.insert(e);
                }
            }
            Gossip::Transient(TransientEvent::Heartbeat(hb)) => {
                self.on_heartbeat(frame.from, frame.cluster, hb, out)
            }
            Gossip::Transient(TransientEvent::Metrics(m)) => {
                if m.node == frame.from {
                    self.placement.on_metrics(m, self.now);
                } else {
                    self.metrics.bad_messages += 1;
                }
            }
            Gossip::Transient(_) => {}
        }
    }

    fn on_heartbeat(
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
            if hb.incarnation != self.cfg.incarnation {
                if self.now.saturating_sub(self.started) < 2 * self.cfg.node_timeout {
                    self.fail(
                        format!(
                            "another live process uses this node's identity ({}); refusing to start. \
                             Was the data directory copied? Give each host its own.",
                            self.cfg.node
                        ),
                        out,
                    );
                } else {
                    self.metrics.bad_messages += 1;
                    tracing::warn!(node = %self.cfg.node, "a newer process with this node's identity is running");
                }
            }
            return;
        }
        if self.cluster.is_none() {
            if let Some(c) = &cluster {
                tracing::info!(node = %self.cfg.node, cluster = %c, via = %from, "joining the cluster in sight");
                self.cluster = Some(c.clone());
                out.push(Output::ClusterAdopted(c.clone()));
            }
        }
        if cluster == self.cluster {
            self.known_commit = self.known_commit.max(hb.commit);
            if self.raft.is_none() {
                // A follower learns the master from heartbeats: a newer term
                // names it, and the master itself says when it stepped down.
                if hb.term >= self.leader_term && hb.leader.is_some() {
                    self.leader = hb.leader.clone();
                    self.leader_term = hb.term;
                } else if self.leader.as_ref() == Some(&from) && hb.leader.as_ref() != Some(&from) {
                    self.leader = hb.leader.clone();
                }
            }
        }
        self.peers.insert(
            from,
            Peer {
                last_seen: self.now,
                hb,
                cluster,
            },
        );
        // The peer map is bounded by the cluster's size: drop the long gone.
        if self.peers.len() > 2048 {
            let now = self.now;
            self.peers
                .retain(|_, p| now.saturating_sub(p.last_seen) < Duration::from_secs(600));
        }
    }

    fn on_direct(&mut self, frame: Frame<Direct>, out: &mut Vec<Output>) {
        if frame.version != PROTOCOL_VERSION {
            self.metrics.bad_messages += 1;
            return;
        }
        if self.foreign(&frame.cluster) {
            return;
        }
        let from = frame.from;
        match frame.msg {
            Direct::Raft(bytes) => {
                // Not a member here yet, or an unknown sender: dropped, and
                // Raft retries.
                let rid = self.state.nodes().get(&from).map(|n| n.raft_id);
                if let (Some(raft), Some(rid)) = (self.raft.as_mut(), rid) {
                    if let Err(e) = raft.step(rid, &bytes, self.now) {
                        self.metrics.bad_messages += 1;
                        tracing::debug!(from = %from, error = %e, "raft message rejected");
                    }
                }
            }
            Direct::FetchRange(r) => self.serve_range(from, r, out),
            Direct::Range(reply) => self.on_range(from, reply),
            Direct::SnapshotRequest(req) => {
                let floor = self.log.first_index();
                let max_lag = self.cfg.snapshot_threshold / 2;
                let acts =
                    self.snap_server
                        .on_request(from, req, self.state.index(), floor, max_lag);
                self.serve(acts, out);
            }
            Direct::SnapshotChunk(chunk) => self.on_chunk(from, chunk, out),
            Direct::SnapshotRefused { session, reason } => {
                if let Some(rx) = self.snap_rx.as_mut() {
                    let evs = rx.on_refused(&from, session, &reason);
                    self.on_receive_events(evs, out);
                }
            }
            Direct::Forward(cmd) => self.sequence(cmd, Some(from), out),
            Direct::ForwardRefused { id, reason } => {
                let acts = self.requests.on_refused(&id, reason, self.now);
                self.run_requests(acts, out);
            }
            Direct::Join { addr } => self.on_join(from, addr),
            Direct::LeaseRenew { leases, at_ms } => {
                // A master cut off from its quorum may be replaced at any
                // moment: it renews nothing.
                if self.leads_with_quorum() {
                    let tokens = self.placement.renew(&from, &leases, &self.state, self.now);
                    self.send(from, Direct::LeaseRenewed { tokens, at_ms }, out);
                }
            }
            Direct::LeaseRenewed { tokens, at_ms } => {
                if self.leader.as_ref() == Some(&from) {
                    self.worker
                        .on_renewed(&tokens, Duration::from_millis(at_ms));
                }
            }
            // Task output is the shell's business; it does not reach here.
            Direct::OutputSubscribe { .. } | Direct::Output(_) => {}
            Direct::Leave => {
                let member = self
                    .state
                    .nodes()
                    .get(&from)
                    .is_some_and(|n| n.liveness != Liveness::Left);
                if self.is_master() && member {
                    tracing::info!(node = %from, "a node leaves");
                    let _ = self.propose(&Event::NodeLeft { node: from });
                }
            }
        }
    }

    fn on_join(&mut self, from: NodeId, addr: String) {
        if !self.is_master() || self.state.cluster_id().is_none() {
            return;
        }
        let known = self
            .state
            .nodes()
            .get(&from)
            .is_some_and(|n| n.addr == addr && n.liveness == Liveness::Alive);
        let pending = self
            .pending_joins
            .get(&from)
            .is_some_and(|t| self.now.saturating_sub(*t) < Duration::from_secs(2));
        if known || pending {
            return;
        }
        let event = Event::NodeJoined {
            node: from.clone(),
            addr,
            at_ms: self.wall_ms,
        };
        if self.propose(&event).is_ok() {
            self.pending_joins.insert(from, self.now);
        }
    }

    fn serve_range(&mut self, to: NodeId, r: FetchRange, out: &mut Vec<Output>) {
        let reply = if r.from < self.log.first_index() {
            RangeReply::Compacted {
                from: r.from,
                floor: self.log.first_index(),
            }
        } else if r.from > self.state.index() || r.from > self.log.last_index() {
            RangeReply::NotYet {
                from: r.from,
                last: self.state.index(),
            }
        } else {
            let to_idx = r.to.min(self.state.index());
            match self.log.read(r.from, to_idx, RANGE_MAX_BYTES as usize) {
                Ok(entries) => {
                    self.metrics.ranges_served += 1;
                    RangeReply::Entries {
                        from: r.from,
                        entries,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "range read failed");
                    RangeReply::NotYet {
                        from: r.from,
                        last: self.state.index(),
                    }
                }
            }
        };
        self.send(to, Direct::Range(reply), out);
    }

    fn on_range(&mut self, from: NodeId, reply: RangeReply) {
        match reply {
            RangeReply::Entries {
                from: start,
                entries,
            } => {
                self.gaps.on_reply(&from, start);
                let contiguous = entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.idx.0 == start.0 + i as u64);
                if !contiguous {
                    self.metrics.bad_messages += 1;
                    return;
                }
                for e in entries {
                    self.buffer.insert(e);
                }
            }
            RangeReply::Compacted { from: start, .. } => {
                self.gaps.on_reply(&from, start);
                if start >= self.buffer.next() {
                    self.need_snapshot = true;
                }
            }
            RangeReply::NotYet { from: start, .. } => self.gaps.on_reply(&from, start),
        }
    }

    fn plan_gaps(&mut self, out: &mut Vec<Output>) {
        if self.snap_rx.is_some() || self.cluster.is_none() {
            return;
        }
        let gaps = self.buffer.gaps(self.known_commit, 8);
        let peers: Vec<PeerLog> = self
            .peers
            .iter()
            .filter(|(_, p)| self.live_member(p))
            .map(|(n, p)| PeerLog {
                node: n.clone(),
                floor: p.hb.log_floor,
                applied: p.hb.applied,
            })
            .collect();
        for action in self.gaps.plan(self.now, &gaps, &peers) {
            match action {
                GapAction::Fetch { peer, from, to } => {
                    self.metrics.nacks_sent += 1;
                    self.send(peer, Direct::FetchRange(FetchRange { from, to }), out);
                }
                GapAction::NeedSnapshot => self.need_snapshot = true,
            }
        }
    }

    // ---- snapshots --------------------------------------------------------

    fn serve(&mut self, acts: Vec<ServeAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ServeAction::Send { to, chunk } => {
                    self.metrics.snapshot_bytes_sent += chunk.data.len() as u64;
                    self.send(to, Direct::SnapshotChunk(chunk), out);
                }
                ServeAction::Refuse {
                    to,
                    session,
                    reason,
                } => self.send(to, Direct::SnapshotRefused { session, reason }, out),
                ServeAction::Build => out.push(Output::BuildSnapshot {
                    state: Box::new(self.state.clone()),
                    save: false,
                }),
            }
        }
    }

    fn maybe_snapshot(&mut self, out: &mut Vec<Output>) {
        if self.snap_rx.is_some() || self.cluster.is_none() || self.now < self.snap_retry_at {
            return;
        }
        let behind = self.known_commit.0.saturating_sub(self.state.index().0);
        let joining = self.state.cluster_id().is_none() && self.known_commit > EventIdx::ZERO;
        let wanted = self.need_snapshot
            || (!self.cfg.no_snapshot && (behind > self.cfg.snapshot_threshold || joining));
        if !wanted || behind == 0 {
            self.need_snapshot = false;
            return;
        }
        // Prefer an up-to-date replica that is not the master, so joins do
        // not all load one node; fall back to the master.
        let mut candidates: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| {
                self.live_member(p)
                    && p.hb.applied > self.state.index()
                    && p.hb.applied.0 + 1000 >= self.known_commit.0
                    && Some(*n) != self.leader.as_ref()
            })
            .map(|(n, _)| n.clone())
            .collect();
        if candidates.is_empty() {
            candidates.extend(
                self.leader
                    .clone()
                    .filter(|l| *l != self.cfg.node && self.peers.contains_key(l)),
            );
        }
        if candidates.is_empty() {
            candidates.extend(
                self.peers
                    .iter()
                    .filter(|(_, p)| p.cluster == self.cluster && p.hb.applied > self.state.index())
                    .map(|(n, _)| n.clone()),
            );
        }
        if candidates.is_empty() {
            return;
        }
        let source = candidates[self.rng.gen_range(0..candidates.len())].clone();
        self.session = self.session.wrapping_add(1) | ((self.cfg.incarnation & 0xffff) << 48);
        tracing::info!(node = %self.cfg.node, source = %source, behind, "catching up by snapshot");
        let (rx, evs) = SnapshotReceiver::start(self.cfg.receive, self.session, source, self.now);
        self.snap_rx = Some(rx);
        self.need_snapshot = false;
        self.on_receive_events(evs, out);
    }

    fn on_chunk(&mut self, from: NodeId, chunk: SnapshotChunk, out: &mut Vec<Output>) {
        let Some(rx) = self.snap_rx.as_mut() else {
            return;
        };
        if rx.session() == chunk.session && rx.source() == &from {
            self.metrics.snapshot_bytes_received += chunk.data.len() as u64;
        }
        let evs = rx.on_chunk(&from, chunk, self.now);
        self.on_receive_events(evs, out);
    }

    fn on_receive_events(&mut self, evs: Vec<ReceiveEvent>, out: &mut Vec<Output>) {
        for ev in evs {
            match ev {
                ReceiveEvent::Request { to, req } => {
                    self.send(to, Direct::SnapshotRequest(req), out)
                }
                ReceiveEvent::Progress {
                    received,
                    total,
                    entries,
                } => out.push(Output::CatchUp {
                    received,
                    total,
                    entries,
                }),
                ReceiveEvent::Done { state } => {
                    self.snap_rx = None;
                    self.install_snapshot(*state, out);
                }
                ReceiveEvent::Failed { reason } => {
                    tracing::warn!(node = %self.cfg.node, reason = %reason, "snapshot transfer failed; will retry");
                    self.metrics.snapshot_failures += 1;
                    self.snap_rx = None;
                    self.snap_retry_at = self.now + Duration::from_secs(1);
                    self.need_snapshot = true;
                }
            }
        }
    }

    fn install_snapshot(&mut self, state: State, out: &mut Vec<Output>) {
        if state.index() <= self.state.index() {
            return;
        }
        if let (Some(mine), Some(theirs)) = (&self.cluster, state.cluster_id()) {
            if mine != theirs {
                self.metrics.foreign_messages += 1;
                return;
            }
        }
        let index = state.index();
        tracing::info!(node = %self.cfg.node, index = %index, "installed snapshot");
        self.metrics.snapshots_installed += 1;
        self.state = state;
        self.worker.note_state_replaced();
        self.replicas_dirty = true;
        self.buffer.fast_forward_to(index.next());
        self.gaps.reset();
        if self.raft.is_none() {
            if let Err(e) = self.log.reset(index.next()) {
                self.fail(format!("could not reset the log: {e}"), out);
                return;
            }
        }
        self.last_local_snapshot = index;
        self.local_snapshot_building = true;
        out.push(Output::BuildSnapshot {
            state: Box::new(self.state.clone()),
            save: true,
        });
        out.push(Output::SnapshotInstalled { index });
        self.refresh_raft_peers();
        if let Err(e) = self.sync_raft_membership() {
            self.fail(format!("could not start raft: {e}"), out);
            return;
        }
        let acts = self.requests.on_state_replaced(&self.state);
        self.run_requests(acts, out);
    }

    // ---- commands -----------------------------------------------------------

    fn run_requests(&mut self, acts: Vec<RequestAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                RequestAction::Reply(to, reply) => out.push(Output::Reply { to, reply }),
                RequestAction::Forward(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    /// Routes a command to the sequencer: here if this node is the master,
    /// else to the master. `origin` is the node that forwarded it (None:
    /// a client of this node).
    fn sequence(&mut self, cmd: Command, origin: Option<NodeId>, out: &mut Vec<Output>) {
        if !self.is_master() {
            match (origin, self.leader.clone()) {
                (Some(o), _) => self.send(
                    o,
                    Direct::ForwardRefused {
                        id: cmd.id,
                        reason: Refusal::NotMaster,
                    },
                    out,
                ),
                (None, Some(l)) if l != self.cfg.node => self.send(l, Direct::Forward(cmd), out),
                (None, _) => {}
            }
            return;
        }
        let refusal = match self
            .sequencer
            .submit(&cmd, &self.state, self.wall_ms, self.now)
        {
            Sequenced::Known { .. } | Sequenced::InFlight => None,
            Sequenced::Propose(data) => {
                let raft = self.raft.as_mut().expect("the master runs raft");
                match raft.propose(data) {
                    Ok(()) => None,
                    Err(r) => {
                        self.sequencer.not_proposed(&cmd.id);
                        self.metrics.proposals_refused += 1;
                        Some(r)
                    }
                }
            }
            Sequenced::Refused(r) => Some(r),
        };
        if let Some(reason) = refusal {
            self.refuse(cmd.id, reason, origin, out);
        }
    }

    fn refuse(
        &mut self,
        id: CommandId,
        reason: Refusal,
        origin: Option<NodeId>,
        out: &mut Vec<Output>,
    ) {
        match origin {
            Some(o) => self.send(o, Direct::ForwardRefused { id, reason }, out),
            None => {
                let acts = self.requests.on_refused(&id, reason, self.now);
                self.run_requests(acts, out);
            }
        }
    }
}
