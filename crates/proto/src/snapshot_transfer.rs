//! Snapshot transfer: a server that hands out chunks of one encoded
//! snapshot, and a receiver that pulls them with a few in flight, decodes
//! while they arrive, resumes after a lost chunk and verifies the result.
//!
//! A transfer is bound to a session id (minted by the receiver) and to the
//! node it asked; chunks from anyone else, or for another session, are
//! ignored. The server encodes off its event loop: it asks its shell to
//! build from a clone of State (O(1) with persistent maps) and serves
//! waiting requests once the bytes are ready. The latest snapshot is cached,
//! so joiners arriving together share one build.

use crate::wire::{SnapshotChunk, SnapshotRequest, SNAPSHOT_CHUNK_BYTES};
use shoal_log::{SnapshotDecoder, SnapshotError};
use shoal_model::{EventIdx, NodeId, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// An encoded snapshot, shared between the cache and the shell.
#[derive(Clone, Debug)]
pub struct EncodedSnapshot {
    pub index: EventIdx,
    pub bytes: Arc<Vec<u8>>,
    pub sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAction {
    Send {
        to: NodeId,
        chunk: SnapshotChunk,
    },
    Refuse {
        to: NodeId,
        session: u64,
        reason: String,
    },
    /// Encode this State off the loop and report back with `on_built`.
    Build,
}

/// Requests waiting for a build, at most this many.
const MAX_WAITING: usize = 64;

#[derive(Debug, Default)]
pub struct SnapshotServer {
    cache: Option<EncodedSnapshot>,
    /// The one before, kept so that transfers under way when a newer
    /// snapshot is built can finish.
    previous: Option<EncodedSnapshot>,
    building: bool,
    waiting: Vec<(NodeId, SnapshotRequest)>,
    pub bytes_sent: u64,
}

impl SnapshotServer {
    pub fn cached(&self) -> Option<&EncodedSnapshot> {
        self.cache.as_ref()
    }

    /// Handles a chunk request. A new transfer is served from the cache
    /// while the cached snapshot is fresh: within `max_lag` of `current`
    /// (this node's applied index), and not below `log_floor`, the lowest
    /// index this node can still serve by range (older would leave the
    /// receiver a hole). Otherwise a new one is built.
    pub fn on_request(
        &mut self,
        from: NodeId,
        req: SnapshotRequest,
        current: EventIdx,
        log_floor: EventIdx,
        max_lag: u64,
    ) -> Vec<ServeAction> {
        match req.index {
            Some(index) => match (&self.cache, &self.previous) {
                (Some(c), _) if c.index == index => vec![self.chunk(from, req)],
                (_, Some(p)) if p.index == index => vec![self.chunk(from, req)],
                _ => vec![ServeAction::Refuse {
                    to: from,
                    session: req.session,
                    reason: format!("snapshot {index} is no longer held"),
                }],
            },
            None => {
                let fresh = |c: &EncodedSnapshot| {
                    c.index.next() >= log_floor && current.0.saturating_sub(c.index.0) <= max_lag
                };
                if self.cache.as_ref().is_some_and(fresh) {
                    return vec![self.chunk(from, req)];
                }
                if self.waiting.len() >= MAX_WAITING {
                    return vec![ServeAction::Refuse {
                        to: from,
                        session: req.session,
                        reason: "too many snapshot requests waiting".into(),
                    }];
                }
                self.waiting.push((from, req));
                if self.building {
                    return vec![];
                }
                self.building = true;
                vec![ServeAction::Build]
            }
        }
    }

    /// A build finished: cache it and answer whoever waited.
    pub fn on_built(&mut self, snap: EncodedSnapshot) -> Vec<ServeAction> {
        self.building = false;
        if self.cache.as_ref().is_none_or(|c| c.index != snap.index) {
            self.previous = self.cache.take();
        }
        self.cache = Some(snap);
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .map(|(to, req)| self.chunk(to, req))
            .collect()
    }

    /// A build failed or was abandoned.
    pub fn on_build_failed(&mut self, reason: &str) -> Vec<ServeAction> {
        self.building = false;
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(to, req)| ServeAction::Refuse {
                to,
                session: req.session,
                reason: reason.to_owned(),
            })
            .collect()
    }

    fn chunk(&mut self, to: NodeId, req: SnapshotRequest) -> ServeAction {
        let c = match (&self.cache, &self.previous, req.index) {
            (_, Some(p), Some(i)) if p.index == i => p,
            (Some(c), _, _) => c,
            _ => unreachable!("chunks are cut from a cached snapshot"),
        };
        let total = c.bytes.len() as u64;
        if req.offset > total {
            return ServeAction::Refuse {
                to,
                session: req.session,
                reason: format!("offset {} is past the end ({total})", req.offset),
            };
        }
        let len = req.len.min(SNAPSHOT_CHUNK_BYTES) as u64;
        let end = (req.offset + len).min(total);
        let data = c.bytes[req.offset as usize..end as usize].to_vec();
        self.bytes_sent += data.len() as u64;
        ServeAction::Send {
            to,
            chunk: SnapshotChunk {
                session: req.session,
                index: c.index,
                total_len: total,
                sha256: c.sha256,
                offset: req.offset,
                data,
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ReceiveConfig {
    pub chunk_bytes: u32,
    /// Chunk requests in flight.
    pub window: usize,
    pub chunk_timeout: Duration,
    /// Re-requests of one transfer before it is given up.
    pub max_retries: u32,
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        ReceiveConfig {
            chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            window: 4,
            chunk_timeout: Duration::from_secs(2),
            max_retries: 3,
        }
    }
}

#[derive(Debug)]
pub enum ReceiveEvent {
    Request {
        to: NodeId,
        req: SnapshotRequest,
    },
    Progress {
        received: u64,
        total: u64,
        entries: u64,
    },
    Done {
        state: Box<State>,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug)]
struct Offer {
    index: EventIdx,
    total_len: u64,
    sha256: [u8; 32],
}

/// One snapshot transfer, from one source.
#[derive(Debug)]
pub struct SnapshotReceiver {
    cfg: ReceiveConfig,
    session: u64,
    source: NodeId,
    offer: Option<Offer>,
    decoder: Option<SnapshotDecoder>,
    /// Bytes handed to the decoder so far.
    next_offset: u64,
    /// Chunks that arrived ahead of `next_offset`.
    stash: BTreeMap<u64, Vec<u8>>,
    /// Outstanding requests by offset, with their deadlines.
    requested: BTreeMap<u64, Duration>,
    retries: u32,
    finished: bool,
}

impl SnapshotReceiver {
    /// Starts a transfer; the first request goes out at once.
    pub fn start(
        cfg: ReceiveConfig,
        session: u64,
        source: NodeId,
        now: Duration,
    ) -> (Self, Vec<ReceiveEvent>) {
        let mut r = SnapshotReceiver {
            cfg,
            session,
            source,
            offer: None,
            decoder: Some(SnapshotDecoder::new()),
            next_offset: 0,
            stash: BTreeMap::new(),
            requested: BTreeMap::new(),
            retries: 0,
            finished: false,
        };
        r.requested.insert(0, now + cfg.chunk_timeout);
        let first = ReceiveEvent::Request {
            to: r.source.clone(),
            req: SnapshotRequest {
                session,
                index: None,
                offset: 0,
                len: cfg.chunk_bytes,
            },
        };
        (r, vec![first])
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn source(&self) -> &NodeId {
        &self.source
    }

    /// The snapshot's index, once the first chunk told it.
    pub fn index(&self) -> Option<EventIdx> {
        self.offer.as_ref().map(|o| o.index)
    }

    fn fail(&mut self, reason: String) -> Vec<ReceiveEvent> {
        self.finished = true;
        self.decoder = None;
        vec![ReceiveEvent::Failed { reason }]
    }

    pub fn on_refused(&mut self, from: &NodeId, session: u64, reason: &str) -> Vec<ReceiveEvent> {
        if self.finished || session != self.session || from != &self.source {
            return vec![];
        }
        self.fail(format!("{from} refused the snapshot: {reason}"))
    }

    pub fn on_chunk(
        &mut self,
        from: &NodeId,
        chunk: SnapshotChunk,
        now: Duration,
    ) -> Vec<ReceiveEvent> {
        if self.finished || chunk.session != self.session || from != &self.source {
            return vec![];
        }
        match &self.offer {
            None => {
                self.offer = Some(Offer {
                    index: chunk.index,
                    total_len: chunk.total_len,
                    sha256: chunk.sha256,
                })
            }
            Some(o)
                if o.index != chunk.index
                    || o.total_len != chunk.total_len
                    || o.sha256 != chunk.sha256 =>
            {
                return self.fail("the source switched snapshots mid-transfer".into());
            }
            Some(_) => {}
        }
        self.requested.remove(&chunk.offset);
        if chunk.offset >= self.next_offset && !chunk.data.is_empty() {
            self.stash.insert(chunk.offset, chunk.data);
        }
        // Feed whatever is now contiguous.
        while let Some(data) = self.stash.remove(&self.next_offset) {
            let decoder = self
                .decoder
                .as_mut()
                .expect("a live transfer has a decoder");
            if let Err(e) = decoder.push(&data) {
                return self.fail(format!("snapshot from {from} failed to decode: {e}"));
            }
            self.next_offset += data.len() as u64;
        }
        let offer = self.offer.as_ref().expect("offer set above");
        let (total, index, sha) = (offer.total_len, offer.index, offer.sha256);
        if self.next_offset >= total {
            self.finished = true;
            let decoder = self.decoder.take().expect("a live transfer has a decoder");
            return match decoder.finish(&sha) {
                Ok(state) if state.index() == index => vec![ReceiveEvent::Done {
                    state: Box::new(state),
                }],
                Ok(_) => vec![ReceiveEvent::Failed {
                    reason: "snapshot index differs from its offer".into(),
                }],
                Err(e) => vec![ReceiveEvent::Failed {
                    reason: describe(&e, from),
                }],
            };
        }
        let mut out = vec![self.progress()];
        out.extend(self.fill_window(now));
        out
    }

    fn progress(&self) -> ReceiveEvent {
        ReceiveEvent::Progress {
            received: self.next_offset,
            total: self.offer.as_ref().map_or(0, |o| o.total_len),
            entries: self.decoder.as_ref().map_or(0, |d| d.entries_decoded()),
        }
    }

    /// Keeps `window` requests in flight past what has been received.
    fn fill_window(&mut self, now: Duration) -> Vec<ReceiveEvent> {
        let Some(offer) = &self.offer else {
            return vec![];
        };
        let step = self.cfg.chunk_bytes as u64;
        let mut out = Vec::new();
        let mut offset = self.next_offset;
        let mut slots = self.cfg.window;
        while offset < offer.total_len && slots > 0 {
            if !self.stash.contains_key(&offset) && !self.requested.contains_key(&offset) {
                self.requested.insert(offset, now + self.cfg.chunk_timeout);
                out.push(ReceiveEvent::Request {
                    to: self.source.clone(),
                    req: SnapshotRequest {
                        session: self.session,
                        index: Some(offer.index),
                        offset,
                        len: self.cfg.chunk_bytes,
                    },
                });
            }
            offset += step;
            slots -= 1;
        }
        out
    }

    /// Re-requests chunks whose answer did not come in time.
    pub fn on_tick(&mut self, now: Duration) -> Vec<ReceiveEvent> {
        if self.finished {
            return vec![];
        }
        let late: Vec<u64> = self
            .requested
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(o, _)| *o)
            .collect();
        if late.is_empty() {
            return vec![];
        }
        self.retries += 1;
        if self.retries > self.cfg.max_retries {
            return self.fail(format!("{} stopped sending snapshot chunks", self.source));
        }
        let mut out = Vec::new();
        for offset in late {
            self.requested.insert(offset, now + self.cfg.chunk_timeout);
            out.push(ReceiveEvent::Request {
                to: self.source.clone(),
                req: SnapshotRequest {
                    session: self.session,
                    index: self.offer.as_ref().map(|o| o.index),
                    offset,
                    len: self.cfg.chunk_bytes,
                },
            });
        }
        out
    }
}

fn describe(e: &SnapshotError, from: &NodeId) -> String {
    format!("snapshot from {from} rejected: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_log::encode_snapshot;
    use shoal_model::*;

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
                        let mut acts =
                            server.on_request(me.clone(), req, s.index(), EventIdx(1), 100);
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
                    ReceiveEvent::Done { state } => return Ok(*state),
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
        let got = transfer(&s, |n| n % 4 == 2, false).unwrap();
        assert_eq!(got.hash(), s.hash());
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use shoal_log::encode_snapshot;
    use shoal_model::*;

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
                        ReceiveEvent::Done { state } => result = Some(Ok(state.hash())),
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
