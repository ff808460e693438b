//! A deterministic in-memory cluster: complete node cores (Raft, replica
//! sync, sequencer, apply) over a simulated network, with a seeded RNG and
//! virtual time. The network can drop, delay, duplicate and reorder
//! messages, cut links, isolate nodes; nodes can be paused, resumed,
//! crashed (losing what they had not fsynced) and restarted from their own
//! log, or have their disk fill. Every message goes through the wire codec.
//! Time advances from one event to the next: a delivery, or a wake-up a
//! node asked for. Task runs are simulated (`runs`).
//!
//! After every step the simulator checks the invariants (`checks`): at
//! most one master per term, two replicas at the same index have the same
//! state hash (so no committed entry was lost or changed), and no replica
//! goes back. A violation panics with the seed, so the run can be
//! replayed.

mod checks;
mod hostile;
mod network;
pub mod ports;
mod runs;
mod shell;

pub use network::NetConfig;
pub use runs::SimRun;

use network::{Delivery, Payload};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use shoal_log::decode_snapshot;
use shoal_model::{
    ClusterId, Command, CommandId, EventIdx, NodeId, Op, OutputChunk, State, StateHash, TaskId,
    Term,
};
use shoal_proto::log_store::MemLog;
use shoal_proto::node::{Input, Node, NodeConfig, Saved};
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use shoal_proto::wire::{self, CommandReply, Direct, Gossip};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// A node's disk: what survives a crash.
#[derive(Debug, Default)]
struct Disk {
    log: MemLog,
    snapshot: Option<(Vec<u8>, [u8; 32])>,
    cluster: Option<ClusterId>,
}

#[derive(Debug)]
struct SimNode {
    cfg: NodeConfig,
    node: Option<Node<MemLog>>,
    disk: Disk,
    paused: bool,
    starts: u64,
    /// The wake-up the node asked for last; older ones are ignored.
    wake: u64,
    fatal: Option<String>,
    /// Whether committed gossip reaches it (`Output::FollowCommitted`;
    /// a process starts subscribed).
    follows_committed: bool,
}

/// Every simulated host's wall clock at virtual time `now`.
fn wall_ms(now: Duration) -> u64 {
    1_700_000_000_000 + now.as_millis() as u64
}

/// The capacity every simulated host reports: 4 cores, 8 GiB free.
const HOST_CAPACITY: (u32, u64) = (4000, 8 << 30);
/// A paused node's deliveries are looked at again this often.
const PAUSED_RETRY: Duration = Duration::from_millis(10);
/// When nothing at all is scheduled, time moves on by this much.
const IDLE_STEP: Duration = Duration::from_millis(10);

pub struct Sim {
    pub seed: u64,
    rng: SmallRng,
    now: Duration,
    net: NetConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    in_flight: BTreeMap<u64, Delivery>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    replies: BTreeMap<u64, CommandReply>,
    next_reply: u64,
    next_cmd: u64,
    leaders: BTreeMap<(Option<ClusterId>, Term), NodeId>,
    hashes: BTreeMap<(Option<ClusterId>, EventIdx), StateHash>,
    /// Each running node's applied index, to check it never goes back.
    applied: BTreeMap<(NodeId, Option<ClusterId>), EventIdx>,
    template: Box<dyn Fn(NodeId, u64) -> NodeConfig>,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    /// Messages that reached each node over the network (a broadcast
    /// counts once at each node it reaches).
    pub received: BTreeMap<NodeId, u64>,
    /// Wake-ups delivered, per node.
    pub wakes: BTreeMap<NodeId, u64>,
    /// Committed gossip messages each node published.
    pub committed_gossip: BTreeMap<NodeId, u64>,
    /// Every run started, in order.
    pub runs: Vec<SimRun>,
    /// Snapshots encoded to serve others (not to save), per node.
    pub serve_builds: BTreeMap<NodeId, u64>,
    /// Each node's last snapshot download progress: bytes received, total.
    pub catch_up: BTreeMap<NodeId, (u64, u64)>,
    /// Task output each node handed to its own clients, in order.
    pub task_output: BTreeMap<NodeId, Vec<OutputChunk>>,
    /// A test forges messages: honest nodes refuse some.
    refusals_expected: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .finish()
    }
}

/// The snapshot a node's builder makes of `state` (`Output::BuildSnapshot`),
/// at compression level 1 to keep the tests quick: the same bytes on
/// every node that builds the same State.
pub fn encoded_snapshot(state: &State, chunk_bytes: u32) -> EncodedSnapshot {
    let (bytes, sha) = shoal_log::encode_snapshot(state, 1);
    EncodedSnapshot::new(state.index(), bytes, sha, chunk_bytes)
}

