//! Replicas: spread, re-placed, restarted, drained.

use super::tasks::{finished, running_on, submit_task, synthetic, task_status};
use super::*;

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
        let handed = Some(LeaderReason::HandedOver { from: m.clone() });
        let ok = sim.run_until(secs(5), |s| {
            s.live()
                .iter()
                .filter(|n| **n != m)
                .all(|n| s.node(n).unwrap().status().master_reason == handed)
        });
        assert!(ok, "seed {seed}: every node says the master handed over");
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
