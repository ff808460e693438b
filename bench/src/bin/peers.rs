//! The systems a user would pick instead of shoal, measured on the same
//! data set as shoal's own runners (N distinct keys `key-0000000042`,
//! 100-byte values about 2x compressible): how long a new replica takes to
//! hold what the cluster holds. Prints one JSON object per system.
//!
//! ```text
//! bench/peers/setup.sh                      # Debian's etcd-server, redis-server (root)
//! cargo run --release -p shoal-bench --bin peers -- N [redis|etcd|both]
//! ```
//!
//! - **Redis 7**: a primary loaded with N keys (pipelined SETs); a replica
//!   started with `--replicaof`, the primary syncing diskless with no delay
//!   (`repl-diskless-sync yes`, `repl-diskless-sync-delay 0`) and the
//!   replica loading from the socket (`repl-diskless-load on-empty-db`).
//!   Timed from the replica's process start until it reports the link up,
//!   no sync in progress and N keys.
//! - **etcd 3.4**: three members loaded with N keys (transactions of 1000
//!   puts through the JSON gateway), `--snapshot-count 100` so a newcomer
//!   gets a snapshot rather than the log; a learner added with
//!   `member add --learner` and started. Timed from its process start until
//!   its revision (from its metrics port) reaches the leader's.

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::json;
use shoal_bench::etcd::{Etcd, EtcdCluster};
use shoal_bench::procs::{free_port, peak_rss_kib, spawn, time_until, wait, Guard};
use shoal_bench::{key, value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let (n, which) = shoal_bench::args(100_000, "both")?;
    let tmp = tempfile::tempdir()?;
    if which == "redis" || which == "both" {
        println!("{}", redis(n, tmp.path())?);
    }
    if which == "etcd" || which == "both" {
        println!("{}", etcd(n, tmp.path())?);
    }
    Ok(())
}

/// The same values as shoal's runners: one seeded stream per data set.
fn values(n: u64) -> impl Iterator<Item = (String, String)> {
    let mut rng = SmallRng::seed_from_u64(1);
    (0..n).map(move |i| (key(i), value(&mut rng)))
}

// ---- Redis -------------------------------------------------------------

/// One RESP command.
fn resp(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Sends one command and reads one reply (simple, integer or bulk).
fn redis_call(port: u16, args: &[&[u8]]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = Vec::new();
    resp(&mut req, args);
    s.write_all(&req).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    match line.as_bytes().first()? {
        b'$' => {
            let len: usize = line[1..].trim().parse().ok()?;
            let mut body = vec![0u8; len + 2];
            r.read_exact(&mut body).ok()?;
            body.truncate(len);
            String::from_utf8(body).ok()
        }
        _ => Some(line[1..].trim().to_owned()),
    }
}

fn redis_server(port: u16, dir: &Path, extra: &[&str]) -> Result<Guard> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    let g = spawn(&mut cmd, &dir.with_extension("log"))?;
    if !wait(Duration::from_secs(10), || {
        redis_call(port, &[b"PING"]).is_some()
    }) {
        bail!("redis-server on {port} did not answer");
    }
    Ok(g)
}

