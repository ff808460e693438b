//! shoal processes for the figure runners: started on loopback with a
//! data directory each (their logs beside it, `DIR.log`), asked for their
//! status and metrics over the API, killed by PID when dropped.

use crate::procs::{free_port, time_until, wait};
use crate::{key, set_commands};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use shoal_log::{DurableLog, HardState, LogConfig};
use shoal_model::Term;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Node {
    pub child: Child,
    pub api: u16,
    pub p2p: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the nodes' APIs. A node closes a kept-alive
/// connection after 10 s idle (`ServeLimits::header_timeout`); a client
/// that reuses one at that moment gets an error for a request the node
/// never read. Idle connections are dropped here well before that.
pub fn client(timeout: Duration) -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?)
}

/// The API token every node of the benchmark cluster is started with.
pub const TOKEN: &str = "catchup-benchmark-token";

pub fn start(bin: &Path, dir: &Path, peer: Option<u16>, extra: &[&str]) -> Result<Node> {
    start_at(bin, dir, peer, extra, (free_port(), free_port()))
}

/// As `start`, at the lowest CPU priority, every thread of it (`nice`
/// starts it): a stand-in for a process on a host of its own. With
/// `cpus` (a `taskset` list, e.g. "1") it runs on those CPUs only; with
/// `idle` under the SCHED_IDLE policy (`chrt --idle`), which runs only
/// when nothing else wants the CPU, a closer stand-in still.
pub fn start_niced(
    bin: &Path,
    dir: &Path,
    peer: Option<u16>,
    extra: &[&str],
    cpus: Option<&str>,
    idle: bool,
) -> Result<Node> {
    let mut wrap: Vec<&str> = Vec::new();
    if let Some(cpus) = cpus {
        wrap.extend(["taskset", "-c", cpus]);
    }
    if idle {
        wrap.extend(["chrt", "--idle", "0"]);
    }
    wrap.extend(["nice", "-n", "19"]);
    let mut cmd = Command::new(wrap[0]);
    cmd.args(&wrap[1..]).arg(bin);
    launch(cmd, bin, dir, peer, extra, (free_port(), free_port()))
}

/// Starts a node on the given API and peer ports.
pub fn start_at(
    bin: &Path,
    dir: &Path,
    peer: Option<u16>,
    extra: &[&str],
    ports: (u16, u16),
) -> Result<Node> {
    launch(Command::new(bin), bin, dir, peer, extra, ports)
}

