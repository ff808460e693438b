//! mDNS discovery between two hosts. mDNS does not announce on loopback, so
//! the two hosts are network namespaces this test creates (joined by a veth
//! pair) and removes. Needs root and `ip`; skipped cleanly without them.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Netns {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ns(ns: &str, args: &[&str]) -> bool {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    ip(&all)
}

fn status(ns: &str) -> Option<Value> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_shoal"),
            "status",
            "--json",
            "--api",
            "http://127.0.0.1:4101",
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn two_hosts_find_each_other_by_mdns() {
    let tag = std::process::id();
    let names = vec![format!("shoal-mdns-{tag}-a"), format!("shoal-mdns-{tag}-b")];
    let mut env = Netns {
        names: vec![],
        children: vec![],
    };
    for n in &names {
        if !ip(&["netns", "add", n]) {
            eprintln!("skipped: cannot create network namespaces here (needs root and iproute2)");
            return;
        }
        env.names.push(n.clone());
    }
    let (va, vb) = (format!("sa{tag}"), format!("sb{tag}"));
    let (va, vb) = (&va[..va.len().min(15)], &vb[..vb.len().min(15)]);
    assert!(ip(&["link", "add", va, "type", "veth", "peer", "name", vb]));
    assert!(ip(&["link", "set", va, "netns", &names[0]]));
    assert!(ip(&["link", "set", vb, "netns", &names[1]]));
    for (ns, dev, addr) in [
        (&names[0], va, "10.231.7.1/24"),
        (&names[1], vb, "10.231.7.2/24"),
    ] {
        assert!(in_ns(ns, &["ip", "link", "set", "lo", "up"]));
        assert!(in_ns(ns, &["ip", "addr", "add", addr, "dev", dev]));
        assert!(in_ns(ns, &["ip", "link", "set", dev, "up"]));
    }
    let tmp = tempfile::tempdir().unwrap();
    for (i, ns) in names.iter().enumerate() {
        let dir = tmp.path().join(format!("host{i}"));
        let log = std::fs::File::create(tmp.path().join(format!("host{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_shoal"),
                "up",
                "--data-dir",
            ])
            .arg(&dir)
            .args([
                "--listen",
                "/ip4/0.0.0.0/tcp/4100",
                "--api",
                "127.0.0.1:4101",
            ])
            .env("SHOAL_LOG", "info,libp2p=warn,libp2p_gossipsub=error")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        env.children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = (None, None);
    while Instant::now() < deadline {
        last = (status(&names[0]), status(&names[1]));
        if let (Some(a), Some(b)) = &last {
            let joined = a["cluster_id"] == b["cluster_id"] && !a["cluster_id"].is_null();
            let peers = a["peers"].as_array().is_some_and(|p| p.len() == 1)
                && b["peers"].as_array().is_some_and(|p| p.len() == 1);
            if joined
                && peers
                && a["master_id"] == b["master_id"]
                && a["state_hash"] == b["state_hash"]
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = (0..2)
        .map(|i| {
            std::fs::read_to_string(tmp.path().join(format!("host{i}.log"))).unwrap_or_default()
        })
        .collect();
    panic!(
        "the hosts did not form one cluster by mDNS: {last:?}\n{}\n---\n{}",
        logs[0], logs[1]
    );
}
