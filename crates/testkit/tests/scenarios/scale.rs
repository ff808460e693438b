//! Two hundred nodes: the same invariants as three, and traffic per node
//! that stays flat at a follower and grows with N only at the members.

use super::*;

/// Messages each node received over the network during `d` of idle time.
fn received_during(sim: &mut Sim, d: Duration) -> BTreeMap<NodeId, u64> {
    let before = sim.received.clone();
    sim.run_for(d);
    sim.received
        .iter()
        .map(|(n, c)| (n.clone(), c - before.get(n).copied().unwrap_or(0)))
        .collect()
}

/// Per node and second, the most any follower and any member received.
fn busiest(sim: &Sim, counts: &BTreeMap<NodeId, u64>, secs: u64) -> (u64, u64) {
    let master = sim.master().unwrap();
    let st = sim.state_of(&master).unwrap();
    let mut follower = 0;
    let mut member = 0;
    for (n, c) in counts {
        let per_s = c / secs;
        match st.nodes().get(n).map(|i| i.role) {
            Some(Role::Follower) => follower = follower.max(per_s),
            Some(_) => member = member.max(per_s),
            None => {}
        }
    }
    (follower, member)
}

fn formed_cluster(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed);
    for i in 1..=n {
        sim.add_node(&format!("n{i:03}"));
    }
    sim.expect_master(secs(20));
    let ok = sim.run_until(secs(120), |s| {
        s.master()
            .is_some_and(|m| s.state_of(&m).unwrap().nodes().len() == n)
            && s.converged()
    });
    assert!(ok, "seed {seed}: {n} nodes did not all join");
    sim
}

#[test]
fn two_hundred_nodes_join_follow_fail_over_and_stay_cheap_per_follower() {
    let seed = seeds(1)[0];
    let mut sim = formed_cluster(seed, 200);
    let ids = sim.node_ids();
    // Writes through followers, each applied once everywhere.
    let handles: Vec<u64> = (0..50)
        .map(|i| sim.submit(&ids[(i * 7) % ids.len()], incr("hits")))
        .collect();
    let done = sim.run_until(secs(30), |s| handles.iter().all(|h| s.reply(*h).is_some()));
    assert!(done, "seed {seed}: writes unanswered");
    sim.expect_converged(secs(30));
    for n in sim.live() {
        assert_eq!(counter(&sim, &n, "hits"), 50, "seed {seed}: {n}");
    }
    // Idle traffic: a follower hears the members only; the master hears
    // every node.
    let big = received_during(&mut sim, secs(10));
    let (follower, member) = busiest(&sim, &big, 10);
    // The master dies: another takes over and writes go on.
    let old = sim.master().unwrap();
    sim.crash(&old);
    let new = sim.run_until(secs(20), |s| s.master().is_some_and(|m| m != old));
    assert!(new, "seed {seed}: no new master");
    let via = ids.iter().find(|n| **n != old).unwrap().clone();
    let h = sim.submit(&via, incr("hits"));
    assert!(sim.run_until(secs(20), |s| s.reply(h).is_some()));
    assert!(matches!(sim.reply(h), Some(Ok(_))), "{:?}", sim.reply(h));
    sim.expect_converged(secs(30));

    // The same cluster at a tenth of the size: a follower receives about
    // as much; the master about a tenth.
    let mut small = formed_cluster(seed, 20);
    let few = received_during(&mut small, secs(10));
    let (follower_20, member_20) = busiest(&small, &few, 10);
    eprintln!(
        "messages received per second, busiest: follower {follower_20} (20 nodes) {follower} (200); \
         member {member_20} (20) {member} (200)"
    );
    assert!(
        follower <= follower_20 * 2,
        "seed {seed}: a follower's traffic grew from {follower_20}/s to {follower}/s"
    );
    assert!(
        member <= member_20 * 20,
        "seed {seed}: a member's traffic grew faster than N: {member_20}/s to {member}/s"
    );
}
