//! The `shoal` binary: `shoal up` runs a node; the other commands talk to a
//! node's HTTP API (`--api`, or `SHOAL_API`).

mod client;
mod kv;
mod lock;
mod logging;
mod manual;
mod progress;
mod tasks;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use client::{ApiArg, Client};
use kv::KvCmd;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4100";
const DEFAULT_API: &str = "127.0.0.1:4101";

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version = manual::VERSION,
    about = "A cluster node for LAN hosts",
    after_help = manual::EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a node: join the cluster in sight, else found a one-node cluster.
    Up(UpArgs),
    /// This node's view: role, master, term, indices, state hash, peers.
    Status {
        #[command(flatten)]
        api: ApiArg,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's members.
    Nodes {
        #[command(flatten)]
        api: ApiArg,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Coordination primitives: keys, counters, sets, lists, locks.
    Kv {
        #[command(subcommand)]
        op: KvCmd,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Run a command while holding a cluster lock (its fencing token in
    /// SHOAL_FENCING_TOKEN); exits with the command's status.
    Lock {
        #[command(flatten)]
        args: lock::LockArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Run a command (or the synthetic runner) on a node that fits, print
    /// its output as it comes, and exit with its status.
    Run {
        #[command(flatten)]
        args: tasks::RunArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// A task's output, as kept by the cluster (bounded per task).
    Logs {
        /// The task's id.
        task: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The cluster's tasks.
    Tasks {
        #[command(flatten)]
        api: ApiArg,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task: SIGTERM to its process group, then SIGKILL.
    Cancel {
        /// The task's id.
        task: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Keep K replicas of a long-running command across the nodes.
    Deploy {
        #[command(flatten)]
        args: tasks::DeployArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Stop a deployment's replicas and forget it.
    Undeploy {
        /// The deployment's name.
        name: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Deployments and where their replicas run.
    Deployments {
        #[command(flatten)]
        api: ApiArg,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the node leave: it hands back its runs and leadership, the
    /// cluster records the leave, and the process exits.
    Leave {
        #[command(flatten)]
        api: ApiArg,
    },
    /// Committed events as they happen; with --from N, first the events
    /// from N (or State, if N is older than the retained log).
    ///
    /// Example: shoal watch --prefix app/ --from 1
    Watch {
        /// Start at this event index (older than the retained log: State first).
        #[arg(long)]
        from: Option<u64>,
        /// Only events that touch keys under this prefix (and, in State,
        /// only those keys).
        #[arg(long)]
        prefix: Option<String>,
        /// One JSON object per frame: {"type", "data"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Write a new cluster key file (for `shoal up --cluster-key FILE`).
    ClusterKey {
        /// Where to write the key (an existing file is never overwritten).
        file: PathBuf,
    },
    /// Print a shell completion script.
    ///
    /// Example: shoal completions bash > /etc/bash_completion.d/shoal
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    ///
    /// Example: shoal man > /usr/local/share/man/man1/shoal.1
    Man,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Where the node keeps its identity, log and snapshots.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on for peers (repeatable).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: Vec<String>,
    /// Address of the HTTP API and dashboard.
    #[arg(long, default_value = DEFAULT_API)]
    api: SocketAddr,
    /// A peer to dial, for networks where multicast discovery is blocked.
    #[arg(long)]
    peer: Vec<String>,
    /// Turn mDNS discovery off.
    #[arg(long)]
    no_mdns: bool,
    /// A pre-shared cluster key file: only nodes holding it can connect.
    #[arg(long)]
    cluster_key: Option<PathBuf>,
    /// How many voters the cluster keeps, 1 to 9 (fewer than 3 survives
    /// no voter loss; odd numbers tolerate the most for their size).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    voters: u64,
    /// Catch up by replaying the log only, never by snapshot.
    #[arg(long)]
    no_snapshot: bool,
    /// Applied events between local snapshots (at least 100); the log
    /// below the newest one (less --log-retain) is dropped.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    snapshot_every: u64,
    /// The file holding the API token that writes must carry (default:
    /// DIR/api-token, generated on first start).
    #[arg(long, conflicts_with = "api_token")]
    api_token_file: Option<PathBuf>,
    /// The API token itself (prefer a file: arguments are visible to
    /// other users of the host).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// How the log on standard error is written (its level: SHOAL_LOG,
    /// e.g. info,shoal_proto=debug).
    #[arg(long, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    /// A label tasks can ask for (repeatable).
    #[arg(long, value_name = "K=V")]
    label: Vec<String>,
    /// Run user commands sent by `shoal run` (remote execution). Allowed
    /// only with --cluster-key, or on a single node listening on loopback.
    #[arg(long)]
    allow_exec: bool,
    /// Between SIGTERM and SIGKILL when a run is cancelled or stopped (at
    /// most 10 minutes).
    #[arg(long, default_value = "5s", value_parser = stop_grace)]
    stop_grace: Duration,
    /// Test-only: serve POST /v1/fault/delay?ms=N, which delays every
    /// outgoing message of this node (chaos runs without netem).
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// Silence after which a node is declared dead (1 s to 10 minutes: a
    /// node heartbeats every 300 ms).
    #[arg(long, default_value = "2s", value_parser = node_timeout)]
    node_timeout: Duration,
    /// Log entries kept below the newest local snapshot, so that a replica
    /// behind by less can catch up by ranges.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(..=100_000_000))]
    log_retain: u64,
    /// A name clients may reach the API by (repeatable). IP addresses,
    /// localhost and this host's name are always accepted; requests naming
    /// any other Host are refused (DNS rebinding).
    #[arg(long, value_name = "NAME")]
    api_host: Vec<String>,
    /// The one web origin allowed to call the API from a browser
    /// (default: none; e.g. https://ops.example).
    #[arg(long, value_name = "ORIGIN")]
    api_cors_origin: Option<String>,
    /// API connections open at once; more are closed at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    api_max_connections: u64,
    /// Streams open at once (events, dashboard, task output); more get 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    api_max_streams: u64,
    /// A request's headers must arrive within this, and an idle API
    /// connection is closed after it (1 s to 10 minutes).
    #[arg(long, default_value = "10s", value_parser = api_timeout)]
    api_idle_timeout: Duration,
    /// A client that takes none of a response (a stream it stopped
    /// reading) for this long is disconnected (1 s to 10 minutes).
    #[arg(long, default_value = "30s", value_parser = api_timeout)]
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

fn stop_grace(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::ZERO, Duration::from_secs(600))
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Up(args) => up(args).map(|_| 0),
        Cmd::Status { api, json } => status(&Client::new(&api)?, json).map(|_| 0),
        Cmd::Nodes { api, json } => nodes(&Client::new(&api)?, json).map(|_| 0),
        Cmd::Kv { op, api } => kv::run(&Client::new(&api)?, op),
        Cmd::Lock { args, api } => lock::run(&Client::new(&api)?, args),
        Cmd::Run { args, api } => tasks::run(&Client::new(&api)?, args),
        Cmd::Logs { task, api } => tasks::logs(&Client::new(&api)?, &task),
        Cmd::Tasks { api, json } => tasks::list(&Client::new(&api)?, json),
        Cmd::Cancel { task, api } => tasks::cancel(&Client::new(&api)?, &task),
        Cmd::Deploy { args, api } => tasks::deploy(&Client::new(&api)?, args),
        Cmd::Undeploy { name, api } => tasks::undeploy(&Client::new(&api)?, &name),
        Cmd::Deployments { api, json } => tasks::deployments(&Client::new(&api)?, json),
        Cmd::Watch {
            from,
            prefix,
            json,
            api,
        } => tasks::watch(&Client::new(&api)?, from, prefix.as_deref(), json),
        Cmd::Leave { api } => {
            let c = Client::new(&api)?;
            c.write(reqwest::Method::POST, "/v1/leave", client::Body::None, None)?;
            println!("leaving");
            Ok(0)
        }
        Cmd::Completions { shell } => manual::completions(Cli::command(), shell),
        Cmd::Man => manual::man(Cli::command()),
        Cmd::ClusterKey { file } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // Readable by its owner only, like the API token; never over
            // an existing key.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        anyhow!("{} exists; not overwriting a key", file.display())
                    }
                    _ => anyhow!("writing {}: {e}", file.display()),
                })?;
            f.write_all(shoal_net::new_cluster_key_text().as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "wrote {}; copy it to every host and pass --cluster-key {}",
                file.display(),
                file.display()
            );
            Ok(0)
        }
    }
}

fn up(args: UpArgs) -> Result<()> {
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
    let data_dir = args.data_dir.unwrap_or_else(shoal_node::default_data_dir);
    let opts = shoal_node::NodeOptions {
        data_dir: data_dir.clone(),
        listen,
        peers,
        mdns: !args.no_mdns,
        cluster_key,
        voters: args.voters as usize,
        no_snapshot: args.no_snapshot,
        node_timeout: args.node_timeout,
        log_retain: args.log_retain,
        labels,
        allow_exec: args.allow_exec,
        stop_grace: args.stop_grace,
        snapshot_every: args.snapshot_every,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (node, task) = shoal_node::start(opts).await?;
        if std::io::stderr().is_terminal() {
            tokio::spawn(progress::catch_up_bar(node.view_receiver()));
        }
        let access = shoal_api::Access {
            token: match &args.api_token {
                Some(t) if t.len() >= 16 => t.clone(),
                Some(_) => bail!("--api-token must be at least 16 characters"),
                None => api_token(&data_dir, args.api_token_file.as_deref())?,
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
        };
        let listener = tokio::net::TcpListener::bind(args.api)
            .await
            .with_context(|| format!("binding the API on {}", args.api))?;
        tracing::info!(api = %format!("http://{}", args.api), "api listening");
        let app = shoal_api::router(node.clone(), api_config);
        let limits = shoal_api::ServeLimits {
            max_connections: args.api_max_connections as usize,
            header_timeout: args.api_idle_timeout,
            write_timeout: args.api_stall_timeout,
        };
        let counters = Arc::new(shoal_api::ServeCounters::default());
        let api = tokio::spawn(shoal_api::serve(
            listener,
            app,
            limits,
            counters,
            std::future::pending(),
        ));
        let stop = node.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.shutdown();
        });
        let result = task.await.map_err(|e| anyhow!("node task: {e}"))?;
        api.abort();
        result.map_err(|e| anyhow!("{e}"))
    })
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

fn status(c: &Client, json: bool) -> Result<()> {
    let v = c.get("/v1/status")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    println!("node      {}", v["node_id"].as_str().unwrap_or("?"));
    println!(
        "cluster   {}",
        v["cluster_id"].as_str().unwrap_or("(none yet)")
    );
    println!("role      {}", v["role"].as_str().unwrap_or("?"));
    println!("master    {}", v["master_id"].as_str().unwrap_or("(none)"));
    println!("term      {}", v["term"]);
    println!(
        "applied   {}   commit {}   lag {}",
        v["applied_index"], v["commit_index"], v["lag"]
    );
    println!("hash      {}", v["state_hash"].as_str().unwrap_or("?"));
    let peers = v["peers"].as_array().map(|a| a.len()).unwrap_or(0);
    println!("peers     {peers}");
    Ok(())
}

fn nodes(c: &Client, json: bool) -> Result<()> {
    let v = c.get("/v1/nodes")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<54} {:<9} {:<8} {:>9} {:>8}",
        "NODE", "ROLE", "STATE", "APPLIED", "HEARD"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let role = if n["master"].as_bool() == Some(true) {
            "master"
        } else {
            n["role"].as_str().unwrap_or("?")
        };
        let heard = n["last_heard_ms"]
            .as_u64()
            .map_or("-".to_owned(), |ms| format!("{ms}ms"));
        println!(
            "{:<54} {:<9} {:<8} {:>9} {:>8}",
            n["node_id"].as_str().unwrap_or("?"),
            role,
            n["liveness"].as_str().unwrap_or("?"),
            n["applied_index"]
                .as_u64()
                .map_or("-".to_owned(), |i| i.to_string()),
            heard
        );
    }
    Ok(())
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

/// Running user commands is remote execution: refused unless the cluster
/// is closed by a key, or this is a single node nobody else can reach.
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

#[cfg(test)]
mod cli_tests;
