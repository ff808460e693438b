//! The node core on its own: put it in a state, feed one input, look at
//! exactly what comes out. (Whole clusters run in `crates/testkit`.)
//! Finding peers, founding and joining a cluster are in `joining`; a disk
//! that fails, in `storage`.

mod joining;
mod members;
mod storage;

use super::*;
use crate::log_store::MemLog;
use crate::snapshot_transfer::EncodedSnapshot;
use crate::testing;
use crate::wire::{Direct, FetchRange, Frame, Gossip, Refusal, PROTOCOL_VERSION};
use shoal_model::{
    Command, CommandId, Event, Heartbeat, Op, Outcome, PortRange, Standing, Term, TransientEvent,
};

const ME: &str = "me";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> NodeConfig {
    NodeConfig::new(NodeId::from(ME), format!("mem://{ME}"), 1)
}

/// A State of cluster "c", founded by `nodes[0]`, with the others joined
/// as followers, and `extra` events after.
fn cluster_state(nodes: &[&str], extra: Vec<Event>) -> State {
    let mut s = testing::cluster_state(nodes);
    for event in extra {
        testing::apply(&mut s, event);
    }
    s
}

fn start(cluster: Option<&str>, state: Option<State>) -> Node<MemLog> {
    let mut log = MemLog::new();
    if let Some(s) = &state {
        log.reset(s.index().next()).unwrap();
    }
    Node::new(cfg(), log, state, cluster.map(ClusterId::from), ms(0)).unwrap()
}

/// A follower of cluster "c" at the State given, woken once at 0.
fn follower(state: State) -> Node<MemLog> {
    let mut n = start(Some("c"), Some(state));
    n.handle(Input::Wake, ms(0), 0);
    n
}

fn heartbeat(from: &str, cluster: Option<&str>, applied: u64, commit: u64) -> Input {
    let hb = Heartbeat {
        node: NodeId::from(from),
        addr: format!("mem://{from}"),
        cluster_id: cluster.map(ClusterId::from),
        incarnation: 9,
        started_ms: 1_000,
        sent_ms: 2_000,
        term: Term(1),
        applied: EventIdx(applied),
        commit: EventIdx(commit),
        log_floor: EventIdx(1),
        leader: Some(NodeId::from("m")),
        standing: None,
        voter: true,
        leader_reason: None,
    };
    Input::Gossip(Frame {
        version: PROTOCOL_VERSION,
        cluster: cluster.map(ClusterId::from),
        from: NodeId::from(from),
        msg: Gossip::Transient(TransientEvent::Heartbeat(hb)),
    })
}

fn direct(from: &str, msg: Direct) -> Input {
    Input::Direct(Frame {
        version: PROTOCOL_VERSION,
        cluster: Some(ClusterId::from("c")),
        from: NodeId::from(from),
        msg,
    })
}

/// The frames sent one-to-one, with their addressee, but for the
/// heartbeats a node sends to peers it hears for the first time.
fn sent(out: &[Output]) -> Vec<(String, Direct)> {
    all_sent(out)
        .into_iter()
        .filter(|(_, m)| !matches!(m, Direct::Transient(TransientEvent::Heartbeat(_))))
        .collect()
}

/// What the node sends, ranges read as the runtime would read them.
fn all_sent(out: &[Output]) -> Vec<(String, Direct)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, frame } => Some((to.to_string(), frame.msg.clone())),
            Output::SendRange { to, frame } => Some((to.to_string(), frame.msg.clone().reply())),
            Output::SendChunk { to, frame } => Some((to.to_string(), frame.msg.clone().reply())),
            _ => None,
        })
        .collect()
}

fn wake(out: &[Output]) -> Option<Duration> {
    out.iter().find_map(|o| match o {
        Output::Wake { at } => Some(*at),
        _ => None,
    })
}

