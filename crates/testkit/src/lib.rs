//! A deterministic in-memory cluster: complete node cores (Raft, replica
//! sync, sequencer, apply) over a simulated network, with a seeded RNG and
//! virtual time. The network can drop, delay, duplicate and reorder
//! messages, cut links, isolate nodes; nodes can be paused, resumed,
//! crashed (losing what they had not fsynced) and restarted from their own
//! log. Every message goes through the wire codec. Task runs are
//! simulated: the synthetic runner's run ends after its chunks' time, a
//! stopped run a moment after the stop; a crash ends its node's runs.
//!
//! After every step the simulator checks the invariants: at most one master
//! per term, and two replicas at the same index have the same state hash
//! (so no committed entry was lost or changed). A violation panics with the
//! seed, so the run can be replayed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_log::{decode_snapshot, encode_snapshot};
use shoal_model::{
    ClusterId, Command, CommandId, EventIdx, ExitClass, FencingToken, NodeId, Op, Runner, State,
    StateHash, TaskId, Term,
};
use shoal_proto::log_store::MemLog;
use shoal_proto::node::{Input, Node, NodeConfig, Output, Saved};
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use shoal_proto::wire::{self, CommandReply, Direct, Gossip};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

/// How the simulated network misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(3),
        }
    }
}

#[derive(Debug)]
enum Payload {
    Direct(Vec<u8>),
    Gossip(Vec<u8>),
    SnapshotBuilt(EncodedSnapshot, bool),
    /// A run ends; only delivered to the process that started it.
    RunExited {
        start: u64,
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
    },
}

/// A simulated run, as the shell would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRun {
    pub node: NodeId,
    pub task: TaskId,
    pub token: FencingToken,
    pub attempt: u32,
    pub started: Duration,
    /// When its process ended (or its node crashed).
    pub ended: Option<Duration>,
}

#[derive(Debug)]
struct Delivery {
    to: NodeId,
    from: NodeId,
    payload: Payload,
}

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
    fatal: Option<String>,
}

pub struct Sim {
    pub seed: u64,
    rng: SmallRng,
    now: Duration,
    tick: Duration,
    next_tick: Duration,
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
    applied: BTreeMap<NodeId, EventIdx>,
    template: Box<dyn Fn(NodeId, u64) -> NodeConfig>,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    /// Every run started, in order.
    pub runs: Vec<SimRun>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .finish()
    }
}

