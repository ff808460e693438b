//! Snapshots between real processes on loopback: a source killed
//! (SIGKILL) half way through a join, after which the joiner goes on from
//! the other sources of the same snapshot without starting over; and a
//! restarted node serving the local snapshot it started from.

mod cluster;

use cluster::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// 100 hex digits that do not compress much, different for each `i`.
fn value(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..7)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect::<String>()[..100]
        .to_owned()
}

/// `n` keys in transactions of 1000 sets.
fn load(p: &Proc, n: u64) {
    for start in (0..n).step_by(1000) {
        let ops: Vec<Value> = (start..(start + 1000).min(n))
            .map(|i| json!({"op": "set", "key": format!("key-{i:08}"), "value": value(i)}))
            .collect();
        let body = json!({ "ops": ops }).to_string();
        let json = [("Content-Type", "application/json")];
        let (code, reply) = p.write(Method::POST, "/v1/txn", Some(&body), &json);
        assert_eq!(code, 200, "{reply}");
    }
}

/// The joiner's download: bytes received, of how many.
fn download(p: &Proc) -> Option<(u64, u64)> {
    let d = p.status()?["snapshot_download"].clone();
    Some((d["received_bytes"].as_u64()?, d["total_bytes"].as_u64()?))
}

#[test]
fn a_source_killed_half_way_leaves_the_rest_of_the_snapshot_to_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 3, &["--fault-injection"]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    load(&procs[0], 300_000);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "loaded");
    // Every source holds each message back a while, so that the transfer
    // is still under way when one of them is killed.
    for p in &procs {
        let r = client()
            .post(p.url("/v1/fault/delay?ms=200"))
            .bearer_auth(p.token())
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    let target = procs[0].status().unwrap()["commit_index"].as_u64().unwrap();
    let mut joiner = Proc::new(tmp.path(), "joiner", vec!["--peer".into(), procs[0].addr()]);
    joiner.start();
    // Half way, with a source other than the master serving (the others'
    // offers may come a little later than the master's: each builds).
    let master = procs[0].status().unwrap()["master_id"].clone();
    let sent = |p: &Proc| p.metric("snapshot_bytes_sent_total");
    let others: Vec<usize> = (0..3)
        .filter(|i| procs[*i].status().unwrap()["node_id"] != master)
        .collect();
    let mut total = 0;
    let half = wait_for(secs(60), || {
        download(&joiner).is_some_and(|(got, all)| {
            total = all;
            all > 0 && got * 2 >= all
        }) && others.iter().any(|i| sent(&procs[*i]) > 0.0)
    });
    assert!(
        half,
        "the download never got half way with two sources: sent {:?}, offers {:?}, builds {:?}, joiner metrics {:?}",
        procs.iter().map(sent).collect::<Vec<_>>(),
        procs.iter().map(|p| p.metric("snapshot_offers_sent_total")).collect::<Vec<_>>(),
        procs.iter().map(|p| p.metric("snapshot_builds_total")).collect::<Vec<_>>(),
        ["unasked_replies_total", "bad_messages_total", "snapshot_bytes_received_total"]
            .map(|m| joiner.metric(m))
    );
    let victim = *others
        .iter()
        .max_by(|a, b| sent(&procs[**a]).total_cmp(&sent(&procs[**b])))
        .unwrap();
    procs[victim].sigkill();
    let caught_up = wait_for(secs(60), || {
        joiner
            .status()
            .and_then(|s| s["applied_index"].as_u64())
            .is_some_and(|a| a >= target)
    });
    assert!(caught_up, "the joiner did not finish:\n{}", joiner.log());
    let received = joiner.metric("snapshot_bytes_received_total");
    assert!(
        received < 2.0 * total as f64,
        "{received} bytes received for a snapshot of {total}"
    );
    assert_eq!(
        joiner.metric("snapshot_failures_total"),
        0.0,
        "went on, did not start over"
    );
    assert_eq!(joiner.metric("snapshots_installed_total"), 1.0);
    let live: Vec<&Proc> = procs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, p)| p)
        .chain([&joiner])
        .collect();
    expect_agreed(&live, secs(30), "the joiner and the live members");
}

/// A node restarted holds the local snapshot it started from and serves
/// it to a joiner without building one (its tail in the log is short).
#[test]
fn a_restarted_node_serves_the_snapshot_it_started_from_without_a_build() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--snapshot-every", "100", "--log-retain", "10"];
    let mut procs = lone_master(tmp.path(), &flags);
    load(&procs[0], 20_000);
    for i in 0..110 {
        let (code, reply) = procs[0].set(&format!("single-{i}"), "v");
        assert_eq!(code, 200, "{reply}");
    }
    let saved = wait_for(secs(30), || {
        procs[0].metric("local_snapshots_saved_total") >= 1.0
    });
    assert!(saved, "no local snapshot:\n{}", procs[0].log());
    procs[0].stop();
    procs[0].start();
    let master = wait_for(secs(30), || {
        procs[0].status().is_some_and(|s| s["role"] == "master")
    });
    assert!(
        master,
        "master again after the restart:\n{}",
        procs[0].log()
    );
    let mut joiner = Proc::new(tmp.path(), "joiner", vec!["--peer".into(), procs[0].addr()]);
    joiner.start();
    expect_agreed(
        &[&procs[0], &joiner],
        secs(60),
        "the joiner and the restarted node",
    );
    assert_eq!(joiner.metric("snapshots_installed_total"), 1.0);
    assert!(procs[0].metric("snapshot_offers_sent_total") >= 1.0);
    assert_eq!(
        procs[0].metric("snapshot_builds_total"),
        0.0,
        "served what it started from:\n{}",
        procs[0].log()
    );
}

const MIB: f64 = (1 << 20) as f64;

/// A master that paces what it serves (`--bulk-rate 1`, a megabyte a
/// second) holds chunks back, and its joiner still loads the snapshot
/// and agrees with it.
#[test]
fn a_paced_source_holds_chunks_back_and_its_joiner_still_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(tmp.path(), &["--bulk-rate", "1"]);
    load(&procs[0], 50_000);
    let mut joiner = Proc::new(tmp.path(), "joiner", vec!["--peer".into(), procs[0].addr()]);
    joiner.start();
    expect_agreed(
        &[&procs[0], &joiner],
        secs(90),
        "the joiner of a paced master",
    );
    assert_eq!(joiner.metric("snapshots_installed_total"), 1.0);
    let sent = procs[0].metric("snapshot_bytes_sent_total");
    assert!(sent > 1.5 * MIB, "more than the burst of one chunk: {sent}");
    assert!(
        procs[0].metric("net_bulk_sent_total") >= 1.0,
        "chunks on a connection of their own:\n{}",
        procs[0].log()
    );
    assert!(
        procs[0].metric("bulk_held_total") >= 1.0,
        "nothing held back:\n{}",
        procs[0].log()
    );
    assert_eq!(procs[0].metric("send_overflow_total"), 0.0);
}
