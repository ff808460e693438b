//! Snapshots asked for on gossip and pulled from many sources: a source
//! killed mid-transfer, and twenty joiners at once.

use super::*;

/// The node other than `but` that sent the most snapshot bytes.
fn busiest_source(sim: &Sim, among: &[NodeId], but: &NodeId) -> NodeId {
    among
        .iter()
        .filter(|n| *n != but)
        .max_by_key(|n| sim.node(n).unwrap().metrics().snapshot_bytes_sent)
        .unwrap()
        .clone()
}

/// A cluster of 3 serving snapshots in chunks of `chunk_bytes`; with
/// `compact`, each saves a snapshot every 1000 events and keeps 100 below
/// it, so a joiner cannot replay the log.
fn cluster_chunked(seed: u64, chunk_bytes: u32, compact: bool) -> (Sim, Vec<NodeId>) {
    let sim = Sim::with_config(
        seed,
        NetConfig::default(),
        Box::new(move |id: NodeId, seed| {
            let mut cfg = shoal_testkit::default_config(id, seed);
            cfg.catch_up.chunk_bytes = chunk_bytes;
            if compact {
                cfg.local_snapshot_every = 1000;
                cfg.log_retain = 100;
            }
            cfg
        }),
    );
    formed(sim, 3)
}

/// `keys` keys, `per_event` to an event. With more than one (a
/// transaction each), the log is short: the members compact it, so that
/// the joiner takes a snapshot.
fn kill_a_source_half_way(seed: u64, keys: u64, per_event: u64, chunk_bytes: u32) {
    let (mut sim, ids) = cluster_chunked(seed, chunk_bytes, per_event > 1);
    let m = sim.master().unwrap();
    if per_event == 1 {
        bulk_writes(&mut sim, &m, keys, 2000);
    } else {
        bulk_keys(&mut sim, &m, keys, per_event);
    }
    sim.expect_converged(secs(10));
    let joiner = sim.add_node("n9");
    let half = sim.run_until(secs(30), |s| {
        s.catch_up.get(&joiner).is_some_and(|(r, t)| r * 2 >= *t)
    });
    assert!(half, "seed {seed}: the transfer never got half way");
    let total = sim.catch_up[&joiner].1;
    // The busiest source but the master is killed, as by kill -9.
    let victim = busiest_source(&sim, &ids, &m);
    let sent = sim.node(&victim).unwrap().metrics().snapshot_bytes_sent;
    assert!(
        sent > 0,
        "seed {seed}: two sources serve, not the master alone"
    );
    sim.crash(&victim);
    let done = sim.run_until(secs(60), |s| {
        s.node(&joiner).unwrap().metrics().snapshots_installed == 1
    });
    assert!(done, "seed {seed}: the joiner did not finish");
    sim.expect_converged(secs(30));
    let j = sim.node(&joiner).unwrap();
    let metrics = j.metrics();
    assert_eq!(
        metrics.snapshot_failures, 0,
        "seed {seed}: went on, did not start over"
    );
    assert!(
        metrics.snapshot_bytes_received < 2 * total,
        "seed {seed}: received {} bytes for a snapshot of {total}",
        metrics.snapshot_bytes_received
    );
    assert_eq!(
        j.state().hash(),
        sim.state_of(&m).unwrap().hash(),
        "seed {seed}"
    );
}

#[test]
fn a_source_killed_half_way_leaves_the_rest_to_the_others() {
    for seed in seeds(3) {
        kill_a_source_half_way(seed, 20_000, 1, 16 << 10);
    }
}

/// The size the issue names: a million keys (written 500 to a
/// transaction: the snapshot is what is measured here, not the log).
#[test]
fn a_source_killed_half_way_through_a_1m_key_snapshot_leaves_the_rest_to_the_others() {
    kill_a_source_half_way(5, 1_000_000, 500, 1 << 20);
}

/// Twenty nodes join at once: each member encodes the snapshot once, and
/// the cluster sends each joiner little more than one snapshot's bytes.
#[test]
fn twenty_joiners_at_once_cost_one_build_per_source_and_one_snapshot_each() {
    for seed in seeds(2) {
        let (mut sim, ids) = cluster_chunked(seed, 16 << 10, false);
        let m = sim.master().unwrap();
        bulk_writes(&mut sim, &m, 20_000, 2000);
        sim.expect_converged(secs(10));
        let before = sim.serve_builds.clone();
        let joiners: Vec<NodeId> = (1..=20)
            .map(|i| sim.add_node(&format!("j{i:02}")))
            .collect();
        // While they hold no State, committed gossip does not reach them.
        sim.run_for(std::time::Duration::from_millis(100));
        assert!(joiners.iter().all(|j| !sim.follows_committed(j)));
        sim.expect_converged(secs(60));
        assert!(joiners.iter().all(|j| sim.follows_committed(j)));
        let mut all = ids.clone();
        all.extend(joiners.iter().cloned());
        let mut total = 0;
        for j in &joiners {
            let (_, size) = sim.catch_up[j];
            total = size;
            let metrics = sim.node(j).unwrap().metrics();
            assert_eq!(metrics.snapshots_installed, 1, "seed {seed}: {j}");
            assert!(
                metrics.snapshot_bytes_received * 10 <= size * 11,
                "seed {seed}: {j} received {} bytes for {size}",
                metrics.snapshot_bytes_received
            );
            assert_eq!(
                sim.state_of(j).unwrap().hash(),
                sim.state_of(&m).unwrap().hash()
            );
        }
        for n in &ids {
            let count =
                |b: &std::collections::BTreeMap<NodeId, u64>| b.get(n).copied().unwrap_or(0);
            let builds = count(&sim.serve_builds) - count(&before);
            assert!(builds <= 1, "seed {seed}: {n} encoded {builds} times");
        }
        let sent: u64 = all
            .iter()
            .map(|n| sim.node(n).unwrap().metrics().snapshot_bytes_sent)
            .sum();
        assert!(
            sent * 10 <= total * 20 * 11,
            "seed {seed}: the cluster sent {sent} bytes for 20 snapshots of {total}"
        );
    }
}