/// The node configuration scenarios use: the defaults, with a short
/// discovery window so that one node founds promptly.
pub fn default_config(node: NodeId, seed: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(node.clone(), format!("sim://{node}"), seed);
    cfg.discovery_window = Duration::from_millis(500);
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
            tick: Duration::from_millis(10),
            next_tick: Duration::ZERO,
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
            runs: Vec::new(),
        }
    }

    /// Runs of `task` that were under way at once (should be none unless
    /// a node crashed, which the simulator counts as ending its runs).
    pub fn overlapping_runs(&self, task: &TaskId) -> Vec<(SimRun, SimRun)> {
        let runs: Vec<&SimRun> = self.runs.iter().filter(|r| &r.task == task).collect();
        let mut out = Vec::new();
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if a.ended.is_none_or(|e| e > b.started) {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
        out
    }

    /// Records a run and schedules its end: the synthetic runner after its
    /// chunks' time, a command after a while (tasks) or never (replicas).
    fn start_run(
        &mut self,
        from: &NodeId,
        task: TaskId,
        token: FencingToken,
        attempt: u32,
        runner: &Runner,
    ) {
        let start = self.nodes[from].starts;
        let replica = task.as_str().starts_with("deploy:");
        self.runs.push(SimRun {
            node: from.clone(),
            task,
            token,
            attempt,
            started: self.now,
            ended: None,
        });
        let (after, exit_code) = match runner {
            Runner::Synthetic {
                chunks,
                interval_ms,
                exit_code,
            } => (
                Duration::from_millis(interval_ms * *chunks as u64),
                *exit_code,
            ),
            Runner::Exec { .. } if replica => (Duration::from_secs(3600), 0),
            Runner::Exec { .. } => (Duration::from_millis(100), 0),
        };
        self.enqueue(
            self.now + after,
            Delivery {
                to: from.clone(),
                from: from.clone(),
                payload: Payload::RunExited {
                    start,
                    token,
                    exit_code,
                    class: ExitClass::of_exit_code(exit_code),
                },
            },
        );
    }

    fn end_run(&mut self, node: &NodeId, token: FencingToken) {
        let now = self.now;
        if let Some(r) = self
            .runs
            .iter_mut()
            .rev()
            .find(|r| &r.node == node && r.token == token && r.ended.is_none())
        {
            r.ended = Some(now);
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
                fatal: None,
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
        let mut cfg = sn.cfg.clone();
        cfg.incarnation = cfg.seed.wrapping_add(sn.starts * 7919);
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
    }

    /// Kills a node: what it had not fsynced is lost; messages to it vanish.
    pub fn crash(&mut self, id: &NodeId) {
        let now = self.now;
        for r in self.runs.iter_mut() {
            if &r.node == id && r.ended.is_none() {
                r.ended = Some(now);
            }
        }
        let sn = self.nodes.get_mut(id).expect("known node");
        self.applied.remove(id);
        if let Some(node) = sn.node.take() {
            let mut log = node.into_log();
            log.crash();
            sn.disk.log = log;
        }
        sn.paused = false;
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
        self.live()
            .into_iter()
            .filter(|n| self.node(n).is_some_and(|x| x.is_master()))
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

    pub fn reply(&self, handle: u64) -> Option<&CommandReply> {
        self.replies.get(&handle)
    }

    fn wall_ms(&self, _id: &NodeId) -> u64 {
        1_700_000_000_000 + self.now.as_millis() as u64
    }

    fn input(&mut self, id: &NodeId, input: Input) {
        let now = self.now;
        let wall = self.wall_ms(id);
        let sn = self.nodes.get_mut(id).expect("known node");
        let Some(node) = sn.node.as_mut() else { return };
        let outputs = node.handle(input, now, wall);
        self.outputs(id.clone(), outputs);
    }

    fn enqueue(&mut self, at: Duration, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.in_flight.insert(self.seq, d);
    }

    fn transmit(&mut self, from: &NodeId, to: &NodeId, payload: impl Fn() -> Payload) {
        self.messages_sent += 1;
        if self.cut.contains(&(from.clone(), to.clone())) || self.rng.gen_bool(self.net.loss) {
            self.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = (self.net.max_delay - self.net.min_delay).as_micros() as u64;
            let delay = self.net.min_delay + Duration::from_micros(self.rng.gen_range(0..=span));
            self.enqueue(
                self.now + delay,
                Delivery {
                    to: to.clone(),
                    from: from.clone(),
                    payload: payload(),
                },
            );
        }
    }

    fn outputs(&mut self, from: NodeId, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, frame } => {
                    let bytes = wire::encode(&frame).unwrap_or_else(|e| {
                        panic!("seed {}: {from} sent an unencodable frame: {e}", self.seed)
                    });
                    if self.nodes.contains_key(&to) {
                        self.transmit(&from, &to, || Payload::Direct(bytes.clone()));
                    }
                }
                Output::Broadcast(frame) => {
                    let bytes = wire::encode(&frame).unwrap_or_else(|e| {
                        panic!(
                            "seed {}: {from} broadcast an unencodable frame: {e}",
                            self.seed
                        )
                    });
                    let others: Vec<NodeId> =
                        self.nodes.keys().filter(|n| **n != from).cloned().collect();
                    for to in others {
                        self.transmit(&from, &to, || Payload::Gossip(bytes.clone()));
                    }
                }
                Output::Reply { to, reply } => {
                    self.replies.insert(to, reply);
                }
                Output::BuildSnapshot { state, save } => {
                    let (bytes, sha) = encode_snapshot(&state, 1);
                    if save {
                        self.nodes.get_mut(&from).expect("known node").disk.snapshot =
                            Some((bytes.clone(), sha));
                    }
                    let snap = EncodedSnapshot {
                        index: state.index(),
                        bytes: Arc::new(bytes),
                        sha256: sha,
                    };
                    let at = self.now + Duration::from_millis(5);
                    self.enqueue(
                        at,
                        Delivery {
                            to: from.clone(),
                            from: from.clone(),
                            payload: Payload::SnapshotBuilt(snap, save),
                        },
                    );
                }
                Output::ClusterAdopted(c) => {
                    self.nodes.get_mut(&from).expect("known node").disk.cluster = Some(c);
                }
                Output::CatchUp { .. } | Output::SnapshotInstalled { .. } => {}
                Output::StartRun {
                    task,
                    token,
                    attempt,
                    spec,
                } => self.start_run(&from, task, token, attempt, &spec.runner),
                Output::StartReplica {
                    deployment,
                    replica,
                    token,
                    restarts,
                    spec,
                    ..
                } => {
                    let name = TaskId(format!("deploy:{deployment}/{replica}"));
                    self.start_run(&from, name, token, restarts + 1, &spec.runner);
                }
                Output::StopRun { token, reason } => {
                    let start = self.nodes[&from].starts;
                    self.enqueue(
                        self.now + Duration::from_millis(10),
                        Delivery {
                            to: from.clone(),
                            from: from.clone(),
                            payload: Payload::RunExited {
                                start,
                                token,
                                exit_code: 143,
                                class: reason.class(),
                            },
                        },
                    );
                }
                Output::Fatal(why) => {
                    let sn = self.nodes.get_mut(&from).expect("known node");
                    sn.fatal = Some(why);
                    self.crash(&from);
                }
            }
        }
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
            Payload::SnapshotBuilt(snap, saved) => Input::SnapshotBuilt {
                snap,
                save: if saved { Saved::Saved } else { Saved::NotAsked },
            },
            Payload::RunExited {
                start,
                token,
                exit_code,
                class,
            } => {
                // Only the process that started it hears of it, once.
                let live = self
                    .runs
                    .iter()
                    .any(|r| r.node == d.to && r.token == token && r.ended.is_none());
                if start != sn.starts || !live {
                    return;
                }
                self.end_run(&d.to, token);
                Input::RunExited {
                    token,
                    exit_code,
                    class,
                }
            }
        };
        let _ = d.from;
        self.input(&d.to, input);
    }

    /// Advances to the next event (a delivery or a tick) and runs it.
    pub fn step(&mut self) {
        let next_msg = self.queue.peek().map(|Reverse((t, _))| *t);
        if next_msg.is_some_and(|t| t <= self.next_tick) {
            let Reverse((t, seq)) = self.queue.pop().expect("peeked");
            self.now = self.now.max(t);
            let d = self.in_flight.remove(&seq).expect("queued delivery");
            if self.nodes[&d.to].paused {
                // A paused process reads its socket after it resumes.
                let at = self.next_tick + self.tick;
                self.enqueue(at, d);
                return;
            }
            self.deliver(d);
        } else {
            self.now = self.next_tick;
            self.next_tick += self.tick;
            for id in self.live() {
                self.input(&id, Input::Tick);
            }
        }
        self.check();
    }

    /// The invariants, checked after every step.
    fn check(&mut self) {
        for id in self.live() {
            let node = self.node(&id).expect("live");
            let master_term = node
                .is_master()
                .then(|| node.raft().expect("a master runs raft").term());
            let (idx, hash) = (node.state().index(), node.state().hash());
            let cluster = node.cluster().cloned();
            if let Some(term) = master_term {
                let first = self
                    .leaders
                    .entry((cluster.clone(), term))
                    .or_insert_with(|| id.clone());
                assert_eq!(first, &id, "seed {}: two masters in term {term}", self.seed);
            }
            if idx > EventIdx::ZERO {
                let seen = *self.hashes.entry((cluster, idx)).or_insert(hash);
                assert_eq!(
                    seen, hash,
                    "seed {}: {id} has another state at index {idx}",
                    self.seed
                );
            }
            let before = self.applied.insert(id.clone(), idx).unwrap_or_default();
            assert!(
                before <= idx,
                "seed {}: {id} went back from {before} to {idx}",
                self.seed
            );
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
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
            self.step();
        }
        cond(self)
    }

    /// Every live node applied up to the highest commit any of them knows,
    /// with one state hash.
    pub fn converged(&self) -> bool {
        let live = self.live();
        let Some(first) = live.first().and_then(|n| self.node(n)) else {
            return true;
        };
        let target = live
            .iter()
            .filter_map(|n| self.node(n))
            .map(|n| n.commit_index())
            .max()
            .unwrap_or_default();
        let hash = first.state().hash();
        live.iter()
            .filter_map(|n| self.node(n))
            .all(|n| n.state().index() == target && n.state().hash() == hash)
    }

    /// Like `converged`, within one group of nodes.
    pub fn converged_group(&self, group: &[NodeId]) -> bool {
        let nodes: Vec<_> = group.iter().filter_map(|n| self.node(n)).collect();
        let Some(first) = nodes.first() else {
            return true;
        };
        let target = nodes
            .iter()
            .map(|n| n.commit_index())
            .max()
            .unwrap_or_default();
        nodes.iter().all(|n| {
            n.state().index() == target
                && n.state().hash() == first.state().hash()
                && target > EventIdx::ZERO
        })
    }

    pub fn state_of(&self, id: &NodeId) -> Option<&State> {
        self.node(id).map(|n| n.state())
    }

    /// Panics with the seed unless the cluster converges within `limit`.
    pub fn expect_converged(&mut self, limit: Duration) {
        if !self.run_until(limit, |s| s.converged()) {
            let view: Vec<String> = self
                .live()
                .iter()
                .filter_map(|n| {
                    self.node(n).map(|x| {
                        format!(
                            "{n}: applied {} commit {} {:?}",
                            x.state().index(),
                            x.commit_index(),
                            x.status().role
                        )
                    })
                })
                .collect();
            panic!(
                "seed {}: no convergence within {limit:?}: {view:?}",
                self.seed
            );
        }
    }

    /// Runs until one master is elected and has founded the cluster.
    pub fn expect_master(&mut self, limit: Duration) -> NodeId {
        let ok = self.run_until(limit, |s| {
            s.master()
                .is_some_and(|m| s.node(&m).is_some_and(|n| n.state().cluster_id().is_some()))
        });
        assert!(
            ok,
            "seed {}: no master within {limit:?} (masters: {:?})",
            self.seed,
            self.masters()
        );
        self.master().expect("checked")
    }
}
