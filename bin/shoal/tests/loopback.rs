//! End-to-end: real `shoal up` processes on 127.0.0.1, no simulator.
//! The tests in this file run one at a time (each starts several nodes, and
//! CI has two cores).

mod cluster;

use cluster::*;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Three nodes, agreed on one master, with their three voters.
fn formed(root: &std::path::Path) -> Vec<Proc> {
    let procs = cluster(root, 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);
    procs
}

fn master_of(procs: &[Proc]) -> Option<usize> {
    let id = procs.iter().find_map(|p| {
        p.status()
            .map(|s| s["master_id"].clone())
            .filter(|m| !m.is_null())
    })?;
    procs
        .iter()
        .position(|p| p.status().is_some_and(|s| s["node_id"] == id))
}

#[test]
fn three_nodes_form_one_cluster_with_one_master() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = formed(tmp.path());
    let statuses: Vec<Value> = procs.iter().map(|p| p.status().unwrap()).collect();
    let masters = statuses.iter().filter(|s| s["role"] == "master").count();
    assert_eq!(masters, 1, "{statuses:?}");
    let voters = statuses.iter().filter(|s| s["role"] == "voter").count();
    assert_eq!(voters, 2, "the other two are voters: {statuses:?}");
    for s in &statuses {
        assert_eq!(s["cluster_id"], statuses[0]["cluster_id"]);
        assert_eq!(s["peers"].as_array().unwrap().len(), 2, "{s}");
        for f in [
            "node_id",
            "cluster_id",
            "role",
            "master_id",
            "term",
            "applied_index",
            "commit_index",
            "state_hash",
            "peers",
        ] {
            assert!(!s[f].is_null(), "status has {f}");
        }
        assert_eq!(s["master_reason"], "founded the cluster", "{s}");
    }
    // Probes for load balancers: alive, and ready once formed.
    for p in &procs {
        assert_eq!(p.get("/health").unwrap()["alive"], true);
        let ready = p.get("/ready").unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
    }
    // The CLI reads the same thing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["status", "--json", "--api", &procs[1].url("")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["master_id"], statuses[0]["master_id"]);
}

#[test]
fn ten_thousand_writes_then_a_fourth_node_joins_at_the_same_hash() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    // 10k writes through all three nodes, 24 clients at a time.
    let urls: Vec<(String, String)> = procs.iter().map(|p| (p.url(""), p.token())).collect();
    std::thread::scope(|s| {
        for t in 0..24 {
            let (base, token) = urls[t % 3].clone();
            s.spawn(move || {
                let c = client();
                for i in 0..417 {
                    let key = format!("k-{t:02}-{i:04}");
                    let mut ok = false;
                    for _ in 0..5 {
                        let r = c
                            .put(format!("{base}/v1/kv/{key}"))
                            .bearer_auth(&token)
                            .body(format!("value {i} from client {t}"))
                            .send();
                        if r.is_ok_and(|r| r.status().is_success()) {
                            ok = true;
                            break;
                        }
                    }
                    assert!(ok, "write {key} via {base}");
                }
            });
        }
    });
    expect_agreed(&refs, secs(30), "after 10k writes");
    let state = procs[0].get("/v1/state?limit=1").unwrap();
    assert!(
        state["kv_total"].as_u64().unwrap() >= 10_000,
        "{}",
        state["kv_total"]
    );

    let mut joiner = Proc::new(tmp.path(), "n4", vec!["--peer".into(), procs[2].addr()]);
    joiner.start();
    let all: Vec<&Proc> = procs.iter().chain(std::iter::once(&joiner)).collect();
    expect_agreed(&all, secs(60), "after the join");
    let log = joiner.log();
    assert!(
        log.contains("catching up by snapshot"),
        "joined by snapshot:\n{log}"
    );
    let metrics = reqwest::blocking::get(joiner.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("shoal_snapshots_installed_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_killed_master_is_replaced_and_comes_back_as_itself() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut procs = formed(tmp.path());
    for _ in 0..20 {
        assert_eq!(procs[1].incr("c").0, 200);
    }
    let m = master_of(&procs).unwrap();
    let old = procs[m].status().unwrap();
    procs[m].kill();
    let others: Vec<usize> = (0..3).filter(|i| *i != m).collect();
    let elected = wait_for(secs(20), || {
        others.iter().any(|i| {
            procs[*i]
                .status()
                .is_some_and(|s| s["role"] == "master" && s["term"].as_u64() > old["term"].as_u64())
        })
    });
    assert!(elected, "a new master within 20 s");
    let why = format!(
        "elected: {} not heard for an election timeout",
        old["node_id"].as_str().unwrap()
    );
    let said = wait_for(secs(5), || {
        others.iter().all(|i| {
            procs[*i]
                .status()
                .is_some_and(|s| s["master_reason"] == why)
        })
    });
    assert!(said, "both survivors say why: {why}");
    let out = procs[others[0]].cli(&["status"]);
    assert!(stdout(&out).contains(&why), "{}", stdout(&out));
    let (code, body) = procs[others[0]].incr("c");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], 21);
    assert!(body["index"].as_u64().unwrap() > old["applied_index"].as_u64().unwrap());
    // The old master restarts with its identity and its log.
    let log_before = procs[m].log().len();
    procs[m].start();
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "after the restart");
    let back = procs[m].status().unwrap();
    assert_eq!(back["node_id"], old["node_id"], "same node id");
    assert_eq!(back["cluster_id"], old["cluster_id"]);
    // Only what it logged since the restart counts.
    let log = procs[m].log()[log_before..].to_string();
    assert!(
        !log.contains("catching up by snapshot"),
        "no reset: it resumed from its own log\n{log}"
    );
    assert_eq!(procs[m].get("/v1/kv/c").unwrap()["value"], 21);
}

