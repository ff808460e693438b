//! Transfers end to end: servers and a receiver, with sources that are
//! slow, lossy, lying or killed mid-transfer.

use super::*;
use crate::wire::{Direct, SnapshotChunk, SnapshotRequest};
use shoal_log::encode_snapshot;
use shoal_model::*;
use std::collections::BTreeMap;
use std::time::Duration;

const CHUNK: u32 = 4096;

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

fn built(s: &State, chunk_bytes: u32) -> EncodedSnapshot {
    let (bytes, sha256) = encode_snapshot(s, 1);
    EncodedSnapshot::new(s.index(), bytes, sha256, chunk_bytes)
}

fn cfg() -> ReceiveConfig {
    ReceiveConfig {
        window: 8,
        per_source: 2,
        chunk_timeout: Duration::from_millis(100),
        max_retries: 3,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A serving replica and how it behaves.
struct Src {
    node: NodeId,
    server: SnapshotServer,
    /// Time from a request to its chunk's arrival.
    latency: Duration,
    /// Instead of `latency`: one request at a time, the n-th taking this
    /// many milliseconds (a busy host working through its queue).
    queue: Option<fn(usize) -> u64>,
    /// When its queue is next free.
    free_at: Duration,
    /// After sending this many chunks, answers take this many
    /// milliseconds (a host that a join storm reached).
    slows: Option<(usize, u64)>,
    /// Answers this many chunks, then is gone (killed).
    dies_after: Option<usize>,
    /// Flips a byte of this chunk.
    corrupts: Option<u32>,
    /// Whether the n-th chunk it sends is lost.
    loses: fn(usize) -> bool,
    sent: usize,
}

fn src(name: &str, snap: &EncodedSnapshot, latency_ms: u64) -> Src {
    let mut server = SnapshotServer::default();
    server.on_built(snap.clone(), Duration::ZERO);
    Src {
        node: NodeId::from(name),
        server,
        latency: ms(latency_ms),
        queue: None,
        free_at: Duration::ZERO,
        slows: None,
        dies_after: None,
        corrupts: None,
        loses: |_| false,
        sent: 0,
    }
}

#[derive(Debug)]
struct Run {
    result: Result<(State, EncodedSnapshot), String>,
    /// Chunk bytes that reached the receiver, duplicates and all.
    bytes: u64,
    /// Of those, the bytes it took.
    taken: u64,
    /// Chunks it asked again after they came late.
    asked_again: u64,
    /// Chunks each source delivered, as the receiver counted them.
    delivered: BTreeMap<NodeId, u64>,
    /// Dropped sources, with whether for bad bytes.
    dropped: Vec<(NodeId, bool)>,
}

enum Arrival {
    Chunk(SnapshotChunk),
    Refused(String),
}

/// Runs a transfer of `snap` from `srcs` to completion, in simulated time.
fn run(snap: &EncodedSnapshot, srcs: Vec<Src>, cfg: ReceiveConfig) -> Run {
    let offer = snap.offer(7, 0);
    let names = srcs.iter().map(|s| s.node.clone()).collect();
    let (mut rx, evs) = SnapshotReceiver::start(cfg, offer, names, None, Duration::ZERO);
    drive(&mut rx, evs, srcs, Duration::ZERO)
}

/// Drives `rx` from `evs` on, with `srcs` answering, until it ends.
fn drive(
    rx: &mut SnapshotReceiver,
    mut evs: Vec<ReceiveEvent>,
    mut srcs: Vec<Src>,
    mut now: Duration,
) -> Run {
    let me = NodeId::from("me");
    let session = rx.session();
    let mut arrivals: BTreeMap<(Duration, u64), (NodeId, Arrival)> = BTreeMap::new();
    let mut seq = 0;
    let mut out = Run {
        result: Err("no end".into()),
        bytes: 0,
        taken: 0,
        asked_again: 0,
        delivered: BTreeMap::new(),
        dropped: vec![],
    };
    for _ in 0..100_000 {
        for ev in evs.drain(..) {
            match ev {
                ReceiveEvent::Request { to, req, again } => {
                    out.asked_again += u64::from(again);
                    let s = srcs.iter_mut().find(|s| s.node == to).unwrap();
                    if s.dies_after.is_some_and(|n| s.sent >= n) {
                        continue;
                    }
                    let arrival = match s.server.on_request(me.clone(), req, now) {
                        ServeAction::Send { read, .. } => {
                            let Direct::SnapshotChunk(mut chunk) = read.reply() else {
                                panic!("a held snapshot's chunk that does not read");
                            };
                            s.sent += 1;
                            if (s.loses)(s.sent) {
                                continue;
                            }
                            if s.corrupts == Some(chunk.chunk) {
                                chunk.data[0] ^= 1;
                            }
                            Arrival::Chunk(chunk)
                        }
                        ServeAction::Refuse { reason, .. } => Arrival::Refused(reason),
                        other => panic!("{other:?}"),
                    };
                    seq += 1;
                    let at = match s.queue {
                        Some(took) => {
                            s.free_at = s.free_at.max(now) + ms(took(s.sent));
                            s.free_at
                        }
                        None => match s.slows {
                            Some((after, took)) if s.sent > after => now + ms(took),
                            _ => now + s.latency,
                        },
                    };
                    arrivals.insert((at, seq), (to, arrival));
                }
                ReceiveEvent::Progress(_) => {}
                ReceiveEvent::Dropped { source, bad, .. } => out.dropped.push((source, bad)),
                ReceiveEvent::Done { state, snap } => {
                    out.result = Ok((*state, snap));
                }
                ReceiveEvent::Failed { reason } => out.result = Err(reason),
            }
        }
        if out.result.is_ok() || !out.result.as_ref().unwrap_err().contains("no end") {
            break;
        }
        let next_arrival = arrivals.keys().next().map(|(t, _)| *t);
        let wake = rx.next_wake();
        match (next_arrival, wake) {
            (Some(t), w) if w.is_none_or(|w| t <= w) => {
                let key = *arrivals.keys().next().unwrap();
                let (from, a) = arrivals.remove(&key).unwrap();
                now = now.max(t);
                evs = match a {
                    Arrival::Chunk(c) => {
                        out.bytes += c.data.len() as u64;
                        rx.on_chunk(&from, c, now)
                    }
                    Arrival::Refused(r) => rx.on_refused(&from, session, &r, now),
                };
            }
            (_, Some(w)) => {
                now = now.max(w);
                evs = rx.on_tick(now);
            }
            _ => break,
        }
    }
    out.delivered = rx.delivered().into_iter().collect();
    out.taken = rx.taken_bytes();
    out
}

fn hash_of(r: &Run) -> StateHash {
    r.result.as_ref().expect("the transfer ends").0.hash()
}

#[test]
fn a_transfer_from_one_source_delivers_the_state_and_its_bytes() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    let r = run(&snap, vec![src("a", &snap, 5)], cfg());
    let (got, kept) = r.result.unwrap();
    assert_eq!((got.hash(), got.index()), (s.hash(), s.index()));
    assert_eq!(kept.sha256, snap.sha256);
    assert_eq!(
        kept.bytes.read_all().unwrap(),
        snap.bytes.read_all().unwrap(),
        "the bytes as they came, in order, to save and serve"
    );
    assert_eq!(r.bytes, snap.bytes.len(), "no chunk twice");
}

#[test]
fn chunks_are_pulled_from_every_source_the_fastest_serving_most() {
    let s = state(6000);
    let snap = built(&s, CHUNK);
    let n = snap.chunks.len() as u64;
    assert!(n > 30, "{n} chunks");
    let srcs = vec![
        src("fast", &snap, 2),
        src("mid", &snap, 6),
        src("slow", &snap, 20),
    ];
    let r = run(&snap, srcs, cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert_eq!(r.bytes, snap.bytes.len());
    let d = |n: &str| r.delivered[&NodeId::from(n)];
    assert_eq!(d("fast") + d("mid") + d("slow"), n);
    assert!(
        d("fast") > d("mid") && d("mid") > d("slow") && d("slow") > 0,
        "{:?}",
        r.delivered
    );
}

#[test]
fn a_source_killed_half_way_leaves_the_rest_to_the_others() {
    let s = state(6000);
    let snap = built(&s, CHUNK);
    let half = snap.chunks.len() / 2;
    let mut dying = src("a", &snap, 2);
    dying.dies_after = Some(half);
    let r = run(&snap, vec![dying, src("b", &snap, 10)], cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert!(
        r.bytes < 2 * snap.bytes.len(),
        "{} of {}",
        r.bytes,
        snap.bytes.len()
    );
    assert_eq!(r.bytes, snap.bytes.len(), "nothing was fetched twice");
    let d = |n: &str| r.delivered[&NodeId::from(n)];
    assert_eq!(d("a") as usize, half);
    assert_eq!(d("a") + d("b"), snap.chunks.len() as u64);
}

#[test]
fn a_source_that_sends_other_bytes_is_dropped_and_the_others_finish() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    let mut liar = src("liar", &snap, 2);
    liar.corrupts = Some(0);
    let r = run(&snap, vec![liar, src("b", &snap, 5)], cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert_eq!(r.dropped, [(NodeId::from("liar"), true)]);
    // Alone, it fails the transfer, cleanly.
    let mut liar = src("liar", &snap, 2);
    liar.corrupts = Some(1);
    let r = run(&snap, vec![liar], cfg());
    let err = r.result.unwrap_err();
    assert!(
        err.contains("no snapshot source left") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn lost_chunks_are_asked_again_and_a_source_that_keeps_delivering_is_kept() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    let mut lossy = src("a", &snap, 5);
    lossy.loses = |n| n % 4 == 2;
    let r = run(&snap, vec![lossy], cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert!(r.dropped.is_empty());
}

#[test]
fn a_chunk_asked_again_after_it_came_late_is_taken_once() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    // Past the 400 ms a first answer may take, but it does answer.
    let slow = src("slow", &snap, 1000);
    let r = run(&snap, vec![slow, src("fast", &snap, 5)], cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert!(r.asked_again > 0);
    assert_eq!(r.taken, snap.bytes.len());
    assert!(
        r.bytes > r.taken,
        "late chunks came too: {} bytes, {} taken",
        r.bytes,
        r.taken
    );
}

#[test]
fn a_source_still_working_through_its_queue_is_not_asked_elsewhere() {
    let s = state(6000);
    let snap = built(&s, CHUNK);
    // Requests wait their turn, at first behind other receivers' chunks
    // (longer than the timeout); for a spell each takes five times as
    // long, longer than four usual answers, but chunks keep coming.
    let mut busy = src("busy", &snap, 0);
    busy.queue = Some(|n| if (10..20).contains(&n) { 250 } else { 50 });
    let mut other = src("other", &snap, 0);
    other.queue = Some(|_| 50);
    for s in [&mut busy, &mut other] {
        s.free_at = ms(300);
    }
    let r = run(&snap, vec![busy, other], cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert_eq!(r.asked_again, 0);
    assert_eq!(r.bytes, snap.bytes.len(), "no chunk sent twice");
    assert!(r.dropped.is_empty());
}

#[test]
fn sources_that_slow_down_for_good_are_learned_from_their_late_answers() {
    let s = state(6000);
    let snap = built(&s, CHUNK / 4);
    let n = snap.chunks.len() as u64;
    // Both answer in 5 ms, then, with a storm of other receivers queued
    // at them, in 250 ms: past the timeout, fifty times what was learned.
    // Every answer comes.
    let mut srcs = vec![src("a", &snap, 5), src("b", &snap, 5)];
    for s in &mut srcs {
        s.slows = Some((4, 250));
    }
    let r = run(&snap, srcs, cfg());
    assert_eq!(hash_of(&r), s.hash());
    assert!(r.dropped.is_empty(), "{:?}", r.dropped);
    // The first late answers teach the receiver; it stops asking again
    // once it has learned (before, every chunk was asked twice).
    assert!(
        r.asked_again <= 8,
        "{} of {n} chunks asked again",
        r.asked_again
    );
    assert!(
        r.bytes < snap.bytes.len() * 11 / 10,
        "{} bytes for {}",
        r.bytes,
        snap.bytes.len()
    );
}

#[test]
fn a_transfer_that_lost_every_source_goes_on_from_where_it_stopped() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    let chunks = snap.offer(7, 0).chunks.len();
    assert!(chunks >= 20, "{chunks}");
    // Its one source dies half way: the transfer stops, keeping what came.
    let mut a = src("a", &snap, 5);
    a.dies_after = Some(chunks / 2);
    let names = vec![a.node.clone()];
    let (mut rx, evs) = SnapshotReceiver::start(cfg(), snap.offer(7, 0), names, None, ms(0));
    let first = drive(&mut rx, evs, vec![a], ms(0));
    assert!(first
        .result
        .unwrap_err()
        .contains("no snapshot source left"));
    assert!(rx.resumable());
    // The same snapshot, offered again under a new request by another
    // replica: the transfer goes on from where it stopped.
    let b = src("b", &snap, 5);
    let evs = rx.resume(&snap.offer(8, 0), vec![b.node.clone()], None, ms(10_000));
    let asked: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            ReceiveEvent::Request { req, .. } => Some(req.chunk),
            _ => None,
        })
        .collect();
    assert!(
        asked
            .iter()
            .all(|k| *k as usize >= chunks / 2 - cfg().window),
        "asks from where it stopped: {asked:?}"
    );
    let second = drive(&mut rx, evs, vec![b], ms(10_000));
    let (got, bytes) = second.result.expect("the transfer ends");
    assert_eq!(got.hash(), s.hash());
    assert_eq!(
        bytes.bytes.read_all().unwrap(),
        snap.bytes.read_all().unwrap()
    );
    let received = first.bytes + second.bytes;
    let total = snap.bytes.len();
    assert!(
        received < total * 11 / 10,
        "received {received} of {total} in all"
    );
}

#[test]
fn a_silent_source_fails_the_transfer() {
    let s = state(100);
    let snap = built(&s, 512);
    let mut silent = src("a", &snap, 5);
    silent.loses = |_| true;
    let err = run(&snap, vec![silent], cfg()).result.unwrap_err();
    assert!(err.contains("stopped sending"), "{err}");
}

#[test]
fn chunks_from_strangers_other_sessions_or_unasked_are_not_kept() {
    let s = state(3000);
    let snap = built(&s, CHUNK);
    let a = NodeId::from("a");
    let (mut rx, evs) =
        SnapshotReceiver::start(cfg(), snap.offer(1, 0), vec![a.clone()], None, ms(0));
    assert_eq!(evs.len(), 2, "per-source cap");
    let chunk = |session, chunk: u32| SnapshotChunk {
        session,
        index: snap.index,
        chunk,
        data: snap
            .bytes
            .read_at(u64::from(chunk) * u64::from(CHUNK), CHUNK as usize)
            .unwrap(),
    };
    assert!(rx
        .on_chunk(&NodeId::from("b"), chunk(1, 0), ms(0))
        .is_empty());
    assert!(rx.on_chunk(&a, chunk(2, 0), ms(0)).is_empty());
    // Far ahead, never asked for: dropped.
    for k in 5..20 {
        assert!(rx.on_chunk(&a, chunk(1, k), ms(0)).is_empty());
    }
    assert_eq!(rx.stashed_bytes(), 0);
    // Asked for, ahead of the next to decode: kept until its turn.
    let evs = rx.on_chunk(&a, chunk(1, 1), ms(0));
    assert!(matches!(
        evs[0],
        ReceiveEvent::Progress(Progress { received: 0, .. })
    ));
    assert_eq!(rx.stashed_bytes(), CHUNK as usize);
    assert_eq!(rx.taken_bytes(), u64::from(CHUNK));
}

#[test]
fn the_master_rests_while_two_others_serve_and_late_offers_add_sources() {
    let snap = built(&state(6000), CHUNK);
    let (m, a, b) = (NodeId::from("m"), NodeId::from("a"), NodeId::from("b"));
    let asked = |evs: &[ReceiveEvent]| -> Vec<String> {
        evs.iter()
            .filter_map(|e| match e {
                ReceiveEvent::Request { to, .. } => Some(to.to_string()),
                _ => None,
            })
            .collect()
    };
    let offer = snap.offer(1, 0);
    let (mut rx, evs) = SnapshotReceiver::start(
        cfg(),
        offer,
        vec![a.clone(), m.clone()],
        Some(m.clone()),
        ms(0),
    );
    assert_eq!(
        asked(&evs),
        ["a", "m", "a", "m"],
        "one other: the master serves too"
    );
    // b's offer comes late; from then on the master rests.
    rx.add_source(b.clone(), 4);
    let chunk = |k: u32| SnapshotChunk {
        session: 1,
        index: snap.index,
        chunk: k,
        data: snap
            .bytes
            .read_at(u64::from(k) * u64::from(CHUNK), CHUNK as usize)
            .unwrap(),
    };
    let mut later = asked(&rx.on_chunk(&a, chunk(0), ms(5)));
    later.extend(asked(&rx.on_chunk(&m, chunk(1), ms(6))));
    assert!(later.contains(&"b".to_owned()), "{later:?}");
    assert!(
        !later.contains(&"m".to_owned()),
        "the master rests: {later:?}"
    );
    assert!(rx.is_source(&m), "its chunks under way are still taken");
}

mod server;
