//! Transfers end to end: server and receiver, with lost, duplicated and
//! corrupt chunks.

use super::*;
use crate::wire::{SnapshotChunk, SnapshotRequest};
use shoal_log::encode_snapshot;
use shoal_model::*;
use std::time::Duration;

fn state(n: usize) -> State {
    let mut s = State::new();
    for i in 0..n {
        let cmd = Command {
            id: CommandId(format!("c{i}")),
            op: Op::KvSet {
                key: format!("k{i}"),
                value: format!("value-{i}-{}", "x".repeat(i % 90)),
            },
        };
        s.apply(&Envelope {
            idx: EventIdx(i as u64 + 1),
            term: Term(1),
            event: Event::Command { cmd, at_ms: 0 },
        })
        .unwrap();
    }
    s
}

fn built(s: &State) -> EncodedSnapshot {
    let (bytes, sha256) = encode_snapshot(s, 1);
    EncodedSnapshot {
        index: s.index(),
        bytes: Arc::new(bytes),
        sha256,
    }
}

fn cfg() -> ReceiveConfig {
    ReceiveConfig {
        chunk_bytes: 4096,
        window: 3,
        chunk_timeout: Duration::from_millis(100),
        max_retries: 5,
    }
}

/// Runs a transfer; `lose(n)` says whether the n-th chunk is lost.
fn transfer(s: &State, lose: impl Fn(usize) -> bool, corrupt: bool) -> Result<State, String> {
    transfer_keeping(s, lose, corrupt).map(|(state, _)| state)
}

/// As `transfer`, with the snapshot's bytes as the receiver kept them.
fn transfer_keeping(
    s: &State,
    lose: impl Fn(usize) -> bool,
    corrupt: bool,
) -> Result<(State, super::EncodedSnapshot), String> {
    let server_node = NodeId::from("server");
    let me = NodeId::from("me");
    let mut server = SnapshotServer::default();
    let mut now = Duration::ZERO;
    let (mut rx, mut events) = SnapshotReceiver::start(cfg(), 7, server_node.clone(), now);
    let mut sent = 0usize;
    for _ in 0..10_000 {
        let mut next = Vec::new();
        for ev in events.drain(..) {
            match ev {
                ReceiveEvent::Request { req, .. } => {
                    let mut acts = server.on_request(me.clone(), req, s.index(), EventIdx(1), 100);
                    if acts == vec![ServeAction::Build] {
                        acts = server.on_built(built(s));
                    }
                    for a in acts {
                        match a {
                            ServeAction::Send { mut chunk, .. } => {
                                sent += 1;
                                if lose(sent) {
                                    continue;
                                }
                                if corrupt && chunk.offset == 4096 {
                                    chunk.data[10] ^= 1;
                                }
                                next.extend(rx.on_chunk(&server_node, chunk, now));
                            }
                            ServeAction::Refuse { reason, .. } => return Err(reason),
                            ServeAction::Build => unreachable!(),
                        }
                    }
                }
                ReceiveEvent::Progress { .. } => {}
                ReceiveEvent::Done { state, snap } => return Ok((*state, snap)),
                ReceiveEvent::Failed { reason } => return Err(reason),
            }
        }
        if next.is_empty() {
            now += Duration::from_millis(50);
            next = rx.on_tick(now);
        }
        events = next;
    }
    Err("no end".into())
}

#[test]
fn a_transfer_delivers_the_state() {
    let s = state(3000);
    let got = transfer(&s, |_| false, false).unwrap();
    assert_eq!(got.hash(), s.hash());
    assert_eq!(got.index(), s.index());
}

#[test]
fn lost_chunks_are_re_requested_and_the_transfer_resumes() {
    let s = state(3000);
    let lost = std::cell::Cell::new(0u32);
    let lose = |n: usize| {
        let l = n % 4 == 2;
        lost.set(lost.get() + u32::from(l));
        l
    };
    let got = transfer(&s, lose, false).unwrap();
    assert_eq!(got.hash(), s.hash());
    // Losses spread over a transfer that keeps moving never give it up.
    assert!(lost.get() > cfg().max_retries, "lost {}", lost.get());
}

