//! Cluster scenarios on the simulator, each over many seeds. A failure
//! names its seed; `SHOAL_SIM_SEED=N` runs only that one.
//!
//! `cluster`: elections, failover, partitions, voters, idleness;
//! `catch_up`: joiners and lossy networks; `snapshots`: snapshots from
//! many sources, join storms; `scale`: two hundred nodes; `commands`:
//! retries and TTLs;
//! `tasks` and `deployments`: workloads under faults.

mod catch_up;
mod cluster;
mod commands;
mod deployments;
mod hostile;
mod reads;
mod scale;
mod snapshots;
mod tasks;

use shoal_model::{Command, CommandId, EventIdx, KvValue, LeaderReason, NodeId, Op, Outcome, Role};
use shoal_proto::wire::Refusal;
use shoal_testkit::{NetConfig, Sim};
use std::collections::{BTreeMap, BTreeSet};
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
    formed(Sim::new(seed), n)
}

/// `n` nodes added to `sim`, formed and settled as in `cluster`.
fn formed(mut sim: Sim, n: usize) -> (Sim, Vec<NodeId>) {
    let seed = sim.seed;
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

/// Writes keys `key-00000000`... (40-byte values) through `via`, one event
/// each, `batch` in flight at a time.
fn bulk_writes(sim: &mut Sim, via: &NodeId, n: u64, batch: u64) {
    let set = |i: u64| Op::KvSet {
        key: format!("key-{i:08}"),
        value: "v".repeat(40),
    };
    submit_in_waves(sim, via, (0..n).map(set), batch as usize);
}

/// Keys as `bulk_writes` writes them, `per_txn` to a transaction, with
/// values that do not compress away (as a real store's would not): a
/// large State from few events.
fn bulk_keys(sim: &mut Sim, via: &NodeId, n: u64, per_txn: u64) {
    let set = |i: u64| Op::KvSet {
        key: format!("key-{i:08}"),
        value: format!("{:016x}{:016x}", mix(i), mix(!i)),
    };
    let txns = (0..n).step_by(per_txn as usize).map(|first| Op::Txn {
        guards: vec![],
        ops: (first..(first + per_txn).min(n)).map(set).collect(),
    });
    submit_in_waves(sim, via, txns, 20);
}

/// SplitMix64's finaliser: a fixed scramble of `i`.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Submits `ops` through `via`, `wave` at a time, each wave answered
/// `Ok` before the next.
fn submit_in_waves(sim: &mut Sim, via: &NodeId, ops: impl Iterator<Item = Op>, wave: usize) {
    let mut ops = ops.peekable();
    while ops.peek().is_some() {
        let handles: Vec<u64> = ops
            .by_ref()
            .take(wave)
            .map(|op| sim.submit(via, op))
            .collect();
        let ok = sim.run_until(secs(30), |s| handles.iter().all(|h| s.reply(*h).is_some()));
        assert!(ok, "seed {}: bulk batch stuck", sim.seed);
        for h in handles {
            assert!(
                matches!(sim.reply(h), Some(Ok(_))),
                "seed {}: {:?}",
                sim.seed,
                sim.reply(h)
            );
        }
    }
}

/// The voters, as the master's State names them.
fn voters(sim: &Sim) -> BTreeSet<NodeId> {
    let master = sim.master().expect("a master");
    sim.state_of(&master)
        .unwrap()
        .members(Role::Voter)
        .into_iter()
        .map(|(_, n)| n)
        .collect()
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

/// The nodes of `ids` not in `side`: the other side of a partition.
fn other_side(ids: &[NodeId], side: &[NodeId]) -> Vec<NodeId> {
    ids.iter().filter(|n| !side.contains(n)).cloned().collect()
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

fn write_cmd(sim: &mut Sim, via: &NodeId, cmd: Command) -> Option<shoal_proto::wire::CommandReply> {
    sim.node(via)?;
    let h = sim.submit_cmd(via, cmd);
    sim.run_until(secs(10), |s| s.reply(h).is_some());
    sim.reply(h).cloned()
}
