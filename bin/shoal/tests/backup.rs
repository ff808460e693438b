//! Backup and restore: `shoal snapshot save` from a live node, then, with
//! that node gone for good, `shoal up --restore FILE` founds a new cluster
//! holding the same 10,000 keys, tasks and deployments. Real processes on
//! 127.0.0.1; every wait is bounded.

mod cluster;

use cluster::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every key under `k/` with its value, paged.
fn keys(p: &Proc) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    let mut after = String::new();
    for _ in 0..100 {
        let page = p
            .get(&format!("/v1/kv?prefix=k/&limit=1000&after={after}"))
            .expect("a page of keys");
        for e in page["keys"].as_array().expect("keys") {
            all.insert(e["key"].as_str().unwrap().to_owned(), e["value"].clone());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return all,
        }
    }
    panic!("more than 100 pages");
}

/// `shoal up --restore FILE` into `dir`, expected to stop at once.
fn restore_into(dir: &Path, file: &Path) -> std::process::Output {
    let loopback = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"];
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["up", "--no-mdns"])
        .args(loopback)
        .arg("--data-dir")
        .arg(dir)
        .arg("--restore")
        .arg(file)
        .output()
        .unwrap()
}

fn state(p: &Proc) -> Value {
    p.get("/v1/state?limit=0").expect("state")
}

#[test]
fn a_saved_snapshot_founds_a_new_cluster_with_the_same_data() {
    let root = tempfile::tempdir().unwrap();
    let mut a = lone_master(root.path(), &[]).remove(0);

    // 10,000 keys, by transactions of 1,000 writes.
    for batch in 0..10 {
        let ops: Vec<Value> = (0..1000)
            .map(|i| json!({"op": "set", "key": format!("k/{batch}/{i:04}"), "value": format!("v{i}")}))
            .collect();
        let body = json!({"ops": ops}).to_string();
        let json = [("content-type", "application/json")];
        let (code, v) = a.write(reqwest::Method::POST, "/v1/txn", Some(&body), &json);
        assert_eq!(code, 200, "{v}");
    }
    // Tasks that finished, and two deployments.
    for _ in 0..3 {
        let o = a.cli(&["run", "--synthetic", "2:10:0"]);
        assert!(o.status.success(), "{o:?}");
    }
    for name in ["web", "api"] {
        let o = a.cli(&[
            "deploy",
            name,
            "--replicas",
            "2",
            "--synthetic",
            "1000000:1000:0",
        ]);
        assert!(o.status.success(), "{o:?}");
    }
    let placed = |p: &Proc, name: &str| {
        p.get(&format!("/v1/deployments/{name}"))
            .and_then(|d| d["placements"].as_array().cloned())
            .is_some_and(|r| r.iter().all(|r| !r["node"].is_null()) && r.len() == 2)
    };
    assert!(wait_for(secs(20), || placed(&a, "web") && placed(&a, "api")));
    // Quiet: nothing more applies for a second.
    let mut last = Value::Null;
    let quiet = wait_for(secs(20), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = field(&a.status(), "applied_index");
        std::mem::replace(&mut last, now.clone()) == now
    });
    assert!(quiet, "the node kept applying");
    let before = state(&a);
    let data = keys(&a);
    assert_eq!(data.len(), 10_000);

    let file = root.path().join("backup.snap");
    let o = a.cli(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let said = stdout(&o);
    let hash = before["state_hash"].as_str().unwrap();
    assert!(
        said.contains(&format!("index {}, state hash {hash}", before["index"])),
        "{said} vs {before}"
    );
    assert!(
        said.contains("10000 keys, 3 tasks, 2 deployments"),
        "{said}"
    );
    let info = a.cli(&["snapshot", "info", file.to_str().unwrap()]);
    assert!(stdout(&info).contains(hash), "{info:?}");

    // The node and its data directory are lost.
    a.kill();
    std::fs::remove_dir_all(&a.dir).unwrap();

    let mut b = Proc::new(
        root.path(),
        "b",
        vec!["--restore".into(), file.display().to_string()],
    );
    b.start();
    assert!(
        wait_for(secs(30), || field(&b.status(), "role") == "master"),
        "the restored node leads its cluster:\n{}",
        b.log()
    );
    let after = state(&b);
    assert_ne!(after["cluster_id"], before["cluster_id"], "a new cluster");
    assert!(after["index"].as_u64() >= before["index"].as_u64());
    assert_eq!(
        (
            &after["kv_total"],
            &after["tasks_total"],
            &after["deployments_total"]
        ),
        (
            &before["kv_total"],
            &before["tasks_total"],
            &before["deployments_total"]
        )
    );
    assert_eq!(keys(&b), data, "every key and value came back");
    // The deployments' replicas run again, on the new node.
    let b_id = field(&b.status(), "node_id");
    let on_b = |name: &str| {
        b.get(&format!("/v1/deployments/{name}"))
            .and_then(|d| d["placements"].as_array().cloned())
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["node"] == b_id))
    };
    assert!(
        wait_for(secs(30), || on_b("web") && on_b("api")),
        "{:?}",
        b.get("/v1/deployments/web")
    );

    // It restarts as itself; naming the backup again is refused.
    b.stop();
    let again = restore_into(&b.dir, &file);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds cluster"),
        "{again:?}"
    );
    b.extra.clear();
    b.start();
    assert!(
        wait_for(secs(30), || field(&b.status(), "role") == "master"),
        "{}",
        b.log()
    );
    assert_eq!(keys(&b), data, "after a restart too");
}

#[test]
fn a_damaged_backup_is_refused_and_founds_nothing() {
    let root = tempfile::tempdir().unwrap();
    let a = lone_master(root.path(), &[]).remove(0);
    let (code, v) = a.set("k", "v");
    assert_eq!(code, 200, "{v}");
    let file = root.path().join("backup.snap");
    assert!(a
        .cli(&["snapshot", "save", file.to_str().unwrap()])
        .status
        .success());
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let info = a.cli(&["snapshot", "info", file.to_str().unwrap()]);
    assert_eq!(info.status.code(), Some(1), "{info:?}");
    assert!(
        String::from_utf8_lossy(&info.stderr).contains("not a valid snapshot"),
        "{info:?}"
    );

    let dir = root.path().join("fresh");
    let o = restore_into(&dir, &file);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--restore"),
        "{o:?}"
    );
    assert!(!dir.join("cluster").exists(), "no cluster recorded");

    // A save without the token is refused, on loopback too.
    let anon = client().get(a.url("/v1/snapshot")).send().unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}
