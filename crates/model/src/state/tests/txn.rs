//! Transactions: guards, ops in order, all or nothing.

use super::properties::{arb_guard, arb_kv_write};
use super::*;
use crate::event::*;
use crate::ids::*;
use proptest::prelude::*;

fn set(key: &str, value: &str) -> Op {
    Op::KvSet {
        key: key.into(),
        value: value.into(),
    }
}

fn guard(key: &str, check: Check) -> Guard {
    Guard {
        key: key.into(),
        check,
    }
}

fn txn(guards: Vec<Guard>, ops: Vec<Op>) -> Op {
    Op::Txn { guards, ops }
}

fn text(s: &State, key: &str) -> Option<String> {
    s.kv().get(key).and_then(|e| e.value.as_text())
}

#[test]
fn ops_apply_in_order_each_seeing_the_ones_before() {
    let mut s = founded();
    let out = run(
        &mut s,
        txn(
            vec![],
            vec![
                set("a", "1"),
                Op::KvIncrBy {
                    key: "a".into(),
                    by: 2,
                },
                Op::KvCas {
                    key: "a".into(),
                    expected: Some("3".into()),
                    value: "x".into(),
                },
                Op::KvSetIfAbsent {
                    key: "a".into(),
                    value: "y".into(),
                    ttl_ms: None,
                },
                Op::KvDelete { key: "b".into() },
            ],
        ),
    );
    assert_eq!(
        out,
        Outcome::Txn(vec![
            Outcome::Done,
            Outcome::Int(3),
            Outcome::Applied(true),
            Outcome::Applied(false),
            Outcome::Applied(false),
        ])
    );
    assert_eq!(text(&s, "a").as_deref(), Some("x"));
    assert_eq!(s.kv()["a"].version, s.index(), "one version for the whole");
}

#[test]
fn guards_check_existence_version_and_value() {
    let mut s = founded();
    run(&mut s, set("a", "1"));
    let v = s.kv()["a"].version;
    let holds = [
        guard("a", Check::Exists(true)),
        guard("b", Check::Exists(false)),
        guard("a", Check::Version(v)),
        guard("a", Check::Value("1".into())),
    ];
    let fails = [
        guard("a", Check::Exists(false)),
        guard("b", Check::Exists(true)),
        guard("a", Check::Version(EventIdx(v.0 + 1))),
        guard("b", Check::Version(v)),
        guard("a", Check::Value("2".into())),
        guard("b", Check::Value(String::new())),
    ];
    for g in fails {
        let mut guards = holds.to_vec();
        guards.push(g.clone());
        let before = s.kv().clone();
        let out = run(&mut s, txn(guards, vec![set("a", "changed")]));
        assert_eq!(out, Outcome::GuardFailed { guard: 4 }, "{g:?}");
        assert_eq!(s.kv(), &before, "a failed guard writes nothing");
    }
    let out = run(&mut s, txn(holds.to_vec(), vec![set("a", "2")]));
    assert_eq!(out, Outcome::Txn(vec![Outcome::Done]));
    assert_eq!(text(&s, "a").as_deref(), Some("2"));
}

#[test]
fn a_refused_op_undoes_the_ops_before_it() {
    let mut s = founded();
    run(&mut s, set("a", "old"));
    run(
        &mut s,
        Op::KvSetIfAbsent {
            key: "t".into(),
            value: "v".into(),
            ttl_ms: Some(50),
        },
    );
    let kv = s.kv().clone();
    let expiring = s.expiring().clone();
    let out = run(
        &mut s,
        txn(
            vec![],
            vec![
                set("a", "new"),
                Op::KvDelete { key: "t".into() },
                set("fresh", "1"),
                Op::KvIncrBy {
                    key: "a".into(),
                    by: 1,
                },
            ],
        ),
    );
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::InTxn {
            op: 3,
            reason: Box::new(Rejection::WrongType)
        })
    );
    assert_eq!(s.kv(), &kv, "every key as it was, versions too");
    assert_eq!(s.expiring(), &expiring, "the TTL index as it was");
    assert_eq!(s.hash(), s.recompute_hash());
}

