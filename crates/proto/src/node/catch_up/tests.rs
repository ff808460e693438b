//! The range-or-snapshot decision, input by input.
//!
//! One file over 600 lines: every test here drives the same decision
//! through the same fixture, and a split would part tests that read as
//! one sequence.

use super::*;
use crate::snapshot_transfer::EncodedSnapshot;
use crate::testing::entry;
use crate::wire::SnapshotOffer;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn source(n: &str, floor: u64, applied: u64) -> Source {
    Source {
        node: NodeId::from(n),
        floor: EventIdx(floor),
        applied: EventIdx(applied),
        live: true,
    }
}

/// A replica that applied `applied` and heard of `commit`.
fn replica(applied: u64, commit: u64, no_snapshot: bool) -> CatchUp {
    let cfg = CatchUpConfig {
        no_snapshot,
        ..CatchUpConfig::default()
    };
    let mut c = CatchUp::new(cfg, EventIdx(applied + 1), 0, ms(0));
    c.note_commit(EventIdx(commit));
    c
}

/// Plans at `at` ms, and names what it decided.
fn plan(
    c: &mut CatchUp,
    at: u64,
    joining: bool,
    peers: &[Source],
    master: Option<&str>,
) -> (Vec<&'static str>, Vec<CatchUpAction>) {
    let applied = EventIdx(c.buffer.next().0 - 1);
    let master = master.map(NodeId::from);
    let acts = c.plan(ms(at), applied, joining, peers, master.as_ref());
    (kinds(&acts), acts)
}

fn kinds(acts: &[CatchUpAction]) -> Vec<&'static str> {
    acts.iter()
        .map(|a| match a {
            CatchUpAction::Fetch { .. } => "fetch",
            CatchUpAction::Ask { .. } => "ask",
            CatchUpAction::SnapshotRequest { .. } => "snapshot_request",
            CatchUpAction::Dropped { .. } => "dropped",
            CatchUpAction::SnapshotStarted { .. } => "snapshot_started",
            CatchUpAction::Progress(_) => "progress",
            CatchUpAction::Install(..) => "install",
            CatchUpAction::Failed(_) => "failed",
        })
        .collect()
}

const SNAPSHOT: [&str; 1] = ["ask"];

#[test]
fn entries_leave_in_order_whatever_order_they_came_in() {
    let mut c = replica(0, 0, false);
    c.offer([entry(3), entry(1)]);
    assert_eq!(c.known_commit(), EventIdx(3));
    assert_eq!(c.pop_next().map(|e| e.idx), Some(EventIdx(1)));
    assert!(c.pop_next().is_none(), "2 is missing");
    c.offer([entry(2)]);
    assert_eq!(c.pop_next().map(|e| e.idx), Some(EventIdx(2)));
    assert_eq!(c.pop_next().map(|e| e.idx), Some(EventIdx(3)));
}

#[test]
fn a_short_lag_is_fetched_by_range_after_one_backoff() {
    let mut c = replica(100, 150, false);
    let peers = [source("a", 1, 150)];
    assert!(plan(&mut c, 0, false, &peers, None).0.is_empty());
    assert_eq!(c.next_wake(ms(0)), Some(ms(50)), "wakes to confirm the gap");
    let (kinds, acts) = plan(&mut c, 50, false, &peers, None);
    assert_eq!(kinds, ["fetch"]);
    let CatchUpAction::Fetch { peer, range } = &acts[0] else {
        unreachable!()
    };
    assert_eq!(peer, &NodeId::from("a"));
    assert_eq!((range.from, range.to), (EventIdx(101), EventIdx(150)));
}

/// The session of the request `c` made.
fn asked(acts: &[CatchUpAction]) -> u64 {
    match acts {
        [CatchUpAction::Ask { session, .. }] => *session,
        other => panic!("{:?}", kinds(other)),
    }
}

/// An offer of a snapshot at `index` (its bytes named by `tag`).
fn offer(session: u64, index: u64, tag: u8) -> SnapshotOffer {
    let mut bytes = vec![tag; 3000];
    bytes[0] = index as u8;
    EncodedSnapshot::new(EventIdx(index), bytes, [tag; 32], 1024).offer(session, 0)
}

