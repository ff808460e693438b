//! The receiving side: one snapshot, pulled chunk by chunk from every
//! source that offered it, each chunk checked against the offer's hash,
//! decoded in order as the bytes become contiguous.
//!
//! Work goes to sources as they free up: a source gets its next chunk
//! when it delivers one, so a fast source serves more than a slow one. A
//! chunk is late when its source has sent nothing for a while since it
//! was asked (a source still delivering is working through its queue, and
//! a chunk asked twice is sent twice); a late chunk is asked of another
//! source, from where the transfer stands, not from the start. How long a
//! source usually takes is learned from all its answers, the late ones
//! too when they come after all. A source late too often in a row, one
//! that refuses, or one whose chunk does not match its hash, is dropped,
//! and its chunks go to the others. When no source is left, what arrived
//! is kept: `resume` goes on from it with new sources of the same
//! snapshot.

use super::{EncodedSnapshot, Progress};
use crate::wire::{SnapshotChunk, SnapshotOffer, SnapshotRequest};
use sha2::{Digest, Sha256};
use shoal_log::{SnapshotDecoder, SnapshotError};
use shoal_model::{NodeId, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Room set aside up front for the received bytes, at most: the rest
/// grows with what arrives, never ahead of it.
const MAX_RESERVE: u64 = 256 << 20;
/// A chunk is late after its source was silent for this many times its
/// usual answer time.
const LATE_FACTOR: u32 = 4;
/// Chunks a source was late with that are remembered, to learn from
/// their answers when they come after all.
const OVERDUE_KEPT: usize = 16;

#[derive(Clone, Copy, Debug)]
pub struct ReceiveConfig {
    /// Chunk requests in flight over all sources; also how far past the
    /// next chunk to decode a request may reach (what waits is bounded).
    pub window: usize,
    /// Chunk requests in flight at one source.
    pub per_source: usize,
    /// How long a source may be silent, since a chunk was asked of it or
    /// since it last delivered, before the chunk is asked of another
    /// source, at least; a source that answers slowly (a busy host, a
    /// loaded link) is given `LATE_FACTOR` times its usual answer time
    /// instead, so that slowness is not taken for loss and every chunk
    /// asked twice.
    pub chunk_timeout: Duration,
    /// Late chunks in a row at one source, with none delivered between
    /// them, before it is dropped. A source that keeps delivering is
    /// never dropped for losing some chunks.
    pub max_retries: u32,
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        ReceiveConfig {
            window: 8,
            per_source: 2,
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
        /// The chunk was asked before and came late: its first answer may
        /// still come, and one of the two is then sent for nothing.
        again: bool,
    },
    Progress(Progress),
    /// A source is no longer asked: it refused, stopped sending, or (with
    /// `bad`) sent a chunk that is not the one offered.
    Dropped {
        source: NodeId,
        reason: String,
        bad: bool,
    },
    /// The State, and the snapshot's bytes as they came (kept on disk and
    /// served to others as they are).
    Done {
        state: Box<State>,
        snap: EncodedSnapshot,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug)]
struct Source {
    node: NodeId,
    in_flight: usize,
    /// Late chunks since its last delivery.
    late: u32,
    delivered: u64,
    dropped: bool,
    /// Smoothed time from request to chunk (none before the first).
    answer_time: Option<Duration>,
    /// When it last delivered a chunk.
    last_delivery: Option<Duration>,
    /// Chunks it was late with (asked elsewhere since), and when they
    /// were asked of it, oldest first.
    overdue: Vec<(u32, Duration)>,
}

impl Source {
    fn new(node: NodeId) -> Self {
        Source {
            node,
            in_flight: 0,
            late: 0,
            delivered: 0,
            dropped: false,
            answer_time: None,
            last_delivery: None,
            overdue: Vec::new(),
        }
    }

    /// It answered, at `now`, a chunk asked at `asked`: it is alive, and
    /// its answer time is learned from every answer, those it was late
    /// with included (learning only from the punctual ones would keep
    /// the estimate low under load, and every answer slower than it
    /// late, asked again and sent twice).
    fn answered(&mut self, asked: Duration, now: Duration) {
        let took = now.saturating_sub(asked);
        self.answer_time = Some(match self.answer_time {
            Some(t) => (t * 7 + took) / 8,
            None => took,
        });
        self.late = 0;
        self.last_delivery = Some(now);
    }

    /// When chunk `k`, which it was late with, was asked of it.
    fn take_overdue(&mut self, k: u32) -> Option<Duration> {
        let p = self.overdue.iter().position(|(c, _)| *c == k)?;
        Some(self.overdue.remove(p).1)
    }
}

#[derive(Clone, Copy, Debug)]
struct Asked {
    source: usize,
    at: Duration,
}

/// One snapshot transfer, from one or more sources.
#[derive(Debug)]
pub struct SnapshotReceiver {
    cfg: ReceiveConfig,
    session: u64,
    offer: SnapshotOffer,
    sources: Vec<Source>,
    decoder: Option<SnapshotDecoder>,
    /// Bytes handed to the decoder so far, kept to save and serve.
    bytes: Vec<u8>,
    /// The next chunk to decode.
    next: u32,
    /// Chunks that arrived ahead of `next`.
    stash: BTreeMap<u32, Vec<u8>>,
    /// Outstanding requests by chunk: the source asked, and when.
    requested: BTreeMap<u32, Asked>,
    /// The source a chunk was last late at, spared for it while another
    /// can take it.
    late_at: BTreeMap<u32, usize>,
    /// Why the last source was dropped.
    last_drop: String,
    /// Chunk bytes taken (checked, and not here before).
    taken: u64,
    /// A source asked only while fewer than two others can serve (the
    /// master: its loop commits every write).
    spare: Option<NodeId>,
    finished: bool,
}

impl SnapshotReceiver {
    /// Starts pulling `offer` (checked by the caller) from `sources`;
    /// `spare` is asked only while fewer than two others can serve.
    pub fn start(
        cfg: ReceiveConfig,
        offer: SnapshotOffer,
        sources: Vec<NodeId>,
        spare: Option<NodeId>,
        now: Duration,
    ) -> (Self, Vec<ReceiveEvent>) {
        let mut bytes = Vec::new();
        bytes.reserve_exact(offer.total_len.min(MAX_RESERVE) as usize);
        let mut r = SnapshotReceiver {
            cfg,
            session: offer.session,
            sources: sources.into_iter().map(Source::new).collect(),
            offer,
            decoder: Some(SnapshotDecoder::new()),
            bytes,
            next: 0,
            stash: BTreeMap::new(),
            requested: BTreeMap::new(),
            late_at: BTreeMap::new(),
            last_drop: "no source".into(),
            taken: 0,
            spare,
            finished: false,
        };
        let evs = r.fill(now);
        (r, evs)
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn offer(&self) -> &SnapshotOffer {
        &self.offer
    }

    /// Another source of the same snapshot (its offer came after the
    /// transfer began); it is asked from the next request on. At most
    /// `max` sources in all.
    pub fn add_source(&mut self, node: NodeId, max: usize) {
        if self.finished || self.sources.iter().any(|s| s.node == node) {
            return;
        }
        if self.sources.iter().filter(|s| !s.dropped).count() >= max {
            return;
        }
        self.sources.push(Source::new(node));
    }

    /// Whether `node` is a source of this transfer, not dropped.
    pub fn is_source(&self, node: &NodeId) -> bool {
        self.sources.iter().any(|s| &s.node == node && !s.dropped)
    }

    /// Chunks delivered by each source so far.
    pub fn delivered(&self) -> Vec<(NodeId, u64)> {
        self.sources
            .iter()
            .map(|s| (s.node.clone(), s.delivered))
            .collect()
    }

    /// Chunk bytes taken so far: every other byte that arrived was a
    /// chunk that came twice, late, or unasked.
    pub fn taken_bytes(&self) -> u64 {
        self.taken
    }

    /// Bytes received ahead of what was decoded, waiting for a gap.
    pub fn stashed_bytes(&self) -> usize {
        self.stash.values().map(Vec::len).sum()
    }

    fn chunk_count(&self) -> u32 {
        self.offer.chunks.len() as u32
    }

    /// Whether `resume` can go on from what arrived: the transfer stopped
    /// for want of sources, not for bytes that did not decode.
    pub fn resumable(&self) -> bool {
        self.finished && self.decoder.is_some()
    }

    /// Goes on with the same snapshot, offered again (`offer`, under its
    /// session) by `sources`: chunks already here are not asked again.
    pub fn resume(
        &mut self,
        offer: &SnapshotOffer,
        sources: Vec<NodeId>,
        spare: Option<NodeId>,
        now: Duration,
    ) -> Vec<ReceiveEvent> {
        if !self.resumable() || !self.offer.same_snapshot(offer) {
            return vec![];
        }
        self.finished = false;
        self.session = offer.session;
        self.offer.session = offer.session;
        self.sources = sources.into_iter().map(Source::new).collect();
        self.spare = spare;
        let mut out = vec![self.progress()];
        out.extend(self.fill(now));
        out
    }

    /// The transfer stops with nobody to ask; what arrived is kept.
    fn stall(&mut self, reason: String) -> Vec<ReceiveEvent> {
        self.finished = true;
        self.requested.clear();
        self.late_at.clear();
        vec![ReceiveEvent::Failed { reason }]
    }

    fn fail(&mut self, reason: String) -> Vec<ReceiveEvent> {
        self.finished = true;
        self.decoder = None;
        self.bytes = Vec::new();
        self.stash.clear();
        vec![ReceiveEvent::Failed { reason }]
    }

    /// Stops asking source `i`; its outstanding chunks go to the others.
    fn drop_source(&mut self, i: usize, reason: String, bad: bool) -> ReceiveEvent {
        let s = &mut self.sources[i];
        s.dropped = true;
        s.in_flight = 0;
        self.requested.retain(|_, a| a.source != i);
        self.last_drop = format!("{}: {reason}", s.node);
        ReceiveEvent::Dropped {
            source: s.node.clone(),
            reason,
            bad,
        }
    }

    /// Whatever follows a change of sources: more requests, or the end
    /// when none is left.
    fn after_drop(&mut self, mut out: Vec<ReceiveEvent>, now: Duration) -> Vec<ReceiveEvent> {
        if self.sources.iter().all(|s| s.dropped) {
            let reason = format!("no snapshot source left (last, {})", self.last_drop);
            out.extend(self.stall(reason));
            return out;
        }
        out.extend(self.fill(now));
        out
    }

    pub fn on_refused(
        &mut self,
        from: &NodeId,
        session: u64,
        reason: &str,
        now: Duration,
    ) -> Vec<ReceiveEvent> {
        if self.finished || session != self.session {
            return vec![];
        }
        let Some(i) = self.live_source(from) else {
            return vec![];
        };
        let ev = self.drop_source(i, format!("refused: {reason}"), false);
        self.after_drop(vec![ev], now)
    }

    fn live_source(&self, node: &NodeId) -> Option<usize> {
        self.sources
            .iter()
            .position(|s| &s.node == node && !s.dropped)
    }

    pub fn on_chunk(
        &mut self,
        from: &NodeId,
        chunk: SnapshotChunk,
        now: Duration,
    ) -> Vec<ReceiveEvent> {
        if self.finished || chunk.session != self.session || chunk.index != self.offer.index {
            return vec![];
        }
        let Some(i) = self.live_source(from) else {
            return vec![];
        };
        let k = chunk.chunk;
        // Only chunks asked for (of this source or, late there, of
        // another) and not yet here are taken: what a source sends unasked
        // never grows the stash (invariant 9). One it was late with is
        // learned from even when it came twice.
        let asked = self.requested.get(&k).copied();
        let overdue = self.sources[i].overdue.iter().any(|(c, _)| *c == k);
        if asked.is_none() && !overdue {
            return vec![];
        }
        let (_, len) = self.offer.chunk_span(k).expect("asked chunks exist");
        let hash: [u8; 32] = Sha256::digest(&chunk.data).into();
        if chunk.data.len() != len || hash != self.offer.chunks[k as usize] {
            let ev = self.drop_source(i, format!("chunk {k} does not match its offer"), true);
            return self.after_drop(vec![ev], now);
        }
        // Asked of it twice, the first answer is taken for the first ask.
        let overdue = self.sources[i].take_overdue(k);
        if let Some(at) = overdue {
            self.sources[i].answered(at, now);
        }
        let Some(asked) = asked else {
            return vec![];
        };
        self.requested.remove(&k);
        self.late_at.remove(&k);
        let src = &mut self.sources[asked.source];
        src.in_flight = src.in_flight.saturating_sub(1);
        if asked.source == i && overdue.is_none() {
            src.answered(asked.at, now);
        }
        let src = &mut self.sources[i];
        src.late = 0;
        src.delivered += 1;
        src.last_delivery = Some(now);
        self.taken += chunk.data.len() as u64;
        self.stash.insert(k, chunk.data);
        while let Some(data) = self.stash.remove(&self.next) {
            let decoder = self
                .decoder
                .as_mut()
                .expect("a live transfer has a decoder");
            if let Err(e) = decoder.push(&data) {
                return self.fail(format!(
                    "snapshot {} failed to decode: {e}",
                    self.offer.index
                ));
            }
            self.bytes.extend_from_slice(&data);
            self.next += 1;
        }
        if self.next >= self.chunk_count() {
            return self.finish();
        }
        let mut out = vec![self.progress()];
        out.extend(self.fill(now));
        out
    }

    fn finish(&mut self) -> Vec<ReceiveEvent> {
        self.finished = true;
        let decoder = self.decoder.take().expect("a live transfer has a decoder");
        let o = &self.offer;
        match decoder.finish(&o.sha256) {
            Ok(state) if state.index() == o.index => vec![ReceiveEvent::Done {
                state: Box::new(state),
                snap: EncodedSnapshot {
                    index: o.index,
                    bytes: Arc::new(std::mem::take(&mut self.bytes)),
                    sha256: o.sha256,
                    chunk_bytes: o.chunk_bytes,
                    chunks: o.chunks.clone().into(),
                },
            }],
            Ok(_) => vec![ReceiveEvent::Failed {
                reason: "snapshot index differs from its offer".into(),
            }],
            Err(e) => vec![ReceiveEvent::Failed {
                reason: describe(&e, o),
            }],
        }
    }

    fn progress(&self) -> ReceiveEvent {
        ReceiveEvent::Progress(Progress {
            received: self.bytes.len() as u64,
            total: self.offer.total_len,
            entries: self.decoder.as_ref().map_or(0, |d| d.entries_decoded()),
        })
    }

    /// Asks for chunks from `next` on, up to `window` in flight and
    /// `per_source` at each source: the least loaded source first, the
    /// one that delivered most among equals.
    fn fill(&mut self, now: Duration) -> Vec<ReceiveEvent> {
        let mut out = Vec::new();
        let end = self
            .next
            .saturating_add(self.cfg.window as u32)
            .min(self.chunk_count());
        for k in self.next..end {
            if self.requested.len() >= self.cfg.window {
                break;
            }
            if self.stash.contains_key(&k) || self.requested.contains_key(&k) {
                continue;
            }
            let was_late_at = self.late_at.get(&k).copied();
            // The spare rests while two others can serve.
            let others = self
                .sources
                .iter()
                .filter(|s| !s.dropped && Some(&s.node) != self.spare.as_ref())
                .count();
            let resting = |s: &Source| others >= 2 && Some(&s.node) == self.spare.as_ref();
            // A source that was late since its last delivery is on
            // probation: one chunk at a time, and only when the punctual
            // ones are full.
            let pick = |avoid: Option<usize>| {
                self.sources
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| {
                        let cap = if s.late > 0 { 1 } else { self.cfg.per_source };
                        !s.dropped && !resting(s) && s.in_flight < cap && Some(*i) != avoid
                    })
                    .min_by_key(|(i, s)| {
                        (s.late > 0, s.in_flight, std::cmp::Reverse(s.delivered), *i)
                    })
                    .map(|(i, _)| i)
            };
            let Some(i) = pick(was_late_at).or_else(|| pick(None)) else {
                break;
            };
            self.sources[i].in_flight += 1;
            self.requested.insert(k, Asked { source: i, at: now });
            out.push(ReceiveEvent::Request {
                to: self.sources[i].node.clone(),
                req: SnapshotRequest {
                    session: self.session,
                    index: self.offer.index,
                    chunk: k,
                },
                again: was_late_at.is_some(),
            });
        }
        out
    }

    /// When the chunk asked in `a` is late: its source's patience after
    /// it was asked, or after the source last delivered if that came
    /// later. A source that keeps delivering is working through its queue,
    /// and what it has yet to send is not asked elsewhere; one that falls
    /// silent has its chunks asked of the others.
    ///
    /// A source that has not answered yet is given `LATE_FACTOR` times
    /// the timeout: its queue may hold other receivers' chunks (a join
    /// storm asks every source at once), and a chunk asked again then is
    /// most often sent twice.
    fn deadline(&self, a: &Asked) -> Duration {
        let s = &self.sources[a.source];
        let patience = match s.answer_time {
            Some(t) => (t * LATE_FACTOR).max(self.cfg.chunk_timeout),
            None => self.cfg.chunk_timeout * LATE_FACTOR,
        };
        s.last_delivery.map_or(a.at, |d| d.max(a.at)) + patience
    }

    /// When the next outstanding chunk is late (`on_tick` asks again).
    pub fn next_wake(&self) -> Option<Duration> {
        if self.finished {
            return None;
        }
        self.requested.values().map(|a| self.deadline(a)).min()
    }

    /// Chunks whose answer did not come in time are asked again, of
    /// another source where there is one; a source late `max_retries`
    /// times in a row is dropped.
    pub fn on_tick(&mut self, now: Duration) -> Vec<ReceiveEvent> {
        if self.finished {
            return vec![];
        }
        let late: Vec<(u32, usize)> = self
            .requested
            .iter()
            .filter(|(_, a)| self.deadline(a) <= now)
            .map(|(k, a)| (*k, a.source))
            .collect();
        if late.is_empty() {
            return vec![];
        }
        let mut out = Vec::new();
        for (k, i) in late {
            let Some(asked) = self.requested.remove(&k) else {
                continue;
            };
            self.late_at.insert(k, i);
            let s = &mut self.sources[i];
            if s.overdue.len() == OVERDUE_KEPT {
                s.overdue.remove(0);
            }
            s.overdue.push((k, asked.at));
            s.in_flight = s.in_flight.saturating_sub(1);
            s.late += 1;
            if !s.dropped && s.late > self.cfg.max_retries {
                out.push(self.drop_source(i, "stopped sending snapshot chunks".into(), false));
            }
        }
        self.after_drop(out, now)
    }
}

fn describe(e: &SnapshotError, o: &SnapshotOffer) -> String {
    format!("snapshot {} rejected: {e}", o.index)
}