#[test]
fn the_receiver_keeps_the_bytes_the_source_served_to_save_and_serve_them() {
    let s = state(3000);
    let (got, snap) = transfer_keeping(&s, |n| n % 5 == 3, false).unwrap();
    let served = built(&s);
    assert_eq!(snap.index, got.index());
    assert_eq!(snap.sha256, served.sha256);
    assert_eq!(
        snap.bytes.read_all().unwrap(),
        served.bytes.read_all().unwrap(),
        "the bytes as they came, in order"
    );
}

#[test]
fn a_corrupt_chunk_fails_cleanly() {
    let s = state(3000);
    let err = transfer(&s, |_| false, true).unwrap_err();
    assert!(err.contains("rejected") || err.contains("decode"), "{err}");
}

#[test]
fn a_source_that_goes_silent_fails_the_transfer() {
    let s = state(100);
    let err = transfer(&s, |_| true, false).unwrap_err();
    assert!(err.contains("stopped sending"), "{err}");
}

#[test]
fn chunks_from_another_node_or_session_are_ignored() {
    let (mut rx, _) = SnapshotReceiver::start(cfg(), 1, NodeId::from("a"), Duration::ZERO);
    let chunk = SnapshotChunk {
        session: 1,
        index: EventIdx(1),
        total_len: 10,
        sha256: [0; 32],
        offset: 0,
        data: vec![1],
    };
    assert!(rx
        .on_chunk(&NodeId::from("b"), chunk.clone(), Duration::ZERO)
        .is_empty());
    assert!(rx
        .on_chunk(
            &NodeId::from("a"),
            SnapshotChunk {
                session: 2,
                ..chunk
            },
            Duration::ZERO
        )
        .is_empty());
    assert!(rx.index().is_none());
}

#[test]
fn joiners_share_one_build_and_a_stale_cache_is_rebuilt() {
    let mut server = SnapshotServer::default();
    let req = |session| SnapshotRequest {
        session,
        index: None,
        offset: 0,
        len: 100,
    };
    let at = EventIdx;
    let a = NodeId::from("a");
    assert_eq!(
        server.on_request(a.clone(), req(1), at(10), at(1), 100),
        vec![ServeAction::Build]
    );
    assert!(server
        .on_request(NodeId::from("b"), req(2), at(10), at(1), 100)
        .is_empty());
    let s = state(10);
    let sent = server.on_built(built(&s));
    assert_eq!(sent.len(), 2);
    // Fresh enough: served from the cache.
    let acts = server.on_request(NodeId::from("c"), req(3), at(50), at(1), 100);
    assert!(matches!(&acts[0], ServeAction::Send { .. }));
    // The log moved past the cached snapshot: a new build is needed.
    let acts = server.on_request(NodeId::from("c"), req(3), at(50), at(50), 100);
    assert_eq!(acts, vec![ServeAction::Build]);
    // So is one that lags too far behind.
    let mut other = SnapshotServer::default();
    other.on_built(built(&s));
    let acts = other.on_request(NodeId::from("d"), req(4), at(500), at(1), 100);
    assert_eq!(acts, vec![ServeAction::Build]);
    // A newer build does not break a transfer of the one before.
    server.on_built(built(&state(20)));
    let resume = SnapshotRequest {
        session: 1,
        index: Some(s.index()),
        offset: 0,
        len: 100,
    };
    let acts = server.on_request(a.clone(), resume, at(500), at(1), 100);
    assert!(matches!(&acts[0], ServeAction::Send { chunk, .. } if chunk.index == s.index()));
    // Resuming an old snapshot by index still works while it is cached.
    let resume = SnapshotRequest {
        session: 1,
        index: Some(s.index()),
        offset: 100,
        len: 100,
    };
    let acts = server.on_request(a, resume, at(500), at(50), 100);
    assert!(matches!(&acts[0], ServeAction::Send { .. }));
}

