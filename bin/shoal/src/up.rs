//! `shoal up`: its settings, and starting a node with its API.

use crate::{logging, progress};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4100";
const DEFAULT_API: &str = "127.0.0.1:4101";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// A TOML file of settings, named as the flags (`voters = 5`); a flag
    /// beats its SHOAL_* variable, which beats the file.
    ///
    /// Example: shoal up --config /etc/shoal/shoal.toml
    #[arg(long, value_name = "FILE", env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings in effect, as a config file saying where each
    /// came from, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where the node keeps its identity, log and snapshots.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on for peers (repeatable).
    #[arg(long, default_value = DEFAULT_LISTEN, env = "SHOAL_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// Address of the HTTP API and dashboard.
    #[arg(long, default_value = DEFAULT_API, env = "SHOAL_API_ADDR")]
    api: SocketAddr,
    /// Serve no HTTP API or dashboard (a worker or voter that clients do
    /// not talk to); --api and its settings are then unused.
    #[arg(long, env = "SHOAL_NO_API")]
    no_api: bool,
    /// Take no tasks or replicas: an API node in front of the cluster, or
    /// a voter kept light. Replicas it runs are placed elsewhere.
    #[arg(long, env = "SHOAL_NO_WORKER")]
    no_worker: bool,
    /// Never hold a voter seat (for a flaky or far host): the node
    /// follows, and never founds a cluster (it waits for one to join).
    #[arg(long, env = "SHOAL_NO_VOTER")]
    no_voter: bool,
    /// A peer to dial, for networks where multicast discovery is blocked.
    #[arg(long, env = "SHOAL_PEER", value_delimiter = ',')]
    peer: Vec<String>,
    /// The TCP port, on the first --listen address's host, where peers
    /// connect for large frames (snapshot chunks, long ranges), driven
    /// below the node's priority so that commits never wait behind them.
    /// 0: one the system picks, told to each peer as it is needed; give
    /// a fixed one where a firewall stands between hosts (a peer that
    /// cannot reach it gets large frames on the --listen connection).
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 0,
        env = "SHOAL_BULK_PORT"
    )]
    bulk_port: u16,
    /// Turn mDNS discovery off.
    #[arg(long, env = "SHOAL_NO_MDNS")]
    no_mdns: bool,
    /// A pre-shared cluster key file: only nodes holding it can connect.
    #[arg(long, env = "SHOAL_CLUSTER_KEY")]
    cluster_key: Option<PathBuf>,
    /// How many voters the cluster keeps, 1 to 9 (fewer than 3 survives
    /// no voter loss; odd numbers tolerate the most for their size).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9), env = "SHOAL_VOTERS")]
    voters: u64,
    /// Found a new cluster from a backup (shoal snapshot save), after a
    /// disaster that lost every voter: its keys, locks, tasks and
    /// deployments, with this node the one voter. The data directory must
    /// be empty; other hosts join with empty ones.
    ///
    /// Example: shoal up --restore shoal.snap --data-dir /var/lib/shoal
    #[arg(long, value_name = "FILE", env = "SHOAL_RESTORE")]
    restore: Option<PathBuf>,
    /// Catch up by replaying the log only, never by snapshot.
    #[arg(long, env = "SHOAL_NO_SNAPSHOT")]
    no_snapshot: bool,
    /// Applied events between local snapshots (at least 100); the log
    /// below the newest one (less --log-retain) is dropped. From 1024 up,
    /// taken at the multiples of it rounded up to 1024 events, the same
    /// indexes on every node.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..), env = "SHOAL_SNAPSHOT_EVERY")]
    snapshot_every: u64,
    /// The file holding the API token that writes must carry (default:
    /// DIR/api-token, generated on first start).
    #[arg(long, conflicts_with = "api_token", env = "SHOAL_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// The API token itself (prefer a file: arguments are visible to
    /// other users of the host).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// How the log on standard error is written (its level: SHOAL_LOG,
    /// e.g. info,shoal_proto=debug).
    #[arg(long, value_enum, default_value = "text", env = "SHOAL_LOG_FORMAT")]
    log_format: logging::LogFormat,
    /// A label tasks can ask for (repeatable).
    #[arg(long, value_name = "K=V", env = "SHOAL_LABEL", value_delimiter = ',')]
    label: Vec<String>,
    /// Run user commands sent by `shoal run` (remote execution). Allowed
    /// only with --cluster-key, or on a single node listening on loopback.
    #[arg(long, env = "SHOAL_ALLOW_EXEC")]
    allow_exec: bool,
    /// The ports this node hands its replicas (`PORT` in their
    /// environment), FIRST-LAST. Nodes on one host share them, and a port
    /// some program listens on is skipped.
    #[arg(
        long,
        value_name = "FIRST-LAST",
        default_value = "20000-29999",
        env = "SHOAL_REPLICA_PORTS"
    )]
    replica_ports: shoal_model::PortRange,
    /// Between SIGTERM and SIGKILL when a run is cancelled or stopped (at
    /// most 10 minutes).
    #[arg(long, default_value = "5s", value_parser = stop_grace, env = "SHOAL_STOP_GRACE")]
    stop_grace: Duration,
    /// Test-only: serve POST /v1/fault/delay?ms=N, which delays every
    /// outgoing message of this node (chaos runs without netem).
    #[arg(long, hide = true, env = "SHOAL_FAULT_INJECTION")]
    fault_injection: bool,
    /// Silence after which a node is declared dead (1 s to 10 minutes: a
    /// node heartbeats every 300 ms).
    #[arg(long, default_value = "2s", value_parser = node_timeout, env = "SHOAL_NODE_TIMEOUT")]
    node_timeout: Duration,
    /// A node that left (shoal leave, or shoal nodes remove) is forgotten
    /// this long after, when this node is master (0 s to 30 days).
    #[arg(long, default_value = "1h", value_parser = forget_after, env = "SHOAL_FORGET_LEFT_AFTER")]
    forget_left_after: Duration,
    /// Log entries kept below the newest local snapshot, so that a replica
    /// behind by less can catch up by ranges (up to four times as many
    /// while a replica heard within a minute trails further).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(..=100_000_000), env = "SHOAL_LOG_RETAIN")]
    log_retain: u64,
    /// Snapshot chunks and log ranges this node serves to nodes catching
    /// up, at most this many megabytes a second (0: no limit). Paced, a
    /// join storm takes longer and the writes committed meanwhile wait
    /// less; unpaced, one joiner loads as fast as its sources send.
    #[arg(long, value_name = "MB_PER_S", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=100_000), env = "SHOAL_BULK_RATE")]
    bulk_rate: u64,
    /// A name clients may reach the API by (repeatable). IP addresses,
    /// localhost and this host's name are always accepted; requests naming
    /// any other Host are refused (DNS rebinding).
    #[arg(
        long,
        value_name = "NAME",
        env = "SHOAL_API_HOST",
        value_delimiter = ','
    )]
    api_host: Vec<String>,
    /// The one web origin allowed to call the API from a browser
    /// (default: none; e.g. https://ops.example).
    #[arg(long, value_name = "ORIGIN", env = "SHOAL_API_CORS_ORIGIN")]
    api_cors_origin: Option<String>,
    /// API connections open at once; more are closed at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536), env = "SHOAL_API_MAX_CONNECTIONS")]
    api_max_connections: u64,
    /// Streams open at once (events, dashboard, task output); more get 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000), env = "SHOAL_API_MAX_STREAMS")]
    api_max_streams: u64,
    /// A request's headers must arrive within this, and an idle API
    /// connection is closed after it (1 s to 10 minutes).
    #[arg(long, default_value = "10s", value_parser = api_timeout, env = "SHOAL_API_IDLE_TIMEOUT")]
    api_idle_timeout: Duration,
    /// A client that takes none of a response (a stream it stopped
    /// reading) for this long is disconnected (1 s to 10 minutes).
    #[arg(long, default_value = "30s", value_parser = api_timeout, env = "SHOAL_API_STALL_TIMEOUT")]
    api_stall_timeout: Duration,
}