#[test]
fn without_a_majority_writes_fail_with_no_quorum_and_reads_still_answer() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut procs = formed(tmp.path());
    assert_eq!(procs[0].set("k", "before").0, 200);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(10), "first write");
    // Two voters fail (kill -9; a graceful `shoal leave` would hand their
    // seats over instead).
    procs[1].kill();
    procs[2].kill();
    let (code, body) = procs[0].incr("n");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_quorum", "{body}");
    // The CLI says so and exits non-zero.
    let out = procs[0].cli(&["kv", "incr", "n"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no quorum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reads answer from the local replica.
    assert_eq!(procs[0].get("/v1/kv/k").unwrap()["value"], "before");
    procs[1].start();
    procs[2].start();
    let resumed = wait_for(secs(30), || procs[0].incr("n").0 == 200);
    assert!(resumed, "writes resume once the voters are back");
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(20), "after the voters returned");
}

#[test]
fn two_clusters_with_one_key_stay_apart() {
    // (A node with another key cannot connect, and waits rather than
    // founding: see tests/operator.rs.)
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("cluster.key");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(st.status.success());
    let key_arg = key.to_string_lossy().to_string();
    let procs = cluster(tmp.path(), 2, &["--cluster-key", &key_arg]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "keyed cluster");
    let cluster_id = procs[0].status().unwrap()["cluster_id"].clone();

    // Another cluster with the same key, founded apart, then introduced:
    // the two see each other but never merge (each holds a client's
    // write: a cluster that holds nothing would be given up).
    assert_eq!(procs[0].incr_when_ready("theirs", secs(15)).0, 200);
    let key_arg2 = key_arg.clone();
    let mut other = Proc::new(tmp.path(), "other", vec!["--cluster-key".into(), key_arg]);
    other.start();
    assert!(wait_for(secs(20), || other
        .status()
        .is_some_and(|s| s["role"] == "master")));
    let other_id = other.status().unwrap()["cluster_id"].clone();
    assert_ne!(other_id, cluster_id);
    assert_eq!(other.incr_when_ready("mine", secs(15)).0, 200);
    other.stop();
    other.extra.extend(["--peer".into(), procs[0].addr()]);
    other.start();
    let foreign = |p: &Proc| p.metric("foreign_messages_total");
    assert!(
        wait_for(secs(20), || foreign(&procs[0]) > 0.0
            && foreign(&other) > 0.0),
        "they hear each other"
    );
    let given_up = |p: &Proc| p.metric("clusters_given_up_total");
    assert_eq!(
        given_up(&procs[0]) + given_up(&procs[1]) + given_up(&other),
        0.0
    );
    assert_eq!(other.status().unwrap()["cluster_id"], other_id);
    assert_eq!(procs[1].status().unwrap()["cluster_id"], cluster_id);
    assert_eq!(
        procs[1].get("/v1/kv/mine").unwrap()["error"]["code"],
        "not_found"
    );
    assert_eq!(
        other.get("/v1/kv/theirs").unwrap()["error"]["code"],
        "not_found"
    );
    let nodes = procs[0].get("/v1/nodes").unwrap();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2, "{nodes}");

    // A node that founded a cluster alone and holds nothing (as when it
    // heard no one in its window) gives it up for the first cluster.
    let mut lone = Proc::new(tmp.path(), "lone", vec!["--cluster-key".into(), key_arg2]);
    lone.start();
    assert!(wait_for(secs(20), || lone
        .status()
        .is_some_and(|s| s["role"] == "master")));
    assert_ne!(lone.status().unwrap()["cluster_id"], cluster_id);
    lone.stop();
    lone.extra.extend(["--peer".into(), procs[0].addr()]);
    lone.start();
    assert!(
        wait_for(secs(60), || lone
            .get("/v1/kv/theirs")
            .is_some_and(|v| v["value"] == 1)),
        "the lone node joined and loaded the first cluster's State"
    );
    assert_eq!(lone.status().unwrap()["cluster_id"], cluster_id);
    // Its own cluster, at least; with two clusters in sight it may first
    // adopt the one that ranks lower and move on from it (nodes move along
    // the clusters' order, never back).
    assert!(given_up(&lone) >= 1.0);
}

