//! A member that lies: it sends every kind of forged message a buggy or
//! hostile peer could, while the cluster takes writes and a node joins.
//! The invariants hold (the simulator checks one State per index and no
//! replica going back after every step), no node stops, and nothing forged
//! reaches State.

use super::*;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use shoal_model::{
    encode_event, EntryKind, Event, FencingToken, Heartbeat, LogEntry, OutputChunk, Stream, TaskId,
    Term, TransientEvent,
};
use shoal_proto::wire::{Direct, Gossip, RangeReply, SnapshotChunk, SnapshotOffer};

/// Entries that would set `forged-*` keys, at the indices after `next`.
fn forged_entries(next: EventIdx, term: Term) -> Vec<LogEntry> {
    (0..3)
        .map(|i| {
            let cmd = Command {
                id: CommandId(format!("forged-{}-{i}", next.0)),
                op: Op::KvSet {
                    key: format!("forged-{}", next.0 + i),
                    value: "x".into(),
                },
            };
            LogEntry {
                idx: EventIdx(next.0 + i),
                term,
                kind: EntryKind::Normal,
                data: encode_event(&Event::Command { cmd, at_ms: 0 }),
                context: vec![],
            }
        })
        .collect()
}

fn raft_message(kind: MessageType, from: u64, to: u64, f: impl FnOnce(&mut Message)) -> Direct {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = 1 << 40;
    f(&mut m);
    Direct::Raft(m.write_to_bytes().unwrap())
}

/// One round of lies from `h` to everyone. A lying voter is not sent to
/// forge entries: Raft trusts its members with the log (PROTOCOL.md,
/// "Whose word counts"); what it must not do is crash anyone.
fn attack(sim: &mut Sim, h: &NodeId, round: u64, entries: bool) {
    let st = sim.state_of(h).unwrap().clone();
    let next = st.index().next();
    let huge = EventIdx(next.0 + 1_000_000);
    if entries {
        sim.forge_gossip(h, Gossip::Committed(forged_entries(next, st.term())));
    }
    let hb = Heartbeat {
        node: h.clone(),
        addr: format!("sim://{h}"),
        cluster_id: st.cluster_id().cloned(),
        incarnation: round,
        started_ms: 0,
        sent_ms: u64::MAX / 2,
        term: Term(1 << 40),
        applied: huge,
        commit: huge,
        log_floor: EventIdx(1),
        leader: Some(h.clone()),
        standing: None,
        voter: true,
        leader_reason: None,
    };
    sim.forge_gossip(h, Gossip::Transient(TransientEvent::Heartbeat(hb)));
    // Asking for snapshots costs the members one build per point, no more.
    sim.forge_gossip(
        h,
        Gossip::SnapshotWanted {
            session: round,
            have: EventIdx::ZERO,
            // Naming a snapshot to resume never makes a member build one.
            resume: Some(EventIdx(round)),
        },
    );
    let my_raft_id = st.nodes()[h].raft_id.0;
    let others: Vec<(NodeId, u64)> = st
        .nodes()
        .iter()
        .filter(|(n, _)| *n != h)
        .map(|(n, i)| (n.clone(), i.raft_id.0))
        .collect();
    for (to, rid) in others {
        if entries {
            let forged = RangeReply::Entries {
                from: next,
                entries: forged_entries(next, st.term()),
            };
            sim.forge_direct(h, &to, Direct::Range(forged));
            // The master's word of a commit, to a Raft member, from a
            // node that is not the master.
            let forged = forged_entries(next, st.term());
            sim.forge_direct(h, &to, Direct::Committed(forged));
        }
        let offer = SnapshotOffer {
            session: round,
            index: huge,
            total_len: 1 << 30,
            sha256: [7; 32],
            chunk_bytes: 1 << 20,
            chunks: vec![[7; 32]; 1 << 10],
            busy: 0,
        };
        sim.forge_direct(h, &to, Direct::SnapshotOffer(offer));
        let chunk = SnapshotChunk {
            session: round,
            index: huge,
            chunk: (round % 64) as u32,
            data: vec![0; 4096],
        };
        sim.forge_direct(h, &to, Direct::SnapshotChunk(chunk));
        sim.forge_direct(
            h,
            &to,
            Direct::SnapshotRefused {
                session: round,
                reason: "lies".into(),
            },
        );
        let out = OutputChunk {
            task: TaskId::from("nobody-runs-this"),
            attempt: 1,
            stream: Stream::Stdout,
            seq: round,
            data: b"forged\n".to_vec(),
        };
        sim.forge_direct(h, &to, Direct::Output(vec![out]));
        sim.forge_direct(
            h,
            &to,
            Direct::ForwardRefused {
                id: CommandId(format!("cmd-{round}")),
                reason: Refusal::NoQuorum,
            },
        );
        sim.forge_direct(
            h,
            &to,
            Direct::LeaseRenewed {
                tokens: vec![FencingToken(round)],
                at_ms: 0,
            },
        );
        let commit_past = raft_message(MessageType::MsgHeartbeat, my_raft_id, rid, |m| {
            m.commit = huge.0;
        });
        sim.forge_direct(h, &to, commit_past);
        let skipping = raft_message(MessageType::MsgAppend, my_raft_id, rid, |m| {
            m.index = next.0;
            let e = raft::eraftpb::Entry {
                index: next.0 + 7,
                term: 1,
                ..Default::default()
            };
            m.set_entries(vec![e].into());
        });
        sim.forge_direct(h, &to, skipping);
        let no_voters = raft_message(MessageType::MsgSnapshot, my_raft_id, rid, |m| {
            let mut s = Snapshot::default();
            s.mut_metadata().index = huge.0;
            m.set_snapshot(s);
        });
        sim.forge_direct(h, &to, no_voters);
        let garbage = raft_message(MessageType::MsgPropose, my_raft_id, rid, |m| {
            let mut e = raft::eraftpb::Entry::default();
            e.set_data(b"garbage".to_vec().into());
            m.set_entries(vec![e].into());
        });
        sim.forge_direct(h, &to, garbage);
    }
}

