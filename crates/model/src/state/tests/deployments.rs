//! Deployments: placements, reports under stale tokens, restarts and the
//! last exit.

use super::*;
use crate::event::*;
use crate::ids::*;
use crate::state::deployments::ReplicaPlacement;

fn web() -> Op {
    Op::Deploy {
        name: "web".into(),
        spec: InstanceSpec {
            runner: Runner::Synthetic {
                chunks: 1,
                interval_ms: 1,
                exit_code: 0,
            },
            resources: Resources::default(),
        },
        replicas: 1,
    }
}

fn place(s: &mut State, node: &str) -> FencingToken {
    at(
        s,
        Event::ReplicaPlaced {
            deployment: "web".into(),
            replica: 0,
            node: NodeId::from(node),
            port: 20_000,
        },
    );
    FencingToken(s.index().0)
}

fn report(s: &mut State, token: FencingToken, status: ReplicaStatus) -> Outcome {
    let op = Op::ReplicaReport {
        deployment: "web".into(),
        replica: 0,
        token,
        status,
    };
    run(s, op)
}

fn replica(s: &State) -> ReplicaPlacement {
    s.deployments()["web"].placements[&0].clone()
}

#[test]
fn a_crash_is_counted_and_its_exit_kept_across_restarts_and_moves() {
    let mut s = founded();
    assert_eq!(run(&mut s, web()), Outcome::Done);
    let t = place(&mut s, "n1");
    assert_eq!(replica(&s).last_exit, None);
    report(&mut s, t, ReplicaStatus::Running);
    report(&mut s, t, ReplicaStatus::Crashed { exit_code: 3 });
    assert_eq!((replica(&s).restarts, replica(&s).last_exit), (1, Some(3)));
    // Running again: the last exit stays.
    report(&mut s, t, ReplicaStatus::Running);
    assert_eq!(replica(&s).status, ReplicaStatus::Running);
    assert_eq!(replica(&s).last_exit, Some(3));
    // A report under a stale token changes nothing.
    let moved = place(&mut s, "n2");
    let stale = report(&mut s, t, ReplicaStatus::Crashed { exit_code: 9 });
    assert!(matches!(stale, Outcome::Rejected(_)), "{stale:?}");
    // Moved to another node, it keeps its count and last exit.
    let r = replica(&s);
    assert_eq!(
        (r.node.as_str(), r.restarts, r.last_exit),
        ("n2", 1, Some(3))
    );
    report(&mut s, moved, ReplicaStatus::Crashed { exit_code: -9 });
    assert_eq!((replica(&s).restarts, replica(&s).last_exit), (2, Some(-9)));
}

/// A replica placement as it was before last exits were kept.
#[derive(Hash)]
struct WithoutLastExit {
    node: NodeId,
    token: FencingToken,
    port: u16,
    status: ReplicaStatus,
    restarts: u32,
}

#[test]
fn a_replica_that_never_crashed_hashes_as_before_last_exits_were_kept() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    type H = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let p = ReplicaPlacement {
        node: NodeId::from("n1"),
        token: FencingToken(12),
        port: 20_001,
        status: ReplicaStatus::Running,
        restarts: 0,
        last_exit: None,
    };
    let old = WithoutLastExit {
        node: p.node.clone(),
        token: p.token,
        port: p.port,
        status: p.status,
        restarts: p.restarts,
    };
    assert_eq!(H::default().hash_one(&p), H::default().hash_one(&old));
    let crashed = ReplicaPlacement {
        last_exit: Some(1),
        ..p
    };
    assert_ne!(H::default().hash_one(&crashed), H::default().hash_one(&old));
}