/// The node configuration scenarios use: the defaults, with a short
/// discovery window so that one node founds promptly.
pub fn default_config(node: NodeId, seed: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(node.clone(), format!("sim://{node}"), seed);
    cfg.discovery_window = Duration::from_millis(500);
    cfg.raft.sync_off_loop = true;
    cfg
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim::with_config(seed, NetConfig::default(), Box::new(default_config))
    }

    pub fn with_config(
        seed: u64,
        net: NetConfig,
        template: Box<dyn Fn(NodeId, u64) -> NodeConfig>,
    ) -> Sim {
        Sim {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            now: Duration::ZERO,
            net,
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            replies: BTreeMap::new(),
            next_reply: 1,
            next_cmd: 1,
            leaders: BTreeMap::new(),
            hashes: BTreeMap::new(),
            applied: BTreeMap::new(),
            template,
            messages_sent: 0,
            messages_dropped: 0,
            wakes: BTreeMap::new(),
            runs: Vec::new(),
            serve_builds: BTreeMap::new(),
            received: BTreeMap::new(),
            committed_gossip: BTreeMap::new(),
            catch_up: BTreeMap::new(),
            task_output: BTreeMap::new(),
            refusals_expected: false,
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Adds and starts a node with an empty disk.
    pub fn add_node(&mut self, name: &str) -> NodeId {
        let id = NodeId::from(name);
        let seed = self.seed.wrapping_mul(1_000_003) ^ self.nodes.len() as u64;
        let cfg = (self.template)(id.clone(), seed);
        self.nodes.insert(
            id.clone(),
            SimNode {
                cfg,
                node: None,
                disk: Disk::default(),
                paused: false,
                starts: 0,
                wake: 0,
                fatal: None,
                follows_committed: true,
            },
        );
        self.start(&id);
        id
    }

    /// Changes a node's configuration; takes effect at its next start.
    pub fn configure(&mut self, node: &NodeId, f: impl FnOnce(&mut NodeConfig)) {
        f(&mut self.nodes.get_mut(node).expect("known node").cfg);
    }

    fn start(&mut self, id: &NodeId) {
        let now = self.now;
        let sn = self.nodes.get_mut(id).expect("known node");
        sn.starts += 1;
        sn.follows_committed = true;
        let mut cfg = sn.cfg.clone();
        cfg.incarnation = cfg.seed.wrapping_add(sn.starts * 7919);
        cfg.started_ms = wall_ms(now);
        cfg.seed = cfg.seed.wrapping_add(sn.starts);
        let snapshot = sn
            .disk
            .snapshot
            .as_ref()
            .map(|(b, sha)| decode_snapshot(b, sha).expect("a saved snapshot decodes"));
        let log = std::mem::take(&mut sn.disk.log);
        match Node::new(cfg, log, snapshot, sn.disk.cluster.clone(), now) {
            Ok(node) => sn.node = Some(node),
            Err(e) => panic!("seed {}: node {id} failed to start: {e}", self.seed),
        }
        // A started node is woken at once; it asks for what follows.
        self.input(id, Input::Wake);
    }

    /// Kills a node: what it had not fsynced is lost; messages to it vanish.
    pub fn crash(&mut self, id: &NodeId) {
        let now = self.now;
        self.end_runs_of(id, now);
        let sn = self.nodes.get_mut(id).expect("known node");
        self.applied.retain(|(n, _), _| n != id);
        if let Some(node) = sn.node.take() {
            let mut log = node.into_log();
            log.crash();
            sn.disk.log = log;
        }
        sn.paused = false;
    }

    /// Fills a node's disk (`full`) or gives it room again: while full,
    /// its log fails what must reach the disk (`MemLog::full_switch`).
    pub fn fill_disk(&mut self, id: &NodeId, full: bool) {
        let sn = &self.nodes[id];
        let switch = match &sn.node {
            Some(node) => node.log().full_switch(),
            None => sn.disk.log.full_switch(),
        };
        switch.store(full, std::sync::atomic::Ordering::Relaxed);
    }

    /// Restarts a crashed node from its own disk, with the same identity.
    pub fn restart(&mut self, id: &NodeId) {
        assert!(self.nodes[id].node.is_none(), "restart of a running node");
        self.start(id);
    }

    /// Asks a node to leave (SIGTERM, `shoal leave`): it drains; stop it
    /// with `crash` once `node(id).drained()`.
    pub fn drain(&mut self, id: &NodeId) {
        self.input(id, Input::Drain);
    }

    /// Stops a node's clock and input (SIGSTOP); messages wait for it.
    pub fn pause(&mut self, id: &NodeId) {
        self.nodes.get_mut(id).expect("known node").paused = true;
    }

    pub fn resume(&mut self, id: &NodeId) {
        self.nodes.get_mut(id).expect("known node").paused = false;
    }

    /// Cuts every link between the two groups (both directions).
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((x.clone(), y.clone()));
                self.cut.insert((y.clone(), x.clone()));
            }
        }
    }

    pub fn isolate(&mut self, id: &NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().filter(|n| *n != id).cloned().collect();
        self.partition(std::slice::from_ref(id), &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn node(&self, id: &NodeId) -> Option<&Node<MemLog>> {
        self.nodes.get(id).and_then(|n| n.node.as_ref())
    }

    /// Whether committed gossip reaches this node now.
    pub fn follows_committed(&self, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.follows_committed)
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
    }

    pub fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.node.is_some() && !n.paused)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn fatal(&self, id: &NodeId) -> Option<&str> {
        self.nodes[id].fatal.as_deref()
    }

    /// The live masters (normally at most one).
    pub fn masters(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.paused && n.node.as_ref().is_some_and(|x| x.is_master()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn master(&self) -> Option<NodeId> {
        let m = self.masters();
        (m.len() == 1).then(|| m[0].clone())
    }

    /// Submits a command through `via`; returns a handle for `reply`.
    pub fn submit(&mut self, via: &NodeId, op: Op) -> u64 {
        let id = CommandId(format!("cmd-{}", self.next_cmd));
        self.next_cmd += 1;
        self.submit_cmd(via, Command { id, op })
    }

    pub fn submit_cmd(&mut self, via: &NodeId, cmd: Command) -> u64 {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.input(via, Input::Submit { cmd, reply });
        reply
    }

    /// A consistent read through `via` asks for its read index; returns a
    /// handle for `reply` (the index comes with `Outcome::Done`).
    pub fn read_index(&mut self, via: &NodeId) -> u64 {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.input(via, Input::ReadIndex { reply });
        reply
    }

    pub fn reply(&self, handle: u64) -> Option<&CommandReply> {
        self.replies.get(&handle)
    }

    /// A client of `via` follows a task's output (renew it as a client
    /// does, every second or so).
    pub fn watch_output(&mut self, via: &NodeId, task: &TaskId) {
        self.input(via, Input::WatchOutput(task.clone()));
    }

    /// A client of `via` reads the nodes' reports (`/v1/nodes`, the
    /// dashboard); renew it as the page does.
    pub fn want_reports(&mut self, via: &NodeId) {
        self.input(via, Input::WantReports);
    }

    pub fn state_of(&self, id: &NodeId) -> Option<&State> {
        self.node(id).map(|n| n.state())
    }

    fn wall_ms(&self) -> u64 {
        wall_ms(self.now)
    }

    fn input(&mut self, id: &NodeId, input: Input) {
        let now = self.now;
        let wall = self.wall_ms();
        let sn = self.nodes.get_mut(id).expect("known node");
        let Some(node) = sn.node.as_mut() else { return };
        let outputs = node.handle(input, now, wall);
        self.outputs(id.clone(), outputs);
    }

    fn deliver(&mut self, d: Delivery) {
        let sn = &self.nodes[&d.to];
        if sn.node.is_none() {
            return;
        }
        let input = match d.payload {
            Payload::Direct(bytes) => match wire::decode::<Direct>(&bytes) {
                Ok(f) => Input::Direct(f),
                Err(e) => panic!("seed {}: undecodable frame: {e}", self.seed),
            },
            Payload::Gossip(bytes) => match wire::decode::<Gossip>(&bytes) {
                Ok(f) => Input::Gossip(f),
                Err(e) => panic!("seed {}: undecodable frame: {e}", self.seed),
            },
            Payload::Wake(generation) => {
                if generation != sn.wake {
                    return;
                }
                *self.wakes.entry(d.to.clone()).or_default() += 1;
                Input::Wake
            }
            Payload::SnapshotBuilt(snap, saved) => Input::SnapshotBuilt {
                snap,
                save: if saved { Saved::Saved } else { Saved::NotAsked },
            },
            Payload::HostCapacity((cpu_free_milli, mem_free_bytes)) => {
                Input::HostCapacity(shoal_proto::node::HostMeasure {
                    cpu_free_milli,
                    mem_free_bytes,
                    disk_free_bytes: 1 << 40,
                    ports_taken: Vec::new(),
                })
            }
            Payload::LogSynced(id) => Input::LogSynced { id, result: Ok(()) },
            Payload::Run(ev) => match self.run_input(&d.to, ev) {
                Some(input) => input,
                None => return,
            },
        };
        self.input(&d.to, input);
    }

    /// Advances to the next event (a delivery or a wake-up) and runs it.
    pub fn step(&mut self) {
        let Some(Reverse((t, seq))) = self.queue.pop() else {
            self.now += IDLE_STEP;
            return;
        };
        self.now = self.now.max(t);
        let d = self.in_flight.remove(&seq).expect("queued delivery");
        if self.nodes[&d.to].paused {
            // A paused process reads its socket and clock after it resumes.
            let at = self.now + PAUSED_RETRY;
            self.enqueue(at, d);
            return;
        }
        let to = d.to.clone();
        self.deliver(d);
        self.check(&to);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            if self.next_event().is_none_or(|t| t > until) {
                self.now = until;
                break;
            }
            self.step();
        }
    }

    /// Runs until `cond` holds or `limit` of virtual time passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if cond(self) {
                return true;
            }
            if self.next_event().is_none_or(|t| t > until) {
                self.now = until;
                break;
            }
            self.step();
        }
        cond(self)
    }

    fn next_event(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }
}
