//! The `shoal` binary: `shoal up` runs a node; the other commands talk to a
//! node's HTTP API (`--api`, or `SHOAL_API`).

mod backup;
mod client;
mod config;
mod kv;
mod lock;
mod logging;
mod manual;
mod members;
mod progress;
mod sse;
mod tasks;
mod up;

use anyhow::{anyhow, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use client::{ApiArg, Client};
use kv::KvCmd;
use std::path::PathBuf;
use up::UpArgs;

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
    ///
    /// Example: shoal up --peer /ip4/192.0.2.10/tcp/4100 --label zone=a
    Up(UpArgs),
    /// This node's view: role, master, term, indices, state hash, peers.
    ///
    /// Example: shoal status --api http://10.0.0.2:4101 --json
    Status {
        #[command(flatten)]
        api: ApiArg,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's members; `shoal nodes remove NODE` removes a dead one.
    Nodes {
        #[command(subcommand)]
        op: Option<members::NodesCmd>,
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
    /// Backups: save State from a live node, or check a saved file
    /// (restore with shoal up --restore FILE).
    Snapshot {
        #[command(subcommand)]
        op: backup::SnapshotCmd,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Run a command while holding a cluster lock (its fencing token in
    /// SHOAL_FENCING_TOKEN); exits with the command's status.
    ///
    /// Example: shoal lock deploy --ttl 10s -- ./deploy.sh
    Lock {
        #[command(flatten)]
        args: lock::LockArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Run a command (or the synthetic runner) on a node that fits, print
    /// its output as it comes, and exit with its status.
    ///
    /// Example: shoal run --detach --label zone=a -- ./backup.sh
    Run {
        #[command(flatten)]
        args: tasks::RunArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// A task's output, as kept by the cluster (bounded per task).
    ///
    /// Example: shoal logs t-42
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
    ///
    /// Example: shoal cancel t-42
    Cancel {
        /// The task's id.
        task: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Keep K replicas of a long-running command across the nodes.
    ///
    /// Example: shoal deploy web --replicas 3 -- ./serve --port-from-env
    Deploy {
        #[command(flatten)]
        args: tasks::DeployArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Stop a deployment's replicas and forget it.
    ///
    /// Example: shoal undeploy web
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
    ///
    /// Example: shoal leave --api http://10.0.0.5:4101
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
    ///
    /// Example: shoal cluster-key /etc/shoal/cluster.key
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
    /// Print the HTTP API's OpenAPI description (what every node serves
    /// at /v1/openapi.json), to generate a client without a node.
    ///
    /// Example: shoal openapi > shoal-openapi.json
    Openapi,
}

fn main() {
    let parsed =
        config::parse(Cli::command(), std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    if let Cmd::Up(args) = &cli.command {
        if args.print_config {
            let cmd = Cli::command();
            print!("{}", config::print(up_command(&cmd), &parsed));
            return;
        }
    }
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
        Cmd::Up(args) => up::up(args).map(|_| 0),
        Cmd::Status { api, json } => status(&Client::new(&api)?, json).map(|_| 0),
        Cmd::Nodes { op, api, json } => members::run(&Client::new(&api)?, op, json),
        Cmd::Kv { op, api } => kv::run(&Client::new(&api)?, op),
        Cmd::Snapshot { op, api } => backup::run(&Client::new(&api)?, op),
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
        Cmd::Openapi => {
            println!("{}", shoal_api::openapi_json());
            Ok(0)
        }
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
    if let Some(why) = v["master_reason"].as_str() {
        println!("          {why}");
    }
    println!("term      {}", v["term"]);
    println!(
        "applied   {}   commit {}   lag {}",
        v["applied_index"], v["commit_index"], v["lag"]
    );
    println!("hash      {}", v["state_hash"].as_str().unwrap_or("?"));
    let peers = v["peers"].as_array().map(|a| a.len()).unwrap_or(0);
    println!("peers     {peers}");
    for (key, label) in [("storage_error", "disk"), ("voter_shortfall", "voters")] {
        if let Some(why) = v[key].as_str() {
            println!("{label:<9} {why}");
        }
    }
    Ok(())
}

/// `shoal up`'s part of the command line.
fn up_command(cmd: &clap::Command) -> &clap::Command {
    cmd.find_subcommand("up").expect("shoal up exists")
}

#[cfg(test)]
mod cli_tests;