fn redis(n: u64, tmp: &Path) -> Result<serde_json::Value> {
    let (pp, rp) = (free_port(), free_port());
    let _primary = redis_server(
        pp,
        &tmp.join("redis-primary"),
        &[
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ],
    )?;
    // Load: pipelined SETs, 10k at a time.
    let load = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", pp))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut it = values(n).peekable();
    while it.peek().is_some() {
        let mut req = Vec::new();
        let mut sent = 0;
        for (k, v) in it.by_ref().take(10_000) {
            resp(&mut req, &[b"SET", k.as_bytes(), v.as_bytes()]);
            sent += 1;
        }
        s.write_all(&req)?;
        let mut line = String::new();
        for _ in 0..sent {
            line.clear();
            r.read_line(&mut line)?;
            if line != "+OK\r\n" {
                bail!("SET answered {line:?}");
            }
        }
    }
    let load_s = load.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let replica = redis_server(
        rp,
        &tmp.join("redis-replica"),
        &[
            "--replicaof",
            "127.0.0.1",
            &pp.to_string(),
            "--repl-diskless-load",
            "on-empty-db",
        ],
    )?;
    let sync_s = time_until(t0, Duration::from_secs(600), || {
        let info = redis_call(rp, &[b"INFO", b"replication"]).unwrap_or_default();
        info.contains("master_link_status:up")
            && info.contains("master_sync_in_progress:0")
            && redis_call(rp, &[b"DBSIZE"]).and_then(|d| d.parse::<u64>().ok()) == Some(n)
    })
    .context("the Redis replica did not sync")?
    .as_secs_f64();
    Ok(json!({
        "system": "redis",
        "version": redis_call(pp, &[b"INFO", b"server"])
            .and_then(|i| i.lines().find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))),
        "keys": n,
        "caught_up_s": sync_s,
        "replica_peak_rss_mib": peak_rss_kib(replica.pid()).map(|k| k as f64 / 1024.0),
        "load_s": load_s,
    }))
}

// ---- etcd --------------------------------------------------------------

fn etcd(n: u64, tmp: &Path) -> Result<serde_json::Value> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let dir = tmp.join("etcd");
    std::fs::create_dir_all(&dir)?;
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let EtcdCluster {
        members,
        cluster,
        running: _running,
        version,
    } = EtcdCluster::start(&dir, &c)?;

    // Load: transactions of 1000 puts, four clients over the members.
    let load = Instant::now();
    let mut all = values(n);
    let batches: Vec<Vec<(String, String)>> =
        std::iter::from_fn(|| Some(all.by_ref().take(1000).collect::<Vec<_>>()))
            .take_while(|b| !b.is_empty())
            .collect();
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (batches, members, failed, c) = (&batches, &members, &failed, &c);
            s.spawn(move || {
                for b in batches.iter().skip(t).step_by(4) {
                    let ops: Vec<serde_json::Value> = b
                        .iter()
                        .map(|(k, v)| json!({"requestPut": {"key": B64.encode(k), "value": B64.encode(v)}}))
                        .collect();
                    let ok = c
                        .post(members[t % 3].url("/v3/kv/txn"))
                        .json(&json!({ "success": ops }))
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if failed.into_inner() {
        bail!("etcd refused a load transaction");
    }
    let load_s = load.elapsed().as_secs_f64();
    let target = members
        .iter()
        .filter_map(|m| m.revision(&c))
        .max()
        .context("no revision from the members")?;

    // A learner joins.
    let learner = Etcd::new(4);
    // etcd refuses reconfiguration until its members have been connected
    // for a few seconds ("unhealthy cluster"): retry for a while.
    let mut answer = String::new();
    let added = wait(Duration::from_secs(30), || {
        let r = c
            .post(members[0].url("/v3/cluster/member/add"))
            .json(&json!({"peerURLs": [learner.peer_url()], "isLearner": true}))
            .send();
        match r {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                answer = r.text().unwrap_or_default();
                std::thread::sleep(Duration::from_millis(500));
                false
            }
            Err(e) => {
                answer = e.to_string();
                false
            }
        }
    });
    if !added {
        bail!("member add: {answer}");
    }
    let cluster = format!("{cluster},{}={}", learner.name, learner.peer_url());
    let t0 = Instant::now();
    let running = learner.start(&dir, &cluster, "existing")?;
    let reached = time_until(t0, Duration::from_secs(600), || {
        learner.revision(&c).is_some_and(|r| r >= target)
    })
    .context("the etcd learner did not catch up")?;
    Ok(json!({
        "system": "etcd",
        "version": version,
        "keys": n,
        "caught_up_s": reached.as_secs_f64(),
        "target_revision": target,
        "learner_peak_rss_mib": peak_rss_kib(running.pid()).map(|k| k as f64 / 1024.0),
        "load_s": load_s,
    }))
}
