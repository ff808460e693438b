//! Cluster scenarios on the simulator, each over many seeds. A failure
//! names its seed; `SHOAL_SIM_SEED=N` runs only that one.

use shoal_model::{Command, CommandId, EventIdx, KvValue, NodeId, Op, Outcome, Role};
use shoal_proto::wire::Refusal;
use shoal_testkit::{NetConfig, Sim};
use std::collections::BTreeSet;
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
        // Nobody reset State: every survivor holds all 21 increments.
        for n in sim.live() {
            assert_eq!(counter(&sim, &n, "c"), 21, "seed {seed}: {n}");
        }
        // The old master comes back as itself and catches up from its log.
        sim.restart(&old);
        sim.expect_converged(secs(20));
        assert_eq!(counter(&sim, &old, "c"), 21, "seed {seed}");
        assert!(sim.state_of(&old).unwrap().nodes().contains_key(&old));
    }
}

/// Runs `n` increments through the cluster, many in flight at once.
fn bulk_writes(sim: &mut Sim, via: &NodeId, n: u64, batch: u64) {
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let handles: Vec<u64> = (0..k)
            .map(|i| {
                sim.submit(
                    via,
                    Op::KvSet {
                        key: format!("key-{:08}", done + i),
                        value: "v".repeat(40),
                    },
                )
            })
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
        done += k;
    }
}

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
        let majority: Vec<NodeId> = ids
            .iter()
            .filter(|n| !minority.contains(n))
            .cloned()
            .collect();
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

