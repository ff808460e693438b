//! Finding peers, founding or joining a cluster, and whom a joiner
//! believes about the master and the commit.

use super::*;

#[test]
fn a_new_node_heartbeats_and_asks_to_be_woken_for_the_next_one() {
    let mut n = start(None, None);
    let out = n.handle(Input::Wake, ms(0), 0);
    assert_eq!(out.len(), 3, "{out:?}");
    // Holding no State, it takes no committed gossip it could not check.
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::FollowCommitted(false))),
        "{out:?}"
    );
    assert!(matches!(
        &out[0],
        Output::Broadcast(Frame { msg: Gossip::Transient(TransientEvent::Heartbeat(hb)), .. })
            if hb.node.as_str() == ME && hb.cluster_id.is_none()
    ));
    assert_eq!(wake(&out), Some(ms(300)), "the next heartbeat");
    // Nothing is due in between: an input changes nothing about it (a
    // new peer only gets this node's heartbeat, once).
    n.handle(heartbeat("z", None, 0, 0), ms(10), 0);
    let out = n.handle(heartbeat("z", None, 0, 0), ms(20), 0);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(n.timer(Timer::Discovery), Some(ms(2000)));
}

#[test]
fn a_node_heard_for_the_first_time_or_after_a_silence_gets_a_heartbeat_back_one_to_one() {
    let mut n = follower(cluster_state(&["m", "me"], vec![]));
    let out = n.handle(heartbeat("j", None, 0, 0), ms(10), 0);
    let replies = all_sent(&out);
    assert_eq!(replies.len(), 1, "{out:?}");
    let (to, Direct::Transient(TransientEvent::Heartbeat(hb))) = &replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(to, "j");
    assert_eq!(hb.node.as_str(), ME);
    assert_eq!(hb.applied, n.state().index());
    // Heard again: it knows this node already.
    let out = n.handle(heartbeat("j", None, 0, 0), ms(20), 0);
    assert!(all_sent(&out).is_empty(), "{out:?}");
    // What goes to "j" (this node's own timers send to the members).
    let to_j = |out: &[Output]| -> Vec<Direct> {
        (all_sent(out).into_iter())
            .filter(|(to, _)| to == "j")
            .map(|(_, m)| m)
            .collect()
    };
    let out = n.handle(heartbeat("j", None, 0, 0), ms(1000), 0);
    assert!(
        to_j(&out).is_empty(),
        "silent for less than a second: {out:?}"
    );
    // Heard again after more than half the node timeout (back from a cut
    // link): the heartbeat goes back at once, once.
    let out = n.handle(heartbeat("j", None, 0, 0), ms(2100), 0);
    assert!(
        matches!(
            &to_j(&out)[..],
            [Direct::Transient(TransientEvent::Heartbeat(_))]
        ),
        "{out:?}"
    );
    let out = n.handle(heartbeat("j", None, 0, 0), ms(2200), 0);
    assert!(to_j(&out).is_empty(), "{out:?}");
}

#[test]
fn a_joiner_learns_master_and_commit_from_a_heartbeat_sent_one_to_one() {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    let hb = Heartbeat {
        node: NodeId::from("m"),
        addr: "mem://m".into(),
        cluster_id: Some(ClusterId::from("c")),
        incarnation: 9,
        started_ms: 1_000,
        sent_ms: 2_000,
        term: Term(1),
        applied: EventIdx(50_000),
        commit: EventIdx(50_000),
        log_floor: EventIdx(1),
        leader: Some(NodeId::from("m")),
        standing: None,
        voter: true,
        leader_reason: None,
    };
    let hb = Direct::Transient(TransientEvent::Heartbeat(hb));
    let out = n.handle(direct("m", hb), ms(5), 0);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ClusterAdopted(c) if c.as_str() == "c")));
    // Once it has listened for a heartbeat interval (whom to trust, see
    // `trust`), it believes the master about the commit and asks for a
    // snapshot: no gossiped heartbeat was needed.
    let out = n.handle(Input::Wake, ms(300), 0);
    assert_eq!(
        wanted(&out).map(|(_, have)| have),
        Some(EventIdx::ZERO),
        "{out:?}"
    );
}