#[test]
fn a_second_process_on_one_data_directory_is_refused() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(tmp.path(), &[]);
    let mut same = Proc::new(tmp.path(), "same", vec![]);
    same.dir = procs[0].dir.clone();
    same.start();
    assert!(
        wait_for(secs(10), || !same.running()),
        "the second process exits"
    );
    let log = same.log();
    assert!(log.contains("another shoal process is running on"), "{log}");
    // The first one is unharmed.
    assert_eq!(procs[0].incr("still-here").0, 200);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn a_copied_data_directory_is_refused_while_the_original_lives() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 2, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    assert_eq!(procs[0].incr_when_ready("before", secs(15)).0, 200);
    // Another "host" starts from a copy of the second node's disk.
    let mut copy = Proc::new(tmp.path(), "copy", vec!["--peer".into(), procs[0].addr()]);
    copy_dir(&procs[1].dir, &copy.dir);
    copy.start();
    assert!(
        wait_for(secs(20), || !copy.running()),
        "the copy exits: {}",
        copy.log()
    );
    let log = copy.log();
    assert!(
        log.contains("another live process uses this node's identity")
            && log.contains("reported by peer"),
        "{log}"
    );
    // The original keeps its place; the cluster still writes.
    assert!(procs[1].log().matches("refusing").count() == 0);
    assert_eq!(procs[1].incr_when_ready("after", secs(15)).0, 200);
    let id = procs[1].status().unwrap()["node_id"].clone();
    let nodes = procs[0].get("/v1/nodes").unwrap();
    let me = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == id)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(me["liveness"], "alive", "{nodes}");
}

#[test]
fn logs_are_json_when_asked_never_hold_the_token_and_a_bad_filter_stops_the_start() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::new(
        tmp.path(),
        "json",
        vec!["--log-format".into(), "json".into()],
    );
    p.start();
    assert!(wait_for(secs(20), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));
    let (log, token) = (p.log(), p.token());
    assert!(token.len() >= 16 && !log.contains(&token), "{log}");
    assert!(
        log.contains("api-token"),
        "it says where the token is: {log}"
    );
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["fields"]["message"] == "starting"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colours off a terminal");
    p.stop();
    let mut bad = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["up", "--no-mdns", "--data-dir"])
        .arg(tmp.path().join("bad"))
        .env("SHOAL_LOG", "info,=x=y")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(secs(10), || bad.try_wait().ok().flatten().is_some()),
        "a bad SHOAL_LOG stops the start"
    );
    let out = bad.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHOAL_LOG"));
}