#[test]
fn a_retried_transaction_gets_its_first_outcome_and_changes_nothing() {
    let mut s = founded();
    let op = txn(
        vec![],
        vec![Op::KvIncrBy {
            key: "n".into(),
            by: 1,
        }],
    );
    let first = s.apply(&env(2, cmd("t1", op.clone()))).unwrap().command;
    let again = s.apply(&env(3, cmd("t1", op))).unwrap().command.unwrap();
    assert_eq!(first.unwrap().outcome, Outcome::Txn(vec![Outcome::Int(1)]));
    assert!(again.duplicate);
    assert_eq!(again.outcome, Outcome::Txn(vec![Outcome::Int(1)]));
    assert_eq!(text(&s, "n").as_deref(), Some("1"));
}

#[test]
fn a_transaction_holds_key_value_writes_only_within_its_limits() {
    let lock = Op::LockAcquire {
        name: "l".into(),
        holder: "h".into(),
        ttl_ms: 10,
    };
    let nested = txn(vec![], vec![set("a", "1")]);
    let too_many = vec![set("a", "1"); Limits::MAX_TXN_OPS + 1];
    let big = "x".repeat(Limits::MAX_VALUE_LEN);
    let too_big = vec![set("a", &big); Limits::MAX_TXN_BYTES / big.len() + 1];
    for ops in [vec![], vec![lock], vec![nested], too_many, too_big] {
        let mut s = founded();
        let out = run(&mut s, txn(vec![], ops));
        assert!(
            matches!(out, Outcome::Rejected(Rejection::Invalid { .. })),
            "{out:?}"
        );
        assert!(s.kv().is_empty());
    }
    let fenced = Op::Fenced {
        lock: "l".into(),
        token: FencingToken(0),
        op: Box::new(txn(vec![], vec![set("a", "1")])),
    };
    assert_eq!(validate_op(&fenced), Ok(()), "a fence may guard a txn");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A transaction whose guards hold leaves the values, and answers the
    /// outcomes, that its ops applied one by one would; refused, it
    /// leaves every key as it was.
    #[test]
    fn a_transaction_is_its_ops_in_order_or_nothing(
        setup in prop::collection::vec(arb_kv_write(), 0..8),
        guards in prop::collection::vec(arb_guard(), 0..3),
        ops in prop::collection::vec(arb_kv_write(), 1..8),
    ) {
        let mut s = founded();
        for op in setup {
            run(&mut s, op);
        }
        let mut one_by_one = s.clone();
        let before = s.kv().clone();
        let out = run(&mut s, txn(guards.clone(), ops.clone()));
        prop_assert_eq!(s.hash(), s.recompute_hash());
        let values = |s: &State| -> Vec<(String, KvValue)> {
            s.kv().iter().map(|(k, e)| (k.to_string(), e.value.clone())).collect()
        };
        match out {
            Outcome::GuardFailed { guard } => {
                prop_assert!(!one_by_one.guard_holds(&guards[guard as usize]));
                prop_assert_eq!(s.kv(), &before);
            }
            Outcome::Txn(results) => {
                prop_assert!(guards.iter().all(|g| one_by_one.guard_holds(g)));
                let each: Vec<Outcome> = ops.into_iter().map(|op| run(&mut one_by_one, op)).collect();
                prop_assert_eq!(results, each);
                prop_assert_eq!(values(&s), values(&one_by_one));
            }
            Outcome::Rejected(Rejection::InTxn { op, .. }) => {
                let each: Vec<Outcome> = ops.into_iter().map(|op| run(&mut one_by_one, op)).collect();
                prop_assert!(matches!(each[op as usize], Outcome::Rejected(_)));
                prop_assert_eq!(s.kv(), &before);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
