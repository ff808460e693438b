//! etcd 3.4 members on loopback (Debian's `etcd-server`), for the figures
//! measured beside it.

use crate::procs::{free_port, spawn, wait, Guard};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One member's name and ports.
#[derive(Debug)]
pub struct Etcd {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
}

impl Etcd {
    pub fn new(i: usize) -> Etcd {
        Etcd {
            name: format!("e{i}"),
            client: free_port(),
            peer: free_port(),
            metrics: free_port(),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.client)
    }

    pub fn start(&self, dir: &Path, cluster: &str, state: &str) -> Result<Guard> {
        let c = format!("http://127.0.0.1:{}", self.client);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &self.name])
            .arg("--data-dir")
            .arg(dir.join(&self.name))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args([
                "--initial-cluster",
                cluster,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "shoal-bench"])
            .args(["--snapshot-count", "100", "--max-txn-ops", "1000"])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", self.metrics),
            ]);
        spawn(&mut cmd, &dir.join(format!("{}.log", self.name)))
    }

    /// This member's `/v3/maintenance/status`, if it answers.
    pub fn status(&self, c: &reqwest::blocking::Client) -> Option<serde_json::Value> {
        c.post(self.url("/v3/maintenance/status"))
            .json(&serde_json::json!({}))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// The revision this member's store is at, from its metrics port.
    pub fn revision(&self, c: &reqwest::blocking::Client) -> Option<u64> {
        let text = c
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .send()
            .and_then(|r| r.text())
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_current_revision "))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// Three members started together, healthy.
#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<Etcd>,
    /// The `--initial-cluster` value they were started with.
    pub cluster: String,
    pub running: Vec<Guard>,
    pub version: Option<String>,
}

impl EtcdCluster {
    /// The position in `members` of the leader, as the members say (all
    /// must answer).
    pub fn leader(&self, c: &reqwest::blocking::Client) -> Option<usize> {
        let st: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| m.status(c))
            .collect::<Option<_>>()?;
        let leader = &st.first()?["leader"];
        st.iter().position(|s| s["header"]["member_id"] == *leader)
    }

    pub fn start(dir: &Path, c: &reqwest::blocking::Client) -> Result<EtcdCluster> {
        let members: Vec<Etcd> = (1..=3).map(Etcd::new).collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let _running: Vec<Guard> = members
            .iter()
            .map(|m| m.start(dir, &cluster, "new"))
            .collect::<Result<_>>()?;
        let healthy = wait(Duration::from_secs(60), || {
            members.iter().all(|m| {
                c.get(m.url("/health"))
                    .send()
                    .and_then(|r| r.text())
                    .is_ok_and(|t| t.contains("true"))
            })
        });
        if !healthy {
            bail!("the etcd cluster did not form");
        }
        let version = c
            .get(members[0].url("/version"))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .ok()
            .and_then(|v| v["etcdserver"].as_str().map(str::to_owned));

        Ok(EtcdCluster {
            members,
            cluster,
            running: _running,
            version,
        })
    }
}
