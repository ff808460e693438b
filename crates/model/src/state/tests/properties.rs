//! Properties of `apply` over arbitrary event sequences.

use super::*;
use crate::event::*;
use crate::ids::*;

use super::tasks::synthetic_task;
use proptest::prelude::*;

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "lock", "s", "l"]).prop_map(str::to_owned)
}

/// The key-value writes, the ops a transaction may hold.
pub(super) fn arb_kv_write() -> impl Strategy<Value = Op> {
    prop_oneof![
        (arb_key(), "[a-z0-9]{0,4}").prop_map(|(key, value)| Op::KvSet { key, value }),
        (arb_key(), "[a-z]{0,3}", prop::option::of(1u64..1000))
            .prop_map(|(key, value, ttl_ms)| Op::KvSetIfAbsent { key, value, ttl_ms }),
        (arb_key(), prop::option::of("[a-z]{0,2}"), "[a-z]{0,2}").prop_map(
            |(key, expected, value)| Op::KvCas {
                key,
                expected,
                value
            }
        ),
        (arb_key(), -5i64..5).prop_map(|(key, by)| Op::KvIncrBy { key, by }),
        arb_key().prop_map(|key| Op::KvDelete { key }),
        (arb_key(), "[a-c]").prop_map(|(key, member)| Op::SetAdd { key, member }),
        (arb_key(), "[a-c]").prop_map(|(key, member)| Op::SetRemove { key, member }),
        (arb_key(), "[a-c]").prop_map(|(key, value)| Op::ListPush { key, value }),
    ]
}

pub(super) fn arb_guard() -> impl Strategy<Value = Guard> {
    let check = prop_oneof![
        any::<bool>().prop_map(Check::Exists),
        (0u64..40).prop_map(|v| Check::Version(EventIdx(v))),
        "[a-z0-9]{0,2}".prop_map(Check::Value),
    ];
    (arb_key(), check).prop_map(|(key, check)| Guard { key, check })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        arb_kv_write(),
        (
            prop::collection::vec(arb_guard(), 0..3),
            prop::collection::vec(arb_kv_write(), 1..6)
        )
            .prop_map(|(guards, ops)| Op::Txn { guards, ops }),
        (arb_key(), "[xy]", 1u64..100).prop_map(|(name, holder, ttl_ms)| Op::LockAcquire {
            name,
            holder,
            ttl_ms
        }),
        (arb_key(), 0u64..40).prop_map(|(name, t)| Op::LockRelease {
            name,
            token: FencingToken(t)
        }),
        Just(Op::TaskSubmit {
            spec: synthetic_task()
        }),
        (0u64..40).prop_map(|t| Op::TaskCancel {
            task: TaskId(format!("id{t}"))
        }),
        Just(Op::Barrier),
        (arb_key(), 0u64..40, arb_key(), -5i64..5).prop_map(|(lock, t, key, by)| Op::Fenced {
            lock,
            token: FencingToken(t),
            op: Box::new(Op::KvIncrBy { key, by })
        }),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => ((0u64..40), arb_op(), 0u64..100).prop_map(|(id, op, at_ms)| Event::Command {
            cmd: Command { id: CommandId(format!("id{id}")), op },
            at_ms,
        }),
        1 => (arb_key(), 0u64..40).prop_map(|(key, v)| Event::KvExpired { key, version: EventIdx(v) }),
        1 => (0u64..40, 0u64..3).prop_map(|(t, n)| Event::TaskGranted {
            task: TaskId(format!("id{t}")),
            node: NodeId(format!("n{n}")),
            lease_ms: 100,
        }),
        1 => (0u64..40, 0u64..40).prop_map(|(t, k)| Event::TaskLeaseExpired {
            task: TaskId(format!("id{t}")),
            token: FencingToken(k),
        }),
        1 => (0u64..3).prop_map(|n| Event::NodeJoined { node: NodeId(format!("n{n}")), addr: String::new(), at_ms: 0 }),
        1 => (0u64..100).prop_map(|before_ms| Event::OutcomesExpired { before_ms }),
        1 => Just(Event::Noop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The incremental hash always equals a from-scratch hash.
    #[test]
    fn incremental_hash_matches_recomputed(events in prop::collection::vec(arb_event(), 1..120)) {
        let mut s = founded();
        for (i, e) in events.into_iter().enumerate() {
            s.apply(&env(i as u64 + 2, e)).unwrap();
            prop_assert_eq!(s.hash(), s.recompute_hash());
            let with_ttl: Vec<&Key> = s.kv().iter().filter(|(_, e)| e.ttl_ms.is_some()).map(|(k, _)| k).collect();
            prop_assert_eq!(with_ttl, s.expiring().iter().collect::<Vec<_>>());
        }
    }

    /// Two replicas fed the same log end equal, with equal outcomes.
    #[test]
    fn apply_is_deterministic(events in prop::collection::vec(arb_event(), 1..80)) {
        let mut a = founded();
        let mut b = founded();
        for (i, e) in events.iter().enumerate() {
            let ra = a.apply(&env(i as u64 + 2, e.clone())).unwrap();
            let rb = b.apply(&env(i as u64 + 2, e.clone())).unwrap();
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(a.kv(), b.kv());
        prop_assert_eq!(a.tasks(), b.tasks());
    }

    /// Different KV contents hash differently.
    #[test]
    fn hash_distinguishes_values(v1 in "[a-z]{1,8}", v2 in "[a-z]{1,8}") {
        prop_assume!(v1 != v2);
        let mut a = founded();
        let mut b = founded();
        run(&mut a, Op::KvSet { key: "k".into(), value: v1 });
        run(&mut b, Op::KvSet { key: "k".into(), value: v2 });
        prop_assert_ne!(a.hash(), b.hash());
    }
}
