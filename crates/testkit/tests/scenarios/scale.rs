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

/// A write every 2 ms for a second through the master of six nodes, its
/// committed gossip paced at `every`: the committed messages the master
/// published meanwhile. Every node applies every write.
fn stream_of_writes(seed: u64, every: Duration) -> u64 {
    let template = move |id: NodeId, seed| {
        let mut cfg = shoal_testkit::default_config(id, seed);
        cfg.publish_every = every;
        cfg
    };
    let (mut sim, ids) = formed(
        Sim::with_config(seed, NetConfig::default(), Box::new(template)),
        6,
    );
    let m = sim.master().unwrap();
    let published = |s: &Sim| s.committed_gossip.get(&m).copied().unwrap_or(0);
    let before = published(&sim);
    let handles: Vec<u64> = (0..WRITES)
        .map(|_| {
            let h = sim.submit(&m, incr("hits"));
            sim.run_for(WRITE_EVERY);
            h
        })
        .collect();
    let done = sim.run_until(secs(10), |s| handles.iter().all(|h| s.reply(*h).is_some()));
    assert!(done, "seed {seed}: writes unanswered");
    let sent = published(&sim) - before;
    sim.expect_converged(secs(10));
    for n in &ids {
        assert_eq!(
            counter(&sim, n, "hits"),
            i64::from(WRITES),
            "seed {seed}: {n}"
        );
    }
    sent
}

const WRITES: u32 = 500;
const WRITE_EVERY: Duration = Duration::from_millis(2);

/// Under a steady stream of writes the master gossips what it committed
/// at most once per `publish_every`, so a follower's messages do not grow
/// with the write rate (unpaced, the same stream takes a message for
/// nearly every commit); every follower still applies every write.
#[test]
fn the_master_gossips_a_stream_of_commits_paced() {
    for seed in seeds(3) {
        let every = shoal_testkit::default_config(NodeId::from("n1"), seed).publish_every;
        let window = WRITE_EVERY * WRITES;
        let most = (window.as_millis() / every.as_millis()) as u64 + 2;
        let paced = stream_of_writes(seed, every);
        let unpaced = stream_of_writes(seed, Duration::ZERO);
        eprintln!("seed {seed}: {paced} committed messages paced, {unpaced} unpaced");
        assert!(
            paced <= most,
            "seed {seed}: {paced} committed messages in {window:?}, at most {most} paced"
        );
        assert!(
            unpaced > 2 * most,
            "seed {seed}: only {unpaced} committed messages unpaced: the stream tests nothing"
        );
    }
}