fn forged_keys(sim: &Sim, node: &NodeId) -> usize {
    let st = sim.state_of(node).unwrap();
    st.kv().keys().filter(|k| k.starts_with("forged")).count()
}

/// Lies from `liar` every 100 ms for 10 s, while increments go in through
/// the other nodes and a sixth node joins; then the checks.
fn under_attack(seed: u64, liar_is_voter: bool) {
    let (mut sim, mut ids) = cluster(seed, 5);
    let master = sim.master().unwrap();
    let voters = voters(&sim);
    let liar = ids
        .iter()
        .find(|n| voters.contains(*n) == liar_is_voter && **n != master)
        .unwrap()
        .clone();
    let honest: Vec<NodeId> = ids.iter().filter(|n| **n != liar).cloned().collect();
    let mut acked = 0i64;
    let mut waiting = Vec::new();
    for round in 0..100u64 {
        attack(&mut sim, &liar, round, !liar_is_voter);
        let via = &honest[round as usize % honest.len()];
        waiting.push(sim.submit(via, incr("counter")));
        if round == 30 {
            ids.push(sim.add_node("n6"));
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(secs(10));
    for h in waiting {
        if matches!(sim.reply(h), Some(Ok(_))) {
            acked += 1;
        }
    }
    for n in &ids {
        assert!(
            sim.fatal(n).is_none(),
            "seed {seed}: {n} stopped: {:?}",
            sim.fatal(n)
        );
    }
    sim.expect_converged(secs(30));
    for n in &ids {
        assert_eq!(
            forged_keys(&sim, n),
            0,
            "seed {seed}: {n} applied a forged entry"
        );
        assert_eq!(
            sim.node(n).unwrap().metrics().raft_restarts,
            0,
            "seed {seed}: {n}: a message got past validation"
        );
    }
    let c = counter(&sim, &honest[0], "counter");
    assert!(
        acked >= 90,
        "seed {seed}: only {acked} of 100 writes acknowledged"
    );
    assert!(
        c >= acked && c <= 100,
        "seed {seed}: counter {c}, acknowledged {acked}"
    );
    let refused: u64 = honest
        .iter()
        .map(|n| {
            let m = sim.node(n).unwrap().metrics();
            m.bad_messages + m.untrusted_messages + m.unasked_replies
        })
        .sum();
    assert!(refused > 0, "seed {seed}: the lies were counted");
}

#[test]
fn a_lying_follower_cannot_forge_state_or_stop_anyone() {
    for seed in seeds(6) {
        under_attack(seed, false);
    }
}

#[test]
fn a_lying_voter_cannot_crash_anyone_with_raft_messages() {
    for seed in seeds(6) {
        under_attack(seed, true);
    }
}
