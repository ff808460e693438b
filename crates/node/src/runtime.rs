//! The event loop: one task owns the node core and moves bytes and time
//! between it, the network actor, the API and the snapshot builder.

use crate::data_dir::{DataDir, DataDirError};
use crate::runner::{RunMsg, Runs};
use shoal_log::{encode_snapshot, DurableLog, LogConfig, SnapshotStore};
use shoal_model::{Command, CommandId, Envelope, EventIdx, NodeId, Op, OutputChunk, State, TaskId};
use shoal_net::{NetCommand, NetConfig, NetEvent, NetHandle, Topic};
use shoal_proto::node::{Input, Metrics, Node, NodeConfig, Output, PeerSummary, Saved, Status};
use shoal_proto::output::{OutputConfig, OutputHub};
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use shoal_proto::wire::{self, CommandReply, Direct, Frame, Gossip, Refusal, MAX_MESSAGE_BYTES};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

/// How a node is started (`shoal up`).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub listen: Vec<shoal_net::Addr>,
    pub peers: Vec<shoal_net::Addr>,
    pub mdns: bool,
    pub cluster_key: Option<shoal_net::ClusterKey>,
    pub voters: usize,
    pub no_snapshot: bool,
    pub node_timeout: Duration,
    /// Log entries kept below the newest local snapshot (ranges a lagging
    /// replica can still fetch without a snapshot).
    pub log_retain: u64,
    /// Show a progress bar while catching up (when stderr is a terminal).
    pub progress_bar: bool,
    /// Labels tasks can ask for (`--label K=V`).
    pub labels: BTreeMap<String, String>,
    /// Run user commands (`--allow-exec`); the synthetic runner always works.
    pub allow_exec: bool,
    /// Between SIGTERM and SIGKILL when a run is stopped.
    pub stop_grace: Duration,
    /// Applied events between local snapshots (the log is compacted below
    /// each, less `log_retain`).
    pub snapshot_every: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("log: {0}")]
    Log(#[from] shoal_log::LogError),
    #[error("snapshot store: {0}")]
    Snapshots(std::io::Error),
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Fatal(String),
}

/// What the API reads without asking the loop: refreshed as the node runs.
#[derive(Clone, Debug)]
pub struct View {
    pub status: Status,
    pub metrics: Metrics,
    pub peers: Vec<PeerSummary>,
    pub events_per_sec: f64,
    pub listen: Vec<String>,
    pub started: Instant,
    /// Frames from the network that did not decode or lied about their
    /// sender, dropped.
    pub bad_frames: u64,
    /// Messages dropped because the network actor's queue was full.
    pub send_overflow: u64,
}

#[derive(Debug)]
enum Request {
    Submit {
        cmd: Box<Command>,
        reply: oneshot::Sender<CommandReply>,
    },
    State(oneshot::Sender<State>),
    /// A client follows a task's output: subscribe at the node running it.
    WatchOutput(TaskId),
    /// What this node keeps of a task's output.
    ReadOutput(TaskId, oneshot::Sender<Vec<OutputChunk>>),
    /// Whether some live node runs user commands.
    ExecAvailable(oneshot::Sender<bool>),
    /// Test-only: delay every outgoing message.
    FaultDelay(Duration),
    /// Applied events from an index on (bounded), or the log's floor.
    ReadEvents(EventIdx, oneshot::Sender<Result<Vec<Envelope>, EventIdx>>),
}

/// A cloneable handle to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<View>>,
    stop: mpsc::Sender<()>,
    output: broadcast::Sender<OutputChunk>,
}

/// Requests from API clients waiting at once; more are refused as busy.
const MAX_REQUESTS: usize = 1024;

impl NodeHandle {
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn view_receiver(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Submits a command; `id` makes retries idempotent (a fresh one is
    /// minted if none is given).
    pub async fn submit(&self, op: Op, id: Option<CommandId>) -> CommandReply {
        let id = id.unwrap_or_else(|| CommandId(format!("{:032x}", rand::random::<u128>())));
        let (tx, rx) = oneshot::channel();
        let req = Request::Submit {
            cmd: Box::new(Command { id, op }),
            reply: tx,
        };
        if self.tx.try_send(req).is_err() {
            return Err(Refusal::Busy);
        }
        rx.await.unwrap_or(Err(Refusal::Timeout))
    }

    /// A copy of State (O(1): persistent maps).
    pub async fn state(&self) -> Option<State> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::State(tx)).await.ok()?;
        rx.await.ok()
    }