fn write_cmd(sim: &mut Sim, via: &NodeId, cmd: Command) -> Option<shoal_proto::wire::CommandReply> {
    sim.node(via)?;
    let h = sim.submit_cmd(via, cmd);
    sim.run_until(secs(10), |s| s.reply(h).is_some());
    sim.reply(h).cloned()
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

// ---- tasks -----------------------------------------------------------------

fn synthetic(chunks: u32, interval_ms: u64, exit_code: i32, max_attempts: u32) -> Op {
    Op::TaskSubmit {
        spec: shoal_model::TaskSpec {
            runner: shoal_model::Runner::Synthetic {
                chunks,
                interval_ms,
                exit_code,
            },
            timeout_ms: None,
            node: None,
            labels: Default::default(),
            resources: Default::default(),
            max_attempts,
        },
    }
}

fn submit_task(sim: &mut Sim, via: &NodeId, op: Op) -> shoal_model::TaskId {
    match write(sim, via, op, secs(10)) {
        Some(Ok((_, Outcome::Task(id)))) => id,
        other => panic!("seed {}: submit: {other:?}", sim.seed),
    }
}

fn task_status(sim: &Sim, node: &NodeId, id: &shoal_model::TaskId) -> shoal_model::TaskStatus {
    sim.state_of(node).unwrap().tasks()[id].status.clone()
}

/// The node a task is running on, once it runs.
fn running_on(sim: &mut Sim, via: &NodeId, id: &shoal_model::TaskId) -> NodeId {
    let mut on = None;
    let ok = sim.run_until(secs(20), |s| {
        on = match task_status(s, via, id) {
            shoal_model::TaskStatus::Running { node, .. } => Some(node),
            _ => None,
        };
        on.is_some()
    });
    assert!(ok, "seed {}: the task never ran", sim.seed);
    on.unwrap()
}

fn finished(sim: &mut Sim, via: &NodeId, id: &shoal_model::TaskId, limit: Duration) {
    let ok = sim.run_until(limit, |s| task_status(s, via, id).is_terminal());
    assert!(
        ok,
        "seed {}: the task did not end: {:?}",
        sim.seed,
        task_status(sim, via, id)
    );
}

#[test]
fn a_task_on_a_crashed_worker_runs_again_elsewhere_and_ends_once() {
    for seed in seeds(12) {
        let (mut sim, ids) = cluster(seed, 4);
        let id = submit_task(&mut sim, &ids[0], synthetic(20, 50, 0, 3));
        let worker = running_on(&mut sim, &ids[0], &id);
        sim.crash(&worker);
        let via = ids.iter().find(|n| **n != worker).unwrap().clone();
        finished(&mut sim, &via, &id, secs(40));
        let t = sim.state_of(&via).unwrap().tasks()[&id].clone();
        assert_eq!(
            t.status,
            shoal_model::TaskStatus::Finished {
                exit_code: 0,
                class: shoal_model::ExitClass::Success
            },
            "seed {seed}"
        );
        assert_eq!(t.attempt, 2, "seed {seed}");
        assert_ne!(t.node.as_ref(), Some(&worker), "seed {seed}");
        let runs: Vec<_> = sim.runs.iter().filter(|r| r.task == id).collect();
        assert_eq!(runs.len(), 2, "seed {seed}: {runs:?}");
        assert!(runs[1].started >= runs[0].ended.unwrap(), "seed {seed}");
        sim.expect_converged(secs(20));
    }
}

#[test]
fn an_isolated_worker_stops_its_run_before_the_master_places_it_again() {
    for seed in seeds(12) {
        let (mut sim, ids) = cluster(seed, 5);
        let id = submit_task(&mut sim, &ids[0], synthetic(200, 50, 0, 3));
        let worker = running_on(&mut sim, &ids[0], &id);
        sim.isolate(&worker);
        let others: Vec<NodeId> = ids.iter().filter(|n| **n != worker).cloned().collect();
        let ok = sim.run_until(secs(30), |s| {
            s.runs.iter().filter(|r| r.task == id).count() >= 2
        });
        assert!(ok, "seed {seed}: the task was not placed again");
        // The lease discipline: the cut-off run ended before the new one
        // began, although nobody could tell the worker to stop.
        assert!(
            sim.overlapping_runs(&id).is_empty(),
            "seed {seed}: runs overlapped: {:?}",
            sim.overlapping_runs(&id)
        );
        sim.heal();
        finished(&mut sim, &others[0], &id, secs(40));
        let t = sim.state_of(&others[0]).unwrap().tasks()[&id].clone();
        assert!(
            matches!(
                t.status,
                shoal_model::TaskStatus::Finished { exit_code: 0, .. }
            ),
            "seed {seed}: {:?}",
            t.status
        );
        assert!(t.attempt >= 2, "seed {seed}");
        sim.expect_converged(secs(30));
    }
}

#[test]
fn transient_failures_retry_with_backoff_and_stop_at_the_bound() {
    for seed in seeds(6) {
        let (mut sim, ids) = cluster(seed, 3);
        let id = submit_task(&mut sim, &ids[1], synthetic(2, 10, 75, 3));
        finished(&mut sim, &ids[1], &id, secs(30));
        assert_eq!(
            task_status(&sim, &ids[1], &id),
            shoal_model::TaskStatus::Finished {
                exit_code: 75,
                class: shoal_model::ExitClass::Transient
            },
            "seed {seed}"
        );
        let runs: Vec<_> = sim.runs.iter().filter(|r| r.task == id).collect();
        assert_eq!(runs.len(), 3, "seed {seed}: bounded by max_attempts");
        // Backoff doubles: at least 0.5 s, then 1 s between attempts.
        let gap = |i: usize| runs[i + 1].started - runs[i].ended.unwrap();
        assert!(
            gap(0) >= Duration::from_millis(500),
            "seed {seed}: {:?}",
            gap(0)
        );
        assert!(
            gap(1) >= Duration::from_millis(1000),
            "seed {seed}: {:?}",
            gap(1)
        );
        // A permanent failure is not retried.
        let id = submit_task(&mut sim, &ids[2], synthetic(1, 10, 3, 3));
        finished(&mut sim, &ids[2], &id, secs(30));
        assert_eq!(
            sim.runs.iter().filter(|r| r.task == id).count(),
            1,
            "seed {seed}"
        );
    }
}

#[test]
fn a_cancelled_task_stops_its_run_and_stays_cancelled() {
    for seed in seeds(6) {
        let (mut sim, ids) = cluster(seed, 3);
        let id = submit_task(&mut sim, &ids[0], synthetic(1000, 50, 0, 3));
        running_on(&mut sim, &ids[0], &id);
        match write(
            &mut sim,
            &ids[2],
            Op::TaskCancel { task: id.clone() },
            secs(10),
        ) {
            Some(Ok((_, Outcome::Applied(true)))) => {}
            other => panic!("seed {seed}: cancel: {other:?}"),
        }
        let ok = sim.run_until(secs(10), |s| {
            s.runs
                .iter()
                .filter(|r| r.task == id)
                .all(|r| r.ended.is_some())
        });
        assert!(ok, "seed {seed}: the run was not stopped");
        sim.run_for(secs(5));
        assert_eq!(
            task_status(&sim, &ids[0], &id),
            shoal_model::TaskStatus::Cancelled,
            "seed {seed}"
        );
        assert_eq!(
            sim.runs.iter().filter(|r| r.task == id).count(),
            1,
            "seed {seed}"
        );
        sim.expect_converged(secs(10));
    }
}

// ---- instances -------------------------------------------------------------

fn deploy(name: &str, replicas: u32, chunks: u32, exit_code: i32) -> Op {
    Op::Deploy {
        name: name.into(),
        spec: shoal_model::InstanceSpec {
            runner: shoal_model::Runner::Synthetic {
                chunks,
                interval_ms: 10,
                exit_code,
            },
            resources: Default::default(),
        },
        replicas,
    }
}

/// Replica -> (node, token), as `via` sees the deployment.
fn placements(sim: &Sim, via: &NodeId, name: &str) -> Vec<(NodeId, shoal_model::FencingToken)> {
    sim.state_of(via)
        .unwrap()
        .deployments()
        .get(name)
        .map(|d| {
            d.placements
                .values()
                .map(|p| (p.node.clone(), p.token))
                .collect()
        })
        .unwrap_or_default()
}

fn live_runs_of(sim: &Sim, token: shoal_model::FencingToken) -> usize {
    sim.runs
        .iter()
        .filter(|r| r.token == token && r.ended.is_none())
        .count()
}

#[test]
fn replicas_spread_survive_a_master_change_and_leave_a_dead_node() {
    for seed in seeds(10) {
        let (mut sim, ids) = cluster(seed, 4);
        assert!(matches!(
            write(&mut sim, &ids[0], deploy("web", 3, 1_000_000, 0), secs(10)),
            Some(Ok(_))
        ));
        let ok = sim.run_until(secs(20), |s| {
            let p = placements(s, &ids[0], "web");
            p.len() == 3 && p.iter().all(|(_, t)| live_runs_of(s, *t) == 1)
        });
        assert!(ok, "seed {seed}: three replicas run");
        let before = placements(&sim, &ids[0], "web");
        let nodes: BTreeSet<NodeId> = before.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(nodes.len(), 3, "seed {seed}: spread over three nodes");

        // The master dies; whatever it ran is placed again, the rest runs on.
        let master = sim.master().unwrap();
        sim.crash(&master);
        let via = ids.iter().find(|n| **n != master).unwrap().clone();
        let ok = sim.run_until(secs(40), |s| {
            let p = placements(s, &via, "web");
            p.len() == 3
                && p.iter()
                    .all(|(n, t)| *n != master && live_runs_of(s, *t) == 1)
        });
        assert!(
            ok,
            "seed {seed}: replicas back to three: {:?}",
            placements(&sim, &via, "web")
        );
        for (node, token) in before.iter().filter(|(n, _)| *n != master) {
            let starts = sim.runs.iter().filter(|r| r.token == *token).count();
            assert_eq!(
                starts, 1,
                "seed {seed}: the replica on {node} was restarted"
            );
        }
        // Undeploy stops every replica.
        assert!(matches!(
            write(
                &mut sim,
                &via,
                Op::Undeploy { name: "web".into() },
                secs(10)
            ),
            Some(Ok(_))
        ));
        let ok = sim.run_until(secs(10), |s| {
            s.runs
                .iter()
                .filter(|r| r.task.as_str().starts_with("deploy:web/") && r.node != master)
                .all(|r| r.ended.is_some())
        });
        assert!(ok, "seed {seed}: undeploy stopped the replicas");
        sim.expect_converged(secs(20));
    }
}

#[test]
fn a_crashing_replica_is_restarted_with_a_doubling_backoff() {
    for seed in seeds(4) {
        let (mut sim, ids) = cluster(seed, 3);
        write(&mut sim, &ids[0], deploy("flaky", 1, 1, 1), secs(10));
        let ok = sim.run_until(secs(30), |s| {
            s.runs
                .iter()
                .filter(|r| r.task.as_str() == "deploy:flaky/0")
                .count()
                >= 4
        });
        assert!(ok, "seed {seed}: restarted");
        let runs: Vec<_> = sim
            .runs
            .iter()
            .filter(|r| r.task.as_str() == "deploy:flaky/0")
            .cloned()
            .collect();
        let gaps: Vec<Duration> = runs
            .windows(2)
            .map(|w| w[1].started - w[0].ended.unwrap())
            .collect();
        assert!(
            gaps[0] >= Duration::from_millis(500),
            "seed {seed}: {gaps:?}"
        );
        assert!(
            gaps[1] >= Duration::from_millis(1000),
            "seed {seed}: {gaps:?}"
        );
        assert!(
            gaps[2] >= Duration::from_millis(2000),
            "seed {seed}: {gaps:?}"
        );
        sim.run_for(secs(2));
        let restarts =
            sim.state_of(&ids[0]).unwrap().deployments()["flaky"].placements[&0].restarts;
        assert!(
            restarts >= 3,
            "seed {seed}: crashes counted in State: {restarts}"
        );
    }
}

#[test]
fn a_draining_master_hands_over_work_and_leadership_then_leaves() {
    for seed in seeds(8) {
        let (mut sim, ids) = cluster(seed, 4);
        write(&mut sim, &ids[0], deploy("web", 3, 1_000_000, 0), secs(10));
        let ok = sim.run_until(secs(20), |s| {
            let p = placements(s, &ids[0], "web");
            p.len() == 3 && p.iter().all(|(_, t)| live_runs_of(s, *t) == 1)
        });
        assert!(ok, "seed {seed}: replicas run");
        let task = submit_task(&mut sim, &ids[0], synthetic(100, 50, 0, 3));
        running_on(&mut sim, &ids[0], &task);
        let m = sim.master().unwrap();
        sim.drain(&m);
        let ok = sim.run_until(secs(20), |s| s.node(&m).is_some_and(|n| n.drained()));
        assert!(ok, "seed {seed}: the master drained");
        assert_ne!(
            sim.master().as_ref(),
            Some(&m),
            "seed {seed}: leadership moved"
        );
        let st = sim.state_of(&m).unwrap();
        assert_eq!(
            st.nodes()[&m].liveness,
            shoal_model::Liveness::Left,
            "seed {seed}"
        );
        assert!(
            sim.runs
                .iter()
                .filter(|r| r.node == m)
                .all(|r| r.ended.is_some()),
            "seed {seed}: its runs ended"
        );
        sim.crash(&m);
        let via = ids.iter().find(|n| **n != m).unwrap().clone();
        let ok = sim.run_until(secs(30), |s| {
            let p = placements(s, &via, "web");
            p.len() == 3 && p.iter().all(|(n, t)| *n != m && live_runs_of(s, *t) == 1)
        });
        assert!(ok, "seed {seed}: replicas placed elsewhere");
        finished(&mut sim, &via, &task, secs(60));
        assert!(
            matches!(
                task_status(&sim, &via, &task),
                shoal_model::TaskStatus::Finished { exit_code: 0, .. }
            ),
            "seed {seed}"
        );
        assert!(sim.overlapping_runs(&task).is_empty(), "seed {seed}");
        let voters = sim.state_of(&via).unwrap().members(Role::Voter);
        let ok = sim.run_until(secs(30), |s| {
            let v = s.state_of(&via).unwrap().members(Role::Voter);
            v.len() == 3 && v.iter().all(|(_, n)| *n != m)
        });
        assert!(ok, "seed {seed}: its voter seat was filled: {voters:?}");
        sim.expect_converged(secs(20));
    }
}

#[test]
fn finished_tasks_are_forgotten_after_their_retention() {
    for seed in seeds(3) {
        let mut sim = shoal_testkit::Sim::with_config(
            seed,
            NetConfig::default(),
            Box::new(|node, seed| {
                let mut cfg = shoal_testkit::default_config(node, seed);
                cfg.task_retention = Duration::from_secs(40);
                cfg
            }),
        );
        let ids: Vec<NodeId> = names(3).iter().map(|s| sim.add_node(s)).collect();
        sim.expect_master(secs(20));
        sim.expect_converged(secs(30));
        let id = submit_task(&mut sim, &ids[0], synthetic(1, 10, 0, 1));
        finished(&mut sim, &ids[0], &id, secs(20));
        sim.run_for(secs(20));
        assert!(
            sim.state_of(&ids[0]).unwrap().tasks().contains_key(&id),
            "seed {seed}: kept a while"
        );
        let ok = sim.run_until(secs(60), |s| {
            !s.state_of(&ids[0]).unwrap().tasks().contains_key(&id)
        });
        assert!(ok, "seed {seed}: forgotten after its retention");
        sim.expect_converged(secs(10));
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
        // ticks Raft every 100 ms, and the master plans every 250 ms.
        let per_sec = 4 + 1 + if voter { 10 } else { 0 } + if master { 4 } else { 0 };
        let due = 10 * per_sec;
        assert!(
            woke <= due,
            "{id} (voter: {voter}, master: {master}) woke {woke} times in 10 s idle, more than its timers ({due})"
        );
        assert!(woke > 0, "{id} never woke");
    }
}
