//! Failover beside etcd: three members of each on loopback; K times, the
//! leader is killed with SIGKILL and a client writes through another
//! member, a fresh key per request, a new request every 10 ms. The figure
//! is the time from the kill until the first write answered as committed;
//! then the killed member is started again on its data and the cluster
//! settles before the next kill. Prints one JSON object per system (each
//! kill's time, p50, p99, max), then the ratio.
//!
//! ```text
//! cargo build --release -p shoal -p shoal-bench
//! target/release/failover [KILLS] [shoal|etcd|both]      # default 20, both
//! ```

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use shoal_bench::etcd::EtcdCluster;
use shoal_bench::nodes::{self, agreed, shoal_bin, start_at, status, TOKEN};
use shoal_bench::procs::wait;
use shoal_bench::quantile;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A kill after which no write commits within this counts as a failure.
const GIVE_UP: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let kills: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let which = args.next().unwrap_or_else(|| "both".into());
    let c = shoal_bench::nodes::client(Duration::from_secs(5))?;
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    if which != "etcd" {
        let r = shoal(&c, tmp.path(), kills)?;
        println!("{r}");
        rows.push(r);
    }
    if which != "shoal" {
        let r = etcd(&c, tmp.path(), kills)?;
        println!("{r}");
        rows.push(r);
    }
    if let [s, e] = &rows[..] {
        let ratio = |k: &str| match (s[k].as_f64(), e[k].as_f64()) {
            (Some(a), Some(b)) => json!((a / b * 100.0).round() / 100.0),
            _ => Value::Null,
        };
        println!(
            "{}",
            json!({"ratio": "shoal/etcd", "p50_s": ratio("p50_s"), "p99_s": ratio("p99_s")})
        );
    }
    Ok(())
}

/// Writes through `request` (a fresh key each) from the kill at `t0`, a
/// new one every 10 ms, each on its own thread so that one stuck with the
/// dead leader holds up nothing, until one is answered as committed: how
/// long after the kill that was.
fn first_write(t0: Instant, request: impl Fn(u64) -> RequestBuilder) -> Option<f64> {
    let first: Mutex<Option<f64>> = Mutex::new(None);
    let done = || first.lock().map(|f| f.is_some()).unwrap_or(true);
    std::thread::scope(|s| {
        let mut i = 0;
        while !done() && t0.elapsed() < GIVE_UP {
            i += 1;
            let req = request(i);
            let first = &first;
            s.spawn(move || {
                if req.send().is_ok_and(|r| r.status().is_success()) {
                    if let Ok(mut f) = first.lock() {
                        f.get_or_insert(t0.elapsed().as_secs_f64());
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    first.into_inner().ok().flatten()
}

fn summary(system: &str, times: &[Option<f64>]) -> Value {
    let mut ok: Vec<f64> = times.iter().flatten().copied().collect();
    let (p50, p99) = (quantile(&mut ok, 0.5), quantile(&mut ok, 0.99));
    json!({
        "system": system,
        "kills": times.len(),
        "no_write_within_30s": times.iter().filter(|t| t.is_none()).count(),
        "p50_s": p50,
        "p99_s": p99,
        "max_s": ok.last(),
        "each_s": times,
    })
}

fn shoal(c: &Client, root: &std::path::Path, kills: usize) -> Result<Value> {
    let bin = shoal_bin()?;
    let root = root.join("shoal");
    let mut nodes = nodes::cluster(c, &bin, &root, 3, &[])?;
    let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let mut times = Vec::new();
    for k in 0..kills {
        let mut leader = None;
        wait(Duration::from_secs(30), || {
            leader = apis
                .iter()
                .position(|a| status(c, *a).is_some_and(|s| s["role"] == "master"));
            leader.is_some()
        });
        let leader = leader.context("no master")?;
        let via = apis[(leader + 1 + k % 2) % apis.len()];
        let t0 = Instant::now();
        let node = &mut nodes[leader];
        node.child.kill()?;
        node.child.wait()?;
        let took = first_write(t0, |i| {
            c.put(format!("http://127.0.0.1:{via}/v1/kv/failover-{k}-{i}"))
                .bearer_auth(TOKEN)
                .body("v")
        });
        eprintln!("shoal kill {k}: first write after {took:?} s");
        times.push(took);
        let (api, p2p) = (nodes[leader].api, nodes[leader].p2p);
        let peer = nodes[(leader + 1) % 3].p2p;
        let dir = root.join(format!("n{}", leader + 1));
        nodes[leader] = start_at(&bin, &dir, Some(peer), &[], (api, p2p))?;
        if !wait(Duration::from_secs(60), || agreed(c, &apis)) {
            bail!("the shoal cluster did not settle after kill {k}");
        }
    }
    Ok(summary("shoal", &times))
}

fn etcd(c: &Client, root: &std::path::Path, kills: usize) -> Result<Value> {
    let dir = root.join("etcd");
    std::fs::create_dir_all(&dir)?;
    let mut etcd = EtcdCluster::start(&dir, c)?;
    let mut times = Vec::new();
    for k in 0..kills {
        let leader = etcd.leader(c).context("no etcd leader")?;
        let via = (leader + 1 + k % 2) % etcd.members.len();
        let url = etcd.members[via].url("/v3/kv/put");
        let t0 = Instant::now();
        let guard = &mut etcd.running[leader];
        guard.0.kill()?;
        guard.0.wait()?;
        let took = first_write(t0, |i| {
            let key = base64_key(&format!("failover-{k}-{i}"));
            c.post(&url).json(&json!({"key": key, "value": "dg=="}))
        });
        eprintln!("etcd kill {k}: first write after {took:?} s");
        times.push(took);
        let m = &etcd.members[leader];
        etcd.running[leader] = m.start(&dir, &etcd.cluster, "existing")?;
        let healthy = wait(Duration::from_secs(60), || etcd.leader(c).is_some());
        if !healthy {
            bail!("the etcd cluster did not settle after kill {k}");
        }
    }
    Ok(summary("etcd", &times))
}

fn base64_key(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