    /// State once it has applied `idx`, or None if that takes longer than
    /// `within` (or the node stops).
    pub async fn state_at(&self, idx: EventIdx, within: Duration) -> Option<State> {
        let mut rx = self.view.clone();
        // The guard `wait_for` returns is not Send: drop it before awaiting.
        let reached = matches!(
            tokio::time::timeout(within, rx.wait_for(|v| v.status.applied_index >= idx)).await,
            Ok(Ok(_))
        );
        if !reached {
            return None;
        }
        self.state().await.filter(|s| s.index() >= idx)
    }

    /// Live output chunks of every task this node hears of; call
    /// `watch_output` (again every second or so) to hear a task's.
    pub fn output(&self) -> broadcast::Receiver<OutputChunk> {
        self.output.subscribe()
    }

    /// Asks for a task's output to be sent here for a few seconds.
    pub fn watch_output(&self, task: &TaskId) {
        let _ = self.tx.try_send(Request::WatchOutput(task.clone()));
    }

    /// What this node keeps of a task's output (bounded ring).
    pub async fn read_output(&self, task: &TaskId) -> Vec<OutputChunk> {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Request::ReadOutput(task.clone(), tx))
            .await
            .is_err()
        {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }

    /// Applied events from `from` on (at most about 1 MiB of them), or
    /// `Err(floor)` when the log no longer holds `from`. None: stopping.
    pub async fn read_events(&self, from: EventIdx) -> Option<Result<Vec<Envelope>, EventIdx>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::ReadEvents(from, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Test-only fault injection: hold every outgoing message for `d`.
    pub fn set_fault_delay(&self, d: Duration) {
        let _ = self.tx.try_send(Request::FaultDelay(d));
    }

    /// Whether some live node of the cluster runs user commands.
    pub async fn exec_available(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::ExecAvailable(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Asks the node to stop.
    pub fn shutdown(&self) {
        let _ = self.stop.try_send(());
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the data directory, starts the network and the event loop.
/// Returns once the node listens; the join handle ends when it stops.
pub async fn start(
    opts: NodeOptions,
) -> Result<(NodeHandle, tokio::task::JoinHandle<Result<(), NodeError>>), NodeError> {
    let dir = DataDir::open(&opts.data_dir)?;
    let keypair = dir.identity()?;
    let peer = keypair.public().to_peer_id();
    let node_id = NodeId(peer.to_base58());
    let (log, recovery) = DurableLog::open(&dir.log_dir(), LogConfig::default())?;
    if let Some((path, offset, reason)) = &recovery.cut {
        warn!(segment = %path.display(), offset, reason = %reason, "the log had a torn or corrupt tail; it was cut");
    }
    let store = SnapshotStore::open(&dir.snapshot_dir()).map_err(NodeError::Snapshots)?;
    let snapshot = store.load_latest().map_err(NodeError::Snapshots)?;
    let cluster = dir.cluster()?;
    info!(node = %node_id, data_dir = %dir.root().display(), cluster = ?cluster.as_ref().map(|c| c.to_string()),
        snapshot = ?snapshot.as_ref().map(|s| s.index().0), log_entries = recovery.entries, "starting");

    let seed: u64 = rand::random();
    let incarnation = shoal_net::Incarnation {
        nonce: seed ^ 0x5eed,
        started_ms: wall_ms(),
    };
    let (net, mut net_rx) = shoal_net::spawn(
        keypair,
        NetConfig {
            listen: opts.listen.clone(),
            peers: opts.peers.clone(),
            mdns: opts.mdns,
            cluster_key: opts.cluster_key,
            max_message_bytes: MAX_MESSAGE_BYTES + 1024,
            incarnation,
        },
    )
    .await?;
    // The address peers reach us at, as recorded in State.
    let mut listen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while listen.is_empty() && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), net_rx.recv()).await {
            Ok(Some(NetEvent::Listening(a))) => listen.push(a),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return Err(NodeError::Start("the network actor stopped".into())),
        }
    }
    // Prefer an address other hosts can reach; a loopback-only node
    // records its loopback address.
    let addr = listen
        .iter()
        .find(|a| !a.to_string().starts_with("/ip4/127."))
        .or(listen.first())
        .map(|a| a.clone().with(shoal_net::Protocol::P2p(peer)).to_string())
        .unwrap_or_default();

    let started = Instant::now();
    let mut cfg = NodeConfig::new(node_id.clone(), addr, seed);
    debug_assert_eq!(cfg.incarnation, incarnation.nonce);
    cfg.incarnation = incarnation.nonce;
    cfg.voters = opts.voters.max(1);
    cfg.no_snapshot = opts.no_snapshot;
    cfg.node_timeout = opts.node_timeout;
    cfg.log_retain = opts.log_retain;
    cfg.labels = opts.labels.clone();
    cfg.local_snapshot_every = opts.snapshot_every.max(1);
    cfg.exec = opts.allow_exec;
    let node = Node::new(cfg, log, snapshot, cluster, Duration::ZERO).map_err(NodeError::Start)?;

    let (req_tx, req_rx) = mpsc::channel(MAX_REQUESTS);
    let (stop_tx, stop_rx) = mpsc::channel(1);
    let initial = View {
        status: node.status(),
        metrics: node.metrics().clone(),
        peers: vec![],
        events_per_sec: 0.0,
        listen: listen.iter().map(|a| a.to_string()).collect(),
        started,
        bad_frames: 0,
        send_overflow: 0,
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(initial));
    let (built_tx, built_rx) = mpsc::channel(4);
    let runs_dir = dir.root().join("runs");
    Runs::kill_leftovers(&runs_dir);
    let (run_tx, run_rx) = mpsc::channel(4096);
    let (output_tx, _) = broadcast::channel(4096);
    let event_loop = EventLoop {
        node,
        dir,
        store: Arc::new(store),
        net,
        started,
        replies: HashMap::new(),
        next_reply: 1,
        peer_ids: BTreeMap::new(),
        view_tx,
        listen: listen.iter().map(|a| a.to_string()).collect(),
        rate: Rate::default(),
        built_tx,
        progress: Progress::new(opts.progress_bar),
        bad_frames: 0,
        send_overflow: 0,
        dialled: HashSet::new(),
        addrs: BTreeMap::new(),
        fatal: None,
        runs: Runs::new(run_tx, runs_dir, opts.allow_exec, opts.stop_grace),
        hub: OutputHub::new(OutputConfig::default()),
        output_tx: output_tx.clone(),
    };
    let handle = NodeHandle {
        tx: req_tx,
        view: view_rx,
        stop: stop_tx,
        output: output_tx,
    };
    let task = tokio::spawn(event_loop.run(net_rx, req_rx, built_rx, stop_rx, run_rx));
    Ok((handle, task))
}

/// Events applied per second, smoothed.
#[derive(Debug, Default)]
struct Rate {
    last: Option<(Instant, u64)>,
    value: f64,
}

impl Rate {
    fn update(&mut self, now: Instant, applied: u64) -> f64 {
        match self.last {
            None => self.last = Some((now, applied)),
            Some((t, a)) => {
                let dt = now.duration_since(t).as_secs_f64();
                if dt >= 1.0 {
                    let r = applied.saturating_sub(a) as f64 / dt;
                    self.value = if self.value == 0.0 {
                        r
                    } else {
                        0.5 * self.value + 0.5 * r
                    };
                    self.last = Some((now, applied));
                }
            }
        }
        self.value
    }
}

/// Catch-up progress: a log line a second, and a bar on a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
    last_log: Option<Instant>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish()
    }
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress {
            bar: None,
            enabled,
            last_log: None,
        }
    }

    fn update(&mut self, received: u64, total: u64, entries: u64) {
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_log = Some(now);
            info!(
                received_bytes = received,
                total_bytes = total,
                entries,
                "catching up by snapshot"
            );
        }
        if self.enabled {
            let bar = self.bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "catching up {bar:40} {bytes}/{total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            bar.set_length(total);
            bar.set_position(received);
            bar.set_message(format!("{entries} entries"));
        }
    }

    fn finish(&mut self, index: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_with_message(format!("at index {index}"));
        }
        self.last_log = None;
    }
}

