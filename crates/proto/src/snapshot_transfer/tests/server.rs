//! The serving side: one build per snapshot point shared by every
//! receiver, what a follower offers, older snapshots offered while their
//! tail is short, snapshots kept while in use, the shape of offers, and
//! chunks that cannot be read.

use super::*;

/// A snapshot point at `i` whose log holds `tail` bytes after any older
/// snapshot (`None`: compacted past it).
fn pt_tail(i: u64, tail: Option<u64>) -> Point<'static> {
    Point {
        index: EventIdx(i),
        tail_bytes: Box::new(move |_| tail),
    }
}

/// A snapshot point at `i` that offers nothing older than itself.
fn pt(i: u64) -> Point<'static> {
    pt_tail(i, None)
}

/// The index of the one snapshot offered, if that is all `acts` holds.
fn offered(acts: &[ServeAction]) -> Option<EventIdx> {
    match acts {
        [ServeAction::Offer { offer, .. }] => Some(offer.index),
        _ => None,
    }
}

#[test]
fn receivers_of_one_point_share_one_build_and_a_follower_offers_only_what_it_holds() {
    let at = EventIdx;
    let (a, b) = (NodeId::from("a"), NodeId::from("b"));
    let mut member = SnapshotServer::default();
    assert_eq!(
        member.on_wanted(a.clone(), 1, at(0), None, Some(pt(10)), ms(0)),
        vec![ServeAction::Build]
    );
    assert!(member
        .on_wanted(b.clone(), 2, at(0), None, Some(pt(10)), ms(0))
        .is_empty());
    let s10 = built(&state(10), CHUNK);
    let offers = member.on_built(s10.clone(), ms(5));
    assert_eq!(offers.len(), 2);
    assert!(offers
        .iter()
        .all(|o| matches!(o, ServeAction::Offer { offer, .. } if offer.index == at(10))));
    // Held at the point: offered at once, no build.
    let acts = member.on_wanted(NodeId::from("c"), 3, at(0), None, Some(pt(10)), ms(6));
    assert!(matches!(&acts[..], [ServeAction::Offer { .. }]));
    // The point moved on: the one held still serves while the entries
    // after it take at most a sixteenth of its bytes.
    let len = s10.bytes.len();
    let acts = member.on_wanted(
        NodeId::from("e"),
        9,
        at(0),
        None,
        Some(pt_tail(50, Some(len / 16))),
        ms(6),
    );
    assert_eq!(offered(&acts), Some(at(10)), "{acts:?}");
    // Nothing past what the asker has: silence.
    assert!(member
        .on_wanted(NodeId::from("c"), 4, at(10), None, Some(pt(10)), ms(6))
        .is_empty());
    // A byte more of tail: built anew, and the old one still serves
    // transfers under way.
    assert_eq!(
        member.on_wanted(
            NodeId::from("d"),
            5,
            at(0),
            None,
            Some(pt_tail(60, Some(len / 16 + 1))),
            ms(40_000)
        ),
        vec![ServeAction::Build]
    );
    member.on_built(built(&state(20), CHUNK), ms(40_001));
    let req = |index, chunk| SnapshotRequest {
        session: 1,
        index,
        chunk,
    };
    assert!(
        matches!(member.on_request(a.clone(), req(at(10), 0), ms(40_002)), ServeAction::Send { read, .. } if matches!(read.clone().reply(), Direct::SnapshotChunk(c) if c.index == at(10)))
    );
    assert!(
        matches!(member.on_request(a.clone(), req(at(3), 0), ms(40_002)), ServeAction::Refuse { reason, .. } if reason.contains("no longer held"))
    );
    assert!(
        matches!(member.on_request(a.clone(), req(at(20), 99), ms(40_002)), ServeAction::Refuse { reason, .. } if reason.contains("past the end"))
    );
    assert_eq!(member.busy(ms(40_002)), 1);
    assert_eq!(
        member.busy(ms(43_000)),
        0,
        "a transfer that stopped asking is over"
    );
    // A follower never builds for others.
    let mut follower = SnapshotServer::default();
    assert!(follower
        .on_wanted(a.clone(), 1, at(0), None, None, ms(0))
        .is_empty());
    follower.on_built(s10, ms(0));
    assert!(matches!(
        &follower.on_wanted(a, 1, at(0), None, None, ms(0))[..],
        [ServeAction::Offer { .. }]
    ));
}

