//! Commands retried across a master change, and TTLs on the master's clock.

use super::*;

#[test]
fn a_command_retried_across_a_master_change_is_applied_once() {
    for seed in seeds(50) {
        let (mut sim, ids) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let cmd = Command {
            id: CommandId::from("the-one"),
            op: incr("once"),
        };
        let first = sim.submit_cmd(&m, cmd.clone());
        // Let it get somewhere (proposed, maybe committed), then kill the
        // master before the client hears back.
        let steps = (seed % 7) as usize * 3;
        for _ in 0..steps {
            sim.step();
        }
        sim.crash(&m);
        // The client retries with the same id until it gets an answer; a
        // refusal while no master is elected yet is one of the answers.
        let other = ids.iter().find(|n| **n != m).unwrap().clone();
        let mut r = None;
        for _ in 0..5 {
            r = write_cmd(&mut sim, &other, cmd.clone());
            if matches!(r, Some(Ok(_))) {
                break;
            }
        }
        let Some(Ok((_, outcome))) = r else {
            panic!("seed {seed}: retry got {r:?}")
        };
        assert_eq!(outcome, Outcome::Int(1), "seed {seed}");
        // Once more, after everything settled: the same stored outcome.
        sim.expect_converged(secs(20));
        let again = write_cmd(&mut sim, &ids[4.min(ids.len() - 1)], cmd.clone());
        assert!(
            matches!(again, Some(Ok((_, Outcome::Int(1))))),
            "seed {seed}: {again:?}"
        );
        if let Some(Ok((_, o))) = sim.reply(first) {
            assert_eq!(o, &Outcome::Int(1));
        }
        for n in sim.live() {
            assert_eq!(
                counter(&sim, &n, "once"),
                1,
                "seed {seed}: applied once on {n}"
            );
        }
    }
}

#[test]
fn expiring_keys_and_locks_expire_on_the_masters_clock() {
    for seed in seeds(20) {
        let (mut sim, ids) = cluster(seed, 3);
        let r = write(
            &mut sim,
            &ids[1],
            Op::LockAcquire {
                name: "L".into(),
                holder: "a".into(),
                ttl_ms: 500,
            },
            secs(5),
        );
        let Some(Ok((_, Outcome::Token(t1)))) = r else {
            panic!("{r:?}")
        };
        let r = write(
            &mut sim,
            &ids[2],
            Op::LockAcquire {
                name: "L".into(),
                holder: "b".into(),
                ttl_ms: 500,
            },
            secs(5),
        );
        assert!(matches!(r, Some(Ok((_, Outcome::Rejected(_))))), "{r:?}");
        let ok = sim.run_until(secs(10), |s| {
            !s.state_of(&ids[2]).unwrap().kv().contains_key("L")
        });
        assert!(ok, "seed {seed}: the lock expired");
        let r = write(
            &mut sim,
            &ids[2],
            Op::LockAcquire {
                name: "L".into(),
                holder: "b".into(),
                ttl_ms: 500,
            },
            secs(5),
        );
        let Some(Ok((_, Outcome::Token(t2)))) = r else {
            panic!("{r:?}")
        };
        assert!(t2 > t1);
        assert!(t2.0 > EventIdx::ZERO.0);
    }
}

/// A write sent to the minority side of a partition (two of five nodes,
/// at most one of the three voters) is refused `no_quorum` within a
/// second, whether the old master is on that side (it steps down, and is
/// not waited for) or not; never committed.
#[test]
fn a_write_on_the_minority_side_is_refused_within_a_second() {
    for seed in seeds(6) {
        for master_in_minority in [false, true] {
            let (mut sim, ids) = cluster(seed, 5);
            let master = sim.master().expect("a master");
            // Two nodes holding at most one voter: the master and a
            // non-voter, or two non-voters.
            let voters = voters(&sim);
            let others: Vec<NodeId> = ids
                .iter()
                .filter(|n| !voters.contains(n))
                .cloned()
                .collect();
            let minority: Vec<NodeId> = if master_in_minority {
                vec![master.clone(), others[0].clone()]
            } else {
                others[..2].to_vec()
            };
            let majority = other_side(&ids, &minority);
            sim.partition(&minority, &majority);
            // Some time in, then a write through a minority follower.
            sim.run_for(Duration::from_millis(300));
            let via = minority.iter().find(|n| **n != master).expect("a follower");
            let sent = sim.now();
            let reply = write(&mut sim, via, incr("minority"), secs(5));
            let took = sim.now() - sent;
            assert_eq!(
                reply.map(|r| r.map(|(idx, _)| idx)),
                Some(Err(Refusal::NoQuorum)),
                "seed {seed}, master in minority: {master_in_minority}"
            );
            assert!(
                took <= Duration::from_millis(1100),
                "seed {seed}, master in minority: {master_in_minority}: refused after {took:?}"
            );
        }
    }
}

#[test]
fn a_lone_write_through_a_voter_is_answered_without_waiting_for_a_raft_heartbeat() {
    // Raft tells a voter the commit with its next append or heartbeat
    // (every 100 ms), and voters take no committed gossip: the master's
    // one-to-one word of the commit is what answers a lone write made
    // through a voter in a few network delays.
    let mut worst = Duration::ZERO;
    for seed in seeds(10) {
        let (mut sim, _) = cluster(seed, 5);
        let m = sim.master().unwrap();
        let voter = voters(&sim).into_iter().find(|v| *v != m).unwrap();
        assert!(!sim.follows_committed(&voter), "seed {seed}");
        for i in 0..20 {
            // Writes fall at every point of the heartbeat's period.
            sim.run_for(Duration::from_millis(20 + (i * 37 + seed) % 100));
            let start = sim.now();
            let r = write(&mut sim, &voter, incr("lone"), secs(1));
            assert!(matches!(r, Some(Ok(_))), "seed {seed}: {r:?}");
            worst = worst.max(sim.now() - start);
        }
        assert_eq!(counter(&sim, &voter, "lone"), 20, "seed {seed}");
    }
    // A forward, an append and its answer, fsyncs and the word of the
    // commit: each network delay is at most 3 ms, each fsync at most 4.
    assert!(worst < Duration::from_millis(40), "slowest {worst:?}");
}
