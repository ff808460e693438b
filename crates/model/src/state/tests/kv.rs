//! Keys, sets, lists, locks and fences.

use super::*;
use crate::event::*;
use crate::ids::*;

#[test]
fn incr_counts_and_refuses_wrong_types() {
    let mut s = founded();
    assert_eq!(
        run(
            &mut s,
            Op::KvIncrBy {
                key: "n".into(),
                by: 2
            }
        ),
        Outcome::Int(2)
    );
    assert_eq!(
        run(
            &mut s,
            Op::KvIncrBy {
                key: "n".into(),
                by: -5
            }
        ),
        Outcome::Int(-3)
    );
    run(
        &mut s,
        Op::KvSet {
            key: "t".into(),
            value: "41".into(),
        },
    );
    assert_eq!(
        run(
            &mut s,
            Op::KvIncrBy {
                key: "t".into(),
                by: 1
            }
        ),
        Outcome::Int(42)
    );
    run(
        &mut s,
        Op::KvSet {
            key: "w".into(),
            value: "x".into(),
        },
    );
    assert_eq!(
        run(
            &mut s,
            Op::KvIncrBy {
                key: "w".into(),
                by: 1
            }
        ),
        Outcome::Rejected(Rejection::WrongType)
    );
    run(
        &mut s,
        Op::KvSet {
            key: "m".into(),
            value: i64::MAX.to_string(),
        },
    );
    assert_eq!(
        run(
            &mut s,
            Op::KvIncrBy {
                key: "m".into(),
                by: 1
            }
        ),
        Outcome::Rejected(Rejection::Overflow)
    );
}

#[test]
fn set_if_absent_has_one_winner_and_expires_only_its_own_version() {
    let mut s = founded();
    let op = |v: &str| Op::KvSetIfAbsent {
        key: "k".into(),
        value: v.into(),
        ttl_ms: Some(500),
    };
    assert_eq!(run(&mut s, op("a")), Outcome::Applied(true));
    assert_eq!(run(&mut s, op("b")), Outcome::Applied(false));
    let version = s.kv().get("k").unwrap().version;
    at(
        &mut s,
        Event::KvExpired {
            key: "k".into(),
            version: EventIdx(version.0 + 100),
        },
    );
    assert!(s.kv().contains_key("k"), "a stale expiry changes nothing");
    at(
        &mut s,
        Event::KvExpired {
            key: "k".into(),
            version,
        },
    );
    assert!(!s.kv().contains_key("k"));
    assert_eq!(run(&mut s, op("c")), Outcome::Applied(true));
}

#[test]
fn lock_tokens_fence_old_holders() {
    let mut s = founded();
    let acquire = |h: &str| Op::LockAcquire {
        name: "L".into(),
        holder: h.into(),
        ttl_ms: 1000,
    };
    let Outcome::Token(t1) = run(&mut s, acquire("a")) else {
        panic!("no token")
    };
    assert_eq!(
        run(&mut s, acquire("b")),
        Outcome::Rejected(Rejection::LockHeld { holder: "a".into() })
    );
    assert_eq!(
        run(
            &mut s,
            Op::LockKeepalive {
                name: "L".into(),
                token: t1
            }
        ),
        Outcome::Done
    );
    let version = s.kv().get("L").unwrap().version;
    at(
        &mut s,
        Event::KvExpired {
            key: "L".into(),
            version,
        },
    );
    let Outcome::Token(t2) = run(&mut s, acquire("b")) else {
        panic!("no token")
    };
    assert!(t2 > t1);
    assert_eq!(
        run(
            &mut s,
            Op::LockKeepalive {
                name: "L".into(),
                token: t1
            }
        ),
        Outcome::Rejected(Rejection::StaleToken)
    );
    assert_eq!(
        run(
            &mut s,
            Op::LockRelease {
                name: "L".into(),
                token: t1
            }
        ),
        Outcome::Rejected(Rejection::StaleToken)
    );
    assert_eq!(
        run(
            &mut s,
            Op::LockRelease {
                name: "L".into(),
                token: t2
            }
        ),
        Outcome::Done
    );
}

#[test]
fn fenced_writes_need_the_current_token_and_barriers_leave_no_trace() {
    let mut s = founded();
    let Outcome::Token(t1) = run(
        &mut s,
        Op::LockAcquire {
            name: "L".into(),
            holder: "a".into(),
            ttl_ms: 1000,
        },
    ) else {
        panic!("no token")
    };
    let fenced = |token, value: &str| Op::Fenced {
        lock: "L".into(),
        token,
        op: Box::new(Op::KvSet {
            key: "k".into(),
            value: value.into(),
        }),
    };
    assert_eq!(run(&mut s, fenced(t1, "one")), Outcome::Done);
    assert_eq!(
        run(&mut s, fenced(FencingToken(t1.0 + 99), "two")),
        Outcome::Rejected(Rejection::StaleToken)
    );
    run(
        &mut s,
        Op::LockRelease {
            name: "L".into(),
            token: t1,
        },
    );
    assert_eq!(
        run(&mut s, fenced(t1, "three")),
        Outcome::Rejected(Rejection::StaleToken)
    );
    assert_eq!(s.kv().get("k").unwrap().value, KvValue::Str("one".into()));
    let guarded_lock = Op::Fenced {
        lock: "L".into(),
        token: t1,
        op: Box::new(Op::LockRelease {
            name: "M".into(),
            token: t1,
        }),
    };
    assert!(matches!(
        run(&mut s, guarded_lock),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    let outcomes = s.outcomes().len();
    let hash = s.hash();
    assert_eq!(run(&mut s, Op::Barrier), Outcome::Done);
    assert_eq!(s.outcomes().len(), outcomes);
    assert_eq!(s.hash(), hash);
}

#[test]
fn sets_and_lists_are_capped() {
    let mut s = founded();
    for i in 0..Limits::MAX_COLLECTION_LEN {
        run(
            &mut s,
            Op::ListPush {
                key: "l".into(),
                value: i.to_string(),
            },
        );
    }
    assert!(matches!(
        run(
            &mut s,
            Op::ListPush {
                key: "l".into(),
                value: "x".into()
            }
        ),
        Outcome::Rejected(Rejection::Full { .. })
    ));
    assert_eq!(
        run(
            &mut s,
            Op::SetAdd {
                key: "s".into(),
                member: "a".into()
            }
        ),
        Outcome::Applied(true)
    );
    assert_eq!(
        run(
            &mut s,
            Op::SetAdd {
                key: "s".into(),
                member: "a".into()
            }
        ),
        Outcome::Applied(false)
    );
    assert_eq!(
        run(
            &mut s,
            Op::SetRemove {
                key: "s".into(),
                member: "a".into()
            }
        ),
        Outcome::Applied(true)
    );
    assert!(!s.kv().contains_key("s"), "an empty set is removed");
}