#[test]
fn a_snapshot_in_use_is_offered_while_its_tail_is_short_and_outlives_rebuilds() {
    let at = EventIdx;
    let (a, b) = (NodeId::from("a"), NodeId::from("b"));
    let chunk = |m: &mut SnapshotServer, index, t| {
        let req = SnapshotRequest {
            session: 1,
            index: at(index),
            chunk: 0,
        };
        matches!(
            m.on_request(a.clone(), req, ms(t)),
            ServeAction::Send { .. }
        )
    };
    let mut member = SnapshotServer::default();
    member.on_wanted(a.clone(), 1, at(0), None, Some(pt(10)), ms(0));
    member.on_built(built(&state(10), CHUNK), ms(1));
    assert!(chunk(&mut member, 10, 1_000));
    // A hundred events on, with a short tail: the joiner of now shares
    // it, no build.
    let acts = member.on_wanted(
        b.clone(),
        2,
        at(0),
        None,
        Some(pt_tail(110, Some(1))),
        ms(1_500),
    );
    assert_eq!(offered(&acts), Some(at(10)), "{acts:?}");
    // Further on, a build; and another: the one in flight is kept both
    // times (the idle one between is what goes).
    for (i, point) in [(0, 200), (1, 400)] {
        let t = 2_000 + i * 1_000;
        assert!(chunk(&mut member, 10, t));
        assert_eq!(
            member.on_wanted(b.clone(), 3 + i, at(0), None, Some(pt(point)), ms(t)),
            vec![ServeAction::Build]
        );
        member.on_built(built(&state(point as usize), CHUNK), ms(t));
        assert!(
            chunk(&mut member, 10, t + 500),
            "still served after build {i}"
        );
    }
    assert!(chunk(&mut member, 400, 4_000));
    assert!(!chunk(&mut member, 200, 4_000), "the idle one was evicted");
    // Both held are in use: the newest is offered, however far the point
    // moved, and nothing is built (a build would evict one of them).
    let acts = member.on_wanted(b.clone(), 8, at(0), None, Some(pt(900)), ms(20_000));
    assert_eq!(offered(&acts), Some(at(400)), "{acts:?}");
    assert!(chunk(&mut member, 400, 20_000));
    // Once its transfer stopped asking, the old one is the one to go.
    member.on_wanted(b.clone(), 9, at(400), None, Some(pt(500)), ms(40_000));
    member.on_built(built(&state(500), CHUNK), ms(40_000));
    assert!(!chunk(&mut member, 10, 40_001));
    assert!(chunk(&mut member, 400, 40_001));
    assert!(chunk(&mut member, 500, 40_001));
}

/// The master vouches for the snapshot its joiners load, while others
/// send it: none of it is asked of the master, yet it goes on offering it
/// as long as the others do (the tail in their logs is the same), so a
/// later joiner is offered the bytes the others hold rather than a new
/// build only the master would hold and have to send.
#[test]
fn a_snapshot_none_of_which_was_sent_here_is_offered_while_its_tail_is_short() {
    let at = EventIdx;
    let mut master = SnapshotServer::default();
    let build = master.on_wanted(NodeId::from("a"), 1, at(0), None, Some(pt(10)), ms(0));
    assert_eq!(build, vec![ServeAction::Build]);
    let s10 = built(&state(10), CHUNK);
    let len = s10.bytes.len();
    assert_eq!(master.on_built(s10, ms(1)).len(), 1);
    // A hundred events on and a minute later, no chunk of it asked here.
    let acts = master.on_wanted(
        NodeId::from("b"),
        2,
        at(0),
        None,
        Some(pt_tail(110, Some(len / 16))),
        ms(60_000),
    );
    assert_eq!(offered(&acts), Some(at(10)), "{acts:?}");
    // Once the tail is longer: built anew.
    let acts = master.on_wanted(
        NodeId::from("c"),
        3,
        at(0),
        None,
        Some(pt_tail(120, Some(len / 16 + 1))),
        ms(60_000),
    );
    assert_eq!(acts, vec![ServeAction::Build]);
}

/// A receiver whose transfer stopped part way names its snapshot: a
/// replica still holding it offers that one over any newer, so the
/// receiver goes on where it stopped; naming one not held changes
/// nothing and never makes a build.
#[test]
fn the_snapshot_a_receiver_holds_part_of_is_offered_over_a_newer_one() {
    let at = EventIdx;
    let b = NodeId::from("b");
    let mut member = SnapshotServer::default();
    member.on_wanted(b.clone(), 1, at(0), None, Some(pt(10)), ms(0));
    member.on_built(built(&state(10), CHUNK), ms(0));
    member.on_wanted(b.clone(), 2, at(0), None, Some(pt(200)), ms(40_000));
    member.on_built(built(&state(200), CHUNK), ms(40_000));
    // Not one the point accepts (the log holds no tail after it).
    let acts = member.on_wanted(b.clone(), 3, at(0), Some(at(10)), Some(pt(900)), ms(80_000));
    assert_eq!(offered(&acts), Some(at(10)), "{acts:?}");
    // A follower too.
    let mut follower = SnapshotServer::default();
    follower.on_built(built(&state(10), CHUNK), ms(0));
    follower.on_built(built(&state(200), CHUNK), ms(0));
    let acts = follower.on_wanted(b.clone(), 4, at(0), Some(at(10)), None, ms(1));
    assert_eq!(offered(&acts), Some(at(10)));
    let acts = follower.on_wanted(b.clone(), 5, at(0), None, None, ms(1));
    assert_eq!(offered(&acts), Some(at(200)));
    // Not held: what would be offered without it.
    let acts = follower.on_wanted(b.clone(), 6, at(0), Some(at(30)), None, ms(1));
    assert_eq!(offered(&acts), Some(at(200)));
    // Not past what the receiver has: silence, no build.
    assert!(follower
        .on_wanted(b.clone(), 7, at(200), Some(at(10)), None, ms(1))
        .is_empty());
    let mut fresh = SnapshotServer::default();
    assert!(fresh
        .on_wanted(b, 8, at(0), Some(at(10)), None, ms(1))
        .is_empty());
}

