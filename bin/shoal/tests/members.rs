//! Removing members: a live node is refused, a dead voter is removed and
//! its seat filled, an unknown node is an error, and a node that left is
//! forgotten after `--forget-left-after`. Draining one: its replicas move
//! off and no task lands on it until it is taken back. Real processes on
//! 127.0.0.1; every wait is bounded.

mod cluster;

use cluster::*;
use serde_json::Value;
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn node_id(p: &Proc) -> String {
    field(&p.status(), "node_id").as_str().unwrap().to_owned()
}

/// What `p` lists of `node`, if it lists it.
fn listed(p: &Proc, node: &str) -> Option<Value> {
    let nodes = p.get("/v1/nodes")?;
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node_id"] == node)
        .cloned()
}

#[test]
fn a_dead_voter_is_removed_and_its_seat_filled_and_a_node_that_left_is_forgotten() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = cluster(root.path(), 5, &["--forget-left-after", "1s"]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);

    // A voter that is not the master.
    let victim = procs
        .iter()
        .position(|p| field(&p.status(), "role") == "voter")
        .expect("a voter");
    let victim_id = node_id(&procs[victim]);
    let asker = (victim + 1) % procs.len();

    let live = procs[asker].cli(&["nodes", "remove", &victim_id]);
    assert_eq!(live.status.code(), Some(1), "{live:?}");
    assert!(
        String::from_utf8_lossy(&live.stderr).contains("alive"),
        "{live:?}"
    );
    let unknown = procs[asker].cli(&["nodes", "remove", "no-such-node"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not_found"),
        "{unknown:?}"
    );

    procs[victim].kill();
    let dead = wait_for(secs(20), || {
        listed(&procs[asker], &victim_id).is_some_and(|n| n["liveness"] == "dead")
    });
    assert!(dead, "{victim_id} never seen dead");
    let out = procs[asker].cli(&["nodes", "remove", &victim_id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), format!("removed {victim_id}"));
    assert!(listed(&procs[asker], &victim_id).is_none(), "still listed");
    let survivors: Vec<Proc> = procs
        .drain(..)
        .enumerate()
        .filter_map(|(i, p)| (i != victim).then_some(p))
        .collect();
    expect_voters(&survivors, 3);

    // A follower leaves; it is forgotten a second later.
    let follower = survivors
        .iter()
        .position(|p| field(&p.status(), "role") == "follower")
        .expect("a follower");
    let follower_id = node_id(&survivors[follower]);
    let left = survivors[follower].cli(&["leave"]);
    assert!(left.status.success(), "{left:?}");
    let asker = (follower + 1) % survivors.len();
    let forgotten = wait_for(secs(30), || {
        listed(&survivors[asker], &follower_id).is_none()
    });
    assert!(
        forgotten,
        "{follower_id} still listed: {:?}",
        listed(&survivors[asker], &follower_id)
    );
}

#[test]
fn a_drained_node_hands_its_replicas_on_and_gets_no_task_until_taken_back() {
    let root = tempfile::tempdir().unwrap();
    let procs = cluster(root.path(), 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);
    let p = &procs[0];
    let o = p.cli(&[
        "deploy",
        "web",
        "--replicas",
        "3",
        "--synthetic",
        "1000000:1000:0",
    ]);
    assert!(o.status.success(), "{o:?}");
    // Where each replica runs, once all three do.
    let running_on = || -> Option<Vec<String>> {
        let d = p.get("/v1/deployments/web")?;
        let ps = d["placements"].as_array()?.clone();
        let running = ps.len() == 3 && ps.iter().all(|r| r["status"] == "running");
        running.then(|| {
            ps.iter()
                .map(|r| r["node"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
    };
    assert!(
        wait_for(secs(30), || running_on().is_some()),
        "three replicas run"
    );
    let drained = running_on().unwrap()[0].clone();

    let o = p.cli(&["nodes", "drain", &drained]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), format!("{drained} drained"));
    let moved = wait_for(secs(30), || {
        running_on().is_some_and(|on| !on.contains(&drained))
    });
    assert!(
        moved,
        "the replica moves off: {:?}",
        p.get("/v1/deployments/web")
    );
    let again = p.cli(&["nodes", "drain", &drained]);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert_eq!(stdout(&again), format!("{drained} was drained already"));
    let list = stdout(&p.cli(&["nodes"]));
    let line = list.lines().find(|l| l.starts_with(&drained)).unwrap_or("");
    assert!(line.contains("alive,drained"), "{list}");
    assert_eq!(listed(p, &drained).unwrap()["drained"], true);

    // Tasks go to the other two.
    for _ in 0..4 {
        let o = p.cli(&["run", "--synthetic", "1:1:0"]);
        assert!(o.status.success(), "{o:?}");
    }
    let nodes = task_nodes(p);
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    assert!(
        nodes.iter().all(|n| !n.is_empty() && *n != drained),
        "{nodes:?}"
    );

    let o = p.cli(&["nodes", "drain", "--undo", &drained]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), format!("{drained} taken back"));
    assert_eq!(listed(p, &drained).unwrap()["drained"], false);
    let unknown = p.cli(&["nodes", "drain", "no-such-node"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}
