//! Catch-up benchmark: a 3-node cluster on loopback holds N events (N
//! distinct keys, 100-byte values about 2x compressible); a fourth node
//! starts empty and catches up. Prints one JSON object per mode:
//! time from the joiner's process start until its applied index reaches the
//! commit index the cluster had when it started (with equal state hash),
//! snapshot bytes received, and the joiner's peak RSS.
//!
//! `cargo build --release -p shoal && cargo run --release -p shoal-bench --bin catchup -- [N] [snapshot|replay|both]`

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use shoal_bench::procs::{free_port, peak_rss_kib, time_until, wait};
use shoal_bench::{key, value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node {
    child: Child,
    api: u16,
    p2p: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API token every node of the benchmark cluster is started with.
const TOKEN: &str = "catchup-benchmark-token";

fn start(bin: &Path, dir: &Path, peer: Option<u16>, extra: &[&str]) -> Result<Node> {
    let (api, p2p) = (free_port(), free_port());
    let token_file = dir.with_extension("token");
    std::fs::write(&token_file, TOKEN)?;
    let mut cmd = Command::new(bin);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{p2p}"),
            "--api",
            &format!("127.0.0.1:{api}"),
            "--no-mdns",
        ])
        .args(extra)
        .arg("--api-token-file")
        .arg(&token_file)
        .env("SHOAL_LOG", "info,libp2p=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log"))?);
    if let Some(p) = peer {
        cmd.args(["--peer", &format!("/ip4/127.0.0.1/tcp/{p}")]);
    }
    Ok(Node {
        child: cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        api,
        p2p,
    })
}

fn status(c: &reqwest::blocking::Client, api: u16) -> Option<Value> {
    c.get(format!("http://127.0.0.1:{api}/v1/status"))
        .send()
        .ok()?
        .json()
        .ok()
}

fn metric(c: &reqwest::blocking::Client, api: u16, name: &str) -> f64 {
    let text = c
        .get(format!("http://127.0.0.1:{api}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let (n, mode) = shoal_bench::args(100_000, "both")?;
    let bin = std::env::var("SHOAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/shoal"));
    if !bin.exists() {
        bail!(
            "{} not found: cargo build --release -p shoal (or set SHOAL_BIN)",
            bin.display()
        );
    }
    // Node logs land beside their data directories (DIR.log).
    let tmp = tempfile::tempdir()?;
    let keep = std::env::var_os("CATCHUP_KEEP").is_some();
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // The cluster keeps its whole log, so that the replay path can fetch it.
    let retain = ["--log-retain", "100000000"];
    let first = start(&bin, &tmp.path().join("n1"), None, &retain)?;
    let rest: Vec<Node> = (2..=3)
        .map(|i| {
            start(
                &bin,
                &tmp.path().join(format!("n{i}")),
                Some(first.p2p),
                &retain,
            )
        })
        .collect::<Result<_>>()?;
    let nodes: Vec<&Node> = std::iter::once(&first).chain(rest.iter()).collect();
    let formed = wait(Duration::from_secs(60), || {
        nodes
            .iter()
            .filter(|n| {
                status(&c, n.api).is_some_and(|s| s["role"] == "master" || s["role"] == "voter")
            })
            .count()
            == 3
    });
    if !formed {
        bail!("the cluster did not form");
    }

    // Load N events: 64 clients over the three nodes.
    let load = Instant::now();
    let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let clients = 64u64;
    std::thread::scope(|s| {
        for t in 0..clients {
            let api = apis[t as usize % 3];
            s.spawn(move || {
                let c = reqwest::blocking::Client::new();
                let mut rng = SmallRng::seed_from_u64(t);
                let mut i = t;
                while i < n {
                    let url = format!("http://127.0.0.1:{api}/v1/kv/{}", key(i));
                    for _ in 0..10 {
                        if c.put(&url)
                            .bearer_auth(TOKEN)
                            .body(value(&mut rng))
                            .send()
                            .is_ok_and(|r| r.status().is_success())
                        {
                            break;
                        }
                    }
                    i += clients;
                }
            });
        }
    });
    let load_s = load.elapsed().as_secs_f64();
    let target = nodes
        .iter()
        .filter_map(|n| status(&c, n.api))
        .filter_map(|s| s["commit_index"].as_u64())
        .max()
        .context("no status")?;
    eprintln!(
        "loaded {n} events in {load_s:.1} s ({:.0}/s); commit index {target}",
        n as f64 / load_s
    );

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
        let t0 = Instant::now();
        let joiner = start(
            &bin,
            &tmp.path().join(format!("joiner{i}")),
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
        // Equal state: both at one index, one hash.
        let same = wait(Duration::from_secs(30), || {
            let (a, b) = (status(&c, joiner.api), status(&c, first.api));
            a.zip(b).is_some_and(|(a, b)| {
                a["applied_index"] == b["applied_index"] && a["state_hash"] == b["state_hash"]
            })
        });
        let snapshot_bytes = metric(&c, joiner.api, "shoal_snapshot_bytes_received_total");
        let rss = peak_rss_kib(joiner.child.id());
        println!(
            "{}",
            json!({
                "mode": m,
                "events": n,
                "target_index": target,
                "caught_up_s": caught_up_s,
                "events_per_s": target as f64 / caught_up_s,
                "equal_state_hash": same,
                "snapshot_bytes": snapshot_bytes,
                "joiner_peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
                "load_s": load_s,
            })
        );
        drop(joiner);
    }
    if keep {
        let path = tmp.keep();
        eprintln!("logs kept in {}", path.display());
    }
    Ok(())
}
