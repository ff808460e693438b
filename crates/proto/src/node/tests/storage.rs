//! A disk that fails under a follower: what it applied and what its log
//! keeps stay one history, so that it restarts into the same State. And
//! how much of the log a local snapshot lets go.

use super::*;
use crate::wire::RangeReply;
use shoal_model::{encode_event, EntryKind, LogEntry};
use std::sync::atomic::Ordering;

/// Entries `from..=to` of `term`, each setting key "k" to `value`.
fn sets(from: u64, to: u64, term: u64, value: &str) -> Vec<LogEntry> {
    (from..=to)
        .map(|i| {
            let cmd = Command {
                id: CommandId::from(format!("{value}-{i}").as_str()),
                op: Op::KvSet {
                    key: "k".into(),
                    value: value.into(),
                },
            };
            LogEntry {
                idx: EventIdx(i),
                term: Term(term),
                kind: EntryKind::Normal,
                data: encode_event(&Event::Command { cmd, at_ms: 0 }),
                context: vec![],
            }
        })
        .collect()
}

/// `state` with `entries` applied.
fn applied(mut state: State, entries: &[LogEntry]) -> State {
    for e in entries {
        state.apply(&e.envelope().unwrap()).unwrap();
    }
    state
}

/// A follower at `state` whose log holds `tail` past it (entries of a
/// term that lost, written while it was a voter), named "m" as master.
fn follower_with_tail(state: State, tail: &[LogEntry]) -> Node<MemLog> {
    let mut log = MemLog::new();
    log.reset(tail[0].idx).unwrap();
    log.append(tail).unwrap();
    log.sync().unwrap();
    let index = state.index().0;
    let mut n = Node::new(cfg(), log, Some(state), Some(ClusterId::from("c")), ms(0)).unwrap();
    n.handle(Input::Wake, ms(0), 0);
    n.handle(heartbeat("m", Some("c"), index, index + 10), ms(5), 0);
    n
}

/// What this node's disk holds restarts into: the State replayed from
/// it on top of `from`.
fn restarted(n: &Node<MemLog>, from: State) -> State {
    let mut disk = n.log().clone();
    disk.crash();
    let again = Node::new(cfg(), disk, Some(from), Some(ClusterId::from("c")), ms(0)).unwrap();
    again.state().clone()
}

#[test]
fn a_batch_the_full_disk_refused_is_written_first_once_it_has_room() {
    let start = cluster_state(&["m", ME, "a"], vec![]);
    let base = start.index().0;
    let mut n = follower_with_tail(start.clone(), &sets(base + 1, base + 3, 1, "lost"));
    let full = n.log().full_switch();
    let committed = sets(base + 1, base + 5, 2, "won");

    // The disk fills just as the entries that replace the tail arrive.
    full.store(true, Ordering::Relaxed);
    n.handle(gossiped(committed[..3].to_vec()), ms(10), 0);
    assert!(n.storage_fault().unwrap().contains("disk full"));
    // Nothing more is applied than the log may be made to hold, and a
    // consistent read, which would wait for more, is refused.
    n.handle(gossiped(committed[3..].to_vec()), ms(20), 0);
    assert_eq!(n.state().index().0, base + 3);
    let out = n.handle(Input::ReadIndex { reply: 9 }, ms(30), 0);
    assert!(
        matches!(&out[..], [Output::Reply { to: 9, reply: Err(Refusal::Storage(why)) }]
            if why.contains("disk full")),
        "{out:?}"
    );

    // Room again: the refused batch is written, the rest applied.
    full.store(false, Ordering::Relaxed);
    n.handle(Input::Wake, ms(1_500), 0);
    assert_eq!(n.storage_fault(), None);
    let truth = applied(start.clone(), &committed);
    assert_eq!(n.state().hash(), truth.hash());
    let mut disk = n.log().clone();
    let held = disk.read(EventIdx(base + 1), EventIdx(base + 5), usize::MAX);
    let terms: Vec<u64> = held.unwrap().iter().map(|e| e.term.0).collect();
    assert_eq!(terms, [2; 5], "the lost tail is replaced");
    assert_eq!(restarted(&n, start).hash(), truth.hash());
}

#[test]
fn a_log_is_not_extended_past_an_entry_of_a_term_that_lost() {
    let start = cluster_state(&["m", ME, "a"], vec![]);
    let base = start.index().0;
    let committed = sets(base + 1, base + 5, 2, "won");
    // State holds the committed entries to base + 3 (gossip reached it
    // ahead of Raft); its log still holds the lost ones there.
    let ahead = applied(start.clone(), &committed[..3]);
    let mut n = follower_with_tail(ahead, &sets(base + 1, base + 3, 1, "lost"));
    n.handle(gossiped(committed[3..].to_vec()), ms(10), 0);
    assert_eq!(n.state().index().0, base + 5);
    assert_eq!(n.storage_fault(), None);

    // The log cannot hold base + 1..=3 as committed: it starts after them,
    // and what it replays onto the State before them is no history but
    // the one committed.
    let replayed = restarted(&n, start.clone());
    let idx = replayed.index().0;
    let truth = applied(start, &committed[..(idx - base) as usize]);
    assert_eq!(replayed.hash(), truth.hash(), "replayed to {idx}");
    assert_eq!(n.log().first_index().0, base + 4);
}

