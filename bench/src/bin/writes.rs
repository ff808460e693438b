//! Committed single-key writes through HTTP, shoal beside etcd in one run:
//! three members of each on loopback, one `wrk` run per system and target
//! (the leader, then a follower), each request a fresh key with a 100-byte
//! value. Prints one JSON object per run, then the ratios shoal / etcd.
//!
//! ```text
//! bench/peers/setup.sh                          # Debian's etcd-server and wrk (root)
//! cargo build --release -p shoal -p shoal-bench
//! target/release/writes [SECONDS] [CONNECTIONS] [shoal|etcd|both]
//!                                               # default 20 s, 64 connections, both
//! ```
//!
//! shoal: `PUT /v1/kv/KEY` (`bench/peers/wrk/put-shoal.lua`). etcd 3.4:
//! `POST /v3/kv/put` through its JSON gateway (`put-etcd.lua`). wrk runs
//! with 2 threads and `--latency`; a run whose requests were refused or
//! failed says so (`non_2xx`, `socket_errors`).
//!
//! Then, per system: consistent reads of one key on the leader and a
//! follower (shoal: `GET /v1/kv/KEY?consistent=true`; etcd: a
//! linearizable `POST /v3/kv/range`), `reads_per_s`; for shoal, a steady
//! 1k writes/s on the master from 64 clients and their latency
//! (`paced_per_s`); last, batch writes of 1000 fresh keys on the leader
//! (shoal: `POST /v1/txn`; etcd: a Txn of 1000 puts) from 8 clients,
//! `ops_per_s` (after the paced writes, so that those are not measured
//! while the cluster digests millions of keys).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use shoal_bench::batch::{self, System};
use shoal_bench::etcd::EtcdCluster;
use shoal_bench::load::{percentile_ms, Load};
use shoal_bench::nodes::{self, metric, shoal_bin, status, Node, TOKEN};
use std::process::Command;
use std::time::{Duration, Instant};

/// The steady rate whose latency is reported.
const PACED_PER_S: u32 = 1000;
/// Sets per batch write (etcd is started with `--max-txn-ops 1000`).
const BATCH_OPS: usize = 1000;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let conns: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let which = args.next().unwrap_or_else(|| "both".into());
    let c = shoal_bench::nodes::client(Duration::from_secs(30))?;
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();

    if which != "etcd" {
        let bin = shoal_bin()?;
        let cluster = nodes::cluster(&c, &bin, tmp.path(), 3, &[])?;
        let nodes: Vec<&Node> = cluster.iter().collect();
        let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
        // Each node's role, asked once.
        let (masters, others): (Vec<&Node>, Vec<&Node>) = nodes
            .iter()
            .partition(|n| status(&c, n.api).is_some_and(|s| s["role"] == "master"));
        let master = *masters.first().context("no master")?;
        let master_url = format!("http://127.0.0.1:{}", master.api);
        let follower = *others.first().context("no follower")?;
        // Summed over the three nodes, to say what one write costs.
        let sum = |name: &str| -> f64 { apis.iter().map(|a| metric(&c, *a, name)).sum() };
        let counted = [
            "shoal_net_messages_sent_total",
            "shoal_net_gossip_received_total",
        ];
        for (target, node) in [("leader", master), ("follower", follower)] {
            let url = format!("http://127.0.0.1:{}", node.api);
            let before: Vec<f64> = counted.iter().map(|m| sum(m)).collect();
            let applied = metric(&c, node.api, "shoal_events_applied_total");
            let mut run = wrk(
                "put-shoal.lua",
                &url,
                secs,
                conns,
                &[("SHOAL_TOKEN", TOKEN)],
            )?;
            let writes = (metric(&c, node.api, "shoal_events_applied_total") - applied).max(1.0);
            for (m, b) in counted.iter().zip(before) {
                let per = (sum(m) - b) / writes;
                let name = m.trim_start_matches("shoal_").trim_end_matches("_total");
                run[format!("{name}_per_write")] = json!((per * 100.0).round() / 100.0);
            }
            let r = row("shoal", target, run);
            println!("{r}");
            rows.push(r);
        }
        let set = c
            .put(format!("{master_url}/v1/kv/read-key"))
            .bearer_auth(TOKEN)
            .body("v".repeat(100))
            .send()?;
        if !set.status().is_success() {
            bail!("read-key not set: {}", set.status());
        }
        for (target, node) in [("leader", master), ("follower", follower)] {
            let url = format!("http://127.0.0.1:{}", node.api);
            let r = reads(row(
                "shoal",
                target,
                wrk("get-shoal.lua", &url, secs, conns, &[])?,
            ));
            println!("{r}");
            rows.push(r);
        }
        // Latency at a steady 1k writes/s on the master, the first second
        // left out.
        let load = Load::start(master.api, PACED_PER_S);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs.max(2)));
        let end = Instant::now();
        let w = load.stop();
        let from = t0 + Duration::from_secs(1);
        let (p50, n) = percentile_ms(&w, from, end, 0.5);
        let (p99, _) = percentile_ms(&w, from, end, 0.99);
        let paced = json!({
            "system": "shoal",
            "target": "leader",
            "paced_per_s": PACED_PER_S,
            "writes": n,
            "achieved_per_s": n as f64 / (end - from).as_secs_f64(),
            "p50_ms": p50,
            "p99_ms": p99,
        });
        println!("{paced}");
        rows.push(paced);
        let r = row(
            "shoal",
            "leader",
            batch::run(System::Shoal, &master_url, BATCH_OPS, secs),
        );
        println!("{r}");
        rows.push(r);
    }

    if which != "shoal" {
        let dir = tmp.path().join("etcd");
        std::fs::create_dir_all(&dir)?;
        let etcd = EtcdCluster::start(&dir, &c)?;
        let leader = etcd.leader(&c).context("no etcd leader")?;
        let follower = (leader + 1) % etcd.members.len();
        let targets = [
            ("leader", &etcd.members[leader]),
            ("follower", &etcd.members[follower]),
        ];
        for (target, m) in targets {
            let run = wrk("put-etcd.lua", &m.url(""), secs, conns, &[])?;
            let mut r = row("etcd", target, run);
            r["version"] = json!(etcd.version);
            println!("{r}");
            rows.push(r);
        }
        let put = json!({"key": "cmVhZC1rZXk=", "value": "dg=="});
        c.post(targets[0].1.url("/v3/kv/put")).json(&put).send()?;
        for (target, m) in targets {
            let r = reads(row(
                "etcd",
                target,
                wrk("get-etcd.lua", &m.url(""), secs, conns, &[])?,
            ));
            println!("{r}");
            rows.push(r);
        }
        let leader = targets[0].1;
        let r = row(
            "etcd",
            "leader",
            batch::run(System::Etcd, &leader.url(""), BATCH_OPS, secs),
        );
        println!("{r}");
        rows.push(r);
    }

    for (target, figure) in [
        ("leader", "writes_per_s"),
        ("follower", "writes_per_s"),
        ("leader", "ops_per_s"),
        ("leader", "reads_per_s"),
        ("follower", "reads_per_s"),
    ] {
        let get = |sys: &str| {
            rows.iter()
                .filter(|r| r["system"] == sys && r["target"] == target)
                .find_map(|r| r[figure].as_f64())
        };
        if let (Some(s), Some(e)) = (get("shoal"), get("etcd")) {
            println!(
                "{}",
                json!({"ratio": "shoal/etcd", "target": target, figure: (s / e * 100.0).round() / 100.0})
            );
        }
    }
    Ok(())
}

