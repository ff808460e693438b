use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn node(s: &str) -> NodeId {
    NodeId::from(s)
}

const MASTER: ReadView = ReadView {
    leading: true,
    can_read: true,
    master: None,
};

fn follower_of(m: &str) -> ReadView {
    ReadView {
        leading: false,
        can_read: false,
        master: Some(node(m)),
    }
}

fn answers(acts: &[ReadAction]) -> Vec<(Reader, Result<EventIdx, Refusal>)> {
    acts.iter()
        .filter_map(|a| match a {
            ReadAction::Answer(r, res) => Some((r.clone(), res.clone())),
            _ => None,
        })
        .collect()
}

fn rounds(acts: &[ReadAction]) -> Vec<u64> {
    acts.iter()
        .filter_map(|a| match a {
            ReadAction::Round(c) => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn reads_that_arrive_during_a_round_share_the_next_one() {
    let mut r = Reads::default();
    let first = rounds(&r.read(1, ms(0), &MASTER));
    assert_eq!(first.len(), 1, "an idle master starts a round at once");
    assert!(rounds(&r.read(2, ms(1), &MASTER)).is_empty());
    let acts = r.asked_by(node("f"), 40, ms(1), &MASTER);
    assert!(rounds(&acts).is_empty(), "one round in flight at a time");

    let acts = r.ready(first[0], EventIdx(7), ms(2), &MASTER);
    assert_eq!(answers(&acts), [(Reader::Local(1), Ok(EventIdx(7)))]);
    let second = rounds(&acts);
    assert_eq!(second.len(), 1, "the waiting reads go in one round");
    assert!(
        answers(&r.ready(first[0], EventIdx(8), ms(3), &MASTER)).is_empty(),
        "a stale confirmation answers nobody"
    );
    let acts = r.ready(second[0], EventIdx(9), ms(3), &MASTER);
    assert_eq!(
        answers(&acts),
        [
            (Reader::Local(2), Ok(EventIdx(9))),
            (
                Reader::Remote {
                    node: node("f"),
                    id: 40
                },
                Ok(EventIdx(9))
            )
        ]
    );
    assert!(r.is_empty());
    assert_eq!(r.next_wake(), None);
}

#[test]
fn a_master_that_cannot_confirm_refuses_with_no_quorum_within_the_read_wait() {
    let mut r = Reads::default();
    let mut started = rounds(&r.read(1, ms(0), &MASTER));
    let mut t = ms(0);
    let mut refused = None;
    while refused.is_none() && t < READ_WAIT * 2 {
        t = r.next_wake().expect("a deadline is pending");
        let acts = r.tick(t, &MASTER);
        started.extend(rounds(&acts));
        refused = answers(&acts).into_iter().next();
    }
    assert_eq!(refused, Some((Reader::Local(1), Err(Refusal::NoQuorum))));
    assert_eq!(t, READ_WAIT, "refused at its deadline, not later");
    assert!(
        started.len() >= 3,
        "unconfirmed rounds are retried: {started:?}"
    );
}

#[test]
fn no_round_starts_before_the_master_committed_in_its_term() {
    let mut r = Reads::default();
    let fresh = ReadView {
        can_read: false,
        ..MASTER
    };
    assert!(r.read(1, ms(0), &fresh).is_empty());
    assert_eq!(rounds(&r.tick(ms(5), &MASTER)).len(), 1);
}

fn asks(acts: &[ReadAction]) -> Vec<(NodeId, u64)> {
    acts.iter()
        .filter_map(|a| match a {
            ReadAction::Ask { to, id } => Some((to.clone(), *id)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_asks_the_master_and_asks_a_new_one_again() {
    let mut r = Reads::default();
    assert!(
        r.read(1, ms(0), &ReadView::default()).is_empty(),
        "no master known: wait"
    );
    let [(ref to, id)] = asks(&r.tick(ms(1), &follower_of("m1")))[..] else {
        panic!("one ask")
    };
    assert_eq!(*to, node("m1"));
    // An answer from another node is not trusted.
    let (trusted, acts) = r.answered(&node("m2"), id, Ok(EventIdx(99)), ms(1));
    assert!(!trusted && acts.is_empty());
    // The old master says it no longer leads; the new one is asked.
    let (_, acts) = r.answered(&node("m1"), id, Err(Refusal::NotMaster), ms(2));
    assert!(acts.is_empty());
    assert!(r.tick(ms(2), &follower_of("m1")).is_empty(), "not at once");
    let [(ref to, id)] = asks(&r.tick(ms(3), &follower_of("m2")))[..] else {
        panic!("one ask")
    };
    assert_eq!(*to, node("m2"));
    let (trusted, acts) = r.answered(&node("m2"), id, Ok(EventIdx(12)), ms(4));
    assert!(trusted);
    assert_eq!(answers(&acts), [(Reader::Local(1), Ok(EventIdx(12)))]);
    assert!(r.is_empty());
}

#[test]
fn reads_that_arrive_during_a_followers_ask_share_the_next_one() {
    let mut r = Reads::default();
    let view = follower_of("m");
    let [(_, first)] = asks(&r.read(1, ms(0), &view))[..] else {
        panic!("one ask")
    };
    assert!(asks(&r.read(2, ms(1), &view)).is_empty());
    assert!(asks(&r.read(3, ms(1), &view)).is_empty());
    let (_, acts) = r.answered(&node("m"), first, Ok(EventIdx(5)), ms(2));
    assert_eq!(answers(&acts), [(Reader::Local(1), Ok(EventIdx(5)))]);
    let [(_, second)] = asks(&r.tick(ms(2), &view))[..] else {
        panic!("one ask for both")
    };
    let (_, acts) = r.answered(&node("m"), second, Ok(EventIdx(6)), ms(3));
    assert_eq!(
        answers(&acts),
        [
            (Reader::Local(2), Ok(EventIdx(6))),
            (Reader::Local(3), Ok(EventIdx(6)))
        ]
    );
    let (trusted, acts) = r.answered(&node("m"), first, Ok(EventIdx(9)), ms(4));
    assert!(trusted && acts.is_empty(), "a late answer answers nobody");
}

#[test]
fn a_follower_with_a_silent_master_asks_again_then_refuses() {
    let mut r = Reads::default();
    let view = follower_of("m");
    let mut sent = asks(&r.read(1, ms(0), &view)).len();
    let mut t;
    loop {
        t = r.next_wake().expect("pending");
        let acts = r.tick(t, &view);
        sent += asks(&acts).len();
        if let Some(a) = answers(&acts).into_iter().next() {
            assert_eq!(a, (Reader::Local(1), Err(Refusal::NoQuorum)));
            break;
        }
    }
    assert_eq!(t, READ_WAIT);
    assert_eq!(sent, 4, "asked at 0, 300, 600 and 900 ms");
}

#[test]
fn a_master_that_steps_down_hands_its_readers_on() {
    let mut r = Reads::default();
    let ctx = rounds(&r.read(1, ms(0), &MASTER))[0];
    r.asked_by(node("f"), 5, ms(0), &MASTER);
    let acts = r.tick(ms(10), &follower_of("m2"));
    assert_eq!(
        answers(&acts),
        [(
            Reader::Remote {
                node: node("f"),
                id: 5
            },
            Err(Refusal::NotMaster)
        )]
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, ReadAction::Ask { to, .. } if to == &node("m2"))),
        "its own reader asks the new master: {acts:?}"
    );
    assert!(answers(&r.ready(ctx, EventIdx(3), ms(11), &follower_of("m2"))).is_empty());
    assert_eq!(
        answers(&r.asked_by(node("f"), 6, ms(12), &follower_of("m2"))),
        [(
            Reader::Remote {
                node: node("f"),
                id: 6
            },
            Err(Refusal::NotMaster)
        )]
    );
}

#[test]
fn reads_past_the_cap_are_refused_busy() {
    let mut r = Reads::default();
    let fresh = ReadView {
        can_read: false,
        ..MASTER
    };
    for i in 0..MAX_READS as u64 {
        assert!(r.read(i, ms(0), &fresh).is_empty());
    }
    assert_eq!(
        answers(&r.read(u64::MAX, ms(0), &fresh)),
        [(Reader::Local(u64::MAX), Err(Refusal::Busy))]
    );
}