/// A replica whose State ran ahead of its log (committed entries from
/// gossip, a lost term's entries still in the log there) serves none of
/// those: a replica that fetched them would apply a history that lost.
#[test]
fn a_range_is_served_only_where_the_log_holds_what_was_applied() {
    let start = cluster_state(&["m", ME, "a"], vec![]);
    let base = start.index().0;
    let committed = sets(base + 1, base + 5, 2, "won");
    let ahead = applied(start.clone(), &committed[..3]);
    let mut n = follower_with_tail(ahead, &sets(base + 1, base + 3, 1, "lost"));
    let range = |from: u64| {
        let to = EventIdx(base + 5);
        direct(
            "a",
            Direct::FetchRange(FetchRange {
                from: EventIdx(from),
                to,
            }),
        )
    };
    let out = n.handle(range(base + 1), ms(10), 0);
    assert!(
        matches!(
            sent(&out)[..],
            [(_, Direct::Range(RangeReply::NotYet { .. }))]
        ),
        "{:?}",
        sent(&out)
    );
    // The next batch mends the log; what it holds then is served.
    n.handle(gossiped(committed[3..].to_vec()), ms(20), 0);
    let out = n.handle(range(base + 4), ms(30), 0);
    let terms: Vec<u64> = match sent(&out)[..] {
        [(_, Direct::Range(RangeReply::Entries { ref entries, .. }))] => {
            entries.iter().map(|e| e.term.0).collect()
        }
        _ => panic!("{:?}", sent(&out)),
    };
    assert_eq!(terms, [2, 2]);
}

/// After a local snapshot the log keeps `log_retain` entries below it,
/// and more while a live replica with State trails further (at most four
/// times as many): that replica goes on by range rather than load State
/// again. A joiner with no State, or a replica silent for a minute, keeps
/// nothing.
#[test]
fn a_local_snapshot_lets_the_log_go_but_what_replicas_that_trail_still_need() {
    let start = cluster_state(&["m", ME, "a", "j"], vec![]);
    let at = start.index().0 + 1000;
    let tail = sets(start.index().0 + 1, at, 1, "v");
    let fresh = || {
        let mut n = follower_with_tail(applied(start.clone(), &tail), &tail);
        n.cfg.log_retain = 100;
        n
    };
    let saved = |n: &mut Node<MemLog>, t| {
        let snap = EncodedSnapshot::new(EventIdx(at), vec![1; 10], [0; 32], 1024);
        let save = Saved::Saved;
        n.handle(Input::SnapshotBuilt { snap, save }, ms(t), 0);
        at - n.log().first_index().0
    };
    let mut n = fresh();
    n.handle(heartbeat("j", Some("c"), 0, at), ms(10), 0);
    n.handle(heartbeat("a", Some("c"), at - 700, at), ms(10), 0);
    assert_eq!(saved(&mut n, 20), 399, "bounded");
    n.handle(heartbeat("a", Some("c"), at - 250, at), ms(30), 0);
    assert_eq!(saved(&mut n, 40), 249, "from the first entry a lacks");
    n.handle(heartbeat("a", Some("c"), at - 50, at), ms(50), 0);
    assert_eq!(saved(&mut n, 60), 99, "a trails less than retained");
    n.handle(heartbeat("a", Some("c"), at - 250, at), ms(70), 0);
    assert_eq!(saved(&mut n, 70), 99, "what went stays gone");
    let mut n = fresh();
    n.handle(heartbeat("a", Some("c"), at - 250, at), ms(10), 0);
    assert_eq!(
        saved(&mut n, 5_000),
        249,
        "past the node timeout: starved, not gone"
    );
    let mut n = fresh();
    n.handle(heartbeat("a", Some("c"), at - 250, at), ms(10), 0);
    assert_eq!(saved(&mut n, 70_000), 99, "a fell silent");
}

#[test]
fn the_compaction_floor_ignores_replicas_without_state_and_is_bounded() {
    use crate::node::apply::compaction_floor;
    let f = |applied: &[u64]| {
        compaction_floor(EventIdx(1000), 100, applied.iter().map(|a| EventIdx(*a))).0
    };
    assert_eq!(f(&[]), 901);
    assert_eq!(f(&[0, 990, 2000]), 901, "no State, ahead, or near");
    assert_eq!(f(&[750, 800]), 751);
    assert_eq!(f(&[10]), 601);
}
