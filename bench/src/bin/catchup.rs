//! Catch-up benchmark: a 3-node cluster on loopback holds N events (N
//! distinct keys, 100-byte values about 2x compressible); a fourth node
//! starts empty and catches up. Prints one JSON object per mode:
//! time from the joiner's process start until its applied index reaches the
//! commit index the cluster had when it started (with equal state hash),
//! snapshot bytes received, the joiner's peak RSS, both nodes' RSS once
//! caught up, and (by snapshot) the joiner's restart from its own disk.
//! With `CATCHUP_WRITES=R` the master takes R single writes a second
//! (64 clients) from 3 s before the joiner starts until it has caught up,
//! and the writes' p99 before and during the join is reported. With
//! `CATCHUP_MEMBERS=M` the cluster has M nodes (3 voters, the rest
//! followers); the snapshot bytes all of them sent for the join are
//! reported.
//!
//! The cluster is loaded one of three ways. By default (`preload`) the
//! founder is founded, stopped, its log extended on disk with N committed
//! set commands (what N single writes leave: N events, N keys, N command
//! outcomes) and restarted, then the two other voters join: minutes for
//! 1M. `http` sends N single writes through the API instead, as the
//! benchmark did first (about ten minutes for 1M). `txn` sends them in
//! transactions of 1000 sets (`POST /v1/txn`): N keys in N / 1000 events,
//! seconds for 1M.
//!
//! `cargo build --release -p shoal && cargo run --release -p shoal-bench --bin catchup -- [N] [snapshot|replay|both] [preload|http|txn]`

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::json;
use shoal_bench::batch::{self, System};
use shoal_bench::load::{p99_ms, Load};
use shoal_bench::nodes::{
    agreed, formed, has_saved_snapshot, metric, preloaded, shoal_bin, start, start_at, status,
    Node, TOKEN,
};
use shoal_bench::procs::{peak_rss_kib, rss_kib, time_until, wait};
use shoal_bench::{key, value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Keys `0..n` through the API from `clients` clients over the nodes,
/// `per_request` keys a request as `request` builds it (each tried up to
/// 10 times).
fn load_over_api(
    nodes: &[&Node],
    n: u64,
    clients: u64,
    per_request: u64,
    request: impl Fn(&Client, u16, std::ops::Range<u64>, &mut SmallRng) -> RequestBuilder + Sync,
) {
    let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let request = &request;
    std::thread::scope(|s| {
        for t in 0..clients {
            let api = apis[t as usize % apis.len()];
            s.spawn(move || {
                let c = Client::new();
                let mut rng = SmallRng::seed_from_u64(t);
                let mut from = t * per_request;
                while from < n {
                    let req = request(&c, api, from..(from + per_request).min(n), &mut rng);
                    for _ in 0..10 {
                        let sent = req.try_clone().map(|r| r.bearer_auth(TOKEN).send());
                        if sent.is_some_and(|r| r.is_ok_and(|r| r.status().is_success())) {
                            break;
                        }
                    }
                    from += clients * per_request;
                }
            });
        }
    });
}

/// N single writes through the API: 64 clients over the nodes.
fn load_over_http(nodes: &[&Node], n: u64) {
    load_over_api(nodes, n, 64, 1, |c, api, keys, rng| {
        c.put(format!("http://127.0.0.1:{api}/v1/kv/{}", key(keys.start)))
            .body(value(rng))
    });
}

/// N keys in transactions of 1000 sets (`POST /v1/txn`) from 8 clients
/// over the nodes: N / 1000 events.
fn load_with_txns(nodes: &[&Node], n: u64) {
    load_over_api(nodes, n, 8, 1000, |c, api, keys, rng| {
        let body = batch::body(System::Shoal, keys.map(key), rng);
        c.post(format!("http://127.0.0.1:{api}/v1/txn")).json(&body)
    });
}

/// Stops a node that caught up by snapshot once its local copy is on
/// disk, and restarts it on the same ports: the time from its process
/// start until it serves a read of the last key.
fn restart_from_disk(
    bin: &Path,
    c: &reqwest::blocking::Client,
    dir: &Path,
    mut node: Node,
    peer: &Node,
    n: u64,
) -> Result<f64> {
    let saved = wait(Duration::from_secs(120), || has_saved_snapshot(dir));
    if !saved {
        bail!("the joiner did not save its snapshot");
    }
    Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()?;
    node.child.wait()?;
    // Keep the log of the join beside the restart's.
    std::fs::rename(dir.with_extension("log"), dir.with_extension("join.log"))?;
    let t0 = Instant::now();
    let again = start_at(bin, dir, Some(peer.p2p), &[], (node.api, node.p2p))?;
    let last = format!("http://127.0.0.1:{}/v1/kv/{}", again.api, key(n - 1));
    let restart = time_until(t0, Duration::from_secs(120), || {
        c.get(&last).send().is_ok_and(|r| r.status().is_success())
    })
    .context("the restarted joiner did not serve reads")?;
    Ok(restart.as_secs_f64())
}

fn main() -> Result<()> {
    let (n, mode) = shoal_bench::args(100_000, "both")?;
    let loaded = std::env::args().nth(3).unwrap_or_else(|| "preload".into());
    if !["preload", "http", "txn"].contains(&loaded.as_str()) {
        bail!("load with preload, http or txn, not {loaded}");
    }
    let preload = loaded == "preload";
    let members: u32 = shoal_bench::env("CATCHUP_MEMBERS")?.unwrap_or(3).max(3);
    let load_rate: Option<u32> = shoal_bench::env("CATCHUP_WRITES")?;
    let bin = shoal_bin()?;
    // Node logs land beside their data directories (DIR.log).
    let (root, _tmp) = shoal_bench::scratch("CATCHUP_KEEP")?;
    let c = shoal_bench::nodes::client(Duration::from_secs(30))?;
    // The cluster keeps its whole log, so that the replay path can fetch it.
    let retain = ["--log-retain", "100000000"];
    let load = Instant::now();
    let (first, founder_restart_s) = if preload {
        let (node, restart) = preloaded(&bin, &c, &root.join("n1"), n, &retain)?;
        (node, Some(restart))
    } else {
        (start(&bin, &root.join("n1"), None, &retain)?, None)
    };
    let rest: Vec<Node> = (2..=members)
        .map(|i| start(&bin, &root.join(format!("n{i}")), Some(first.p2p), &retain))
        .collect::<Result<_>>()?;
    let nodes: Vec<&Node> = std::iter::once(&first).chain(rest.iter()).collect();
    if !wait(Duration::from_secs(600), || formed(&c, &nodes)) {
        bail!("the cluster did not form");
    }
    match loaded.as_str() {
        "http" => load_over_http(&nodes, n),
        "txn" => load_with_txns(&nodes, n),
        _ => {}
    }
    let all: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    if !wait(Duration::from_secs(600), || agreed(&c, &all)) {
        bail!("the cluster's nodes did not agree after loading");
    }
    let load_s = load.elapsed().as_secs_f64();
    let target = nodes
        .iter()
        .filter_map(|n| status(&c, n.api))
        .filter_map(|s| s["commit_index"].as_u64())
        .max()
        .context("no status")?;
    eprintln!("loaded {n} keys ({loaded}) in {load_s:.1} s; commit index {target}");

    let modes: Vec<&str> = match mode.as_str() {
        "both" => vec!["snapshot", "replay"],
        m => vec![m],
    };
    for (i, m) in modes.iter().enumerate() {
        let extra: &[&str] = if *m == "replay" {
            &["--no-snapshot"]
        } else {
            &[]
        };
        // With CATCHUP_WRITES=R, the master takes R single writes a second
        // from 3 s before the joiner starts until it has caught up.
        let load = load_rate.map(|r| Load::start(first.api, r));
        let idle_from = Instant::now();
        if load.is_some() {
            std::thread::sleep(Duration::from_secs(3));
        }
        let target = if load.is_some() {
            status(&c, first.api)
                .and_then(|s| s["commit_index"].as_u64())
                .context("no status")?
        } else {
            target
        };
        let sent = |nodes: &[&Node]| -> f64 {
            nodes
                .iter()
                .map(|n| metric(&c, n.api, "shoal_snapshot_bytes_sent_total"))
                .sum()
        };
        let sent_before = sent(&nodes);
        let t0 = Instant::now();
        let joiner = start(
            &bin,
            &root.join(format!("joiner{i}")),
            Some(first.p2p),
            extra,
        )?;
        let caught_up_s = time_until(t0, Duration::from_secs(600), || {
            status(&c, joiner.api)
                .and_then(|s| s["applied_index"].as_u64())
                .is_some_and(|a| a >= target)
        })
        .with_context(|| format!("{m}: the joiner did not catch up"))?
        .as_secs_f64();
        let writes = load.map(|l| {
            let caught = t0 + Duration::from_secs_f64(caught_up_s);
            let w = l.stop();
            let (idle, idle_n) = p99_ms(&w, idle_from, t0);
            let (during, during_n) = p99_ms(&w, t0, caught);
            json!({
                "per_s_asked": load_rate,
                "p99_ms_before_join": idle,
                "p99_ms_during_join": during,
                "writes_before_join": idle_n,
                "writes_during_join": during_n,
            })
        });
        // Equal state: both at one index, one hash.
        let same = wait(Duration::from_secs(30), || {
            let (a, b) = (status(&c, joiner.api), status(&c, first.api));
            a.zip(b).is_some_and(|(a, b)| {
                a["applied_index"] == b["applied_index"] && a["state_hash"] == b["state_hash"]
            })
        });
        let snapshot_bytes = metric(&c, joiner.api, "shoal_snapshot_bytes_received_total");
        let cluster_sent = sent(&nodes) - sent_before;
        let rss = peak_rss_kib(joiner.child.id());
        let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
        // Steady: once the joiner has saved the snapshot it received (it
        // then serves it from the file), and a moment later.
        let joiner_dir = root.join(format!("joiner{i}"));
        let saved = wait(Duration::from_secs(30), || has_saved_snapshot(&joiner_dir));
        if !saved {
            eprintln!("{m}: the joiner saved no snapshot in 30 s");
        }
        std::thread::sleep(Duration::from_secs(1));
        let steady = json!({
            "joiner_rss_mib": mib(rss_kib(joiner.child.id())),
            "founder_rss_mib": mib(rss_kib(first.child.id())),
        });
        let restart_s = if *m == "snapshot" {
            Some(restart_from_disk(
                &bin,
                &c,
                &root.join(format!("joiner{i}")),
                joiner,
                &first,
                n,
            )?)
        } else {
            drop(joiner);
            None
        };
        println!(
            "{}",
            json!({
                "mode": m,
                "keys": n,
                "target_index": target,
                "caught_up_s": caught_up_s,
                "events_per_s": target as f64 / caught_up_s,
                "equal_state_hash": same,
                "snapshot_bytes": snapshot_bytes,
                "members": members,
                "cluster_snapshot_bytes_sent": cluster_sent,
                "joiner_peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
                "load_s": load_s,
                "loaded": loaded,
                "founder_restart_s": founder_restart_s,
                "steady_rss": steady,
                "joiner_restart_from_disk_s": restart_s,
                "writes": writes,
            })
        );
    }
    Ok(())
}