/// A wrk run of reads: its rate named as such.
fn reads(mut run: Value) -> Value {
    if let Some(per_s) = run.as_object_mut().and_then(|o| o.remove("writes_per_s")) {
        run["reads_per_s"] = per_s;
    }
    run
}

fn row(system: &str, target: &str, mut run: Value) -> Value {
    run["system"] = json!(system);
    run["target"] = json!(target);
    run
}

/// Runs wrk with one of `bench/peers/wrk/`'s scripts and reads its report.
fn wrk(script: &str, url: &str, secs: u64, conns: u32, env: &[(&str, &str)]) -> Result<Value> {
    let path = format!("bench/peers/wrk/{script}");
    if !std::path::Path::new(&path).exists() {
        bail!("{path} not found: run from the repository's root");
    }
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .args(["-s", &path, url])
        .envs(env.iter().copied())
        .output()
        .context("wrk (bench/peers/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unreadable wrk report:\n{text}"))
}

/// The figures of a wrk report: requests/s, the latency percentiles (ms),
/// refused and failed requests.
fn parse_wrk(text: &str) -> Option<Value> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let per_s: f64 = field("Requests/sec:")?.parse().ok()?;
    let pct = |p: &str| field(&format!("{p}%")).and_then(|v| millis(&v));
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket_errors = field("Socket errors:").unwrap_or_default();
    Some(json!({
        "writes_per_s": per_s,
        "p50_ms": pct("50")?,
        "p90_ms": pct("90")?,
        "p99_ms": pct("99")?,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
    }))
}

/// wrk's durations (`812.00us`, `1.23ms`, `1.02s`) in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_is_read() {
        let text = "Running 20s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n  Latency Distribution\n     50%   27.61ms\n     75%   35.12ms\n     90%   45.00ms\n     99%    1.02s\n  40000 requests in 20.00s, 5.00MB read\n  Socket errors: connect 0, read 0, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\nRequests/sec:   2000.50\nTransfer/sec:    256.00KB\n";
        let v = parse_wrk(text).unwrap();
        assert_eq!(v["writes_per_s"], 2000.5);
        assert_eq!(v["p50_ms"], 27.61);
        assert_eq!(v["p99_ms"], 1020.0);
        assert_eq!(v["non_2xx"], 7);
        assert_eq!(v["socket_errors"], "connect 0, read 0, write 0, timeout 3");
        assert_eq!(millis("812.00us"), Some(0.812));
        assert!(parse_wrk("nothing").is_none());
    }
}
