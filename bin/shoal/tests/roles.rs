//! Node roles switched off (`--no-worker`, `--no-voter`, `--no-api`): a
//! task or replica never lands on a node that takes no work, a node that
//! may not vote is never promoted, even as the only candidate for a dead
//! voter's seat (and the master says why), and a node without an API
//! serves none. Real processes on 127.0.0.1; every wait is bounded.

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

/// The members as `p` lists them.
fn members(p: &Proc) -> Vec<Value> {
    p.get("/v1/nodes")
        .and_then(|v| v["nodes"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_node_without_a_role_is_never_given_it() {
    let root = tempfile::tempdir().unwrap();
    let flags: [&[&str]; 5] = [
        &[],
        &["--no-worker"],
        &[],
        &["--no-voter"],
        &["--no-voter", "--no-api"],
    ];
    let mut procs = cluster_with(root.path(), &flags);
    let with_api: Vec<&Proc> = procs[..4].iter().collect();
    expect_agreed(&with_api, secs(30), "formation");
    // The three nodes that may vote hold the seats.
    expect_voters(&procs[..4], 3);
    let ids: Vec<String> = procs[..4].iter().map(node_id).collect();
    for (i, p) in procs[..4].iter().enumerate() {
        let role = field(&p.status(), "role");
        assert_eq!(role == "follower", i == 3, "n{}: {role}", i + 1);
    }
    // Each node's roles as the others see them; n5 serves no API.
    let reported = wait_for(secs(15), || {
        let m = members(&procs[0]);
        m.len() == 5 && m.iter().all(|n| n["worker"].is_boolean())
    });
    assert!(reported, "{:?}", members(&procs[0]));
    let m = members(&procs[0]);
    let n5 = m
        .iter()
        .find(|n| !ids.contains(&n["node_id"].as_str().unwrap().to_owned()))
        .unwrap();
    assert_eq!(n5["api_url"], "", "{n5}");
    assert_eq!(n5["may_vote"], false);
    assert_eq!(n5["liveness"], "alive");
    let n5_id = n5["node_id"].as_str().unwrap().to_owned();
    let refused = client().get(procs[4].url("/health")).send();
    assert!(refused.is_err(), "n5 serves no API: {refused:?}");
    let listed = stdout(&procs[0].cli(&["nodes"]));
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line(&ids[1]).ends_with("no-worker"), "{listed}");
    assert!(line(&n5_id).ends_with("no-api,no-voter"), "{listed}");
    assert!(line(&ids[0]).ends_with(" -"), "{listed}");

    // Tasks and replicas go anywhere but n2.
    for _ in 0..6 {
        let o = procs[0].cli(&["run", "--synthetic", "1:1:0"]);
        assert!(o.status.success(), "{o:?}");
    }
    let ran_on = task_nodes(&procs[0]);
    assert_eq!(ran_on.len(), 6, "{ran_on:?}");
    assert!(
        ran_on.iter().all(|n| !n.is_empty() && *n != ids[1]),
        "{ran_on:?}"
    );
    let o = procs[0].cli(&[
        "deploy",
        "web",
        "--replicas",
        "4",
        "--synthetic",
        "1000000:1000:0",
    ]);
    assert!(o.status.success(), "{o:?}");
    let placed = || -> Vec<String> {
        let d = procs[0].get("/v1/deployments/web").unwrap_or_default();
        let ps = d["placements"].as_array().cloned().unwrap_or_default();
        ps.iter()
            .map(|p| p["node"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(wait_for(secs(20), || placed().len() == 4), "{:?}", placed());
    assert!(!placed().contains(&ids[1]), "{:?}", placed());

    // A voter dies; the only live followers may not vote: the seat stays
    // empty, and the master says why.
    let master = field(&procs[0].status(), "master_id");
    let victim = (0..3).find(|i| master != ids[*i].as_str()).unwrap();
    procs[victim].kill();
    let asker = (0..3).find(|i| *i != victim).unwrap();
    let on_master = |key: &str| {
        let m = field(&procs[asker].status(), "master_id");
        let i = ids.iter().position(|id| m == id.as_str())?;
        procs[i].status().map(|s| s[key].clone())
    };
    let said = wait_for(secs(40), || {
        on_master("voter_shortfall")
            .is_some_and(|w| w.as_str().is_some_and(|w| w.contains("--no-voter")))
    });
    assert!(said, "{:?}", on_master("voter_shortfall"));
    let short = on_master("voter_shortfall").unwrap();
    assert!(
        short.as_str().unwrap().starts_with("2 of 3 voter seats"),
        "{short}"
    );
    let roles: Vec<Value> = members(&procs[asker])
        .iter()
        .filter(|n| n["may_vote"] == false)
        .map(|n| n["role"].clone())
        .collect();
    assert_eq!(roles, ["follower", "follower"], "never promoted");
}
