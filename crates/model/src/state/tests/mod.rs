//! `apply`, domain by domain, and its properties: determinism and the
//! incremental hash.

mod deployments;
mod kv;
mod members;
mod properties;
mod tasks;
mod txn;

use super::*;
use crate::event::*;
use crate::ids::*;

pub(super) fn env(idx: u64, event: Event) -> Envelope {
    Envelope {
        idx: EventIdx(idx),
        term: Term(1),
        event,
    }
}

pub(super) fn cmd(id: &str, op: Op) -> Event {
    Event::Command {
        cmd: Command {
            id: CommandId::from(id),
            op,
        },
        at_ms: 1000,
    }
}

pub(super) fn founded() -> State {
    let mut s = State::new();
    s.apply(&env(
        1,
        Event::ClusterFounded {
            cluster_id: ClusterId::from("c1"),
            founder: NodeId::from("n1"),
            addr: "/ip4/127.0.0.1/tcp/1".into(),
            at_ms: 0,
        },
    ))
    .unwrap();
    s
}

pub(super) fn run(s: &mut State, op: Op) -> Outcome {
    let idx = s.index().0 + 1;
    let id = format!("c{idx}");
    s.apply(&env(idx, cmd(&id, op)))
        .unwrap()
        .command
        .unwrap()
        .outcome
}

pub(super) fn at(s: &mut State, event: Event) {
    let i = s.index().0 + 1;
    s.apply(&env(i, event)).unwrap();
}

#[test]
fn apply_refuses_non_consecutive_index() {
    let mut s = founded();
    let err = s.apply(&env(3, Event::Noop)).unwrap_err();
    assert_eq!(
        err,
        ApplyError::OutOfOrder {
            expected: EventIdx(2),
            got: EventIdx(3)
        }
    );
    assert_eq!(s.index(), EventIdx(1));
    assert!(
        s.apply(&env(1, Event::Noop)).is_err(),
        "a duplicate is refused too"
    );
}

#[test]
fn invalid_commands_are_rejected_not_applied() {
    let mut s = founded();
    let long = "k".repeat(Limits::MAX_KEY_LEN + 1);
    assert!(matches!(
        run(
            &mut s,
            Op::KvSet {
                key: long,
                value: "v".into()
            }
        ),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(matches!(
        run(
            &mut s,
            Op::KvSet {
                key: String::new(),
                value: "v".into()
            }
        ),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(s.kv().is_empty());
}

#[test]
fn a_retried_command_returns_its_first_outcome_and_changes_nothing() {
    let mut s = founded();
    let first = s
        .apply(&env(
            2,
            cmd(
                "same",
                Op::KvIncrBy {
                    key: "n".into(),
                    by: 1,
                },
            ),
        ))
        .unwrap();
    let hash = s.hash();
    let again = s
        .apply(&env(
            3,
            cmd(
                "same",
                Op::KvIncrBy {
                    key: "n".into(),
                    by: 1,
                },
            ),
        ))
        .unwrap();
    let (a, b) = (first.command.unwrap(), again.command.unwrap());
    assert_eq!(a.outcome, Outcome::Int(1));
    assert_eq!(b.outcome, Outcome::Int(1));
    assert!(b.duplicate && !a.duplicate);
    assert_eq!(b.idx, EventIdx(2));
    assert_eq!(s.hash(), hash);
    assert_eq!(s.kv().get("n").unwrap().value, KvValue::Int(1));
}

#[test]
fn an_id_applied_before_for_another_request_is_refused_and_changes_nothing() {
    let mut s = founded();
    let incr = Op::KvIncrBy {
        key: "n".into(),
        by: 1,
    };
    let push = Op::ListPush {
        key: "l".into(),
        value: "x".into(),
    };
    let first = s.apply(&env(2, cmd("same", incr.clone()))).unwrap();
    assert_eq!(first.command.unwrap().outcome, Outcome::Int(1));
    let hash = s.hash();
    let other = s.apply(&env(3, cmd("same", push.clone()))).unwrap();
    let other = other.command.unwrap();
    assert_eq!(other.outcome, Outcome::Rejected(Rejection::IdReused));
    assert!(other.duplicate);
    assert_eq!(s.hash(), hash, "nothing pushed");
    assert!(s.kv().get("l").is_none());
    // What admission answers, before a command is proposed.
    let asked = |s: &State, op: &Op| {
        s.known(&Command {
            id: CommandId::from("same"),
            op: op.clone(),
        })
    };
    assert_eq!(asked(&s, &incr), Some((EventIdx(2), Outcome::Int(1))));
    assert_eq!(
        asked(&s, &push),
        Some((EventIdx(2), Outcome::Rejected(Rejection::IdReused)))
    );
    // An outcome from an older snapshot, whose request is unknown, answers
    // any request as before.
    let digest = CommandDigest::of(&CommandId::from("same"));
    let mut rec = s.outcomes().get(&digest).unwrap().clone();
    rec.request = None;
    s.insert_outcome(digest, rec);
    assert_eq!(asked(&s, &push), Some((EventIdx(2), Outcome::Int(1))));
    assert_eq!(s.hash(), hash, "the request is not hashed");
}

#[test]
fn outcomes_expire_by_age() {
    let mut s = founded();
    for at_ms in [10, 20, 30] {
        let c = Command {
            id: CommandId(format!("c{at_ms}")),
            op: Op::KvDelete { key: "x".into() },
        };
        at(&mut s, Event::Command { cmd: c, at_ms });
    }
    at(&mut s, Event::OutcomesExpired { before_ms: 25 });
    let left: Vec<_> = s.outcomes().keys().copied().collect();
    assert_eq!(left, vec![CommandDigest::of(&CommandId::from("c30"))]);
    assert!(s.outcome(&CommandId::from("c30")).is_some());
    assert!(s.outcome(&CommandId::from("c20")).is_none());
    assert_eq!(s.hash(), s.recompute_hash());
}