#[test]
fn a_replica_a_little_behind_fetches_the_range_after_one_backoff() {
    let state = cluster_state(&["m", ME, "a"], vec![]);
    let applied = state.index().0;
    let mut n = follower(state);
    let out = n.handle(
        heartbeat("m", Some("c"), applied + 100, applied + 100),
        ms(10),
        0,
    );
    assert!(sent(&out).is_empty(), "gossip may only have reordered it");
    assert_eq!(wake(&out), Some(ms(60)));
    let out = n.handle(Input::Wake, ms(60), 0);
    let sent = sent(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(
        sent[0],
        (
            "m".to_owned(),
            Direct::FetchRange(FetchRange {
                from: EventIdx(applied + 1),
                to: EventIdx(applied + 100),
            })
        )
    );
    assert_eq!(n.metrics().nacks_sent, 1);
}

fn incr(id: &str, key: &str) -> Command {
    Command {
        id: CommandId::from(id),
        op: Op::KvIncrBy {
            key: key.into(),
            by: 1,
        },
    }
}

#[test]
fn a_followers_claims_about_the_log_and_the_master_are_not_believed() {
    let state = cluster_state(&["m", ME, "a"], vec![]);
    let applied = state.index().0;
    let mut n = follower(state);
    // "a" is a follower: its heartbeat says the log is far ahead and that
    // it is master. Neither is believed, and it is asked nothing.
    let Input::Gossip(mut frame) = heartbeat("a", Some("c"), applied + 50_000, applied + 50_000)
    else {
        unreachable!()
    };
    if let Gossip::Transient(TransientEvent::Heartbeat(hb)) = &mut frame.msg {
        hb.leader = Some(NodeId::from("a"));
        hb.term = Term(99);
    }
    n.handle(Input::Gossip(frame), ms(10), 0);
    let out = n.handle(Input::Wake, ms(100), 0);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(n.commit_index().0, applied);
    assert_ne!(n.status().master_id, Some(NodeId::from("a")));
}

#[test]
fn a_command_applied_before_is_answered_with_its_outcome_and_not_sent() {
    let state = cluster_state(
        &["m", ME],
        vec![Event::Command {
            cmd: incr("x", "k"),
            at_ms: 0,
        }],
    );
    let idx = state.index();
    let mut n = follower(state);
    let out = n.handle(
        Input::Submit {
            cmd: incr("x", "k"),
            reply: 7,
        },
        ms(10),
        0,
    );
    assert!(sent(&out).is_empty());
    assert!(matches!(
        &out[0],
        Output::Reply { to: 7, reply: Ok((i, Outcome::Int(1))) } if *i == idx
    ));
}

#[test]
fn an_invalid_command_is_refused_at_the_edge() {
    let mut n = follower(cluster_state(&["m", ME], vec![]));
    let out = n.handle(
        Input::Submit {
            cmd: incr("y", ""),
            reply: 8,
        },
        ms(10),
        0,
    );
    assert!(matches!(
        &out[0],
        Output::Reply {
            to: 8,
            reply: Err(Refusal::Invalid(_))
        }
    ));
    assert!(sent(&out).is_empty());
}

#[test]
fn a_new_command_goes_to_the_master_and_waits_for_the_local_apply() {
    let mut n = follower(cluster_state(&["m", ME], vec![]));
    n.handle(heartbeat("m", Some("c"), 2, 2), ms(5), 0);
    let out = n.handle(
        Input::Submit {
            cmd: incr("z", "k"),
            reply: 9,
        },
        ms(10),
        0,
    );
    assert_eq!(
        sent(&out),
        vec![("m".to_owned(), Direct::Forward(incr("z", "k")))]
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Reply { .. })));
    assert_eq!(
        wake(&out),
        None,
        "the heartbeat at 300 ms comes before the resend"
    );
    // After the heartbeat, the resend is next.
    let out = n.handle(Input::Wake, ms(300), 0);
    assert_eq!(wake(&out), Some(ms(510)));
    let out = n.handle(Input::Wake, ms(510), 0);
    assert_eq!(
        sent(&out),
        vec![("m".to_owned(), Direct::Forward(incr("z", "k")))]
    );
}

#[test]
fn a_follower_refuses_a_forwarded_command_as_not_master() {
    let mut n = follower(cluster_state(&["m", ME, "a"], vec![]));
    let out = n.handle(direct("a", Direct::Forward(incr("f", "k"))), ms(10), 0);
    assert_eq!(
        sent(&out),
        vec![(
            "a".to_owned(),
            Direct::ForwardRefused {
                id: CommandId::from("f"),
                reason: Refusal::NotMaster
            }
        )]
    );
}

#[test]
fn frames_of_another_cluster_or_version_are_dropped_and_counted() {
    // (A cluster that holds nothing would be given up: see `joining`.)
    let write = Event::Command {
        cmd: incr("w", "k"),
        at_ms: 0,
    };
    let mut n = follower(cluster_state(&["m", ME], vec![write]));
    let out = n.handle(heartbeat("x", Some("other"), 9, 9), ms(10), 0);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(n.metrics().foreign_messages, 1);
    assert!(n.live_peers().is_empty());
    let Input::Direct(mut frame) = direct("a", Direct::Leave) else {
        unreachable!()
    };
    frame.version = PROTOCOL_VERSION + 1;
    n.handle(Input::Direct(frame), ms(11), 0);
    assert_eq!(n.metrics().bad_messages, 1);
}

/// A heartbeat in this node's name from another incarnation.
fn own_heartbeat(started_ms: u64, sent_ms: u64) -> Input {
    let Input::Gossip(mut frame) = heartbeat(ME, Some("c"), 2, 2) else {
        unreachable!()
    };
    if let Gossip::Transient(TransientEvent::Heartbeat(hb)) = &mut frame.msg {
        hb.started_ms = started_ms;
        hb.sent_ms = sent_ms;
    }
    Input::Gossip(frame)
}

