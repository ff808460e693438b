use super::*;
use crate::event::*;
use crate::ids::*;
use proptest::prelude::*;

fn env(idx: u64, event: Event) -> Envelope {
    Envelope {
        idx: EventIdx(idx),
        term: Term(1),
        event,
    }
}

fn cmd(id: &str, op: Op) -> Event {
    Event::Command {
        cmd: Command {
            id: CommandId::from(id),
            op,
        },
        at_ms: 1000,
    }
}

fn founded() -> State {
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

fn run(s: &mut State, op: Op) -> Outcome {
    let idx = s.index().0 + 1;
    let id = format!("c{idx}");
    s.apply(&env(idx, cmd(&id, op)))
        .unwrap()
        .command
        .unwrap()
        .outcome
}

fn at(s: &mut State, event: Event) {
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

pub(crate) fn synthetic_task() -> TaskSpec {
    TaskSpec {
        runner: Runner::Synthetic {
            chunks: 1,
            interval_ms: 1,
            exit_code: 0,
        },
        timeout_ms: None,
        node: None,
        labels: Default::default(),
        resources: Resources::default(),
        max_attempts: 2,
    }
}

#[test]
fn task_lease_retry_and_stale_report() {
    let mut s = founded();
    let Outcome::Task(id) = run(
        &mut s,
        Op::TaskSubmit {
            spec: synthetic_task(),
        },
    ) else {
        panic!()
    };
    let grant = |s: &mut State| {
        let i = s.index().0 + 1;
        at(
            s,
            Event::TaskGranted {
                task: id.clone(),
                node: NodeId::from("n1"),
                lease_ms: 1000,
            },
        );
        FencingToken(i)
    };
    let t1 = grant(&mut s);
    at(
        &mut s,
        Event::TaskLeaseExpired {
            task: id.clone(),
            token: t1,
        },
    );
    assert_eq!(s.tasks().get(&id).unwrap().status, TaskStatus::Queued);
    let t2 = grant(&mut s);
    let finished = TaskReport::Finished {
        exit_code: 0,
        class: ExitClass::Success,
    };
    assert_eq!(
        run(
            &mut s,
            Op::TaskReport {
                task: id.clone(),
                token: t1,
                report: finished
            }
        ),
        Outcome::Rejected(Rejection::StaleToken)
    );
    assert_eq!(
        run(
            &mut s,
            Op::TaskReport {
                task: id.clone(),
                token: t2,
                report: finished
            }
        ),
        Outcome::Done
    );
    assert!(s.tasks().get(&id).unwrap().status.is_terminal());
    assert_eq!(s.tasks().get(&id).unwrap().attempt, 2);
    at(
        &mut s,
        Event::TasksForgotten {
            tasks: vec![id.clone()],
        },
    );
    assert!(s.tasks().is_empty());
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
    let left: Vec<_> = s.outcomes().keys().map(|k| k.0.clone()).collect();
    assert_eq!(left, vec!["c30".to_string()]);
    assert_eq!(s.hash(), s.recompute_hash());
}

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

// ---- properties -------------------------------------------------------------

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "lock", "s", "l"]).prop_map(str::to_owned)
}

fn arb_op() -> impl Strategy<Value = Op> {
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
            let with_ttl: Vec<&String> = s.kv().iter().filter(|(_, e)| e.ttl_ms.is_some()).map(|(k, _)| k).collect();
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