/// A duration within `[min, max]`, for clap.
fn duration_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > max {
        return Err(format!(
            "{s} is out of range: {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn node_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_secs(1), Duration::from_secs(600))
}

fn api_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_secs(1), Duration::from_secs(600))
}

fn forget_after(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::ZERO, Duration::from_secs(30 * 86_400))
}

fn stop_grace(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::ZERO, Duration::from_secs(600))
}

pub fn up(args: UpArgs) -> Result<()> {
    logging::init(args.log_format)?;
    let listen = args
        .listen
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow!("--listen {s}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let peers = args
        .peer
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow!("--peer {s}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let cluster_key = match &args.cluster_key {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading cluster key {}", path.display()))?;
            Some(
                shoal_net::parse_cluster_key(&text)
                    .map_err(|e| anyhow!("cluster key {}: {e}", path.display()))?,
            )
        }
    };
    let labels = args
        .label
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--label {l}: expected K=V"))
        })
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    if args.allow_exec {
        check_exec_allowed(&args, &listen)?;
    }
    let cors_origin = args
        .api_cors_origin
        .as_deref()
        .map(|o| shoal_api::parse_origin(o).map_err(|e| anyhow!("--api-cors-origin {o}: {e}")))
        .transpose()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(shoal_node::default_data_dir);
    let mut opts = shoal_node::NodeOptions {
        data_dir: data_dir.clone(),
        listen,
        peers,
        mdns: !args.no_mdns,
        bulk_port: args.bulk_port,
        cluster_key,
        voters: args.voters as usize,
        no_snapshot: args.no_snapshot,
        node_timeout: args.node_timeout,
        log_retain: args.log_retain,
        labels,
        allow_exec: args.allow_exec,
        stop_grace: args.stop_grace,
        snapshot_every: args.snapshot_every,
        replica_ports: args.replica_ports,
        forget_left_after: args.forget_left_after,
        restore: args.restore.clone(),
        bulk_rate: (args.bulk_rate > 0).then(|| args.bulk_rate * 1_000_000),
        version: crate::manual::VERSION.to_owned(),
        api: None,
        worker: !args.no_worker,
        voter: !args.no_voter,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Bound first, so that the node reports where its API answers.
        let listener = if args.no_api {
            None
        } else {
            let bound = tokio::net::TcpListener::bind(args.api).await;
            Some(bound.with_context(|| format!("binding the API on {}", args.api))?)
        };
        opts.api = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let (node, task) = shoal_node::start(opts).await?;
        if std::io::stderr().is_terminal() {
            tokio::spawn(progress::catch_up_bar(node.view_receiver()));
        }
        let api = match listener {
            Some(l) => Some(serve_api(l, &args, &data_dir, cors_origin, node.clone())?),
            None => {
                tracing::info!("serving no API (--no-api)");
                None
            }
        };
        let stop = node.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.shutdown();
        });
        let result = task.await.map_err(|e| anyhow!("node task: {e}"))?;
        if let Some(api) = api {
            api.abort();
        }
        result.map_err(|e| anyhow!("{e}"))
    })
}