#[test]
fn a_lone_node_founds_its_cluster_after_the_discovery_window() {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    let out = n.handle(Input::Wake, ms(2000), 0);
    let adopted: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::ClusterAdopted(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 1);
    assert!(n.is_master(), "a lone voter elects itself");
    assert_eq!(
        n.timer(Timer::Plan),
        Some(ms(2000)),
        "its first plan tick is due now"
    );
    assert_eq!(wake(&out), Some(ms(2001)));
    // The plan tick proposes the founding entry; one voter commits it.
    n.handle(Input::Wake, ms(2001), 5);
    assert_eq!(n.state().cluster_id(), Some(&adopted[0]));
    assert_eq!(n.status().role, NodeRole::Master);
}

#[test]
fn a_node_given_peers_founds_only_once_it_hears_one() {
    let mut cfg = cfg();
    cfg.found_with_peers_only = true;
    let mut n = Node::new(cfg, MemLog::new(), None, None, ms(0)).unwrap();
    n.handle(Input::Wake, ms(0), 0);
    // Its peers never answer (down, or another cluster key): it waits.
    for t in (2000..=20_000).step_by(300) {
        let out = n.handle(Input::Wake, ms(t), 0);
        assert!(!out.iter().any(|o| matches!(o, Output::ClusterAdopted(_))));
    }
    assert!(!n.is_master());
    assert!(n.timer(Timer::Discovery).is_some(), "it keeps looking");
    // A larger empty peer answers: now this one founds, and the peer joins.
    n.handle(heartbeat("zz", None, 0, 0), ms(20_100), 0);
    let out = n.handle(Input::Wake, ms(20_300), 0);
    assert!(out.iter().any(|o| matches!(o, Output::ClusterAdopted(_))));
}

#[test]
fn a_node_that_may_not_vote_never_founds_and_nobody_waits_for_it() {
    let mut cfg = cfg();
    cfg.voter = false;
    let mut n = Node::new(cfg, MemLog::new(), None, None, ms(0)).unwrap();
    let out = n.handle(Input::Wake, ms(0), 0);
    assert!(
        out.iter().any(|o| matches!(o, Output::Broadcast(Frame {
            msg: Gossip::Transient(TransientEvent::Heartbeat(hb)), ..
        }) if !hb.voter)),
        "its heartbeat says it may not vote: {out:?}"
    );
    for t in (2000..=20_000).step_by(300) {
        let out = n.handle(Input::Wake, ms(t), 0);
        assert!(!out.iter().any(|o| matches!(o, Output::ClusterAdopted(_))));
    }
    assert!(!n.is_master());
    assert!(n.timer(Timer::Discovery).is_some(), "it keeps looking");
    // A node that may vote does not wait for a smaller one that may not.
    let mut other = start(None, None);
    other.handle(Input::Wake, ms(0), 0);
    let Input::Gossip(mut frame) = heartbeat("a", None, 0, 0) else {
        unreachable!()
    };
    if let Gossip::Transient(TransientEvent::Heartbeat(hb)) = &mut frame.msg {
        hb.voter = false;
    }
    other.handle(Input::Gossip(frame), ms(1900), 0);
    let out = other.handle(Input::Wake, ms(2000), 0);
    assert!(out.iter().any(|o| matches!(o, Output::ClusterAdopted(_))));
}

#[test]
fn a_smaller_empty_node_in_sight_founds_instead() {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    n.handle(heartbeat("a", None, 0, 0), ms(1900), 0);
    let out = n.handle(Input::Wake, ms(2000), 0);
    assert!(!out.iter().any(|o| matches!(o, Output::ClusterAdopted(_))));
    assert_eq!(
        n.timer(Timer::Discovery),
        Some(ms(2300)),
        "looks again a heartbeat later"
    );
    // The smaller one founded: its cluster is adopted.
    let out = n.handle(heartbeat("a", Some("c"), 1, 1), ms(2100), 0);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ClusterAdopted(c) if c.as_str() == "c")));
    assert_eq!(n.timer(Timer::Discovery), None);
}

