//! The namespaced cluster as the checker sees it: each host's API at
//! `SUBNET.i:4101`, its process, and what its status says.

use super::{Args, SUBNET};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub token: String,
}

impl Api {
    pub fn url(i: usize, path: &str) -> String {
        format!("http://{SUBNET}.{i}:4101{path}")
    }

    pub fn get(&self, i: usize, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(Self::url(i, path))
            .bearer_auth(&self.token)
            .send()
            .ok()?;
        r.json().ok()
    }

    /// (status, body); status 0 when the node could not be reached.
    pub fn post(&self, i: usize, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(Self::url(i, path))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }
}

pub fn script(a: &Args, name: &str, args: &[&str]) {
    let ok = Command::new(a.scripts.join(name))
        .args(args)
        .env("CHAOS_DIR", &a.dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("chaos: {name} {args:?} failed");
    }
}

pub fn pid_of(dir: &Path, i: usize) -> Option<u32> {
    std::fs::read_to_string(dir.join(format!("h{i}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every host's status, asked of all at once: asked in turn, one host
/// slow to answer (back from a partition, or busy) would hold up the
/// others' answers, and a round of fifty would take seconds.
fn statuses(api: &Api, hosts: &[usize]) -> Vec<Option<Value>> {
    std::thread::scope(|s| {
        let asked: Vec<_> = (hosts.iter())
            .map(|i| s.spawn(move || api.get(*i, "/v1/status")))
            .collect();
        asked.into_iter().map(|h| h.join().ok().flatten()).collect()
    })
}

/// Every host's status answers, each with the master the first names:
/// the statuses.
fn one_master(api: &Api, hosts: &[usize]) -> Option<Vec<Value>> {
    let st: Vec<Value> = statuses(api, hosts).into_iter().collect::<Option<_>>()?;
    let master = &st.first()?["master_id"];
    st.iter()
        .all(|s| !master.is_null() && s["master_id"] == *master)
        .then_some(st)
}

/// Everyone answers with one master, index and hash, applied = commit.
pub fn converged(api: &Api, hosts: &[usize]) -> bool {
    one_master(api, hosts).is_some_and(|st| {
        st.iter().all(|s| {
            s["applied_index"] == st[0]["applied_index"]
                && s["applied_index"] == s["commit_index"]
                && s["state_hash"] == st[0]["state_hash"]
        })
    })
}

/// Under load: every node answers, agrees on the master, and has applied
/// at least `target` (the highest commit any node knew when asked).
pub fn caught_up(api: &Api, hosts: &[usize], target: u64) -> bool {
    one_master(api, hosts).is_some_and(|st| {
        st.iter()
            .all(|s| s["applied_index"].as_u64().unwrap_or(0) >= target)
    })
}

pub fn max_commit(api: &Api, hosts: &[usize]) -> u64 {
    statuses(api, hosts)
        .into_iter()
        .flatten()
        .filter_map(|s| s["commit_index"].as_u64())
        .max()
        .unwrap_or(0)
}

pub fn wait(limit: Duration, f: impl FnMut() -> bool) -> Option<Duration> {
    wait_every(limit, Duration::from_millis(20), f)
}

/// `wait` for a check that asks every one of `hosts` (`statuses`): a
/// round every 20 ms per five hosts, so that each node is asked about as
/// often whatever the cluster's size (fifty nodes share this machine's
/// cores with the checker).
pub fn wait_rounds(limit: Duration, hosts: usize, f: impl FnMut() -> bool) -> Option<Duration> {
    let every = Duration::from_millis(20 * (hosts as u64 / 5).max(1));
    wait_every(limit, every, f)
}

/// `procs::wait_every`, and how long `f` took to hold.
fn wait_every(limit: Duration, every: Duration, f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    shoal_bench::procs::wait_every(limit, every, f).then(|| t.elapsed())
}

pub fn master_host(api: &Api, hosts: &[usize]) -> Option<usize> {
    let id = hosts
        .iter()
        .find_map(|i| api.get(*i, "/v1/status").map(|s| s["master_id"].clone()))?;
    hosts.iter().copied().find(|i| {
        api.get(*i, "/v1/status")
            .is_some_and(|s| s["node_id"] == id && !id.is_null())
    })
}

pub fn node_id(api: &Api, i: usize) -> Option<String> {
    api.get(i, "/v1/status")?["node_id"]
        .as_str()
        .map(str::to_owned)
}
