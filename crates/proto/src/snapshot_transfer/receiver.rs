//! The receiving side: chunk requests with a window, decoding as bytes
//! arrive, re-requests of late chunks, and the final check.

use super::EncodedSnapshot;
use crate::wire::{SnapshotChunk, SnapshotRequest, SNAPSHOT_CHUNK_BYTES};
use shoal_log::{SnapshotDecoder, SnapshotError};
use shoal_model::{EventIdx, NodeId, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Room set aside up front for the received bytes, at most: the rest
/// grows with what arrives, never ahead of it.
const MAX_RESERVE: u64 = 256 << 20;

#[derive(Clone, Copy, Debug)]
pub struct ReceiveConfig {
    pub chunk_bytes: u32,
    /// Chunk requests in flight.
    pub window: usize,
    pub chunk_timeout: Duration,
    /// Rounds of re-requests in a row, with no chunk arriving between
    /// them, before the source is given up. A source that keeps delivering
    /// is never given up for losing some chunks.
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
    /// Bytes handed to the decoder so far, kept to save and serve; their
    /// length is where the next chunk starts.
    bytes: Vec<u8>,
    /// Chunks that arrived ahead of `next_offset()`.
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
            bytes: Vec::new(),
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

    /// Bytes received ahead of what was decoded, waiting for a gap.
    pub fn stashed_bytes(&self) -> usize {
        self.stash.values().map(Vec::len).sum()
    }

    /// Where the next chunk to decode starts.
    fn next_offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The snapshot's index, once the first chunk told it.
    pub fn index(&self) -> Option<EventIdx> {
        self.offer.as_ref().map(|o| o.index)
    }

    fn fail(&mut self, reason: String) -> Vec<ReceiveEvent> {
        self.finished = true;
        self.decoder = None;
        self.bytes = Vec::new();
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
        // Only chunks this receiver asked for are kept, each at most the
        // size it asked for and within the snapshot: what a source sends
        // unasked never grows the stash (invariant 9).
        let fits = chunk.data.len() <= self.cfg.chunk_bytes as usize
            && chunk.offset.saturating_add(chunk.data.len() as u64) <= chunk.total_len;
        if !fits || !self.requested.contains_key(&chunk.offset) {
            return vec![];
        }
        match &self.offer {
            None => {
                self.bytes
                    .reserve_exact(chunk.total_len.min(MAX_RESERVE) as usize);
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
        self.retries = 0;
        if chunk.offset >= self.next_offset() && !chunk.data.is_empty() {
            self.stash.insert(chunk.offset, chunk.data);
        }
        // Feed whatever is now contiguous.
        while let Some(data) = self.stash.remove(&self.next_offset()) {
            let decoder = self
                .decoder
                .as_mut()
                .expect("a live transfer has a decoder");
            if let Err(e) = decoder.push(&data) {
                return self.fail(format!("snapshot from {from} failed to decode: {e}"));
            }
            self.bytes.extend_from_slice(&data);
        }
        let offer = self.offer.as_ref().expect("offer set above");
        let (total, index, sha) = (offer.total_len, offer.index, offer.sha256);
        if self.next_offset() >= total {
            self.finished = true;
            let decoder = self.decoder.take().expect("a live transfer has a decoder");
            return match decoder.finish(&sha) {
                Ok(state) if state.index() == index => vec![ReceiveEvent::Done {
                    state: Box::new(state),
                    snap: EncodedSnapshot {
                        index,
                        bytes: Arc::new(std::mem::take(&mut self.bytes)),
                        sha256: sha,
                    },
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
            received: self.next_offset(),
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
        let mut offset = self.next_offset();
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

    /// When the next outstanding chunk is late (`on_tick` asks again).
    pub fn next_wake(&self) -> Option<Duration> {
        if self.finished {
            return None;
        }
        self.requested.values().min().copied()
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
