//! Starting a node: open the data directory, recover the log and the
//! newest local snapshot, start the network, build the core, and spawn
//! the event loop.

use super::event_loop::EventLoop;
use super::events::EventReader;
use super::handle::{NodeHandle, View, MAX_CALLS};
use super::pacer::Pacer;
use super::snapshot_builder::SnapshotBuilder;
use crate::data_dir::{DataDir, DataDirError};
use crate::runner::Runs;
use shoal_log::{DurableLog, LogConfig, SnapshotStore};
use shoal_model::NodeId;
use shoal_net::{NetConfig, NetEvent};
use shoal_proto::node::{Node, NodeConfig, StartError};
use shoal_proto::wire::MAX_MESSAGE_BYTES;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

/// How a node is started (`shoal up`).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub listen: Vec<shoal_net::Addr>,
    pub peers: Vec<shoal_net::Addr>,
    pub mdns: bool,
    /// Where peers connect for large frames (`NetConfig::bulk_port`).
    pub bulk_port: u16,
    pub cluster_key: Option<shoal_net::ClusterKey>,
    pub voters: usize,
    pub no_snapshot: bool,
    pub node_timeout: Duration,
    /// Log entries kept below the newest local snapshot (ranges a lagging
    /// replica can still fetch without a snapshot).
    pub log_retain: u64,
    /// Labels tasks can ask for (`--label K=V`).
    pub labels: BTreeMap<String, String>,
    /// Run user commands (`--allow-exec`); the synthetic runner always works.
    pub allow_exec: bool,
    /// Between SIGTERM and SIGKILL when a run is stopped.
    pub stop_grace: Duration,
    /// Applied events between local snapshots (the log is compacted below
    /// each, less `log_retain`).
    pub snapshot_every: u64,
    /// The ports this node hands its replicas (`PORT`).
    pub replica_ports: shoal_model::PortRange,
    /// A node that left is forgotten this long after (while master).
    pub forget_left_after: Duration,
    /// The build this node runs (`shoal --version`), reported to the others.
    pub version: String,
    /// Where this node's HTTP API listens, if it serves one: reported to
    /// the others (the dashboard offers it when a page's node goes away).
    pub api: Option<std::net::SocketAddr>,
    /// Takes tasks and replicas (`--no-worker` not).
    pub worker: bool,
    /// May hold a voter seat (`--no-voter` not).
    pub voter: bool,
    /// Found a new cluster from this backup (`shoal snapshot save`); the
    /// data directory must be empty.
    pub restore: Option<PathBuf>,
    /// Snapshot chunks and range replies served, at most this many bytes
    /// a second (`--bulk-rate`); none: as fast as they go.
    pub bulk_rate: Option<u64>,
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
    #[error("the network actor stopped")]
    NetStopped,
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Restore(String),
}

pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long start waits for the network to report its listen address.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Opens the data directory, starts the network and the event loop.
/// Returns once the node listens; the join handle ends when it stops.
pub async fn start(
    opts: NodeOptions,
) -> Result<(NodeHandle, tokio::task::JoinHandle<Result<(), NodeError>>), NodeError> {
    let dir = DataDir::open(&opts.data_dir)?;
    let keypair = dir.identity()?;
    let peer = keypair.public().to_peer_id();
    let node_id = NodeId(peer.to_base58());
    let (mut log, recovery) = DurableLog::open(&dir.log_dir(), LogConfig::default())?;
    if let Some((path, offset, reason)) = &recovery.cut {
        warn!(segment = %path.display(), offset, reason = %reason, "the log had a torn or corrupt tail; it was cut");
    }
    let store = SnapshotStore::open(&dir.snapshot_dir()).map_err(NodeError::Snapshots)?;
    let snapshot = store.load_latest().map_err(NodeError::Snapshots)?;
    let cluster = dir.cluster()?;
    info!(node = %node_id, data_dir = %dir.root().display(), cluster = ?cluster.as_ref().map(|c| c.to_string()),
        snapshot = ?snapshot.as_ref().map(|s| s.index().0), log_entries = recovery.entries, "starting");

    // Commands run here for whoever is in the cluster: without a cluster
    // key anyone who can reach the port could join, so no one may.
    let solitary = opts.allow_exec && opts.cluster_key.is_none();
    if solitary {
        info!("running commands without a cluster key: this node admits no peers");
    }
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
            mdns: opts.mdns && !solitary,
            cluster_key: opts.cluster_key,
            max_message_bytes: MAX_MESSAGE_BYTES + 1024,
            incarnation,
            solitary,
            found_picks: shoal_net::redial::FOUND_PICKS,
            idle_for: shoal_net::redial::IDLE_FOR,
            // Large frames' connections below the node, with the rest of
            // its bulk work: a commit never waits behind a chunk.
            bulk_thread: Some(super::bulk::background),
            bulk_port: opts.bulk_port,
            bulk_in_flight: shoal_net::bulk::MAX_IN_FLIGHT,
        },
    )
    .await?;
    // The address peers reach us at, as recorded in State.
    let mut listen = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
    while listen.is_empty() && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), net_rx.recv()).await {
            Ok(Some(NetEvent::Listening(a))) => listen.push(a),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return Err(NodeError::NetStopped),
        }
    }
    // Prefer an address other hosts can reach; a loopback-only node
    // records its loopback address.
    let reached_at = listen
        .iter()
        .find(|a| !a.to_string().starts_with("/ip4/127."))
        .or(listen.first());
    let addr = reached_at
        .map(|a| a.clone().with(shoal_net::Protocol::P2p(peer)).to_string())
        .unwrap_or_default();

    let (snapshot, cluster) = match &opts.restore {
        None => (snapshot, cluster),
        Some(file) => {
            let found = super::restore::Found {
                cluster: cluster.as_ref(),
                snapshot: snapshot.is_some(),
                log_entries: recovery.entries,
            };
            let me = (&node_id, addr.as_str(), wall_ms());
            let (state, cluster) =
                super::restore::restore(file, &dir, &store, &mut log, found, me)?;
            (Some(state), Some(cluster))
        }
    };

    let started = Instant::now();
    let mut cfg = NodeConfig::new(node_id.clone(), addr, seed);
    cfg.incarnation = incarnation.nonce;
    cfg.started_ms = incarnation.started_ms;
    cfg.voters = opts.voters.max(1);
    cfg.catch_up.no_snapshot = opts.no_snapshot;
    cfg.node_timeout = opts.node_timeout;
    cfg.log_retain = opts.log_retain;
    cfg.found_with_peers_only = !opts.peers.is_empty();
    cfg.labels = opts.labels.clone();
    cfg.local_snapshot_every = opts.snapshot_every.max(1);
    cfg.exec = opts.allow_exec;
    cfg.host = super::host::identity();
    cfg.replica_ports = opts.replica_ports;
    cfg.forget_left_after = opts.forget_left_after;
    cfg.version = opts.version.clone();
    cfg.api_url = opts
        .api
        .map_or_else(String::new, |a| api_url(a, reached_at));
    cfg.takes_work = opts.worker;
    cfg.voter = opts.voter;
    cfg.raft.sync_off_loop = true;
    let events = EventReader::new(log.reader());
    let chunk_bytes = cfg.catch_up.chunk_bytes;
    let saved = snapshot.as_ref().map(|s| s.index());
    let node = Node::new(cfg, log, snapshot, cluster, Duration::ZERO)?;

    let (call_tx, call_rx) = mpsc::channel(MAX_CALLS);
    let (stop_tx, stop_rx) = mpsc::channel(1);
    let listen: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    let initial = View {
        status: node.status(),
        metrics: node.metrics().clone(),
        peers: vec![],
        events_per_sec: 0.0,
        listen: listen.clone(),
        started,
        bad_frames: 0,
        send_overflow: 0,
        ranges_deferred: 0,
        bulk_held: 0,
        catch_up: None,
        net: net.stats(),
        timings: super::Timings::default(),
        capacities: vec![],
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(initial));
    let (built_tx, built_rx) = mpsc::channel(4);
    let runs_dir = dir.root().join("runs");
    Runs::kill_leftovers(&runs_dir);
    let (run_tx, run_rx) = mpsc::channel(4096);
    let (output_tx, _) = broadcast::channel(4096);
    let runs = Runs::new(run_tx, runs_dir, opts.allow_exec, opts.stop_grace);
    let builder = SnapshotBuilder::new(store, built_tx);
    if let Some(index) = saved {
        builder.hold_saved(index, chunk_bytes);
    }
    let to_net = net.clone();
    let bulk = Pacer::new(opts.bulk_rate, move |cmd| to_net.try_send(cmd));
    let event_loop = EventLoop::new(
        node,
        dir,
        net,
        started,
        view_tx,
        listen,
        builder,
        runs,
        output_tx.clone(),
        bulk,
    );
    let handle = NodeHandle {
        tx: call_tx,
        view: view_rx,
        stop: stop_tx,
        output: output_tx,
        events,
    };
    let task = tokio::spawn(event_loop.run(net_rx, call_rx, built_rx, stop_rx, run_rx));
    Ok((handle, task))
}

/// Where the API answers, as other hosts can reach it: an unspecified bind
/// address (`0.0.0.0`, `::`) is replaced by the IP peers reach this node at.
fn api_url(mut api: std::net::SocketAddr, reached_at: Option<&shoal_net::Addr>) -> String {
    if api.ip().is_unspecified() {
        let ip = reached_at.and_then(|a| {
            a.iter().find_map(|p| match p {
                shoal_net::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                shoal_net::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            })
        });
        if let Some(ip) = ip {
            api.set_ip(ip);
        }
    }
    format!("http://{api}")
}

#[cfg(test)]
mod tests {
    use super::api_url;

    #[test]
    fn the_api_url_names_an_address_other_hosts_reach() {
        let at: shoal_net::Addr = "/ip4/10.1.2.3/tcp/7000".parse().unwrap();
        let url = |api: &str, at| api_url(api.parse().unwrap(), at);
        assert_eq!(url("0.0.0.0:8080", Some(&at)), "http://10.1.2.3:8080");
        assert_eq!(url("127.0.0.1:8080", Some(&at)), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080", None), "http://[::]:8080");
        let at6: shoal_net::Addr = "/ip6/fd00::1/tcp/7000".parse().unwrap();
        assert_eq!(url("[::]:8080", Some(&at6)), "http://[fd00::1]:8080");
    }
}