struct EventLoop {
    node: Node<DurableLog>,
    dir: DataDir,
    store: Arc<SnapshotStore>,
    net: NetHandle,
    started: Instant,
    replies: HashMap<u64, oneshot::Sender<CommandReply>>,
    next_reply: u64,
    peer_ids: BTreeMap<NodeId, shoal_net::Peer>,
    view_tx: watch::Sender<Arc<View>>,
    listen: Vec<String>,
    rate: Rate,
    built_tx: mpsc::Sender<(EncodedSnapshot, Saved)>,
    progress: Progress,
    bad_frames: u64,
    send_overflow: u64,
    /// Member addresses handed to the network actor (bounded by the
    /// cluster's size).
    dialled: HashSet<String>,
    addrs: BTreeMap<NodeId, shoal_net::Addr>,
    /// Set by a network event the node cannot go on after.
    fatal: Option<String>,
    runs: Runs,
    hub: OutputHub,
    output_tx: broadcast::Sender<OutputChunk>,
}

/// How long a stopping node waits for its runs to be handed back.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Output chunks sent in one message, by size.
const OUTPUT_BATCH_BYTES: usize = 1 << 20;

/// Free CPU (millicores: cores less the 1-minute load) and available
/// memory of this host, from /proc; zeros where it cannot be read.
fn host_capacity() -> (u32, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cpu = ((cores - load).max(0.0) * 1000.0) as u32;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024);
    (cpu, mem)
}