#[test]
fn a_long_lag_asks_on_gossip_and_pulls_from_every_replica_offering_the_vouched_bytes() {
    let mut c = replica(0, 50_000, false);
    let peers = [source("master", 1, 50_000), source("b", 1, 49_990)];
    let (_, acts) = plan(&mut c, 0, false, &peers, Some("master"));
    let session = asked(&acts);
    assert!(c.receiving());
    // While it runs, nothing else is asked for.
    assert!(plan(&mut c, 10, false, &peers, Some("master")).0.is_empty());
    let n = |s: &str| NodeId::from(s);
    // A follower's offer alone is not enough: nobody whose word counts
    // vouched for it.
    assert_eq!(
        c.on_offer(&n("x"), offer(session, 49_152, 1), false, ms(20)),
        Ok(())
    );
    assert_eq!(
        c.next_wake(ms(20)),
        Some(ms(10_000)),
        "waits for a trusted offer"
    );
    assert_eq!(
        c.on_offer(&n("master"), offer(session, 49_152, 1), true, ms(30)),
        Ok(())
    );
    assert_eq!(
        c.on_offer(&n("y"), offer(session, 49_152, 2), false, ms(31)),
        Ok(())
    );
    assert_eq!(
        c.next_wake(ms(31)),
        Some(ms(80)),
        "a short wait for more offers"
    );
    let acts = c.tick(ms(80));
    let CatchUpAction::SnapshotStarted {
        sources,
        index,
        behind,
        resumed: false,
    } = &acts[0]
    else {
        panic!("{:?}", kinds(&acts))
    };
    assert_eq!(*index, EventIdx(49_152));
    assert_eq!(*behind, 50_000);
    assert_eq!(
        sources,
        &[n("x"), n("master")],
        "y offered other bytes; the master last"
    );
    assert_eq!(
        kinds(&acts[1..]),
        ["snapshot_request"; 3],
        "two of x, one of the master"
    );
}

#[test]
fn offers_not_asked_for_or_malformed_are_refused() {
    let mut c = replica(0, 50_000, false);
    let n = NodeId::from("a");
    assert_eq!(
        c.on_offer(&n, offer(1, 9, 1), true, ms(0)),
        Err(BadOffer::Unasked)
    );
    let (_, acts) = plan(&mut c, 0, false, &[source("a", 1, 50_000)], None);
    let session = asked(&acts);
    assert_eq!(
        c.on_offer(&n, offer(session + 1, 9, 1), true, ms(0)),
        Err(BadOffer::Unasked)
    );
    let mut bad = offer(session, 9, 1);
    bad.chunks.clear();
    assert!(matches!(
        c.on_offer(&n, bad, true, ms(0)),
        Err(BadOffer::Malformed(_))
    ));
}

#[test]
fn with_no_trusted_offer_the_request_fails_and_is_made_again_after_a_pause() {
    let mut c = replica(0, 50_000, false);
    let peers = [source("a", 1, 50_000)];
    let (_, acts) = plan(&mut c, 0, false, &peers, None);
    asked(&acts);
    assert!(c.tick(ms(9999)).is_empty());
    assert_eq!(kinds(&c.tick(ms(10_000))), ["failed"]);
    assert!(!c.receiving());
    // The pause fetches no ranges from the one log that reaches down
    // here: the snapshot would throw them away.
    assert!(plan(&mut c, 10_500, false, &peers, None).0.is_empty());
    assert_eq!(plan(&mut c, 11_000, false, &peers, None).0, SNAPSHOT);
}

/// A joiner asks at 0 with the master in sight; no offer comes, and the
/// request fails at 10 s.
fn joiner_request_failed(c: &mut CatchUp, peers: &[Source]) {
    asked(&plan(c, 0, true, peers, Some("master")).1);
    assert_eq!(kinds(&c.tick(ms(10_000))), ["failed"]);
}

