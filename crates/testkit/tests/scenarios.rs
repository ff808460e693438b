//! Cluster scenarios on the simulator, each over many seeds. A failure
//! names its seed; `SHOAL_SIM_SEED=N` runs only that one.

use shoal_model::{Command, CommandId, EventIdx, KvValue, NodeId, Op, Outcome, Role};
use shoal_proto::wire::Refusal;
use shoal_testkit::{NetConfig, Sim};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Seeds for a scenario: `n` of them (times `SHOAL_SIM_SEEDS_SCALE`), or the
/// one in `SHOAL_SIM_SEED`.
fn seeds(n: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SHOAL_SIM_SEED") {
        return vec![s.parse().expect("SHOAL_SIM_SEED is a number")];
    }
    let scale: u64 = std::env::var("SHOAL_SIM_SEEDS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (1..=n * scale).collect()
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

/// A cluster of `n` nodes, formed and settled with its voters chosen.
fn cluster(seed: u64, n: usize) -> (Sim, Vec<NodeId>) {
    let mut sim = Sim::new(seed);
    let ids: Vec<NodeId> = names(n).iter().map(|s| sim.add_node(s)).collect();
    sim.expect_master(secs(20));
    let want = n.min(3);
    let ok = sim.run_until(secs(60), |s| {
        s.master().is_some_and(|m| {
            let st = s.state_of(&m).unwrap();
            st.members(Role::Voter).len() == want && st.nodes().len() == n
        }) && s.converged()
    });
    assert!(ok, "seed {seed}: cluster of {n} did not settle");
    (sim, ids)
}

fn incr(key: &str) -> Op {
    Op::KvIncrBy {
        key: key.into(),
        by: 1,
    }
}

fn counter(sim: &Sim, node: &NodeId, key: &str) -> i64 {
    match sim.state_of(node).unwrap().kv().get(key).map(|e| &e.value) {
        Some(KvValue::Int(n)) => *n,
        None => 0,
        other => panic!("{key} holds {other:?}"),
    }
}

/// Submits and runs until the reply comes.
fn write(
    sim: &mut Sim,
    via: &NodeId,
    op: Op,
    limit: Duration,
) -> Option<shoal_proto::wire::CommandReply> {
    let h = sim.submit(via, op);
    sim.run_until(limit, |s| s.reply(h).is_some());
    sim.reply(h).cloned()
}

#[test]
fn five_nodes_elect_one_master_with_three_voters() {
    for seed in seeds(20) {
        let (mut sim, ids) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let st = sim.state_of(&m).unwrap();
        assert_eq!(st.members(Role::Voter).len(), 3, "seed {seed}");
        assert_eq!(st.members(Role::Follower).len(), 2, "seed {seed}");
        for id in &ids {
            let s = sim.node(id).unwrap().status();
            assert_eq!(
                s.master_id.as_ref(),
                Some(&m),
                "seed {seed}: {id} knows the master"
            );
            assert_eq!(
                s.cluster_id,
                sim.node(&m).unwrap().status().cluster_id,
                "seed {seed}"
            );
        }
        let r = write(&mut sim, &ids[4], incr("x"), secs(5));
        assert!(
            matches!(r, Some(Ok((_, Outcome::Int(1))))),
            "seed {seed}: {r:?}"
        );
        sim.expect_converged(secs(5));
    }
}