/// A follower whose process started at wall time 10 s.
fn started_at_ten_seconds() -> Node<MemLog> {
    let mut c = cfg();
    c.started_ms = 10_000;
    let state = cluster_state(&["m", ME], vec![]);
    let mut log = MemLog::new();
    log.reset(state.index().next()).unwrap();
    let mut n = Node::new(c, log, Some(state), Some(ClusterId::from("c")), ms(0)).unwrap();
    n.handle(Input::Wake, ms(0), 10_000);
    n
}

#[test]
fn a_later_process_hearing_an_earlier_one_with_its_identity_stops() {
    let mut n = started_at_ten_seconds();
    let out = n.handle(own_heartbeat(5_000, 11_000), ms(1000), 11_000);
    assert!(matches!(out.last(), Some(Output::Fatal(why)) if why.contains("data directory")));
    assert!(
        n.handle(Input::Wake, ms(2000), 12_000).is_empty(),
        "a stopped core does nothing more"
    );
}

#[test]
fn an_earlier_run_replayed_or_a_later_process_does_not_stop_this_one() {
    let mut n = started_at_ten_seconds();
    // Sent before this process started: an earlier run's, replayed.
    let out = n.handle(own_heartbeat(5_000, 9_000), ms(1000), 11_000);
    assert!(!out.iter().any(|o| matches!(o, Output::Fatal(_))));
    // A process that started after this one: it is the one to stop.
    let out = n.handle(own_heartbeat(10_500, 11_000), ms(1100), 11_100);
    assert!(!out.iter().any(|o| matches!(o, Output::Fatal(_))));
}

#[test]
fn task_output_reaches_local_clients_and_subscribed_nodes() {
    let mut n = follower(cluster_state(&["m", ME, "a"], vec![]));
    let task = shoal_model::TaskId::from("t");
    n.handle(
        direct(
            "a",
            Direct::OutputSubscribe {
                task: task.clone(),
                attempt: 1,
                from_seq: 0,
            },
        ),
        ms(10),
        0,
    );
    let chunk = shoal_model::OutputChunk {
        task: task.clone(),
        attempt: 1,
        stream: shoal_model::Stream::Stdout,
        seq: 0,
        data: b"hello\n".to_vec(),
    };
    let out = n.handle(Input::RunOutput(chunk.clone()), ms(20), 0);
    assert_eq!(
        sent(&out),
        vec![("a".to_owned(), Direct::Output(vec![chunk.clone()]))]
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::TaskOutput(c) if *c == chunk)));
    assert_eq!(n.task_output(&task), vec![chunk.clone()]);
    // A repeat is recorded once and sent to nobody.
    let out = n.handle(Input::RunOutput(chunk), ms(30), 0);
    assert!(out.iter().all(|o| matches!(o, Output::Wake { .. })));
}

#[test]
fn the_metrics_timer_reports_capacity_to_the_members_and_asks_for_a_measurement() {
    let mut n = follower(cluster_state(&["m", ME, "f"], vec![]));
    n.handle(
        Input::HostCapacity(HostMeasure {
            cpu_free_milli: 1500,
            mem_free_bytes: 1 << 30,
            disk_free_bytes: 5 << 30,
            ports_taken: vec![20000],
        }),
        ms(10),
        0,
    );
    let out = n.handle(Input::Wake, ms(1000), 0);
    // A follower reports to the members, one-to-one.
    let metrics: Vec<_> = sent(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Direct::Transient(TransientEvent::Metrics(m)) => Some((to, m)),
            _ => None,
        })
        .collect();
    let [(to, m)] = metrics.as_slice() else {
        panic!("capacity sent to the member: {out:?}")
    };
    assert_eq!(to, "m");
    assert_eq!(
        (m.cpu_free_milli, m.mem_free_bytes, m.disk_free_bytes),
        (1500, 1 << 30, 5 << 30)
    );
    assert_eq!(
        (m.replica_ports, m.ports_taken.as_slice()),
        (PortRange::DEFAULT, &[20000][..])
    );
    assert!(out.iter().any(|o| matches!(o, Output::MeasureHost { .. })));
    assert_eq!(n.timer(Timer::Metrics), Some(ms(2000)));
    // It says which members it does not hear: the voter m, silent so far;
    // not f, a follower like itself, which sends it nothing.
    assert_eq!(m.unheard, [NodeId::from("m")]);
    n.handle(heartbeat("m", Some("c"), 0, 0), ms(1500), 0);
    let out = n.handle(Input::Wake, ms(2000), 0);
    let unheard: Vec<_> = sent(&out)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Direct::Transient(TransientEvent::Metrics(m)) => Some(m.unheard.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(unheard, [vec![]], "m heard");
}