/// Serves the HTTP API and dashboard on `listener`.
fn serve_api(
    listener: tokio::net::TcpListener,
    args: &UpArgs,
    data_dir: &std::path::Path,
    cors_origin: Option<axum::http::HeaderValue>,
    node: shoal_node::NodeHandle,
) -> Result<tokio::task::JoinHandle<()>> {
    let access = shoal_api::Access {
        token: match &args.api_token {
            Some(t) if t.len() >= 16 => t.clone(),
            Some(_) => bail!("--api-token must be at least 16 characters"),
            None => api_token(data_dir, args.api_token_file.as_deref())?,
        },
        open_reads: args.api.ip().is_loopback(),
        faults: args.fault_injection,
    };
    let api_config = shoal_api::ApiConfig {
        access,
        hosts: shoal_api::Hosts::new(api_hosts(&args.api_host)),
        max_streams: args.api_max_streams as usize,
        request_timeout: shoal_api::ApiConfig::DEFAULT_REQUEST_TIMEOUT,
        cors_origin,
        version: crate::manual::VERSION.to_owned(),
    };
    tracing::info!(api = %format!("http://{}", args.api), "api listening");
    let app = shoal_api::router(node, api_config);
    let limits = shoal_api::ServeLimits {
        max_connections: args.api_max_connections as usize,
        header_timeout: args.api_idle_timeout,
        write_timeout: args.api_stall_timeout,
    };
    let counters = Arc::new(shoal_api::ServeCounters::default());
    Ok(tokio::spawn(shoal_api::serve(
        listener,
        app,
        limits,
        counters,
        std::future::pending(),
    )))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The token API writes must carry: from `--api-token-file`, else the data
/// directory's, generated on first start. It is never printed: a
/// service's output ends up in the journal; where it is, is.
fn api_token(data_dir: &std::path::Path, file: Option<&std::path::Path>) -> Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let t = t.trim();
        if t.len() < 16 {
            bail!(
                "{}: an API token must be at least 16 characters",
                f.display()
            );
        }
        return Ok(t.to_owned());
    }
    let (token, new) = shoal_node::api_token(data_dir)?;
    if new {
        eprintln!(
            "API token generated into {} (readable by this user only; the CLI on this \
             host reads it there with --data-dir)",
            shoal_node::api_token_path(data_dir).display()
        );
    }
    Ok(token)
}

/// The names the API answers to besides IP addresses and localhost: the
/// ones given, and this host's own name (with `.local`, as mDNS has it).
fn api_hosts(given: &[String]) -> Vec<String> {
    let mut names = given.to_vec();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_owned());
            names.push(format!("{h}.local"));
        }
    }
    names
}

/// Running user commands is remote execution: refused unless the cluster
/// is closed by a key, or this is a single node nobody else can reach.
fn check_exec_allowed(args: &UpArgs, listen: &[shoal_net::Addr]) -> Result<()> {
    if args.cluster_key.is_some() {
        return Ok(());
    }
    let loopback = listen.iter().all(|a| {
        a.iter().any(|p| match p {
            shoal_net::Protocol::Ip4(ip) => ip.is_loopback(),
            shoal_net::Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    });
    if loopback && args.peer.is_empty() && args.api.ip().is_loopback() {
        return Ok(());
    }
    bail!(
        "--allow-exec lets the cluster run commands on this host, so it needs --cluster-key FILE \
         (only key holders can join), or a single node with --listen and --api on loopback and no --peer"
    )
}
