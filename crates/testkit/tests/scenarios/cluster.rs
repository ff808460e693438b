//! Elections, failover, partitions, voter replacement and idleness.

use super::*;

#[test]
fn five_nodes_elect_one_master_with_three_voters() {
    for seed in seeds(50) {
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
            assert_eq!(
                s.master_reason,
                Some(LeaderReason::Founded),
                "seed {seed}: {id} knows why the master leads"
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

#[test]
fn a_dead_master_is_replaced_and_the_log_continues() {
    for seed in seeds(50) {
        let (mut sim, ids) = cluster(seed, 5);
        for i in 0..20 {
            let via = ids[i % 5].clone();
            assert!(
                matches!(write(&mut sim, &via, incr("c"), secs(5)), Some(Ok(_))),
                "seed {seed}"
            );
        }
        sim.expect_converged(secs(5));
        let old = sim.master().unwrap();
        let before = sim.state_of(&old).unwrap().index();
        let old_term = sim.node(&old).unwrap().raft().unwrap().term();
        sim.crash(&old);
        let ok = sim.run_until(secs(20), |s| s.master().is_some_and(|m| m != old));
        assert!(ok, "seed {seed}: no new master");
        let new = sim.master().unwrap();
        assert!(sim.node(&new).unwrap().raft().unwrap().term() > old_term);
        let survivor = ids.iter().find(|n| **n != old).unwrap().clone();
        let r = write(&mut sim, &survivor, incr("c"), secs(10));
        let Some(Ok((idx, Outcome::Int(21)))) = r else {
            panic!("seed {seed}: {r:?}")
        };
        assert!(
            idx > before,
            "seed {seed}: the log continues past {before}, at {idx}"
        );
        sim.expect_converged(secs(10));
        // Nobody reset State: every survivor holds all 21 increments,
        // and knows the new master was elected because the old went silent.
        let elected = Some(LeaderReason::Elected {
            previous: Some(old.clone()),
        });
        for n in sim.live() {
            assert_eq!(counter(&sim, &n, "c"), 21, "seed {seed}: {n}");
            let why = sim.node(&n).unwrap().status().master_reason;
            assert_eq!(why, elected, "seed {seed}: {n}");
        }
        // The old master comes back as itself and catches up from its log.
        sim.restart(&old);
        sim.expect_converged(secs(20));
        assert_eq!(counter(&sim, &old, "c"), 21, "seed {seed}");
        assert!(sim.state_of(&old).unwrap().nodes().contains_key(&old));
    }
}

/// The master's disk fills as clients write to it: it steps aside, the
/// others elect a master that writes over the entries it could not keep,
/// and once its disk has room it catches up. Restarted from its own disk
/// it holds the same State (the simulator compares every node's hash at
/// every index as it goes).
#[test]
fn a_master_whose_disk_fills_steps_aside_and_restarts_into_the_same_state() {
    for seed in seeds(30) {
        let (mut sim, ids) = cluster(seed, 3);
        for i in 0..5 {
            let r = write(&mut sim, &ids[i % 3], incr("c"), secs(5));
            assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");
        }
        sim.expect_converged(secs(5));
        let old = sim.master().unwrap();
        let other = ids.iter().find(|n| **n != old).unwrap().clone();
        sim.fill_disk(&old, true);
        for _ in 0..3 {
            sim.submit(&old, incr("c"));
        }
        let ok = sim.run_until(secs(20), |s| s.master().is_some_and(|m| m != old));
        assert!(ok, "seed {seed}: no new master");
        assert!(sim.node(&old).unwrap().storage_fault().is_some());
        for _ in 0..10 {
            let r = write(&mut sim, &other, incr("c"), secs(10));
            assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");
        }
        sim.fill_disk(&old, false);
        let ok = sim.run_until(secs(5), |s| s.node(&old).unwrap().storage_fault().is_none());
        assert!(ok, "seed {seed}: the disk works again");
        sim.expect_converged(secs(20));
        sim.crash(&old);
        sim.restart(&old);
        sim.expect_converged(secs(20));
        let c = counter(&sim, &other, "c");
        assert!((15..=18).contains(&c), "seed {seed}: {c}");
        assert_eq!(counter(&sim, &old, "c"), c, "seed {seed}");
    }
}

#[test]
fn a_partition_keeps_the_majority_writing_and_the_minority_refusing() {
    for seed in seeds(50) {
        let (mut sim, ids) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let st = sim.state_of(&m).unwrap().clone();
        let voters: Vec<NodeId> = st
            .members(Role::Voter)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let followers: Vec<NodeId> = st
            .members(Role::Follower)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        // The master and one follower on the small side; two voters and a
        // follower on the big side.
        let minority = vec![m.clone(), followers[0].clone()];
        let majority = other_side(&ids, &minority);
        assert_eq!(voters.iter().filter(|v| majority.contains(v)).count(), 2);
        sim.partition(&minority, &majority);
        for via in &minority {
            let r = write(&mut sim, via, incr("p"), secs(15));
            assert_eq!(
                r,
                Some(Err(Refusal::NoQuorum)),
                "seed {seed}: minority write via {via}"
            );
        }
        let ok = sim.run_until(secs(20), |s| {
            majority
                .iter()
                .any(|n| s.node(n).is_some_and(|x| x.is_master()))
        });
        assert!(ok, "seed {seed}: the majority elects a master");
        for via in &majority {
            let r = write(&mut sim, via, incr("p"), secs(10));
            assert!(
                matches!(r, Some(Ok(_))),
                "seed {seed}: majority write via {via}: {r:?}"
            );
        }
        // Reads on the minority still answer, from its (stale) replica.
        assert_eq!(counter(&sim, &followers[0], "p"), 0);
        sim.heal();
        sim.expect_converged(secs(20));
        for n in &ids {
            assert_eq!(counter(&sim, n, "p"), 3, "seed {seed}: {n}");
        }
    }
}

#[test]
fn a_paused_master_cannot_commit_after_a_new_election() {
    for seed in seeds(50) {
        let (mut sim, ids) = cluster(seed, 3);
        let old = sim.master().unwrap();
        sim.pause(&old);
        let ok = sim.run_until(secs(20), |s| s.masters().iter().any(|m| *m != old));
        assert!(ok, "seed {seed}: a new master while the old one is paused");
        let other = ids.iter().find(|n| **n != old).unwrap().clone();
        assert!(matches!(
            write(&mut sim, &other, incr("z"), secs(10)),
            Some(Ok(_))
        ));
        sim.resume(&old);
        // Straight after resuming, the old master still believes it leads;
        // a write through it must not commit under its old term.
        let h = sim.submit(&old, incr("z"));
        sim.run_until(secs(15), |s| s.reply(h).is_some());
        match sim.reply(h) {
            Some(Ok((_, Outcome::Int(2))))
            | Some(Err(Refusal::NoQuorum))
            | Some(Err(Refusal::Timeout)) => {}
            other => panic!("seed {seed}: {other:?}"),
        }
        sim.expect_converged(secs(20));
        let expected = counter(&sim, &other, "z");
        assert!(expected == 1 || expected == 2);
        for n in &ids {
            assert_eq!(counter(&sim, n, "z"), expected, "seed {seed}");
        }
    }
}

#[test]
fn two_clusters_founded_apart_never_merge() {
    for seed in seeds(40) {
        let mut sim = Sim::new(seed);
        let a: Vec<NodeId> = ["a1", "a2"].iter().map(|n| sim.add_node(n)).collect();
        let b: Vec<NodeId> = ["b1", "b2"].iter().map(|n| sim.add_node(n)).collect();
        sim.partition(&a, &b);
        let ok = sim.run_until(secs(30), |s| {
            s.masters().len() == 2 && s.converged_group(&a) && s.converged_group(&b)
        });
        assert!(ok, "seed {seed}: two clusters form");
        let ca = sim.node(&a[0]).unwrap().cluster().cloned();
        let cb = sim.node(&b[0]).unwrap().cluster().cloned();
        assert_ne!(ca, cb);
        // Each holds a client's write: neither is ever given up.
        for (via, key) in [(&a[0], "a"), (&b[0], "b")] {
            let r = write(&mut sim, via, incr(key), secs(10));
            assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");
        }
        sim.heal();
        let h = sim.submit(&a[1], incr("only-a"));
        sim.run_for(secs(10));
        assert!(matches!(sim.reply(h), Some(Ok(_))));
        for n in &a {
            assert_eq!(sim.node(n).unwrap().cluster().cloned(), ca, "seed {seed}");
        }
        for n in &b {
            assert_eq!(sim.node(n).unwrap().cluster().cloned(), cb, "seed {seed}");
            assert_eq!(
                counter(&sim, n, "only-a"),
                0,
                "seed {seed}: nothing crossed"
            );
            assert!(sim.node(n).unwrap().metrics().foreign_messages > 0);
            assert_eq!(sim.node(n).unwrap().metrics().clusters_given_up, 0);
            assert!(!sim
                .node(n)
                .unwrap()
                .state()
                .nodes()
                .keys()
                .any(|k| a.contains(k)));
        }
    }
}

#[test]
fn clusters_that_hold_nothing_end_in_one_when_started_apart() {
    for seed in seeds(20) {
        let mut sim = Sim::new(seed);
        let main: Vec<NodeId> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| sim.add_node(n))
            .collect();
        // Two nodes that heard no one in the window, and a pair that heard
        // only each other.
        let lone: Vec<NodeId> = ["x", "y"].iter().map(|n| sim.add_node(n)).collect();
        let pair: Vec<NodeId> = ["p", "q"].iter().map(|n| sim.add_node(n)).collect();
        for n in &lone {
            sim.isolate(n);
        }
        let rest: Vec<NodeId> = main.iter().chain(&lone).cloned().collect();
        sim.partition(&pair, &rest);
        let ok = sim.run_until(secs(30), |s| {
            s.masters().len() == 4 && s.converged_group(&main)
        });
        assert!(ok, "seed {seed}: four clusters form");
        let founded: BTreeSet<_> = sim
            .live()
            .iter()
            .filter_map(|n| cluster_of(&sim, n))
            .collect();
        assert_eq!(founded.len(), 4, "seed {seed}");
        sim.heal();
        let all: Vec<NodeId> = main.iter().chain(&lone).chain(&pair).cloned().collect();
        let ok = sim.run_until(secs(60), |s| {
            let one = cluster_of(s, &all[0]);
            all.iter().all(|n| cluster_of(s, n) == one)
                && s.masters().len() == 1
                && s.converged_group(&all)
                && all
                    .iter()
                    .all(|n| s.state_of(&all[0]).unwrap().nodes().contains_key(n))
        });
        assert!(ok, "seed {seed}: one cluster of eight");
        let one = cluster_of(&sim, &all[0]).unwrap();
        assert!(founded.contains(&one), "seed {seed}: one of the four");
        // Three clusters were given up: four nodes at least moved.
        let moved: u64 = all
            .iter()
            .map(|n| sim.node(n).unwrap().metrics().clusters_given_up)
            .sum();
        assert!(moved >= 4, "seed {seed}: {moved}");
        let r = write(&mut sim, &all[1], incr("k"), secs(10));
        assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");

        // A lone node a client wrote to, founded apart: both clusters hold
        // data now, and neither is given up.
        let kept = sim.add_node("w");
        sim.isolate(&kept);
        let ok = sim.run_until(secs(30), |s| s.masters().len() == 2);
        assert!(ok, "seed {seed}: a second cluster forms");
        let r = write(&mut sim, &kept, incr("mine"), secs(10));
        assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");
        let theirs = cluster_of(&sim, &kept);
        let given_up = |s: &Sim| -> u64 {
            s.live()
                .iter()
                .map(|n| s.node(n).unwrap().metrics().clusters_given_up)
                .sum()
        };
        let before = given_up(&sim);
        sim.heal();
        sim.run_for(secs(10));
        assert_eq!(given_up(&sim), before, "seed {seed}");
        assert_eq!(cluster_of(&sim, &kept), theirs);
        assert!(all
            .iter()
            .all(|n| cluster_of(&sim, n).as_ref() == Some(&one)));
        assert_eq!(counter(&sim, &kept, "k"), 0, "seed {seed}: nothing crossed");
        assert_eq!(
            counter(&sim, &all[7], "mine"),
            0,
            "seed {seed}: nothing crossed"
        );
        assert_eq!(counter(&sim, &all[7], "k"), 1, "seed {seed}");
    }
}

fn cluster_of(sim: &Sim, n: &NodeId) -> Option<shoal_model::ClusterId> {
    sim.node(n)?.cluster().cloned()
}

#[test]
fn a_dead_voter_is_replaced_after_the_grace_period() {
    for seed in seeds(20) {
        let (mut sim, ids) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let st = sim.state_of(&m).unwrap().clone();
        let victim = st
            .members(Role::Voter)
            .into_iter()
            .map(|(_, n)| n)
            .find(|n| *n != m)
            .unwrap();
        sim.crash(&victim);
        // Marked suspect, then dead, then replaced by a follower.
        let ok = sim.run_until(secs(30), |s| {
            s.master().and_then(|m| s.state_of(&m)).is_some_and(|st| {
                let voters: Vec<NodeId> = st
                    .members(Role::Voter)
                    .into_iter()
                    .map(|(_, n)| n)
                    .collect();
                voters.len() == 3 && !voters.contains(&victim)
            })
        });
        assert!(ok, "seed {seed}: the dead voter was not replaced");
        let m = sim.master().unwrap();
        let st = sim.state_of(&m).unwrap();
        assert_eq!(
            st.nodes().get(&victim).unwrap().liveness,
            shoal_model::Liveness::Dead
        );
        // The new voter set commits.
        let via = ids.iter().find(|n| **n != victim).unwrap().clone();
        assert!(
            matches!(write(&mut sim, &via, incr("after"), secs(10)), Some(Ok(_))),
            "seed {seed}"
        );
        sim.expect_converged(secs(10));
        // The old voter returns: alive again, as a follower.
        sim.restart(&victim);
        let ok = sim.run_until(secs(20), |s| {
            s.master().and_then(|m| s.state_of(&m)).is_some_and(|st| {
                st.nodes()
                    .get(&victim)
                    .is_some_and(|n| n.liveness == shoal_model::Liveness::Alive)
            }) && s.converged()
        });
        assert!(ok, "seed {seed}: the old voter did not come back");
    }
}

#[test]
fn an_idle_node_wakes_only_for_its_own_timers() {
    let (mut sim, ids) = cluster(1, 5);
    sim.expect_converged(secs(10));
    sim.run_for(secs(5));
    let before = sim.wakes.clone();
    sim.run_for(secs(10));
    for id in &ids {
        let woke = sim.wakes[id] - before.get(id).copied().unwrap_or(0);
        let node = sim.node(id).unwrap();
        let (voter, master) = (node.raft().is_some(), node.is_master());
        // A heartbeat every 300 ms and metrics every second; a voter also
        // ticks Raft, and the master plans every 250 ms.
        let tick = shoal_testkit::default_config(id.clone(), 1).raft_tick;
        let raft = (1000 / tick.as_millis()) as u64;
        let per_sec = 4 + 1 + if voter { raft } else { 0 } + if master { 4 } else { 0 };
        let due = 10 * per_sec;
        assert!(
            woke <= due,
            "{id} (voter: {voter}, master: {master}) woke {woke} times in 10 s idle, more than its timers ({due})"
        );
        assert!(woke > 0, "{id} never woke");
    }
}

/// The voters the master's State records.
fn voters(sim: &Sim) -> Vec<NodeId> {
    let Some(st) = sim.master().and_then(|m| sim.state_of(&m)) else {
        return Vec::new();
    };
    st.members(Role::Voter)
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

#[test]
fn a_voter_back_from_a_partition_leaves_no_seat_too_many() {
    for seed in seeds(20) {
        let (mut sim, _) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let start = voters(&sim);
        let cut = start.iter().find(|n| **n != m).unwrap().clone();
        // Cut off long enough to be replaced, not long enough to lose its
        // seat (the grace period): four voters meanwhile.
        sim.isolate(&cut);
        let ok = sim.run_until(secs(9), |s| voters(s).len() == 4);
        assert!(ok, "seed {seed}: {cut} cut off, voters {:?}", voters(&sim));
        let added = voters(&sim).into_iter().find(|n| !start.contains(n));
        let added = added.unwrap();
        sim.heal();
        // Back to three: the seat of the voter that joined last (the
        // replacement) is given up.
        let ok = sim.run_until(secs(20), |s| {
            s.node(&added).is_some_and(|n| n.raft().is_none())
        });
        assert!(ok, "seed {seed}: voters {:?}", voters(&sim));
        // Demoted as it applied its last entry; a crash now loses nothing
        // it applied.
        let before = sim.state_of(&added).unwrap().index();
        sim.crash(&added);
        sim.restart(&added);
        assert_eq!(
            sim.state_of(&added).unwrap().index(),
            before,
            "seed {seed}: the demoted voter restarts where it was"
        );
        sim.expect_converged(secs(20));
        assert_eq!(voters(&sim), start, "seed {seed}");
    }
}

#[test]
fn after_a_partition_heals_under_loss_every_replica_holds_the_committed_history() {
    for seed in seeds(50) {
        let (mut sim, ids) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let st = sim.state_of(&m).unwrap();
        let follower = st.members(Role::Follower)[0].1.clone();
        // The master and a follower on the small side: the master appends
        // writes it cannot commit, which the big side's history replaces.
        let minority = vec![m.clone(), follower];
        let majority = other_side(&ids, &minority);
        sim.partition(&minority, &majority);
        for _ in 0..10 {
            sim.submit(&m, incr("lost"));
            sim.run_for(Duration::from_millis(20));
        }
        let ok = sim.run_until(secs(20), |s| {
            majority
                .iter()
                .any(|n| s.node(n).is_some_and(|x| x.is_master()))
        });
        assert!(ok, "seed {seed}: the majority elects a master");
        for i in 0..20 {
            let via = &majority[i % majority.len()];
            assert!(
                matches!(write(&mut sim, via, incr("won"), secs(10)), Some(Ok(_))),
                "seed {seed}: a write via {via}"
            );
        }
        // Healed under loss: replicas fetch what they miss from whoever
        // holds it, the old master among them.
        sim.set_net(NetConfig {
            loss: 0.3,
            ..NetConfig::default()
        });
        sim.heal();
        sim.run_for(secs(10));
        sim.set_net(NetConfig::default());
        sim.expect_converged(secs(30));
        for n in &ids {
            assert_eq!(counter(&sim, n, "won"), 20, "seed {seed}: {n}");
        }
    }
}

#[test]
fn a_follower_whose_page_is_open_holds_the_reports_of_nodes_it_does_not_hear() {
    for seed in seeds(10) {
        let (mut sim, _) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let followers = sim.state_of(&m).unwrap().members(Role::Follower);
        let [(_, a), (_, b)] = followers.as_slice() else {
            panic!("seed {seed}: two followers: {followers:?}");
        };
        let age_at_a = |sim: &Sim| {
            let caps = sim.node(a).unwrap().capacities();
            caps.into_iter()
                .find(|(r, _)| &r.node == b)
                .map(|(_, age)| age)
        };
        // A follower reports to the members only: what a holds of b, if
        // anything, came while b joined, and only ages.
        sim.run_for(secs(5));
        let before = age_at_a(&sim);
        assert!(
            before.is_none_or(|age| age >= secs(5)),
            "seed {seed}: {before:?}"
        );
        // a's page is open: it asks a member, and holds b's report as
        // fresh as the member does (b reports every second).
        for _ in 0..4 {
            sim.want_reports(a);
            sim.run_for(Duration::from_millis(500));
        }
        let open = age_at_a(&sim);
        assert!(
            open.is_some_and(|age| age < secs(2)),
            "seed {seed}: {open:?}"
        );
        // The page closed: nobody asks, and the report only ages.
        sim.run_for(secs(5));
        let closed = age_at_a(&sim);
        assert!(
            closed.is_some_and(|age| age >= secs(4)),
            "seed {seed}: {closed:?}"
        );
    }
}
