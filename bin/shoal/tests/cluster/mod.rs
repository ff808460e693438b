//! Real `shoal up` processes on loopback, driven through the HTTP API.
//! Every wait is a bounded poll on a condition.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use shoal_testkit::ports::free_port;

pub struct Proc {
    pub name: String,
    pub dir: PathBuf,
    pub p2p: u16,
    pub api: u16,
    pub extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn new(root: &Path, name: &str, extra: Vec<String>) -> Proc {
        Proc {
            name: name.into(),
            log: root.join(format!("{name}.log")),
            dir: root.join(name),
            p2p: free_port(),
            api: free_port(),
            extra,
            child: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.p2p)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("up")
            .arg("--data-dir")
            .arg(&self.dir)
            .args([
                "--listen",
                &self.addr(),
                "--api",
                &format!("127.0.0.1:{}", self.api),
                "--no-mdns",
            ])
            .args(&self.extra)
            .env("SHOAL_LOG", "info,libp2p=warn,libp2p_gossipsub=error")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal");
        self.child = Some(child);
    }

    /// kill -9, by PID.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 by PID without giving up the handle (it is reaped later).
    pub fn sigkill(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-9", &c.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, by PID, and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Whether the process is still running (false once it exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        let r = client().get(self.url(path)).send().ok()?;
        r.json().ok()
    }

    pub fn status(&self) -> Option<Value> {
        self.get("/v1/status")
    }

    /// A counter or gauge from /metrics (`shoal_` left off), 0 if absent.
    pub fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("shoal_{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The node's API token (generated into its data directory).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// (HTTP status, body) of a write carrying this node's token.
    pub fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut r = client()
            .request(method, self.url(path))
            .bearer_auth(self.token());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b.to_owned());
        }
        match r.send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// (HTTP status, body) of an increment.
    pub fn incr(&self, key: &str) -> (u16, Value) {
        self.write(
            reqwest::Method::POST,
            &format!("/v1/kv/{key}/incr"),
            None,
            &[],
        )
    }

    /// (HTTP status, body) of one increment, retried (under one
    /// idempotency key, so it counts once) while the node answers that it
    /// has no master or no quorum yet, for at most `limit`: for writes
    /// right after the membership changed.
    pub fn incr_when_ready(&self, key: &str, limit: Duration) -> (u16, Value) {
        let idem = format!("{key}-{}", std::process::id());
        let path = format!("/v1/kv/{key}/incr");
        let deadline = Instant::now() + limit;
        loop {
            let (code, body) = self.write(
                reqwest::Method::POST,
                &path,
                None,
                &[("Idempotency-Key", &idem)],
            );
            if !matches!(code, 0 | 503) || Instant::now() >= deadline {
                return (code, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn set(&self, key: &str, value: &str) -> (u16, Value) {
        self.write(
            reqwest::Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(value),
            &[],
        )
    }

    /// Runs the CLI against this node, with its token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        // Options go before a `--` that starts a command to run.
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args[..split])
            .arg("--api")
            .arg(self.url(""))
            .arg("--token-dir")
            .arg(&self.dir)
            .args(&args[split..])
            .env_remove("SHOAL_TOKEN")
            .env_remove("SHOAL_API")
            .output()
            .expect("run the shoal CLI")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

pub fn field(v: &Option<Value>, name: &str) -> Value {
    v.as_ref().map(|v| v[name].clone()).unwrap_or(Value::Null)
}

/// `n` nodes started as `cluster` does, once they agree.
pub fn agreed_cluster(root: &Path, n: usize) -> Vec<Proc> {
    let procs = cluster(root, n, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, Duration::from_secs(30), "formation");
    procs
}

/// A CLI run's standard output, trimmed.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Starts `n` nodes: the first alone, the rest pointed at it.
pub fn cluster(root: &Path, n: usize, extra: &[&str]) -> Vec<Proc> {
    cluster_with(root, &vec![extra; n])
}

/// Starts a node per entry of `flags`, with those flags: the first alone,
/// the rest pointed at it.
pub fn cluster_with(root: &Path, flags: &[&[&str]]) -> Vec<Proc> {
    let mut procs: Vec<Proc> = flags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let extra = f.iter().map(|s| s.to_string()).collect();
            Proc::new(root, &format!("n{}", i + 1), extra)
        })
        .collect();
    let seed = procs[0].addr();
    for p in procs.iter_mut().skip(1) {
        p.extra.extend(["--peer".to_string(), seed.clone()]);
    }
    for p in procs.iter_mut() {
        p.start();
    }
    procs
}

/// One node, started alone, once it is its cluster's master.
pub fn lone_master(root: &Path, extra: &[&str]) -> Vec<Proc> {
    let procs = cluster(root, 1, extra);
    let ok = wait_for(Duration::from_secs(20), || {
        procs[0].status().is_some_and(|s| s["role"] == "master")
    });
    assert!(ok, "a lone node becomes master:\n{}", procs[0].log());
    procs
}

/// True when every listed node reports the same master, applied index and
/// state hash, with the applied index at the commit index.
pub fn agreed(procs: &[&Proc]) -> bool {
    let st: Vec<Option<Value>> = procs.iter().map(|p| p.status()).collect();
    if st.iter().any(|s| s.is_none()) {
        return false;
    }
    let first = &st[0];
    st.iter().all(|s| {
        field(s, "master_id") == field(first, "master_id")
            && !field(s, "master_id").is_null()
            && field(s, "applied_index") == field(first, "applied_index")
            && field(s, "state_hash") == field(first, "state_hash")
            && field(s, "applied_index") == field(s, "commit_index")
    })
}

/// Waits for the cluster to agree, or panics with every node's status and
/// the tail of its log.
pub fn expect_agreed(procs: &[&Proc], limit: Duration, what: &str) {
    if wait_for(limit, || agreed(procs)) {
        return;
    }
    let mut report = String::new();
    for p in procs {
        let log = p.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        report.push_str(&format!(
            "\n--- {}: {:?}\n{}",
            p.name,
            p.status(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    panic!("{what}: no agreement within {limit:?}{report}");
}

/// Waits until the cluster has `n` voters (the master included).
pub fn expect_voters(procs: &[Proc], n: usize) {
    let ok = wait_for(Duration::from_secs(30), || {
        procs
            .iter()
            .filter(|p| {
                p.status()
                    .is_some_and(|s| s["role"] == "master" || s["role"] == "voter")
            })
            .count()
            == n
    });
    let roles: Vec<Value> = procs.iter().map(|p| field(&p.status(), "role")).collect();
    assert!(ok, "{n} voters expected: {roles:?}");
}

/// The node each task went to, as `p` lists the tasks (empty for a task
/// not placed).
pub fn task_nodes(p: &Proc) -> Vec<String> {
    let tasks = p.get("/v1/tasks").unwrap_or_default();
    let list = tasks["tasks"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|t| t["node"].as_str().unwrap_or("").to_owned())
        .collect()
}
