use super::*;
use shoal_model::EventIdx;

fn hb(node: &str, term: u64, leader: Option<&str>) -> Heartbeat {
    Heartbeat {
        node: NodeId::from(node),
        addr: format!("mem://{node}"),
        cluster_id: Some(ClusterId::from("c")),
        incarnation: 1,
        started_ms: 0,
        sent_ms: 0,
        term: Term(term),
        applied: EventIdx(10),
        commit: EventIdx(12),
        log_floor: EventIdx(3),
        leader: leader.map(NodeId::from),
        standing: None,
        voter: true,
        leader_reason: None,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_peer_is_alive_until_its_heartbeats_stop_for_the_node_timeout() {
    let mut p = Peers::new(secs(2));
    let c = Some(ClusterId::from("c"));
    p.record(NodeId::from("a"), c.clone(), hb("a", 1, None), secs(10));
    p.record(NodeId::from("b"), None, hb("b", 1, None), secs(10));
    assert_eq!(
        p.live_members(c.as_ref(), secs(11)),
        vec![NodeId::from("a")]
    );
    assert!(p.live_members(c.as_ref(), secs(12)).is_empty());
    assert!(
        p.known(&NodeId::from("a")),
        "remembered after it went quiet"
    );
    let s = p.sources(c.as_ref(), secs(12));
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].floor, s[0].applied, s[0].live),
        (EventIdx(3), EventIdx(10), false)
    );
}

#[test]
fn the_smallest_empty_node_in_sight_founds() {
    let mut p = Peers::new(secs(2));
    p.record(NodeId::from("a"), None, hb("a", 0, None), secs(1));
    assert!(p.smaller_empty_peer(&NodeId::from("b"), secs(2)));
    assert!(!p.smaller_empty_peer(&NodeId::from("0"), secs(2)));
    assert!(
        !p.smaller_empty_peer(&NodeId::from("b"), secs(3)),
        "gone quiet"
    );
}

#[test]
fn the_master_is_who_a_majority_of_voters_name() {
    let mut p = Peers::new(secs(2));
    let c = Some(ClusterId::from("c"));
    let voters = [NodeId::from("a"), NodeId::from("b"), NodeId::from("m")];
    p.record(NodeId::from("m"), c.clone(), hb("m", 3, Some("m")), secs(1));
    assert_eq!(p.master_by_voters(&voters, secs(1)), None, "one of three");
    p.record(NodeId::from("a"), c.clone(), hb("a", 3, Some("m")), secs(1));
    assert_eq!(
        p.master_by_voters(&voters, secs(1)),
        Some((NodeId::from("m"), Term(3)))
    );
    // A non-voter's claim, however new, does not count.
    p.record(
        NodeId::from("x"),
        c.clone(),
        hb("x", 99, Some("x")),
        secs(1),
    );
    p.record(
        NodeId::from("b"),
        c.clone(),
        hb("b", 99, Some("x")),
        secs(1),
    );
    assert_eq!(
        p.master_by_voters(&voters, secs(1)),
        Some((NodeId::from("m"), Term(3)))
    );
    // Claims go stale with their heartbeats.
    assert_eq!(p.master_by_voters(&voters, secs(4)), None);
}

#[test]
fn a_joiner_believes_the_master_more_than_half_its_peers_name() {
    let mut p = Peers::new(secs(2));
    let c = Some(ClusterId::from("c"));
    p.record(
        NodeId::from("x"),
        c.clone(),
        hb("x", 99, Some("x")),
        secs(1),
    );
    assert_eq!(p.named_master(c.as_ref(), secs(1)), Some(NodeId::from("x")));
    p.record(NodeId::from("m"), c.clone(), hb("m", 3, Some("m")), secs(1));
    assert_eq!(p.named_master(c.as_ref(), secs(1)), None, "one against one");
    p.record(NodeId::from("a"), c.clone(), hb("a", 3, Some("m")), secs(1));
    assert_eq!(p.named_master(c.as_ref(), secs(1)), Some(NodeId::from("m")));
}

#[test]
fn the_named_master_is_counted_again_when_a_claim_changes_or_goes_stale() {
    let mut p = Peers::new(secs(2));
    let c = Some(ClusterId::from("c"));
    p.record(NodeId::from("a"), c.clone(), hb("a", 3, Some("m")), secs(1));
    assert_eq!(p.named_master(c.as_ref(), secs(1)), Some(NodeId::from("m")));
    // A changed claim counts at once.
    p.record(NodeId::from("a"), c.clone(), hb("a", 4, Some("x")), secs(1));
    assert_eq!(p.named_master(c.as_ref(), secs(1)), Some(NodeId::from("x")));
    // Another cluster's count is its own.
    assert_eq!(p.named_master(None, secs(1)), None);
    // Gone stale with its heartbeat: dropped at the next recount.
    p.recount();
    assert_eq!(p.named_master(c.as_ref(), secs(4)), None);
    // Heard again: counted again.
    p.record(NodeId::from("a"), c.clone(), hb("a", 4, Some("x")), secs(5));
    assert_eq!(p.named_master(c.as_ref(), secs(5)), Some(NodeId::from("x")));
}

#[test]
fn joiners_that_name_no_master_do_not_hold_each_other_back() {
    let mut p = Peers::new(secs(2));
    let c = Some(ClusterId::from("c"));
    p.record(NodeId::from("m"), c.clone(), hb("m", 3, Some("m")), secs(1));
    for j in ["j1", "j2", "j3"] {
        p.record(NodeId::from(j), c.clone(), hb(j, 0, None), secs(1));
    }
    assert_eq!(p.named_master(c.as_ref(), secs(1)), Some(NodeId::from("m")));
    // Only abstainers: no master yet.
    let mut q = Peers::new(secs(2));
    q.record(NodeId::from("j1"), c.clone(), hb("j1", 0, None), secs(1));
    assert_eq!(q.named_master(c.as_ref(), secs(1)), None);
}
