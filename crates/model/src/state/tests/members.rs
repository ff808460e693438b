//! Members: joins and Raft ids.

use super::*;
use crate::event::*;
use crate::ids::*;

#[test]
fn joining_nodes_get_consecutive_raft_ids() {
    let mut s = founded();
    for n in ["n2", "n3"] {
        at(
            &mut s,
            Event::NodeJoined {
                node: NodeId::from(n),
                addr: String::new(),
                at_ms: 0,
            },
        );
    }
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