/// Events taken from the network per turn before the loop looks at its
/// other inputs, so a flood cannot starve ticks or the API.
const NET_BATCH: usize = 256;

impl EventLoop {
    async fn run(
        mut self,
        mut net_rx: mpsc::Receiver<NetEvent>,
        mut req_rx: mpsc::Receiver<Request>,
        mut built_rx: mpsc::Receiver<(EncodedSnapshot, Saved)>,
        mut stop_rx: mpsc::Receiver<()>,
        mut run_rx: mpsc::Receiver<RunMsg>,
    ) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_view = Instant::now();
        let mut last_dial = Instant::now();
        let mut last_metrics = Instant::now() - Duration::from_secs(60);
        let mut draining: Option<Instant> = None;
        loop {
            let mut inputs = Vec::new();
            tokio::select! {
                _ = stop_rx.recv(), if draining.is_none() => {
                    if self.node.cluster().is_none() {
                        info!("stopping");
                        return Ok(());
                    }
                    info!(runs = self.node.runs(), "stopping: handing back runs and leadership, announcing the leave");
                    draining = Some(Instant::now() + DRAIN_LIMIT);
                    inputs.push(Input::Drain);
                }
                Some(msg) = run_rx.recv() => inputs.extend(self.on_run(msg)),
                ev = net_rx.recv() => {
                    let Some(ev) = ev else { return Err(NodeError::Fatal("the network actor stopped".into())) };
                    inputs.extend(self.on_net(ev));
                }
                Some(req) = req_rx.recv() => inputs.extend(self.on_request(req)),
                Some((snap, save)) = built_rx.recv() => inputs.push(Input::SnapshotBuilt { snap, save }),
                _ = tick.tick() => inputs.push(Input::Tick),
            };
            // Take whatever else is already waiting, so that it is handled
            // as one batch (one Raft round, one fsync).
            for _ in 0..NET_BATCH {
                match net_rx.try_recv() {
                    Ok(ev) => inputs.extend(self.on_net(ev)),
                    Err(_) => break,
                }
            }
            for _ in 0..NET_BATCH {
                match req_rx.try_recv() {
                    Ok(req) => inputs.extend(self.on_request(req)),
                    Err(_) => break,
                }
            }
            let outputs = if inputs.is_empty() {
                Vec::new()
            } else {
                let now = self.now();
                self.node.handle_all(inputs, now, wall_ms())
            };
            self.outputs(outputs)?;
            if let Some(why) = self.fatal.take() {
                error!(reason = %why, "stopping");
                return Err(NodeError::Fatal(why));
            }
            if last_view.elapsed() >= Duration::from_millis(50) {
                last_view = Instant::now();
                self.publish_view();
            }
            if last_dial.elapsed() >= Duration::from_secs(1) {
                last_dial = Instant::now();
                self.dial_members();
            }
            if last_metrics.elapsed() >= Duration::from_secs(2) {
                last_metrics = Instant::now();
                let (cpu_free_milli, mem_free_bytes) = host_capacity();
                let now = self.now();
                let out = self.node.handle(
                    Input::LocalMetrics {
                        cpu_free_milli,
                        mem_free_bytes,
                    },
                    now,
                    wall_ms(),
                );
                self.outputs(out)?;
            }
            if let Some(limit) = draining {
                if self.node.drained() {
                    info!("drained; stopping");
                    return Ok(());
                }
                if Instant::now() >= limit {
                    warn!(
                        runs = self.node.runs(),
                        "stopping before the drain finished; leases expire and the master notices"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// A run's output or end. Output goes to this node's ring, its local
    /// followers and the nodes subscribed to the task.
    fn on_run(&mut self, msg: RunMsg) -> Option<Input> {
        match msg {
            RunMsg::Chunk(chunk) => {
                self.on_chunk(chunk);
                None
            }
            RunMsg::Exited {
                token,
                exit_code,
                class,
            } => Some(Input::RunExited {
                token,
                exit_code,
                class,
            }),
        }
    }

    fn on_chunk(&mut self, chunk: OutputChunk) {
        let now = self.now();
        let Some(subscribers) = self.hub.record(chunk.clone(), now) else {
            return;
        };
        for node in subscribers {
            let frame = self.node.frame(Direct::Output(vec![chunk.clone()]));
            self.send(&node, &frame);
        }
        let _ = self.output_tx.send(chunk);
    }

    /// Output messages are the shell's: answered here, not by the core.
    fn on_output_message(&mut self, from: NodeId, msg: Direct) {
        match msg {
            Direct::OutputSubscribe {
                task,
                attempt,
                from_seq,
            } => {
                let now = self.now();
                let backlog = self
                    .hub
                    .subscribe(&task, from.clone(), attempt, from_seq, now);
                let mut batch = Vec::new();
                let mut bytes = 0;
                for c in backlog {
                    bytes += c.data.len() + 64;
                    batch.push(c);
                    if bytes >= OUTPUT_BATCH_BYTES {
                        let frame = self.node.frame(Direct::Output(std::mem::take(&mut batch)));
                        self.send(&from, &frame);
                        bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    let frame = self.node.frame(Direct::Output(batch));
                    self.send(&from, &frame);
                }
            }
            Direct::Output(chunks) => {
                for c in chunks.into_iter().take(4096) {
                    self.on_chunk(c);
                }
            }
            _ => {}
        }
    }

    /// Subscribes to a task's output at the node that runs (or ran) it.
    fn watch_output(&mut self, task: &TaskId) {
        let Some(t) = self.node.state().tasks().get(task) else {
            return;
        };
        let Some(node) = t.node.clone() else {
            return;
        };
        if node == *self.node.node_id() {
            return;
        }
        let attempt = t.attempt;
        let from_seq = self.hub.next_seq(task, attempt);
        // Earlier attempts' output: ask from the start of the first one
        // this node has nothing of.
        let (attempt, from_seq) = (1..=attempt)
            .find(|a| self.hub.next_seq(task, *a) == 0)
            .map_or((attempt, from_seq), |a| (a, 0));
        let frame = self.node.frame(Direct::OutputSubscribe {
            task: task.clone(),
            attempt,
            from_seq,
        });
        self.send(&node, &frame);
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn publish_view(&mut self) {
        let status = self.node.status();
        let eps = self.rate.update(Instant::now(), status.applied_index.0);
        let view = View {
            status,
            metrics: self.node.metrics().clone(),
            peers: self.node.peer_summaries(),
            events_per_sec: eps,
            listen: self.listen.clone(),
            started: self.started,
            bad_frames: self.bad_frames,
            send_overflow: self.send_overflow,
        };
        self.view_tx.send_replace(Arc::new(view));
    }

    /// Every member's address is in State: dial them all (the actor keeps
    /// redialling the ones that drop), so the mesh does not depend on the
    /// peers a node happened to be started with.
    fn dial_members(&mut self) {
        let me = self.node.node_id();
        let addrs: Vec<String> = self
            .node
            .state()
            .nodes()
            .iter()
            .filter(|(id, n)| {
                *id != me && n.liveness != shoal_model::Liveness::Left && !n.addr.is_empty()
            })
            .map(|(_, n)| n.addr.clone())
            .collect();
        for addr in addrs {
            if self.dialled.contains(&addr) {
                continue;
            }
            match addr.parse::<shoal_net::Addr>() {
                Ok(a) => {
                    if self.net.try_send(NetCommand::Dial(a)) {
                        self.dialled.insert(addr);
                    }
                }
                Err(e) => warn!(addr = %addr, error = %e, "a member's address does not parse"),
            }
        }
    }

    fn on_net(&mut self, ev: NetEvent) -> Option<Input> {
        match ev {
            NetEvent::Direct { from, bytes } => match wire::decode::<Direct>(&bytes) {
                Ok(frame)
                    if frame.from.0 == from.to_base58()
                        && matches!(
                            frame.msg,
                            Direct::OutputSubscribe { .. } | Direct::Output(_)
                        ) =>
                {
                    if frame.cluster.as_ref() == self.node.cluster() {
                        self.on_output_message(frame.from, frame.msg);
                    } else {
                        self.bad_frames += 1;
                    }
                    None
                }
                Ok(frame) if frame.from.0 == from.to_base58() => Some(Input::Direct(frame)),
                Ok(frame) => {
                    self.bad_frames += 1;
                    warn!(peer = %from, claimed = %frame.from, "frame claims another sender; dropped");
                    None
                }
                Err(e) => {
                    self.bad_frames += 1;
                    warn!(peer = %from, error = %e, "undecodable frame; dropped");
                    None
                }
            },
            NetEvent::Gossip { source, bytes } => match wire::decode::<Gossip>(&bytes) {
                Ok(frame) if source.is_some_and(|s| frame.from.0 == s.to_base58()) => {
                    Some(Input::Gossip(frame))
                }
                Ok(_) => {
                    self.bad_frames += 1;
                    None
                }
                Err(e) => {
                    self.bad_frames += 1;
                    warn!(error = %e, "undecodable gossip; dropped");
                    None
                }
            },
            NetEvent::Listening(a) => {
                self.listen.push(a.to_string());
                None
            }
            NetEvent::IdentityConflict { reporter, other } => {
                debug!(
                    other_nonce = other.nonce,
                    other_started_ms = other.started_ms,
                    "identity conflict"
                );
                self.fatal = Some(format!(
                    "another live process uses this node's identity ({}) and started before this one \
                     (reported by peer {reporter}); refusing to go on. \
                     Was the data directory copied? Give each host its own.",
                    self.node.node_id()
                ));
                None
            }
            NetEvent::Connected(_) | NetEvent::Disconnected(_) => None,
        }
    }

    fn on_request(&mut self, req: Request) -> Option<Input> {
        match req {
            Request::Submit { cmd, reply } => {
                let id = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(id, reply);
                Some(Input::Submit {
                    cmd: *cmd,
                    reply: id,
                })
            }
            Request::State(tx) => {
                let _ = tx.send(self.node.state().clone());
                None
            }
            Request::WatchOutput(task) => {
                self.watch_output(&task);
                None
            }
            Request::ReadOutput(task, tx) => {
                let _ = tx.send(self.hub.chunks(&task));
                None
            }
            Request::ExecAvailable(tx) => {
                let _ = tx.send(self.node.exec_available());
                None
            }
            Request::FaultDelay(d) => {
                let _ = self.net.try_send(NetCommand::SetDelay(d));
                None
            }
            Request::ReadEvents(from, tx) => {
                let _ = tx.send(self.node.read_applied(from, 1 << 20));
                None
            }
        }
    }

    fn peer_id(&mut self, node: &NodeId) -> Option<shoal_net::Peer> {
        if let Some(p) = self.peer_ids.get(node) {
            return Some(*p);
        }
        let p: shoal_net::Peer = node.0.parse().ok()?;
        // Bounded by the cluster's size.
        if self.peer_ids.len() > 4096 {
            self.peer_ids.clear();
        }
        self.peer_ids.insert(node.clone(), p);
        Some(p)
    }

    fn outputs(&mut self, outputs: Vec<Output>) -> Result<(), NodeError> {
        for o in outputs {
            match o {
                Output::Send { to, frame } => self.send(&to, &frame),
                Output::Broadcast(frame) => {
                    let topic = match frame.msg {
                        Gossip::Committed(_) => Topic::Committed,
                        Gossip::Transient(_) => Topic::Transient,
                    };
                    match wire::encode(&frame) {
                        Ok(bytes) => {
                            if !self.net.try_send(NetCommand::Publish { topic, bytes }) {
                                self.send_overflow += 1;
                            }
                        }
                        Err(e) => error!(error = %e, "could not encode a broadcast"),
                    }
                }
                Output::Reply { to, reply } => {
                    if let Some(tx) = self.replies.remove(&to) {
                        let _ = tx.send(reply);
                    }
                }
                Output::BuildSnapshot { state, save } => self.build_snapshot(*state, save),
                Output::ClusterAdopted(c) => {
                    info!(cluster = %c, "cluster id recorded");
                    self.dir.set_cluster(&c)?;
                }
                Output::CatchUp {
                    received,
                    total,
                    entries,
                } => self.progress.update(received, total, entries),
                Output::SnapshotInstalled { index } => {
                    self.progress.finish(index.0);
                    info!(index = %index, "state loaded from snapshot; fetching the tail");
                }
                Output::StartRun {
                    task,
                    token,
                    attempt,
                    spec,
                } => {
                    info!(task = %task, token = token.0, attempt, "starting a run");
                    self.runs.start(task, token, attempt, spec.runner, vec![]);
                }
                Output::StartReplica {
                    deployment,
                    replica,
                    token,
                    port,
                    restarts,
                    spec,
                } => {
                    info!(deployment = %deployment, replica, port, restarts, "starting a replica");
                    let env = vec![
                        ("PORT".to_owned(), port.to_string()),
                        ("SHOAL_DEPLOYMENT".to_owned(), deployment.clone()),
                        ("SHOAL_REPLICA".to_owned(), replica.to_string()),
                    ];
                    let name = TaskId(format!("deploy:{deployment}/{replica}"));
                    self.runs.start(name, token, restarts + 1, spec.runner, env);
                }
                Output::StopRun { token, reason } => {
                    info!(token = token.0, ?reason, "stopping a run");
                    self.runs.stop(token, reason);
                }
                Output::Fatal(why) => {
                    error!(reason = %why, "stopping");
                    return Err(NodeError::Fatal(why));
                }
            }
        }
        // Replies whose client went away are dropped; the map stays small.
        if self.replies.len() > MAX_REQUESTS * 4 {
            self.replies.retain(|_, tx| !tx.is_closed());
        }
        Ok(())
    }

    /// Where a node listens, from State or from its heartbeats.
    fn addr_of(&mut self, node: &NodeId) -> Option<shoal_net::Addr> {
        if let Some(a) = self.addrs.get(node) {
            return Some(a.clone());
        }
        let text = match self.node.state().nodes().get(node) {
            Some(n) if !n.addr.is_empty() => n.addr.clone(),
            _ => {
                self.node
                    .peer_summaries()
                    .into_iter()
                    .find(|p| &p.node == node)?
                    .addr
            }
        };
        let addr: shoal_net::Addr = text.parse().ok()?;
        // Bounded by the cluster's size.
        if self.addrs.len() > 4096 {
            self.addrs.clear();
        }
        self.addrs.insert(node.clone(), addr.clone());
        Some(addr)
    }

    fn send(&mut self, to: &NodeId, frame: &Frame<Direct>) {
        let Some(peer) = self.peer_id(to) else {
            self.bad_frames += 1;
            return;
        };
        let addr = self.addr_of(to);
        match wire::encode(frame) {
            Ok(bytes) => {
                if !self.net.try_send(NetCommand::Send {
                    to: peer,
                    addr,
                    bytes,
                }) {
                    self.send_overflow += 1;
                }
            }
            Err(e) => error!(error = %e, "could not encode a message"),
        }
    }

    /// Encodes a snapshot on a blocking thread (off this loop) and, if
    /// asked, saves it; the result comes back as `Input::SnapshotBuilt`.
    fn build_snapshot(&self, state: State, save: bool) {
        let store = self.store.clone();
        let tx = self.built_tx.clone();
        tokio::task::spawn_blocking(move || {
            let (bytes, sha) = encode_snapshot(&state, 1);
            let saved = match save {
                false => Saved::NotAsked,
                true => match store.save(state.index(), &bytes, &sha) {
                    Ok(()) => Saved::Saved,
                    Err(e) => {
                        warn!(error = %e, "could not save a local snapshot");
                        Saved::Failed
                    }
                },
            };
            let snap = EncodedSnapshot {
                index: state.index(),
                bytes: Arc::new(bytes),
                sha256: sha,
            };
            let _ = tx.blocking_send((snap, saved));
        });
    }
}
