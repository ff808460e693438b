//! Joiners behind a long history, and convergence under heavy loss.

use super::*;

fn join_behind(seed: u64, history: u64) {
    let (mut sim, ids) = cluster(seed, 3);
    let m = sim.master().unwrap();
    bulk_writes(&mut sim, &m, history, 2000);
    sim.expect_converged(secs(10));
    let target = sim.state_of(&m).unwrap().index();
    let joiner = sim.add_node("n9");
    sim.expect_converged(secs(30));
    let j = sim.node(&joiner).unwrap();
    assert_eq!(
        j.state().hash(),
        sim.state_of(&ids[0]).unwrap().hash(),
        "seed {seed}"
    );
    assert!(j.state().index() >= target);
    let metrics = j.metrics();
    assert_eq!(
        metrics.snapshots_installed, 1,
        "seed {seed}: joined by one snapshot"
    );
    assert!(
        metrics.events_applied < history / 10,
        "seed {seed}: replayed {} events instead of loading a snapshot",
        metrics.events_applied
    );
    let recorded = sim.run_until(secs(10), |s| {
        s.state_of(&m).unwrap().nodes().contains_key(&joiner)
    });
    assert!(recorded, "seed {seed}: recorded as a member");
    sim.expect_converged(secs(10));
}

#[test]
fn a_joiner_behind_a_long_history_catches_up_by_snapshot_plus_tail() {
    for seed in seeds(4) {
        join_behind(seed, 20_000);
    }
}

#[test]
fn a_joiner_behind_100k_events_catches_up_by_snapshot_plus_tail() {
    join_behind(7, 100_000);
}

/// A node replaying a long history (no snapshot) saves no local snapshot
/// on the way, where each would be stale at once and take CPU from
/// applying; it saves one near the commit, or after
/// `LOCAL_SNAPSHOT_DEFER` (10) intervals at most, so its log stays bounded.
#[test]
fn a_node_replaying_a_long_history_saves_local_snapshots_near_the_commit() {
    let seed = 11;
    let every = 100;
    let history = 3000;
    // Ranges of 50 entries, so that the replay takes many steps.
    let mut sim = Sim::with_config(
        seed,
        NetConfig::default(),
        Box::new(move |id: NodeId, seed| {
            let mut cfg = shoal_testkit::default_config(id.clone(), seed);
            if id.as_str() == "n9" {
                cfg.catch_up.no_snapshot = true;
                cfg.catch_up.gaps.range_entries = 50;
                cfg.local_snapshot_every = every;
            }
            cfg
        }),
    );
    for n in names(3) {
        sim.add_node(&n);
    }
    sim.expect_master(secs(20));
    let m = sim.master().unwrap();
    bulk_writes(&mut sim, &m, history, 1000);
    sim.expect_converged(secs(10));
    let joiner = sim.add_node("n9");
    sim.expect_converged(secs(60));
    sim.run_for(secs(1));
    let j = sim.node(&joiner).unwrap().metrics();
    assert_eq!(j.snapshots_installed, 0, "replayed, as configured");
    assert!(j.events_applied >= history);
    // Without deferral it saves 8 here, one build after another. With it:
    // one per 1000 events while far behind, and one at the end.
    assert!(
        (1..=4).contains(&j.local_snapshots_saved),
        "saved {} local snapshots",
        j.local_snapshots_saved
    );
}

/// The join benchmark's size (`bench/`), for the hash, not the time: a
/// million keys and a million command outcomes in one snapshot.
#[test]
fn a_joiner_behind_1m_events_catches_up_by_snapshot_plus_tail() {
    join_behind(11, 1_000_000);
}

#[test]
fn heavy_message_loss_still_converges_and_a_restart_resumes_from_its_own_log() {
    for seed in seeds(40) {
        let (mut sim, ids) = cluster(seed, 5);
        sim.set_net(NetConfig {
            loss: 0.2,
            duplicate: 0.05,
            ..NetConfig::default()
        });
        let mut handles = Vec::new();
        for i in 0..60 {
            handles.push(sim.submit(&ids[i % 5], incr("lossy")));
            sim.run_for(Duration::from_millis(20));
        }
        let ok = sim.run_until(secs(60), |s| handles.iter().all(|h| s.reply(*h).is_some()));
        assert!(ok, "seed {seed}: replies under loss");
        let acked = handles
            .iter()
            .filter(|h| matches!(sim.reply(**h), Some(Ok(_))))
            .count() as i64;
        sim.expect_converged(secs(30));
        let total = counter(&sim, &ids[0], "lossy");
        assert!(
            total >= acked,
            "seed {seed}: every acknowledged write is there"
        );
        assert!(total <= 60, "seed {seed}: nothing applied twice");
        // A follower restarts from its own log, as itself.
        let f = ids
            .iter()
            .find(|n| sim.node(n).unwrap().raft().is_none())
            .expect("a follower")
            .clone();
        let index_before = sim.state_of(&f).unwrap().index();
        sim.crash(&f);
        sim.restart(&f);
        let restarted = sim.state_of(&f).unwrap();
        // A follower syncs what it applies: it comes back where it was.
        assert_eq!(
            restarted.index(),
            index_before,
            "seed {seed}: replayed its own log"
        );
        assert!(restarted.nodes().contains_key(&f));
        sim.expect_converged(secs(30));
        assert_eq!(
            sim.node(&f).unwrap().metrics().snapshots_installed,
            0,
            "seed {seed}: no snapshot needed"
        );
    }
}

#[test]
fn joiners_that_arrive_together_while_the_master_restarts_all_join() {
    for seed in seeds(4) {
        let (mut sim, ids) = cluster(seed, 1);
        bulk_writes(&mut sim, &ids[0], 200, 100);
        // Two nodes arrive together just as the founder restarts, before
        // it is master again: each hears the other naming no master.
        sim.crash(&ids[0]);
        sim.restart(&ids[0]);
        let j1 = sim.add_node("j1");
        let j2 = sim.add_node("j2");
        let joined = sim.run_until(secs(60), |s| {
            s.converged()
                && [&j1, &j2]
                    .iter()
                    .all(|j| s.state_of(j).is_some_and(|st| st.index().0 > 200))
        });
        assert!(
            joined,
            "seed {seed}: joiners at {:?} and {:?}",
            sim.state_of(&j1).map(|s| s.index()),
            sim.state_of(&j2).map(|s| s.index())
        );
    }
}