/// `cmd` (the binary, or a wrapper of it) with `shoal up`'s arguments.
fn launch(
    mut cmd: Command,
    bin: &Path,
    dir: &Path,
    peer: Option<u16>,
    extra: &[&str],
    (api, p2p): (u16, u16),
) -> Result<Node> {
    let token_file = dir.with_extension("token");
    std::fs::write(&token_file, TOKEN)?;
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
        .env(
            "SHOAL_LOG",
            std::env::var("SHOAL_LOG")
                .unwrap_or_else(|_| "info,libp2p=warn,libp2p_gossipsub=error".into()),
        )
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

pub fn status(c: &reqwest::blocking::Client, api: u16) -> Option<Value> {
    c.get(format!("http://127.0.0.1:{api}/v1/status"))
        .send()
        .ok()?
        .json()
        .ok()
}

pub fn metrics_text(c: &reqwest::blocking::Client, api: u16) -> String {
    c.get(format!("http://127.0.0.1:{api}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

pub fn metric(c: &reqwest::blocking::Client, api: u16, name: &str) -> f64 {
    metrics_text(c, api)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Histogram `name` on one node, as its cumulative buckets: (upper
/// bound in seconds, observations at or below it), lowest bound first,
/// `+Inf` last.
pub fn histogram(c: &reqwest::blocking::Client, api: u16, name: &str) -> Vec<(f64, f64)> {
    let text = metrics_text(c, api);
    let bucket = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&bucket)?;
            let le = rest.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Observations of histogram `name` on one node, in all and above the
/// largest bucket bound at or below `secs`.
pub fn histogram_above(
    c: &reqwest::blocking::Client,
    api: u16,
    name: &str,
    secs: f64,
) -> (f64, f64) {
    let h = histogram(c, api, name);
    let count = h.last().map_or(0.0, |b| b.1);
    let within = h.iter().rev().find(|b| b.0 <= secs).map_or(0.0, |b| b.1);
    (count, count - within)
}

/// The `q` quantile of what a histogram observed between two readings of
/// it (`histogram`), interpolated linearly within its bucket, as
/// Prometheus's `histogram_quantile` does: with buckets a factor of two
/// apart, an estimate, not a measurement. None when nothing was observed
/// or the quantile falls in the `+Inf` bucket.
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let was = |le: f64| before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
    let delta: Vec<(f64, f64)> = after.iter().map(|&(le, n)| (le, n - was(le))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return None;
            }
            let share = if n > below.1 {
                (rank - below.1) / (n - below.1)
            } else {
                1.0
            };
            return Some(below.0 + (le - below.0) * share);
        }
        below = (le, n);
    }
    None
}

/// True when every node reports the same applied index (at its commit
/// index) and state hash.
pub fn agreed(c: &reqwest::blocking::Client, apis: &[u16]) -> bool {
    let st: Option<Vec<Value>> = apis.iter().map(|a| status(c, *a)).collect();
    st.is_some_and(|st| {
        st.iter().all(|s| {
            s["applied_index"] == st[0]["applied_index"]
                && s["applied_index"] == s["commit_index"]
                && s["state_hash"] == st[0]["state_hash"]
        })
    })
}

/// The binary the runners start: `$SHOAL_BIN`, or the release build.
pub fn shoal_bin() -> Result<std::path::PathBuf> {
    let bin = std::env::var("SHOAL_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| "target/release/shoal".into());
    if !bin.exists() {
        anyhow::bail!(
            "{} not found: cargo build --release -p shoal (or set SHOAL_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// True once three of `nodes` are voters, one of them the master.
pub fn formed(c: &reqwest::blocking::Client, nodes: &[&Node]) -> bool {
    nodes
        .iter()
        .filter(|n| status(c, n.api).is_some_and(|s| s["role"] == "master" || s["role"] == "voter"))
        .count()
        == 3
}

/// True once the node with data directory `dir` has a snapshot on disk
/// (a `.snap` file, not the `.snap.tmp` it is written as).
pub fn has_saved_snapshot(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("snapshots")).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".snap"))
    })
}

/// `n` nodes on loopback under `root` (`n1`, `n2`, ...), the first alone
/// and the rest pointed at it, started and waited for until three are
/// voters and all agree.
pub fn cluster(
    c: &reqwest::blocking::Client,
    bin: &Path,
    root: &Path,
    n: usize,
    extra: &[&str],
) -> Result<Vec<Node>> {
    std::fs::create_dir_all(root)?;
    let first = start(bin, &root.join("n1"), None, extra)?;
    let peer = first.p2p;
    let mut nodes = vec![first];
    for i in 2..=n {
        nodes.push(start(bin, &root.join(format!("n{i}")), Some(peer), extra)?);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let ok = crate::procs::wait(std::time::Duration::from_secs(120), || {
        formed(c, &refs) && agreed(c, &apis)
    });
    if !ok {
        anyhow::bail!("the shoal cluster did not form");
    }
    Ok(nodes)
}

/// A founder holding `n` set commands, as `n` single writes would have
/// left them: founded, stopped, its log extended on disk with `n`
/// committed entries of its term (one command id each, stamped now), and
/// started again. Returns it with the seconds its restart took, from
/// process start until it serves a read of the last key.
pub fn preloaded(
    bin: &Path,
    c: &reqwest::blocking::Client,
    dir: &Path,
    n: u64,
    extra: &[&str],
) -> Result<(Node, f64)> {
    let mut node = start(bin, dir, None, extra)?;
    if !wait(Duration::from_secs(60), || {
        status(c, node.api).is_some_and(|s| s["role"] == "master")
    }) {
        bail!("the founder did not become master");
    }
    let pid = node.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    node.child.wait()?;

    let (mut log, _) = DurableLog::open(&dir.join("log"), LogConfig::default())?;
    let hs = log.hard_state();
    let from = log.last_index().0 + 1;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    for start_key in (0..n).step_by(100_000) {
        let keys = start_key..(start_key + 100_000).min(n);
        let entries: Vec<_> = set_commands(from + start_key, Term(hs.term), now_ms, keys).collect();
        log.append(&entries)?;
    }
    log.set_hard_state(HardState {
        commit: from + n - 1,
        ..hs
    })?;
    log.sync()?;
    drop(log);

    let t0 = Instant::now();
    let node = start_at(bin, dir, None, extra, (node.api, node.p2p))?;
    let last = format!("http://127.0.0.1:{}/v1/kv/{}", node.api, key(n - 1));
    let restart = time_until(t0, Duration::from_secs(600), || {
        c.get(&last).send().is_ok_and(|r| r.status().is_success())
    })
    .context("the preloaded founder did not serve reads")?;
    Ok((node, restart.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn a_quantile_is_read_from_what_was_observed_between_two_readings() {
        // Before: 100 fast observations. Between: 10 in (1, 2] ms and 90 in
        // (2, 4] ms; the earlier ones must not pull the quantile down.
        let before = [(0.001, 100.0), (0.002, 100.0), (0.004, 100.0), (INF, 100.0)];
        let after = [(0.001, 100.0), (0.002, 110.0), (0.004, 200.0), (INF, 200.0)];
        // The 50th of 100 is the 40th of the 90 in (2, 4] ms.
        let p50 = histogram_quantile(&before, &after, 0.5).unwrap();
        assert!((p50 - (0.002 + 0.002 * 40.0 / 90.0)).abs() < 1e-12, "{p50}");
        let p05 = histogram_quantile(&before, &after, 0.05).unwrap();
        assert!((p05 - (0.001 + 0.001 * 0.5)).abs() < 1e-12, "{p05}");
    }

    #[test]
    fn no_quantile_without_observations_or_past_the_last_bound() {
        let h = [(0.001, 5.0), (INF, 5.0)];
        assert_eq!(histogram_quantile(&h, &h, 0.99), None);
        let slow = [(0.001, 5.0), (INF, 10.0)];
        assert_eq!(histogram_quantile(&h, &slow, 0.99), None);
        assert!(histogram_quantile(&[], &slow, 0.1).is_some_and(|x| x <= 0.001));
    }
}