/// Entries `from..=to`, no-ops of term 1.
fn noops(from: u64, to: u64) -> Vec<shoal_model::LogEntry> {
    (from..=to)
        .map(|i| shoal_model::LogEntry {
            idx: EventIdx(i),
            term: Term(1),
            kind: shoal_model::EntryKind::Normal,
            data: shoal_model::encode_event(&Event::Noop),
            context: vec![],
        })
        .collect()
}

/// Committed entries `from..=to` (no-ops), as the master gossips them.
fn committed(from: u64, to: u64) -> Input {
    gossiped(noops(from, to))
}

/// Committed entries as the master "m" gossips them.
fn gossiped(entries: Vec<shoal_model::LogEntry>) -> Input {
    Input::Gossip(Frame {
        version: PROTOCOL_VERSION,
        cluster: Some(ClusterId::from("c")),
        from: NodeId::from("m"),
        msg: Gossip::Committed(entries),
    })
}

#[test]
fn a_follower_applies_gossiped_entries_keeps_them_and_serves_them() {
    let state = cluster_state(&["m", ME, "a"], vec![]);
    let base = state.index().0;
    let mut n = follower(state);
    // The voters (here "m" alone) name "m" master: its entries are taken.
    n.handle(heartbeat("m", Some("c"), base, base), ms(5), 0);
    n.handle(committed(base + 1, base + 3), ms(10), 0);
    assert_eq!(n.state().index().0, base + 3);
    assert_eq!(n.log().last_index().0, base + 3, "kept in its own log");
    let range = |from, to| {
        direct(
            "a",
            Direct::FetchRange(FetchRange {
                from: EventIdx(from),
                to: EventIdx(to),
            }),
        )
    };
    let out = n.handle(range(base + 2, base + 100), ms(20), 0);
    assert!(matches!(
        sent(&out)[..],
        [(ref to, Direct::Range(crate::wire::RangeReply::Entries { from, ref entries }))]
            if to == "a" && from.0 == base + 2 && entries.len() == 2
    ));
    let out = n.handle(range(1, 2), ms(21), 0);
    assert!(matches!(
        sent(&out)[..],
        [(_, Direct::Range(crate::wire::RangeReply::Compacted { floor, .. }))] if floor.0 == base + 1
    ));
    let out = n.handle(range(base + 9, base + 10), ms(22), 0);
    assert!(matches!(
        sent(&out)[..],
        [(_, Direct::Range(crate::wire::RangeReply::NotYet { .. }))]
    ));
    assert_eq!(n.metrics().ranges_served, 1);
}

#[test]
fn a_lone_node_drains_at_once() {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    n.handle(Input::Wake, ms(2000), 0);
    n.handle(Input::Wake, ms(2001), 0);
    assert!(n.state().cluster_id().is_some());
    let out = n.handle(Input::Drain, ms(2100), 0);
    assert!(n.drained(), "nothing to hand over, nobody to tell");
    assert!(sent(&out).is_empty());
}

#[test]
fn a_leaving_node_that_hears_no_voter_stops_rather_than_wait() {
    let mut n = follower(cluster_state(&["m", ME], vec![]));
    let at = n.state().index().0;
    n.handle(heartbeat("m", Some("c"), at, at), ms(10), 0);
    n.handle(Input::Drain, ms(20), 0);
    assert!(!n.drained(), "the master is in sight: it records the leave");
    // Every node stopped at once: the master is gone too.
    n.handle(Input::Wake, ms(20) + cfg().node_timeout, 0);
    assert!(n.drained(), "nobody left to record it");
}

#[test]
fn task_output_is_taken_only_from_the_node_that_runs_the_task() {
    let mut state = cluster_state(&["m", ME, "a"], vec![]);
    testing::leased_task(&mut state, "t", "a", None);
    let mut n = follower(state);
    let chunk = |seq| shoal_model::OutputChunk {
        task: shoal_model::TaskId::from("t"),
        attempt: 1,
        stream: shoal_model::Stream::Stdout,
        seq,
        data: b"x\n".to_vec(),
    };
    let out = n.handle(direct("m", Direct::Output(vec![chunk(0)])), ms(10), 0);
    assert!(!out.iter().any(|o| matches!(o, Output::TaskOutput(_))));
    assert_eq!(n.metrics().bad_messages, 1);
    let out = n.handle(direct("a", Direct::Output(vec![chunk(0)])), ms(11), 0);
    assert!(out.iter().any(|o| matches!(o, Output::TaskOutput(_))));
    assert_eq!(n.task_output(&shoal_model::TaskId::from("t")).len(), 1);
}
