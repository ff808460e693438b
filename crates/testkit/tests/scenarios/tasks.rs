//! Tasks under crashes, isolation, transient failures and cancels.

use super::*;

pub(super) fn synthetic(chunks: u32, interval_ms: u64, exit_code: i32, max_attempts: u32) -> Op {
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

pub(super) fn submit_task(sim: &mut Sim, via: &NodeId, op: Op) -> shoal_model::TaskId {
    match write(sim, via, op, secs(10)) {
        Some(Ok((_, Outcome::Task(id)))) => id,
        other => panic!("seed {}: submit: {other:?}", sim.seed),
    }
}

pub(super) fn task_status(
    sim: &Sim,
    node: &NodeId,
    id: &shoal_model::TaskId,
) -> shoal_model::TaskStatus {
    sim.state_of(node).unwrap().tasks()[id].status.clone()
}

/// The node a task is running on, once it runs.
pub(super) fn running_on(sim: &mut Sim, via: &NodeId, id: &shoal_model::TaskId) -> NodeId {
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

pub(super) fn finished(sim: &mut Sim, via: &NodeId, id: &shoal_model::TaskId, limit: Duration) {
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

/// A master elected across a partition places nothing on the nodes it
/// does not hear, though State still records them alive: each task of one
/// attempt ends well.
#[test]
fn a_new_master_places_no_task_on_a_node_cut_off_with_the_old_one() {
    for seed in seeds(8) {
        let (mut sim, ids) = cluster(seed, 5);
        let old = sim.master().expect("formed");
        let st = sim.state_of(&old).unwrap();
        let follower = ids
            .iter()
            .find(|n| st.nodes()[*n].role == shoal_model::Role::Follower)
            .expect("five nodes, three voters")
            .clone();
        let cut = [old.clone(), follower.clone()];
        let rest: Vec<NodeId> = ids.iter().filter(|n| !cut.contains(n)).cloned().collect();
        sim.partition(&cut, &rest);
        let ok = sim.run_until(secs(20), |s| s.masters().iter().any(|m| rest.contains(m)));
        assert!(ok, "seed {seed}: the majority elected no master");
        let new = sim
            .masters()
            .into_iter()
            .find(|m| rest.contains(m))
            .unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|_| submit_task(&mut sim, &new, synthetic(2, 20, 0, 1)))
            .collect();
        for id in &tasks {
            finished(&mut sim, &new, id, secs(30));
            let t = sim.state_of(&new).unwrap().tasks()[id].clone();
            assert!(
                matches!(
                    t.status,
                    shoal_model::TaskStatus::Finished { exit_code: 0, .. }
                ),
                "seed {seed}: {:?} on {:?} (cut off: {cut:?})",
                t.status,
                t.node
            );
        }
        sim.heal();
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
fn a_node_following_a_task_receives_all_its_output_in_order() {
    for seed in seeds(4) {
        let (mut sim, ids) = cluster(seed, 3);
        let task = submit_task(&mut sim, &ids[0], synthetic(30, 40, 0, 1));
        let runner = running_on(&mut sim, &ids[0], &task);
        let watcher = ids.iter().find(|n| **n != runner).unwrap().clone();
        // Its client renews the subscription every second, as the API does.
        let deadline = sim.now() + secs(60);
        let mut next_watch = sim.now();
        loop {
            let got = sim.node(&watcher).unwrap().task_output(&task).len();
            if task_status(&sim, &watcher, &task).is_terminal() && got == 30 {
                break;
            }
            assert!(
                sim.now() < deadline,
                "seed {seed}: {got} of 30 chunks arrived"
            );
            if sim.now() >= next_watch {
                sim.watch_output(&watcher, &task);
                next_watch = sim.now() + secs(1);
            }
            sim.run_for(Duration::from_millis(100));
        }
        let kept: Vec<u64> = sim
            .node(&watcher)
            .unwrap()
            .task_output(&task)
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(
            kept,
            (0..30).collect::<Vec<_>>(),
            "seed {seed}: all of it, in order"
        );
        let to_clients = sim.task_output[&watcher]
            .iter()
            .filter(|c| c.task == task)
            .count();
        assert_eq!(
            to_clients, 30,
            "seed {seed}: each chunk once to its clients"
        );
        assert_eq!(
            sim.node(&runner).unwrap().task_output(&task).len(),
            30,
            "seed {seed}: the runner keeps it too"
        );
    }
}