#[test]
fn a_joiner_asks_on_gossip_and_loads_what_the_master_its_peers_name_vouches_for() {
    let mut n = start(Some("c"), None);
    n.handle(Input::Wake, ms(0), 0);
    // "a" names "m" master; "m" is not heard yet: nobody to vouch.
    n.handle(heartbeat("a", Some("c"), 5, 5), ms(10), 0);
    let out = n.handle(Input::Wake, ms(300), 0);
    assert!(wanted(&out).is_none(), "{out:?}");
    // Heard, and listened a heartbeat interval: the joiner asks everyone.
    let out = n.handle(heartbeat("m", Some("c"), 5, 5), ms(310), 0);
    let (session, have) = wanted(&out).expect("a request on gossip");
    assert_eq!(have, EventIdx::ZERO);
    let snap = |tag| EncodedSnapshot::new(EventIdx(5), vec![tag; 3000], [tag; 32], 1024);
    // "a" offers other bytes than the master: not a source.
    n.handle(
        direct("a", Direct::SnapshotOffer(snap(2).offer(session, 0))),
        ms(320),
        0,
    );
    n.handle(
        direct("m", Direct::SnapshotOffer(snap(1).offer(session, 0))),
        ms(330),
        0,
    );
    let out = n.handle(Input::Wake, ms(380), 0);
    let asked: Vec<_> = sent(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Direct::SnapshotRequest(r) => Some((to, r.chunk)),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [("m".to_string(), 0), ("m".to_string(), 1)]);
}