#[test]
fn chunks_nobody_asked_for_are_not_kept() {
    let src = NodeId::from("a");
    let (mut rx, _) = SnapshotReceiver::start(cfg(), 1, src.clone(), Duration::ZERO);
    let chunk = |offset: u64, len: usize| SnapshotChunk {
        session: 1,
        index: EventIdx(9),
        total_len: 1 << 30,
        sha256: [0; 32],
        offset,
        data: vec![1; len],
    };
    // Far ahead, never asked for: dropped, and it does not set the offer.
    for k in 1..100 {
        assert!(rx
            .on_chunk(&src, chunk(k * 4096, 4096), Duration::ZERO)
            .is_empty());
    }
    assert!(rx.index().is_none());
    assert_eq!(rx.stashed_bytes(), 0);
    // Larger than asked: dropped too.
    assert!(rx.on_chunk(&src, chunk(0, 4097), Duration::ZERO).is_empty());
    assert!(rx.index().is_none());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any pattern of lost and duplicated chunks ends in the exact
        /// State or in a clean failure, never in a wrong State.
        #[test]
        fn lossy_transfers_end_exact_or_fail_cleanly(fate in prop::collection::vec(0u8..10, 1..400)) {
            let mut s = State::new();
            for i in 0..400u64 {
                let cmd = Command { id: CommandId(format!("c{i}")), op: Op::KvSet { key: format!("k{i}"), value: "v".repeat((i % 50) as usize) } };
                s.apply(&Envelope { idx: EventIdx(i + 1), term: Term(1), event: Event::Command { cmd, at_ms: 0 } }).unwrap();
            }
            let (bytes, sha256) = encode_snapshot(&s, 1);
            let snap = EncodedSnapshot { index: s.index(), bytes: Arc::new(bytes), sha256 };
            let cfg = ReceiveConfig { chunk_bytes: 512, window: 3, chunk_timeout: Duration::from_millis(100), max_retries: 50 };
            let src = NodeId::from("src");
            let mut server = SnapshotServer::default();
            server.on_built(snap);
            let mut now = Duration::ZERO;
            let (mut rx, mut evs) = SnapshotReceiver::start(cfg, 1, src.clone(), now);
            let mut n = 0usize;
            let mut result = None;
            for _ in 0..20_000 {
                let mut next = Vec::new();
                for ev in evs.drain(..) {
                    match ev {
                        ReceiveEvent::Request { req, .. } => {
                            for a in server.on_request(NodeId::from("me"), req, s.index(), EventIdx(1), 10) {
                                if let ServeAction::Send { chunk, .. } = a {
                                    n += 1;
                                    match fate[n % fate.len()] {
                                        0 | 1 => {}
                                        2 => {
                                            next.extend(rx.on_chunk(&src, chunk.clone(), now));
                                            next.extend(rx.on_chunk(&src, chunk, now));
                                        }
                                        _ => next.extend(rx.on_chunk(&src, chunk, now)),
                                    }
                                }
                            }
                        }
                        ReceiveEvent::Done { state, .. } => result = Some(Ok(state.hash())),
                        ReceiveEvent::Failed { reason } => result = Some(Err(reason)),
                        ReceiveEvent::Progress { .. } => {}
                    }
                }
                if result.is_some() {
                    break;
                }
                if next.is_empty() {
                    now += Duration::from_millis(60);
                    next = rx.on_tick(now);
                }
                evs = next;
            }
            match result {
                Some(Ok(h)) => prop_assert_eq!(h, s.hash()),
                Some(Err(reason)) => prop_assert!(reason.contains("stopped sending"), "{}", reason),
                None => prop_assert!(false, "the transfer neither ended nor failed"),
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
fn a_chunk_that_cannot_be_read_is_refused_with_why() {
    let mut server = SnapshotServer::default();
    let req = SnapshotRequest {
        session: 3,
        index: None,
        offset: 0,
        len: 100,
    };
    let me = NodeId::from("me");
    assert_eq!(
        server.on_request(me.clone(), req, EventIdx(5), EventIdx(1), 100),
        vec![ServeAction::Build]
    );
    let acts = server.on_built(EncodedSnapshot {
        index: EventIdx(5),
        bytes: Arc::new(Unreadable),
        sha256: [0; 32],
    });
    match acts.as_slice() {
        [ServeAction::Refuse {
            to,
            session: 3,
            reason,
        }] => {
            assert_eq!(*to, me);
            assert!(reason.contains("disk failed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