#[test]
fn a_joiner_whose_request_failed_reads_no_log_from_its_start() {
    let mut c = replica(0, 1_000_000, false);
    let peers = [source("master", 1, 1_000_000)];
    joiner_request_failed(&mut c, &peers);
    for at in (10_050..11_000).step_by(50) {
        assert!(plan(&mut c, at, true, &peers, Some("master")).0.is_empty());
    }
    assert_eq!(
        plan(&mut c, 11_000, true, &peers, Some("master")).0,
        SNAPSHOT
    );
}

#[test]
fn a_joiner_whose_request_failed_reads_a_short_log_by_range_meanwhile() {
    // A young cluster: no replica may have a snapshot to offer yet.
    let mut c = replica(0, 200, false);
    let peers = [source("master", 1, 200)];
    joiner_request_failed(&mut c, &peers);
    let fetched = (10_000..11_000)
        .step_by(50)
        .flat_map(|at| plan(&mut c, at, true, &peers, Some("master")).1)
        .filter_map(|a| match a {
            CatchUpAction::Fetch { range, .. } => Some((range.from.0, range.to.0)),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(fetched, [(1, 200)]);
    // A log no live source holds from its start waits for the snapshot.
    let mut c = replica(0, 200, false);
    let peers = [source("master", 50, 200)];
    joiner_request_failed(&mut c, &peers);
    for at in (10_000..11_000).step_by(50) {
        assert!(plan(&mut c, at, true, &peers, Some("master")).0.is_empty());
    }
}

#[test]
fn an_offer_to_an_earlier_request_that_came_late_still_counts() {
    let mut c = replica(0, 50_000, false);
    let peers = [source("master", 1, 50_000)];
    let master = NodeId::from("master");
    let first = asked(&plan(&mut c, 0, false, &peers, Some("master")).1);
    assert_eq!(kinds(&c.tick(ms(10_000))), ["failed"]);
    let (_, acts) = plan(&mut c, 11_000, false, &peers, Some("master"));
    let second = asked(&acts[acts.len() - 1..]);
    assert_ne!(first, second);
    // The answer to the first request arrives now: it is taken.
    assert_eq!(
        c.on_offer(&master, offer(first, 49_152, 1), true, ms(11_500)),
        Ok(())
    );
    let acts = c.tick(ms(11_550));
    assert_eq!(kinds(&acts[..1]), ["snapshot_started"]);
    let [_, CatchUpAction::SnapshotRequest { req, .. }, ..] = &acts[..] else {
        panic!("{:?}", kinds(&acts))
    };
    assert_eq!(
        req.session, second,
        "chunks are asked under the request of now"
    );
    // Answers to requests long past, or to another process's, are not.
    let mut c = replica(0, 50_000, false);
    let mut last = 0;
    for i in 0..10 {
        let (_, acts) = plan(&mut c, i * 11_000, false, &peers, Some("master"));
        last = asked(&acts[acts.len() - 1..]);
        if i < 9 {
            assert_eq!(kinds(&c.tick(ms(i * 11_000 + 10_000))), ["failed"]);
        }
    }
    assert_eq!(
        c.on_offer(&master, offer(first, 49_152, 1), true, ms(99_500)),
        Err(BadOffer::Unasked)
    );
    assert_eq!(
        c.on_offer(&master, offer(last + 1, 49_152, 1), true, ms(99_500)),
        Err(BadOffer::Unasked)
    );
}

#[test]
fn nobody_is_asked_while_no_replica_whose_word_counts_is_ahead() {
    let mut c = replica(0, 50_000, false);
    assert!(plan(&mut c, 0, false, &[], None).0.is_empty());
    assert!(plan(&mut c, 0, false, &[source("a", 1, 0)], None)
        .0
        .is_empty());
    assert!(!c.receiving());
}

#[test]
fn a_joiner_loads_a_snapshot_however_short_the_log() {
    let mut c = replica(0, 5, false);
    assert_eq!(
        plan(&mut c, 0, true, &[source("a", 1, 5)], None).0,
        SNAPSHOT
    );
}

#[test]
fn without_snapshots_a_long_lag_is_fetched_by_range() {
    let mut c = replica(0, 50_000, true);
    let peers = [source("a", 1, 50_000)];
    assert!(plan(&mut c, 0, true, &peers, None).0.is_empty());
    assert_eq!(plan(&mut c, 50, true, &peers, None).0, ["fetch"; 4]);
}

#[test]
fn a_lag_shorter_than_state_is_large_is_fetched_by_range() {
    let peers = [source("a", 1, 130_000)];
    // A node that loaded a 1M-key State and fell 30k events behind while
    // it did fetches the tail; with a small State it loads a snapshot.
    let mut big = replica(100_000, 130_000, false);
    big.note_state_entries(1_000_000);
    assert!(plan(&mut big, 0, false, &peers, None).0.is_empty());
    assert_eq!(plan(&mut big, 50, false, &peers, None).0, ["fetch"; 4]);
    let mut small = replica(100_000, 130_000, false);
    small.note_state_entries(1_000);
    assert_eq!(plan(&mut small, 0, false, &peers, None).0, SNAPSHOT);
}

/// A replica that asked `a` for the range from `applied + 1`.
fn asked_a(applied: u64, commit: u64, no_snapshot: bool) -> CatchUp {
    let mut c = replica(applied, commit, no_snapshot);
    let peers = [source("a", 1, commit)];
    plan(&mut c, 0, false, &peers, None);
    assert_eq!(plan(&mut c, 50, false, &peers, None).0, ["fetch"]);
    c
}

#[test]
fn a_compacted_range_turns_into_a_snapshot_even_without_snapshots() {
    let mut c = asked_a(10, 20, true);
    let reply = RangeReply::Compacted {
        from: EventIdx(11),
        floor: EventIdx(15),
    };
    assert_eq!(c.on_range(&NodeId::from("a"), reply), Ok(()));
    assert_eq!(
        plan(&mut c, 60, false, &[source("a", 15, 20)], None).0,
        SNAPSHOT
    );
}

#[test]
fn a_range_that_is_not_consecutive_is_refused_and_nothing_of_it_kept() {
    let mut c = asked_a(0, 3, false);
    let reply = RangeReply::Entries {
        from: EventIdx(1),
        entries: vec![entry(1), entry(3)],
    };
    assert_eq!(
        c.on_range(&NodeId::from("a"), reply),
        Err(BadRange::NotConsecutive)
    );
    assert!(c.pop_next().is_none());
}

#[test]
fn a_range_nobody_asked_for_is_not_taken() {
    let mut c = asked_a(0, 3, false);
    let reply = || RangeReply::Entries {
        from: EventIdx(1),
        entries: vec![entry(1), entry(2), entry(3)],
    };
    assert_eq!(
        c.on_range(&NodeId::from("b"), reply()),
        Err(BadRange::Unasked)
    );
    assert!(c.pop_next().is_none(), "not from b, who was not asked");
    assert_eq!(c.on_range(&NodeId::from("a"), reply()), Ok(()));
    assert_eq!(
        c.on_range(&NodeId::from("a"), reply()),
        Err(BadRange::Unasked),
        "answered once"
    );
    assert_eq!(c.pop_next().map(|e| e.idx), Some(EventIdx(1)));
}

#[test]
fn a_failed_transfer_is_retried_after_a_pause() {
    let mut c = CatchUp::new(CatchUpConfig::default(), EventIdx(1), 3, ms(0));
    c.note_commit(EventIdx(50_000));
    let peers = [source("a", 1, 50_000)];
    let (_, acts) = plan(&mut c, 0, false, &peers, None);
    let session = asked(&acts);
    assert_eq!(session >> 48, 3, "the session carries the tag");
    let a = NodeId::from("a");
    c.on_offer(&a, offer(session, 40_960, 1), true, ms(5))
        .unwrap();
    assert_eq!(
        kinds(&c.tick(ms(55))),
        ["snapshot_started", "snapshot_request", "snapshot_request"]
    );
    let acts = c.on_refused(&a, session, "busy", ms(60));
    assert_eq!(kinds(&acts), ["dropped", "failed"]);
    assert!(!c.receiving());
    // Nothing is fetched meanwhile; the snapshot waits for the pause.
    assert!(plan(&mut c, 500, false, &peers, None).0.is_empty());
    let wake = c.next_wake(ms(500)).unwrap();
    assert!(
        wake > ms(500) && wake <= ms(1060),
        "wakes by the end of the pause"
    );
    assert_eq!(plan(&mut c, 1060, false, &peers, None).0, SNAPSHOT);
}

#[test]
fn after_a_snapshot_the_buffer_goes_on_from_its_index() {
    let mut c = replica(0, 0, false);
    c.offer([entry(1001)]);
    c.installed(EventIdx(1000));
    assert_eq!(c.pop_next().map(|e| e.idx), Some(EventIdx(1001)));
    assert_eq!(c.known_commit(), EventIdx(1000), "heard again from members");
}

#[test]
fn nothing_to_do_means_no_wake() {
    assert_eq!(replica(0, 0, false).next_wake(ms(5)), None);
}

/// A replica pulling a 2,000-key snapshot whose only source refused after
/// three chunks: the transfer failed, and is parked.
struct Parked {
    c: CatchUp,
    state: shoal_model::State,
    bytes: Vec<u8>,
    snap: EncodedSnapshot,
    peers: [Source; 2],
    first: u64,
}

impl Parked {
    fn new() -> Parked {
        use crate::testing::{cluster_state, command};
        use shoal_model::Op;
        let mut s = cluster_state(&["a"]);
        for i in 0..2000 {
            let op = Op::KvSet {
                key: format!("key-{i}"),
                value: format!("value-{i}"),
            };
            command(&mut s, &format!("c{i}"), op);
        }
        let (bytes, sha) = shoal_log::encode_snapshot(&s, 1);
        let snap = EncodedSnapshot::new(s.index(), bytes.clone(), sha, 1024);
        assert!(snap.offer(0, 0).chunks.len() > 8);
        let a = NodeId::from("a");
        let mut c = replica(0, s.index().0 + 10, false);
        let peers = [source("a", 1, s.index().0), source("b", 1, s.index().0)];
        let first = asked(&plan(&mut c, 0, true, &peers, None).1);
        c.on_offer(&a, snap.offer(first, 0), true, ms(5)).unwrap();
        let mut p = Parked {
            c,
            state: s,
            bytes,
            snap,
            peers,
            first,
        };
        let acts = p.c.tick(ms(55));
        assert_eq!(asked_chunks(&acts), [0, 1]);
        // Three chunks come, then the only source refuses: the transfer fails.
        let mut more = Vec::new();
        for k in 0..3 {
            let chunk = p.chunk(first, k);
            more.extend(asked_chunks(&p.c.on_chunk(&a, chunk, ms(60)).1));
        }
        assert_eq!(more, [2, 3, 4]);
        let acts = p.c.on_refused(&a, first, "stopping", ms(70));
        assert_eq!(kinds(&acts), ["dropped", "failed"]);
        assert!(p.c.parked.is_some());
        p
    }

    fn chunk(&self, session: u64, k: u32) -> crate::wire::SnapshotChunk {
        let start = k as usize * 1024;
        crate::wire::SnapshotChunk {
            session,
            index: self.state.index(),
            chunk: k,
            data: self.bytes[start..(start + 1024).min(self.bytes.len())].to_vec(),
        }
    }
}

fn asked_chunks(acts: &[CatchUpAction]) -> Vec<u32> {
    acts.iter()
        .filter_map(|a| match a {
            CatchUpAction::SnapshotRequest { req, .. } => Some(req.chunk),
            _ => None,
        })
        .collect()
}

#[test]
fn a_transfer_that_lost_its_sources_goes_on_when_the_same_snapshot_is_offered_again() {
    let mut p = Parked::new();
    let b = NodeId::from("b");
    // Asked again after the pause, the same snapshot is offered by b: the
    // transfer goes on from chunk 3.
    let (_, acts) = plan(&mut p.c, 1100, true, &p.peers, None);
    let second = asked(&acts[acts.len() - 1..]);
    assert_ne!(p.first, second);
    p.c.on_offer(&b, p.snap.offer(second, 0), true, ms(1105))
        .unwrap();
    let acts = p.c.tick(ms(1155));
    assert_eq!(kinds(&acts[..1]), ["snapshot_started"]);
    assert_eq!(asked_chunks(&acts), [3, 4], "not from the start");
    let chunks = p.snap.offer(0, 0).chunks.len() as u32;
    let mut installed = None;
    for k in 3..chunks {
        let chunk = p.chunk(second, k);
        for act in p.c.on_chunk(&b, chunk, ms(1200)).1 {
            if let CatchUpAction::Install(state, _) = act {
                installed = Some(state);
            }
        }
    }
    let state = installed.expect("the snapshot is installed");
    assert_eq!(state.hash(), p.state.hash());
}

#[test]
fn a_parked_transfer_is_let_go_once_no_snapshot_is_wanted() {
    let mut p = Parked::new();
    // Within the pause after the failure it is kept, to go on with.
    let (kinds_now, _) = plan(&mut p.c, 500, true, &p.peers, None);
    assert!(!kinds_now.contains(&"ask"), "{kinds_now:?}");
    assert!(p.c.parked.is_some());
    // The replica caught up otherwise (by range): nothing is behind, and
    // the bytes held for the snapshot go.
    let commit = p.c.known_commit;
    let acts = p.c.plan(ms(1100), commit, false, &p.peers, None);
    assert!(!kinds(&acts).contains(&"ask"), "{:?}", kinds(&acts));
    assert!(p.c.parked.is_none(), "nothing to resume: nothing held");
}

/// The next request after a transfer stopped part way names its snapshot.
fn ask_resume(p: &mut Parked, at: u64) -> (u64, Option<EventIdx>) {
    let (_, acts) = plan(&mut p.c, at, true, &p.peers, None);
    match &acts[acts.len() - 1..] {
        [CatchUpAction::Ask {
            session, resume, ..
        }] => (*session, *resume),
        other => panic!("{:?}", kinds(other)),
    }
}

#[test]
fn asked_again_it_names_the_snapshot_it_holds_part_of_and_takes_it_from_anyone() {
    let mut p = Parked::new();
    let (second, resume) = ask_resume(&mut p, 1100);
    assert_eq!(resume, Some(p.state.index()));
    // The master vouches for a newer snapshot; a follower nobody vouches
    // for offers the one part of which is here: its bytes are checked
    // against the hashes that came with the first, trusted, offer.
    let (m, x) = (NodeId::from("m"), NodeId::from("x"));
    let newer = offer(second, p.state.index().0 + 1024, 7);
    p.c.on_offer(&m, newer, true, ms(1101)).unwrap();
    p.c.on_offer(&x, p.snap.offer(second, 0), false, ms(1102))
        .unwrap();
    let acts = p.c.tick(ms(1151));
    match &acts[0] {
        CatchUpAction::SnapshotStarted {
            sources,
            index,
            resumed,
            ..
        } => {
            assert!(resumed);
            assert_eq!(sources, &[x]);
            assert_eq!(*index, p.state.index());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(asked_chunks(&acts), [3, 4], "not from the start");
}

#[test]
fn a_resumed_transfer_that_got_nothing_is_not_named_again() {
    let mut p = Parked::new();
    let b = NodeId::from("b");
    let (second, _) = ask_resume(&mut p, 1100);
    p.c.on_offer(&b, p.snap.offer(second, 0), true, ms(1105))
        .unwrap();
    p.c.tick(ms(1155));
    // Its one source refuses before sending a chunk: nothing moved since
    // it went on, and it is let go (else one stalled holder would be
    // asked for ever).
    let acts = p.c.on_refused(&b, second, "stopping", ms(1160));
    assert_eq!(kinds(&acts), ["dropped", "failed"]);
    assert!(p.c.parked.is_none());
    let (_, resume) = ask_resume(&mut p, 2200);
    assert_eq!(resume, None);
}