/// The snapshot request this node broadcast, if any.
fn wanted(out: &[Output]) -> Option<(u64, EventIdx)> {
    out.iter().find_map(|o| match o {
        Output::Broadcast(f) => match f.msg {
            Gossip::SnapshotWanted { session, have, .. } => Some((session, have)),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn committed_gossip_is_taken_by_followers_and_not_by_raft_members() {
    let follows = |out: &[Output]| -> Vec<bool> {
        out.iter()
            .filter_map(|o| match o {
                Output::FollowCommitted(on) => Some(*on),
                _ => None,
            })
            .collect()
    };
    // A follower with State takes it from its first step on.
    let mut n = start(Some("c"), Some(cluster_state(&["m", ME], vec![])));
    assert_eq!(follows(&n.handle(Input::Wake, ms(0), 0)), [true]);
    // A founder holds State only as a Raft member: it never takes it (the
    // master tells the other members one-to-one, `Direct::Committed`).
    let mut n = start(None, None);
    let mut seen = follows(&n.handle(Input::Wake, ms(0), 0));
    seen.extend(follows(&n.handle(Input::Wake, ms(2000), 0)));
    seen.extend(follows(&n.handle(Input::Wake, ms(2001), 5)));
    assert!(n.is_master() && n.state().cluster_id().is_some());
    assert_eq!(seen, [false]);
}

#[test]
fn committed_entries_sent_one_to_one_count_from_the_master_only() {
    let state = cluster_state(&["m", ME, "a"], vec![]);
    let base = state.index().0;
    let mut n = follower(state);
    n.handle(heartbeat("m", Some("c"), base, base), ms(5), 0);
    let one_to_one = |from: &str| direct(from, Direct::Committed(noops(base + 1, base + 2)));
    // From a node that is not the master: dropped and counted.
    n.handle(one_to_one("a"), ms(10), 0);
    assert_eq!(n.state().index().0, base);
    assert_eq!(n.metrics().untrusted_messages, 1);
    // From the master: applied, as its gossip would be.
    n.handle(one_to_one("m"), ms(11), 0);
    assert_eq!(n.state().index().0, base + 2);
    assert_eq!(n.metrics().untrusted_messages, 1);
}

/// A node that founded a cluster alone, as master at 2 s, founded at
/// wall clock 5 ms.
fn lone_founder() -> (Node<MemLog>, ClusterId) {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    n.handle(Input::Wake, ms(2000), 0);
    n.handle(Input::Wake, ms(2001), 5);
    let mine = n.state().cluster_id().cloned().expect("founded");
    assert!(n.is_master());
    assert_eq!(n.state().meta().founded_at_ms, 5);
    (n, mine)
}

/// A heartbeat of `cluster` saying how it stands.
fn standing(from: &str, cluster: &str, holds_data: bool, founded_ms: u64) -> Input {
    let Input::Gossip(mut frame) = heartbeat(from, Some(cluster), 3, 3) else {
        unreachable!()
    };
    if let Gossip::Transient(TransientEvent::Heartbeat(hb)) = &mut frame.msg {
        hb.standing = Some(Standing {
            holds_data,
            founded_ms,
        });
    }
    Input::Gossip(frame)
}

fn given_up(out: &[Output]) -> Option<&ClusterId> {
    out.iter().find_map(|o| match o {
        Output::ClusterGivenUp(c) => Some(c),
        _ => None,
    })
}

#[test]
fn a_lone_founder_with_nothing_gives_its_cluster_up_for_one_standing_before() {
    let (mut n, mine) = lone_founder();
    let index = n.state().index().0;
    assert!(index > 0 && n.log().last_index().0 == index);
    // Standing unknown, founded later, or at the same time with a larger
    // id: kept.
    for (i, hb) in [
        heartbeat("z", Some("0"), 100, 100),
        standing("z", "0", false, 6),
        standing("z", "~", false, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let out = n.handle(hb, ms(2100 + i as u64), 0);
        assert!(given_up(&out).is_none(), "{i}: {out:?}");
    }
    assert!(n.is_master());
    // Founded at the same time with a smaller id: given up, the other
    // adopted.
    let out = n.handle(standing("a", "0", false, 5), ms(2200), 0);
    assert_eq!(given_up(&out), Some(&mine));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ClusterAdopted(c) if c.as_str() == "0")));
    assert_eq!(n.cluster().map(ClusterId::as_str), Some("0"));
    assert!(!n.is_master());
    assert_eq!(n.state().index(), EventIdx::ZERO);
    assert_eq!(n.metrics().clusters_given_up, 1);
    // Its log is emptied at the next step, after the shell forgot the id.
    assert_eq!(n.log().last_index().0, index);
    n.handle(Input::Wake, ms(2300), 0);
    assert_eq!(n.log().last_index(), EventIdx::ZERO);
    assert_eq!(n.log().hard_state(), Default::default());
    // It goes by what "0"'s nodes said of it: it never moves back to a
    // cluster that stands after, only on to one before.
    let out = n.handle(standing("b", mine.as_str(), false, 5), ms(2400), 0);
    assert!(given_up(&out).is_none(), "{out:?}");
    let out = n.handle(standing("d", "1", true, 900), ms(2500), 0);
    assert_eq!(given_up(&out).map(ClusterId::as_str), Some("0"));
    assert_eq!(n.cluster().map(ClusterId::as_str), Some("1"));
}

#[test]
fn a_founder_that_holds_a_key_keeps_its_cluster() {
    let (mut n, mine) = lone_founder();
    let cmd = Command {
        id: CommandId::from("w"),
        op: Op::KvIncrBy {
            key: "k".into(),
            by: 1,
        },
    };
    n.handle(Input::Submit { cmd, reply: 1 }, ms(2100), 10);
    n.handle(Input::Wake, ms(2200), 11);
    assert_eq!(n.state().kv().len(), 1);
    let out = n.handle(standing("a", "0", true, 1), ms(2300), 0);
    assert!(given_up(&out).is_none(), "{out:?}");
    assert_eq!(n.cluster(), Some(&mine));
    assert!(n.is_master());
    assert!(n.metrics().foreign_messages > 0);
}

#[test]
fn a_founder_that_stopped_before_emptying_its_log_is_back_in_its_cluster() {
    let (mut n, mine) = lone_founder();
    let index = n.state().index();
    let out = n.handle(standing("a", "0", false, 1), ms(2200), 0);
    assert!(given_up(&out).is_some());
    // The shell forgot the id; the process stops before its next step.
    let log = n.into_log();
    let n = Node::new(cfg(), log, None, None, ms(0)).unwrap();
    assert_eq!(n.cluster(), Some(&mine));
    assert_eq!(n.state().index(), index);
}

#[test]
fn a_member_leaves_the_reconnect_of_a_silent_follower_to_the_follower() {
    let mut n = start(None, None);
    n.handle(Input::Wake, ms(0), 0);
    n.handle(Input::Wake, ms(2000), 0);
    n.handle(Input::Wake, ms(2001), 5);
    let cluster = n.state().cluster_id().expect("founded").to_string();
    n.handle(heartbeat("f", Some(&cluster), 0, 0), ms(2100), 0);
    let join = Input::Direct(Frame {
        version: PROTOCOL_VERSION,
        cluster: Some(ClusterId::from(cluster.as_str())),
        from: NodeId::from("f"),
        msg: Direct::Join {
            addr: "mem://f".into(),
        },
    });
    n.handle(join, ms(2100), 0);
    for t in (2200..=2400).step_by(100) {
        n.handle(Input::Wake, ms(t), 0);
    }
    assert!(
        n.state().nodes().contains_key(&NodeId::from("f")),
        "f joined"
    );
    // "f" falls silent: a starved host, or a cut link. Its own side
    // reconnects once it hears no member; from here a new connection
    // would only meet a busy host's handshake.
    for t in (2500..=6100).step_by(300) {
        let out = n.handle(Input::Wake, ms(t), 0);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Reconnect(_))),
            "at {t} ms"
        );
    }
}

