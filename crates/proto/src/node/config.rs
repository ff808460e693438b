//! How a node core is configured: identity, cadences, and the settings of
//! the cores it is made of.

use super::catch_up::CatchUpConfig;
use crate::consensus::RaftConfig;
use crate::pending::PendingConfig;
use crate::placement::PlacementConfig;
use crate::replicas::ReplicaConfig;
use crate::task_output::OutputConfig;
use crate::worker::WorkerConfig;
use shoal_model::{NodeId, PortRange};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    /// Where peers reach this node (a multiaddr on a real node).
    pub addr: String,
    /// Random per process start.
    pub incarnation: u64,
    /// Wall clock (ms) when this process started.
    pub started_ms: u64,
    pub seed: u64,
    /// Voters the master aims for.
    pub voters: usize,
    pub node_timeout: Duration,
    pub heartbeat_every: Duration,
    pub raft_tick: Duration,
    pub plan_every: Duration,
    /// The master gossips what it committed at most this often
    /// (`publish`).
    pub publish_every: Duration,
    /// How long an empty node listens for a cluster before founding one.
    pub discovery_window: Duration,
    /// Found a cluster only after hearing some peer (the node was given
    /// explicit peers: founding alone while they are unreachable, say for
    /// a wrong cluster key, would start a second cluster).
    pub found_with_peers_only: bool,
    /// Ranges or snapshot, and the settings of both.
    pub catch_up: CatchUpConfig,
    /// Applied events between local snapshots.
    pub local_snapshot_every: u64,
    /// Entries kept in the log below the newest local snapshot, so a
    /// replica that lags a little fetches ranges, not a snapshot; up to
    /// four times as many while a replica heard within a minute trails
    /// further.
    pub log_retain: u64,
    /// A dead voter is replaced after this long.
    pub voter_grace: Duration,
    /// A node that left is forgotten (gone from State) after this long.
    pub forget_left_after: Duration,
    /// Command outcomes are kept at least this long (the retry window).
    pub outcome_retention: Duration,
    /// Finished tasks are forgotten this long after their last change.
    pub task_retention: Duration,
    pub raft: RaftConfig,
    pub pending: PendingConfig,
    /// How often this node gossips its capacity (for placement).
    pub metrics_every: Duration,
    /// This node's labels, matched by tasks that ask for some.
    pub labels: BTreeMap<String, String>,
    /// Whether this node runs user commands (`--allow-exec`).
    pub exec: bool,
    /// The host this node runs on (machine and network namespace).
    pub host: u64,
    /// The ports this node hands its replicas.
    pub replica_ports: PortRange,
    /// The build this node runs (reported with its capacity).
    pub version: String,
    /// Where this node's HTTP API answers (reported with its capacity).
    pub api_url: String,
    /// Whether this node takes tasks and replicas (`--no-worker` not).
    pub takes_work: bool,
    /// Whether this node may hold a voter seat (`--no-voter` not); a node
    /// that may not never founds a cluster.
    pub voter: bool,
    pub placement: PlacementConfig,
    pub worker: WorkerConfig,
    pub replicas: ReplicaConfig,
    pub output: OutputConfig,
}

impl NodeConfig {
    pub fn new(node: NodeId, addr: String, seed: u64) -> Self {
        NodeConfig {
            node,
            addr,
            incarnation: seed ^ 0x5eed,
            started_ms: 0,
            seed,
            voters: 3,
            node_timeout: Duration::from_secs(2),
            heartbeat_every: Duration::from_millis(300),
            // With `RaftConfig`'s ticks: heartbeats every 100 ms, an
            // election after 500-1000 ms without one (etcd: 100 ms and
            // 1 s), so that a write commits again about a second after
            // the master's death (`bench/src/bin/failover.rs`). 400-800 ms
            // failed over faster but stepped a master down on a 400 ms
            // stall of one voter's disk.
            raft_tick: Duration::from_millis(50),
            plan_every: Duration::from_millis(250),
            publish_every: Duration::from_millis(20),
            discovery_window: Duration::from_secs(2),
            found_with_peers_only: false,
            catch_up: CatchUpConfig::default(),
            local_snapshot_every: 100_000,
            log_retain: 50_000,
            voter_grace: Duration::from_secs(10),
            forget_left_after: Duration::from_secs(3600),
            outcome_retention: Duration::from_secs(600),
            task_retention: Duration::from_secs(3600),
            raft: RaftConfig::default(),
            pending: PendingConfig::default(),
            metrics_every: Duration::from_secs(1),
            labels: BTreeMap::new(),
            exec: false,
            host: 0,
            replica_ports: PortRange::DEFAULT,
            version: String::new(),
            api_url: String::new(),
            takes_work: true,
            voter: true,
            placement: PlacementConfig::default(),
            worker: WorkerConfig::default(),
            replicas: ReplicaConfig::default(),
            output: OutputConfig::default(),
        }
    }
}
