//! Members: joins and Raft ids.

use super::*;
use crate::event::*;
use crate::ids::*;

fn join(s: &mut State, nodes: &[&str]) {
    for n in nodes {
        let node = NodeId::from(*n);
        at(
            s,
            Event::NodeJoined {
                node,
                addr: String::new(),
                at_ms: 0,
            },
        );
    }
}

#[test]
fn joining_nodes_get_consecutive_raft_ids() {
    let mut s = founded();
    join(&mut s, &["n2", "n3"]);
    assert_eq!(
        s.nodes().get(&NodeId::from("n3")).unwrap().raft_id,
        RaftId(3)
    );
    assert_eq!(
        s.members(Role::Voter),
        vec![(RaftId(1), NodeId::from("n1"))]
    );
    at(
        &mut s,
        Event::NodeJoined {
            node: NodeId::from("n2"),
            addr: "x".into(),
            at_ms: 0,
        },
    );
    assert_eq!(
        s.nodes().get(&NodeId::from("n2")).unwrap().raft_id,
        RaftId(2),
        "a rejoin keeps its Raft id"
    );
}

#[test]
fn only_a_member_that_is_not_alive_is_removed_and_a_voter_first_leaves_its_seat() {
    let mut s = founded();
    let (n2, n3) = (NodeId::from("n2"), NodeId::from("n3"));
    join(&mut s, &["n2", "n3"]);
    let remove = |n: &NodeId| Op::NodeRemove { node: n.clone() };
    let refused = run(&mut s, remove(&n2));
    assert!(
        matches!(&refused, Outcome::Rejected(Rejection::Invalid { reason }) if reason.contains("alive")),
        "{refused:?}"
    );
    let unknown = run(&mut s, remove(&NodeId::from("n9")));
    assert_eq!(unknown, Outcome::Rejected(Rejection::NotFound));

    // A dead follower goes at once.
    at(
        &mut s,
        Event::NodeLiveness {
            node: n2.clone(),
            liveness: Liveness::Dead,
        },
    );
    assert_eq!(run(&mut s, remove(&n2)), Outcome::Applied(true));
    assert!(!s.nodes().contains_key(&n2));

    // A dead voter is marked left first; once its seat has moved (the
    // membership change), the same removal forgets it.
    at(
        &mut s,
        Event::Membership {
            node: n3.clone(),
            role: Role::Voter,
        },
    );
    at(
        &mut s,
        Event::NodeLiveness {
            node: n3.clone(),
            liveness: Liveness::Dead,
        },
    );
    assert_eq!(run(&mut s, remove(&n3)), Outcome::Applied(false));
    assert_eq!(s.nodes().get(&n3).unwrap().liveness, Liveness::Left);
    assert_eq!(
        run(&mut s, remove(&n3)),
        Outcome::Applied(false),
        "still a voter"
    );
    at(
        &mut s,
        Event::Membership {
            node: n3.clone(),
            role: Role::Follower,
        },
    );
    assert_eq!(run(&mut s, remove(&n3)), Outcome::Applied(true));
    assert_eq!(
        s.nodes().keys().cloned().collect::<Vec<_>>(),
        [NodeId::from("n1")]
    );
}

#[test]
fn a_refounded_state_keeps_the_data_and_has_one_voter_of_a_new_cluster() {
    let mut s = founded();
    join(&mut s, &["n2", "n3"]);
    at(
        &mut s,
        Event::Membership {
            node: NodeId::from("n2"),
            role: Role::Voter,
        },
    );
    run(
        &mut s,
        Op::KvSet {
            key: "k".into(),
            value: "v".into(),
        },
    );
    let index = s.index();
    let kv = s.kv().clone();
    let r = s.refounded(
        ClusterId::from("c2"),
        &NodeId::from("x"),
        "/ip4/127.0.0.1/tcp/9",
        5,
    );
    assert_eq!(r.index(), index);
    assert_eq!(r.cluster_id(), Some(&ClusterId::from("c2")));
    assert_eq!(r.members(Role::Voter), [(RaftId(1), NodeId::from("x"))]);
    assert_eq!(r.nodes().len(), 1);
    assert_eq!(
        r.kv().get("k").map(|e| e.value.clone()),
        kv.get("k").map(|e| e.value.clone())
    );
    // What State answers a new joiner with continues from Raft id 2.
    let mut r = r;
    at(
        &mut r,
        Event::NodeJoined {
            node: NodeId::from("y"),
            addr: String::new(),
            at_ms: 6,
        },
    );
    assert_eq!(
        r.nodes().get(&NodeId::from("y")).unwrap().raft_id,
        RaftId(2)
    );
}

#[test]
fn a_drained_member_stays_a_member_and_undrained_hashes_as_before() {
    let mut s = founded();
    join(&mut s, &["n2"]);
    let n2 = NodeId::from("n2");
    let drain = |n: &NodeId, drain| Op::NodeDrain {
        node: n.clone(),
        drain,
    };
    assert_eq!(run(&mut s, drain(&n2, true)), Outcome::Applied(true));
    assert!(s.nodes()[&n2].drained);
    assert_eq!(s.recompute_hash(), s.hash());
    assert_eq!(run(&mut s, drain(&n2, true)), Outcome::Applied(false));
    assert_eq!(
        run(&mut s, drain(&NodeId::from("n9"), true)),
        Outcome::Rejected(Rejection::NotFound)
    );
    // A restart (a rejoin) keeps the mark, until it is taken back.
    join(&mut s, &["n2"]);
    assert!(s.nodes()[&n2].drained);
    assert_eq!(run(&mut s, drain(&n2, false)), Outcome::Applied(true));
    assert!(!s.nodes()[&n2].drained);
}

/// A member as it was before it could be drained.
#[derive(Hash)]
struct Undrainable {
    raft_id: RaftId,
    addr: String,
    role: Role,
    liveness: Liveness,
    joined_at_ms: u64,
}

#[test]
fn a_member_that_is_not_drained_hashes_as_before_drains_existed() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    type H = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let info = NodeInfo {
        raft_id: RaftId(7),
        addr: "/ip4/10.0.0.7/tcp/7000".into(),
        role: Role::Voter,
        liveness: Liveness::Suspect,
        joined_at_ms: 1234,
        drained: false,
    };
    let old = Undrainable {
        raft_id: info.raft_id,
        addr: info.addr.clone(),
        role: info.role,
        liveness: info.liveness,
        joined_at_ms: info.joined_at_ms,
    };
    assert_eq!(H::default().hash_one(&info), H::default().hash_one(&old));
    let drained = NodeInfo {
        drained: true,
        ..info
    };
    assert_ne!(H::default().hash_one(&drained), H::default().hash_one(&old));
}