#[test]
fn a_node_its_state_does_not_record_yet_heartbeats_to_the_members_only() {
    // The State names the founder m (a voter) and the follower f, not
    // this node: the master records it on hearing it, and m is the one
    // member to hear. No broadcast reaches every node of the cluster.
    let state = cluster_state(&["m", "f"], vec![]);
    assert!(!state.nodes().contains_key(&NodeId::from(ME)));
    let mut n = start(Some("c"), Some(state));
    let mut heartbeats_to = Vec::new();
    for t in [0, 300, 600, 900] {
        let out = n.handle(Input::Wake, ms(t), 0);
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::Broadcast(Frame {
                    msg: Gossip::Transient(TransientEvent::Heartbeat(_)),
                    ..
                })
            )),
            "{out:?}"
        );
        heartbeats_to.extend(all_sent(&out).into_iter().filter_map(|(to, m)| {
            matches!(m, Direct::Transient(TransientEvent::Heartbeat(_))).then_some(to)
        }));
    }
    assert!(heartbeats_to.len() >= 3, "{heartbeats_to:?}");
    assert!(
        heartbeats_to.iter().all(|to| to == "m"),
        "{heartbeats_to:?}"
    );
}

/// Whom a node's heartbeat went to in `out`: None for a broadcast.
fn heartbeat_targets(out: &[Output]) -> Vec<Option<String>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(Frame {
                msg: Gossip::Transient(TransientEvent::Heartbeat(_)),
                ..
            }) => Some(None),
            Output::Send {
                to,
                frame:
                    Frame {
                        msg: Direct::Transient(TransientEvent::Heartbeat(_)),
                        ..
                    },
            } => Some(Some(to.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_joiner_heartbeats_to_the_master_its_peers_name_while_it_loads() {
    // No State yet: nobody to send to but everyone.
    let mut n = start(None, None);
    let out = n.handle(Input::Wake, ms(0), 0);
    assert_eq!(heartbeat_targets(&out), vec![None], "{out:?}");
    // Two voters of cluster "c" name m master (as `heartbeat` does).
    n.handle(heartbeat("m", Some("c"), 10, 10), ms(5), 0);
    n.handle(heartbeat("v", Some("c"), 10, 10), ms(6), 0);
    // Once it has listened a heartbeat interval it believes them, and
    // while its snapshot loads its heartbeats go to m alone: no other
    // node of the cluster relays them.
    for t in [300, 600, 900] {
        let out = n.handle(Input::Wake, ms(t), 0);
        assert!(n.state().nodes().is_empty(), "still loading");
        assert_eq!(
            heartbeat_targets(&out),
            vec![Some("m".to_owned())],
            "at {t} ms: {out:?}"
        );
    }
}

/// A member that started from a local snapshot holds it again
/// (`Saved::Loaded`) and offers it to a joiner, with no build, while the
/// entries its log holds after it take at most a sixteenth of its bytes;
/// a snapshot that its tail outweighs is not offered, and one is built.
#[test]
fn a_member_offers_the_snapshot_it_started_from_while_its_tail_is_short() {
    let serve = |share_of_tail: u64| {
        let (mut n, mine) = lone_founder();
        let held = n.state().index().prev();
        let tail = n.log().bytes_after(held).expect("the log holds the tail");
        assert!(tail > 0);
        let len = (tail * share_of_tail) as usize;
        let snap = EncodedSnapshot::new(held, vec![7; len], [7; 32], 1024);
        let save = Saved::Loaded;
        let out = n.handle(Input::SnapshotBuilt { snap, save }, ms(2100), 0);
        assert!(sent(&out).is_empty(), "held, with no offers made");
        let wanted = Input::Gossip(Frame {
            version: PROTOCOL_VERSION,
            cluster: Some(mine),
            from: NodeId::from("j"),
            msg: Gossip::SnapshotWanted {
                session: 4,
                have: EventIdx::ZERO,
                resume: None,
            },
        });
        let out = n.handle(wanted, ms(2200), 0);
        let offered = sent(&out).into_iter().find_map(|(to, m)| match m {
            Direct::SnapshotOffer(o) => Some((to, o.index)),
            _ => None,
        });
        let built = out
            .iter()
            .any(|o| matches!(o, Output::BuildSnapshot { save: false, .. }));
        (offered, built, held)
    };
    let (offered, built, held) = serve(16);
    assert_eq!(offered, Some(("j".to_string(), held)));
    assert!(!built);
    let (offered, built, _) = serve(15);
    assert_eq!(offered, None);
    assert!(built, "a tail over a sixteenth: built anew");
}