/// A node's newest local snapshot, held again when it starts: offered
/// while its tail is short, like a build; holding it neither ends a
/// build under way nor makes the offers owed.
#[test]
fn a_snapshot_held_from_before_a_start_is_offered_and_leaves_a_build_alone() {
    let at = EventIdx;
    let names = ["a", "b", "c"].map(NodeId::from);
    let mut member = SnapshotServer::default();
    let s10 = built(&state(10), CHUNK);
    let len = s10.bytes.len();
    member.hold(s10.clone());
    member.hold(s10);
    let acts = member.on_wanted(
        names[0].clone(),
        1,
        at(0),
        None,
        Some(pt_tail(30, Some(len / 16))),
        ms(0),
    );
    assert_eq!(offered(&acts), Some(at(10)), "{acts:?}");
    assert_eq!(
        member.on_wanted(names[1].clone(), 2, at(0), None, Some(pt(30)), ms(1)),
        vec![ServeAction::Build]
    );
    member.hold(built(&state(20), CHUNK));
    assert!(
        member
            .on_wanted(names[2].clone(), 3, at(0), None, Some(pt(30)), ms(2))
            .is_empty(),
        "still building: no second build"
    );
    let offers = member.on_built(built(&state(30), CHUNK), ms(3));
    let to: Vec<_> = offers
        .iter()
        .map(|o| match o {
            ServeAction::Offer { to, offer } if offer.index == at(30) => to.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to, names[1..]);
}

#[test]
fn offers_check_their_shape() {
    let snap = built(&state(300), 512);
    let good = snap.offer(1, 0);
    assert_eq!(good.check(), Ok(()));
    let mut short = good.clone();
    short.chunks.pop();
    assert!(short.check().is_err());
    let mut huge = good.clone();
    huge.chunk_bytes = 64 << 20;
    assert!(huge.check().is_err());
    assert!(
        good.same_snapshot(&snap.offer(2, 9)),
        "session and load do not matter"
    );
    assert!(!good.same_snapshot(&short));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any mix of sources that are slow, die at any point or lie about
        /// one chunk ends in the exact State or a clean failure, never in
        /// a wrong State; with one honest source that lives, it ends well.
        #[test]
        fn transfers_from_mixed_sources_end_exact_or_fail_cleanly(
            sources in prop::collection::vec((1u64..30, prop::option::of(0usize..40), prop::option::of(0u32..30)), 1..5),
            honest in any::<bool>(),
        ) {
            let s = state(1500);
            let snap = built(&s, 2048);
            let mut srcs: Vec<Src> = sources
                .iter()
                .enumerate()
                .map(|(i, (lat, dies, lies))| {
                    let mut x = src(&format!("s{i}"), &snap, *lat);
                    x.dies_after = *dies;
                    x.corrupts = *lies;
                    x
                })
                .collect();
            if honest {
                srcs.push(src("honest", &snap, 15));
            }
            let r = run(&snap, srcs, cfg());
            match &r.result {
                Ok((got, _)) => prop_assert_eq!(got.hash(), s.hash()),
                Err(reason) => {
                    prop_assert!(!honest, "{}", reason);
                    prop_assert!(reason.contains("no snapshot source left"), "{}", reason);
                }
            }
        }
    }
}

/// Bytes whose every read fails, as a snapshot file on a failing disk.
#[derive(Debug)]
struct Unreadable;

impl SnapshotBytes for Unreadable {
    fn len(&self) -> u64 {
        100
    }

    fn read_at(&self, _: u64, _: usize) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::other("disk failed"))
    }
}

#[test]
fn a_chunk_that_cannot_be_read_is_refused_with_why_when_it_is_read() {
    let mut server = SnapshotServer::default();
    server.on_built(
        EncodedSnapshot {
            index: EventIdx(5),
            bytes: Arc::new(Unreadable),
            sha256: [0; 32],
            chunk_bytes: 100,
            chunks: vec![[0; 32]].into(),
        },
        ms(0),
    );
    let req = SnapshotRequest {
        session: 3,
        index: EventIdx(5),
        chunk: 0,
    };
    let me = NodeId::from("me");
    // The loop hands the read on; whoever reads it (off the loop) sends
    // the refusal instead of the chunk.
    let ServeAction::Send { to, read } = server.on_request(me.clone(), req, ms(0)) else {
        panic!("the read is left to the sender");
    };
    assert_eq!(to, me);
    assert_eq!(read.size(), 100);
    match read.reply() {
        Direct::SnapshotRefused { session: 3, reason } => {
            assert!(reason.contains("disk failed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
