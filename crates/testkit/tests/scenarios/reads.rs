//! Consistent reads (ReadIndex): an index at or past every write
//! acknowledged before the read, through any node, without a log entry
//! per read; and no index at all from a master cut off from its majority.

use super::*;
use shoal_proto::reads::READ_WAIT;

/// Runs until the read's answer comes; the index, or the refusal.
fn read(sim: &mut Sim, via: &NodeId) -> Result<EventIdx, Refusal> {
    let h = sim.read_index(via);
    assert!(
        sim.run_until(secs(5), |s| s.reply(h).is_some()),
        "the read through {via} was never answered"
    );
    sim.reply(h).cloned().unwrap().map(|(idx, _)| idx)
}

#[test]
fn a_consistent_read_sees_every_acknowledged_write_and_logs_nothing() {
    for seed in seeds(6) {
        let (mut sim, ids) = cluster(seed, 5);
        for (i, via) in ids.iter().enumerate() {
            let (w, _) = write(&mut sim, via, incr("k"), secs(10))
                .expect("answered")
                .expect("committed");
            let reader = &ids[(i + 2) % ids.len()];
            let idx = read(&mut sim, reader).expect("a read index");
            assert!(idx >= w, "seed {seed}: read at {idx} misses write {w}");
        }
        // Many reads at once, through every node: they share rounds and
        // add nothing to the log.
        let m = sim.master().expect("a master");
        let commit = sim.node(&m).unwrap().status().commit_index;
        let rounds = sim.node(&m).unwrap().metrics().read_rounds;
        let handles: Vec<u64> = (0..60)
            .map(|i| sim.read_index(&ids[i % ids.len()]))
            .collect();
        let all = sim.run_until(secs(5), |s| handles.iter().all(|h| s.reply(*h).is_some()));
        assert!(all, "seed {seed}: reads unanswered");
        for h in handles {
            let (idx, _) = sim.reply(h).unwrap().clone().expect("a read index");
            assert!(idx >= commit, "seed {seed}: {idx} < {commit}");
        }
        let node = sim.node(&m).unwrap();
        assert_eq!(
            node.status().commit_index,
            commit,
            "seed {seed}: reads logged"
        );
        let used = node.metrics().read_rounds - rounds;
        assert!(used < 30, "seed {seed}: 60 reads took {used} rounds");
    }
}

#[test]
fn a_master_cut_off_from_its_majority_gives_no_read_index() {
    for seed in seeds(6) {
        let (mut sim, ids) = cluster(seed, 3);
        let old = sim.master().expect("a master");
        let others: Vec<NodeId> = ids.iter().filter(|n| **n != old).cloned().collect();
        sim.partition(std::slice::from_ref(&old), &others);
        let asked = sim.now();
        let h = sim.read_index(&old);
        // The majority goes on and commits a write the old master lacks.
        let written = sim.run_until(secs(20), |s| {
            others
                .iter()
                .any(|n| s.node(n).is_some_and(|x| x.is_master()))
        });
        assert!(written, "seed {seed}: the majority elected no master");
        write(&mut sim, &others[0], incr("after"), secs(10))
            .expect("answered")
            .expect("committed on the majority side");
        assert!(sim.run_until(secs(5), |s| s.reply(h).is_some()));
        let reply = sim.reply(h).cloned().unwrap();
        assert_eq!(
            reply.map(|(idx, _)| idx),
            Err(Refusal::NoQuorum),
            "seed {seed}: the cut-off master answered a read"
        );
        // Refused at the read's deadline, not at some later time-out.
        let answered = sim.now() - asked;
        assert!(answered >= READ_WAIT, "seed {seed}: {answered:?}");
        sim.heal();
        let idx = read(&mut sim, &old).expect("healed, it reads again");
        let v = sim.state_of(&old).unwrap().index();
        assert!(idx > EventIdx(0) && v <= sim.node(&old).unwrap().status().commit_index);
    }
}
