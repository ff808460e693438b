//! The `shoal` binary: `shoal up` runs a node; the other commands talk to a
//! node's HTTP API (`--api`, or `SHOAL_API`).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4100";
const DEFAULT_API: &str = "127.0.0.1:4101";

#[derive(Parser, Debug)]
#[command(name = "shoal", version, about = "A cluster node for LAN hosts")]
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
        #[arg(long)]
        json: bool,
    },
    /// The cluster's members.
    Nodes {
        #[command(flatten)]
        api: ApiArg,
        #[arg(long)]
        json: bool,
    },
    /// Coordination key-value commands.
    Kv {
        #[command(subcommand)]
        op: KvCmd,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Write a new cluster key file (for `shoal up --cluster-key FILE`).
    ClusterKey { file: PathBuf },
}

#[derive(Args, Debug)]
struct ApiArg {
    /// The node's API, e.g. http://127.0.0.1:4101.
    #[arg(
        long,
        env = "SHOAL_API",
        default_value = "http://127.0.0.1:4101",
        global = true
    )]
    api: String,
}

#[derive(Subcommand, Debug)]
enum KvCmd {
    Get { key: String },
    Set { key: String, value: String },
    Incr { key: String, by: Option<i64> },
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
    /// How many voters the cluster keeps (fewer than 3 survives no voter loss).
    #[arg(long, default_value_t = 3)]
    voters: usize,
    /// Catch up by replaying the log only, never by snapshot.
    #[arg(long)]
    no_snapshot: bool,
    /// Silence after which a node is declared dead.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    node_timeout: Duration,
    /// Log entries kept below the newest local snapshot, so that a replica
    /// behind by less can catch up by ranges.
    #[arg(long, default_value_t = 50_000)]
    log_retain: u64,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up(args) => up(args),
        Cmd::Status { api, json } => status(&api.api, json),
        Cmd::Nodes { api, json } => nodes(&api.api, json),
        Cmd::Kv { op, api } => kv(&api.api, op),
        Cmd::ClusterKey { file } => {
            if file.exists() {
                bail!("{} exists; not overwriting a key", file.display());
            }
            std::fs::write(&file, shoal_net::new_cluster_key_text())
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "wrote {}; copy it to every host and pass --cluster-key {}",
                file.display(),
                file.display()
            );
            Ok(())
        }
    }
}

fn up(args: UpArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let opts = shoal_node::NodeOptions {
        data_dir: args.data_dir.unwrap_or_else(shoal_node::default_data_dir),
        listen,
        peers,
        mdns: !args.no_mdns,
        cluster_key,
        voters: args.voters,
        no_snapshot: args.no_snapshot,
        node_timeout: args.node_timeout,
        log_retain: args.log_retain,
        progress_bar: std::io::stderr().is_terminal(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (node, task) = shoal_node::start(opts).await?;
        let listener = tokio::net::TcpListener::bind(args.api)
            .await
            .with_context(|| format!("binding the API on {}", args.api))?;
        tracing::info!(api = %format!("http://{}", args.api), "api listening");
        let app = shoal_api::router(node.clone());
        let api = tokio::spawn(async move { axum::serve(listener, app).await });
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

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn base(api: &str) -> String {
    let api = api.trim_end_matches('/');
    if api.starts_with("http://") || api.starts_with("https://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// Sends a request and returns the JSON body, or fails with the API's own
/// error message (exit code 1).
fn call(req: reqwest::blocking::RequestBuilder, api: &str) -> Result<Value> {
    let resp = req
        .send()
        .map_err(|e| anyhow!("cannot reach the node at {api}: {e}"))?;
    let code = resp.status();
    let body: Value = resp.json().unwrap_or(Value::Null);
    if code.is_success() {
        return Ok(body);
    }
    let msg = body["error"]["message"]
        .as_str()
        .unwrap_or("request failed")
        .to_owned();
    let kind = body["error"]["code"].as_str().unwrap_or("error").to_owned();
    bail!("{kind}: {msg}")
}

fn status(api: &str, json: bool) -> Result<()> {
    let b = base(api);
    let v = call(client()?.get(format!("{b}/v1/status")), &b)?;
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

fn nodes(api: &str, json: bool) -> Result<()> {
    let b = base(api);
    let v = call(client()?.get(format!("{b}/v1/nodes")), &b)?;
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

fn kv(api: &str, op: KvCmd) -> Result<()> {
    let b = base(api);
    let c = client()?;
    match op {
        KvCmd::Get { key } => {
            let v = call(c.get(format!("{b}/v1/kv/{}", encode(&key))), &b)?;
            match &v["value"] {
                Value::String(s) => println!("{s}"),
                other => println!("{other}"),
            }
        }
        KvCmd::Set { key, value } => {
            let v = call(c.put(format!("{b}/v1/kv/{}", encode(&key))).body(value), &b)?;
            println!("ok (index {})", v["index"]);
        }
        KvCmd::Incr { key, by } => {
            let v = call(
                c.post(format!(
                    "{b}/v1/kv/{}/incr?by={}",
                    encode(&key),
                    by.unwrap_or(1)
                )),
                &b,
            )?;
            println!("{}", v["value"]);
        }
    }
    Ok(())
}

/// Percent-encodes a key for a URL path segment.
fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
