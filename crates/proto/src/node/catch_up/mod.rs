//! Catching up: how committed entries reach this replica's State, and the
//! one place that decides between fetching ranges and loading a snapshot.
//!
//! Entries arrive from Raft (members), from gossip (every node), from range
//! fetches and from snapshots; all go through one ordered buffer and leave
//! it in index order (invariant 3). What is missing is fetched by range from
//! peers whose logs hold it (`GapFetcher`). A snapshot is loaded instead
//! (invariant 4) when this node:
//! - is joining (its State has no cluster yet) and something is committed;
//! - is behind the known commit by more than `snapshot_threshold`;
//! - or has a gap that no peer's log holds any more (a range came back
//!   `Compacted`, or no live peer's log reaches down to it).
//!
//! With `no_snapshot` only the last reason applies. Only one transfer runs
//! at a time; while it runs no ranges are fetched (they would be thrown
//! away when the snapshot lands), and a failed transfer is retried from
//! another source after a pause.

use super::io::Output;
use super::Node;
use crate::gap_fetcher::{GapAction, GapConfig, GapFetcher, PeerLog};
use crate::log_store::LogStore;
use crate::ordered_buffer::{BufferLimits, OrderedBuffer};
use crate::snapshot_transfer::{EncodedSnapshot, ReceiveConfig, ReceiveEvent, SnapshotReceiver};
use crate::wire::{Direct, FetchRange, RangeReply, SnapshotChunk, SnapshotRequest};
use rand::Rng;
use shoal_model::{EventIdx, LogEntry, NodeId, State};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct CatchUpConfig {
    /// Behind by more than this, catch up by snapshot instead of ranges.
    pub snapshot_threshold: u64,
    /// Never ask for a snapshot unless no replica holds the range.
    pub no_snapshot: bool,
    /// A snapshot source should have applied within this many events of
    /// the known commit; otherwise the tail after it is long.
    pub source_max_lag: u64,
    /// After a failed transfer, the next starts this much later.
    pub retry_after: Duration,
    pub gaps: GapConfig,
    pub receive: ReceiveConfig,
    pub buffer: BufferLimits,
}

impl Default for CatchUpConfig {
    fn default() -> Self {
        CatchUpConfig {
            snapshot_threshold: 10_000,
            no_snapshot: false,
            source_max_lag: 1000,
            retry_after: Duration::from_secs(1),
            gaps: GapConfig::default(),
            receive: ReceiveConfig::default(),
            buffer: BufferLimits::default(),
        }
    }
}

/// A replica of this node's cluster that could serve ranges or a snapshot,
/// as its heartbeats describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub node: NodeId,
    /// Lowest index its log still holds.
    pub floor: EventIdx,
    pub applied: EventIdx,
    /// Heard from within the node timeout.
    pub live: bool,
}

#[derive(Debug)]
pub enum CatchUpAction {
    /// Ask `peer` for a range (a NACK).
    Fetch { peer: NodeId, range: FetchRange },
    /// Ask `to` for (part of) a snapshot.
    SnapshotRequest { to: NodeId, req: SnapshotRequest },
    /// A transfer began.
    SnapshotStarted { source: NodeId, behind: u64 },
    Progress {
        received: u64,
        total: u64,
        entries: u64,
    },
    /// A snapshot arrived whole and verified: install it (and keep its
    /// bytes).
    Install(Box<State>, EncodedSnapshot),
    /// A transfer failed; another starts after `retry_after`.
    Failed(String),
}

/// A range reply that is not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRange {
    /// Nobody asked that peer for that range (or it answered already).
    Unasked,
    /// Its entries are not consecutive from the start it names.
    NotConsecutive,
}

#[derive(Debug)]
pub struct CatchUp {
    cfg: CatchUpConfig,
    buffer: OrderedBuffer,
    gaps: GapFetcher,
    rx: Option<SnapshotReceiver>,
    /// A gap no log holds: only a snapshot can fill it.
    need_snapshot: bool,
    /// No new transfer before this (after a failure).
    retry_at: Duration,
    session: u64,
    /// High bits of every session id: tell this process's sessions from
    /// an earlier one's.
    session_tag: u64,
    /// The highest commit index heard of.
    known_commit: EventIdx,
}

impl CatchUp {
    /// `next` is the first index State has not applied; `session_tag`
    /// should differ between process starts (the incarnation).
    pub fn new(cfg: CatchUpConfig, next: EventIdx, session_tag: u64, now: Duration) -> Self {
        CatchUp {
            cfg,
            buffer: OrderedBuffer::new(next, cfg.buffer),
            gaps: GapFetcher::new(cfg.gaps),
            rx: None,
            need_snapshot: false,
            retry_at: now,
            session: 0,
            session_tag: (session_tag & 0xffff) << 48,
            known_commit: EventIdx(next.0.saturating_sub(1)),
        }
    }

    pub fn known_commit(&self) -> EventIdx {
        self.known_commit
    }

    /// Whether a snapshot transfer is under way.
    pub fn receiving(&self) -> bool {
        self.rx.is_some()
    }

    /// A commit index heard of (a heartbeat, Raft).
    pub fn note_commit(&mut self, idx: EventIdx) {
        self.known_commit = self.known_commit.max(idx);
    }

    /// Committed entries, from wherever they came.
    pub fn offer(&mut self, entries: impl IntoIterator<Item = LogEntry>) {
        for e in entries {
            self.note_commit(e.idx);
            self.buffer.insert(e);
        }
    }

    /// The next entry to apply, if it is here.
    pub fn pop_next(&mut self) -> Option<LogEntry> {
        self.buffer.pop_next()
    }

    /// State moved forward: the gap fetcher's backoff starts over.
    pub fn on_applied(&mut self) {
        self.gaps.on_progress();
    }

    /// A peer answered a range request. Only the answer of the peer asked
    /// for that range is taken.
    pub fn on_range(&mut self, from: &NodeId, reply: RangeReply) -> Result<(), BadRange> {
        let start = match &reply {
            RangeReply::Entries { from, .. }
            | RangeReply::Compacted { from, .. }
            | RangeReply::NotYet { from, .. } => *from,
        };
        if !self.gaps.on_reply(from, start) {
            return Err(BadRange::Unasked);
        }
        match reply {
            RangeReply::Entries { entries, .. } => {
                let contiguous = entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.idx.0 == start.0 + i as u64);
                if !contiguous {
                    return Err(BadRange::NotConsecutive);
                }
                self.offer(entries);
            }
            RangeReply::Compacted { .. } => {
                if start >= self.buffer.next() {
                    self.need_snapshot = true;
                }
            }
            RangeReply::NotYet { .. } => {}
        }
        Ok(())
    }

    /// Bytes of `chunk` that belong to the transfer under way (counted as
    /// received), and what follows from it.
    pub fn on_chunk(
        &mut self,
        from: &NodeId,
        chunk: SnapshotChunk,
        now: Duration,
    ) -> (u64, Vec<CatchUpAction>) {
        let Some(rx) = self.rx.as_mut() else {
            return (0, vec![]);
        };
        let ours = rx.session() == chunk.session && rx.source() == from;
        let bytes = if ours { chunk.data.len() as u64 } else { 0 };
        let evs = rx.on_chunk(from, chunk, now);
        (bytes, self.receive_events(evs, now))
    }

    pub fn on_refused(
        &mut self,
        from: &NodeId,
        session: u64,
        reason: &str,
        now: Duration,
    ) -> Vec<CatchUpAction> {
        let Some(rx) = self.rx.as_mut() else {
            return vec![];
        };
        let evs = rx.on_refused(from, session, reason);
        self.receive_events(evs, now)
    }

    /// Chunks whose answer is late are asked for again.
    pub fn tick(&mut self, now: Duration) -> Vec<CatchUpAction> {
        let Some(rx) = self.rx.as_mut() else {
            return vec![];
        };
        let evs = rx.on_tick(now);
        self.receive_events(evs, now)
    }

    fn receive_events(&mut self, evs: Vec<ReceiveEvent>, now: Duration) -> Vec<CatchUpAction> {
        let mut out = Vec::new();
        for ev in evs {
            match ev {
                ReceiveEvent::Request { to, req } => {
                    out.push(CatchUpAction::SnapshotRequest { to, req })
                }
                ReceiveEvent::Progress {
                    received,
                    total,
                    entries,
                } => out.push(CatchUpAction::Progress {
                    received,
                    total,
                    entries,
                }),
                ReceiveEvent::Done { state, snap } => {
                    self.rx = None;
                    out.push(CatchUpAction::Install(state, snap));
                }
                ReceiveEvent::Failed { reason } => {
                    self.rx = None;
                    self.retry_at = now + self.cfg.retry_after;
                    self.need_snapshot = true;
                    out.push(CatchUpAction::Failed(reason));
                }
            }
        }
        out
    }

    /// State was replaced by a snapshot at `index`: go on from `index + 1`.
    /// The commit heard of so far is forgotten too: a joiner heard it from
    /// before it knew whom to believe; members' heartbeats bring it again.
    pub fn installed(&mut self, index: EventIdx) {
        self.buffer.fast_forward_to(index.next());
        self.gaps.reset();
        self.known_commit = index;
    }

    /// The "range or snapshot" decision, after every step. `applied` is
    /// State's index; `joining` that State has no cluster yet; `sources`
    /// the replicas of this cluster heard of; `master` the one believed
    /// to lead (spared as a snapshot source when another will do).
    pub fn plan(
        &mut self,
        now: Duration,
        applied: EventIdx,
        joining: bool,
        sources: &[Source],
        master: Option<&NodeId>,
        rng: &mut impl Rng,
    ) -> Vec<CatchUpAction> {
        if self.rx.is_some() {
            return vec![];
        }
        let mut out = self.plan_ranges(now, sources);
        out.extend(self.plan_snapshot(now, applied, joining, sources, master, rng));
        out
    }

    fn plan_ranges(&mut self, now: Duration, sources: &[Source]) -> Vec<CatchUpAction> {
        let gaps = self.buffer.gaps(self.known_commit, 8);
        let logs: Vec<PeerLog> = sources
            .iter()
            .filter(|s| s.live)
            .map(|s| PeerLog {
                node: s.node.clone(),
                floor: s.floor,
                applied: s.applied,
            })
            .collect();
        let mut out = Vec::new();
        for action in self.gaps.plan(now, &gaps, &logs) {
            match action {
                GapAction::Fetch { peer, from, to } => out.push(CatchUpAction::Fetch {
                    peer,
                    range: FetchRange { from, to },
                }),
                GapAction::NeedSnapshot => self.need_snapshot = true,
            }
        }
        out
    }

    fn plan_snapshot(
        &mut self,
        now: Duration,
        applied: EventIdx,
        joining: bool,
        sources: &[Source],
        master: Option<&NodeId>,
        rng: &mut impl Rng,
    ) -> Vec<CatchUpAction> {
        if now < self.retry_at {
            return vec![];
        }
        let behind = self.known_commit.0.saturating_sub(applied.0);
        let joining = joining && self.known_commit > EventIdx::ZERO;
        let wanted = self.need_snapshot
            || (!self.cfg.no_snapshot && (behind > self.cfg.snapshot_threshold || joining));
        if !wanted || behind == 0 {
            self.need_snapshot = false;
            return vec![];
        }
        let Some(source) = self.choose_source(applied, sources, master, rng) else {
            return vec![];
        };
        self.session = self.session.wrapping_add(1) | self.session_tag;
        let (rx, evs) =
            SnapshotReceiver::start(self.cfg.receive, self.session, source.clone(), now);
        self.rx = Some(rx);
        self.need_snapshot = false;
        let mut out = vec![CatchUpAction::SnapshotStarted { source, behind }];
        out.extend(self.receive_events(evs, now));
        out
    }

    /// An up-to-date live replica that is not the master, so that joins do
    /// not all load one node; else the master; else anyone ahead of us.
    fn choose_source(
        &self,
        applied: EventIdx,
        sources: &[Source],
        master: Option<&NodeId>,
        rng: &mut impl Rng,
    ) -> Option<NodeId> {
        let fresh: Vec<&Source> = sources
            .iter()
            .filter(|s| {
                s.live
                    && s.applied > applied
                    && s.applied.0 + self.cfg.source_max_lag >= self.known_commit.0
                    && Some(&s.node) != master
            })
            .collect();
        if !fresh.is_empty() {
            return Some(fresh[rng.gen_range(0..fresh.len())].node.clone());
        }
        if let Some(m) = master.filter(|m| sources.iter().any(|s| &s.node == *m)) {
            return Some(m.clone());
        }
        let ahead: Vec<&Source> = sources.iter().filter(|s| s.applied > applied).collect();
        (!ahead.is_empty()).then(|| ahead[rng.gen_range(0..ahead.len())].node.clone())
    }

    /// When this part next has something to do on its own: a gap to confirm
    /// or re-ask, a late chunk, the end of a pause after a failure. Only
    /// times after `now`: what is due now was done by the step that ran.
    pub fn next_wake(&self, now: Duration) -> Option<Duration> {
        let mut times = Vec::new();
        match &self.rx {
            Some(rx) => times.extend(rx.next_wake()),
            None => {
                times.extend(self.gaps.next_wake(now));
                if self.need_snapshot || self.known_commit >= self.buffer.next() {
                    times.push(self.retry_at);
                }
            }
        }
        times.into_iter().filter(|t| *t > now).min()
    }
}

impl<L: LogStore> Node<L> {
    /// The catch-up decision, after every step (see `catch_up`).
    pub(in crate::node) fn follow(&mut self, out: &mut Vec<Output>) {
        if self.cluster.is_none() {
            return;
        }
        let sources = self.trusted_sources();
        let joining = self.state.cluster_id().is_none();
        if !self.knows_members() {
            // A joiner heard the master before it had listened long enough
            // to believe it: the commit its last heartbeat gave counts now.
            if let Some(hb) = self.named_master().and_then(|m| self.peers.heartbeat(&m)) {
                self.catch_up.note_commit(hb.commit);
            }
        }
        let acts = self.catch_up.plan(
            self.now,
            self.state.index(),
            joining,
            &sources,
            self.master_view.id.as_ref(),
            &mut self.rng,
        );
        self.run_catch_up(acts, out);
    }

    pub(in crate::node) fn run_catch_up(
        &mut self,
        acts: Vec<CatchUpAction>,
        out: &mut Vec<Output>,
    ) {
        for a in acts {
            match a {
                CatchUpAction::Fetch { peer, range } => {
                    self.metrics.nacks_sent += 1;
                    self.send(peer, Direct::FetchRange(range), out);
                }
                CatchUpAction::SnapshotRequest { to, req } => {
                    self.send(to, Direct::SnapshotRequest(req), out)
                }
                CatchUpAction::SnapshotStarted { source, behind } => {
                    tracing::info!(node = %self.cfg.node, source = %source, behind, "catching up by snapshot");
                }
                CatchUpAction::Progress {
                    received,
                    total,
                    entries,
                } => out.push(Output::CatchUp {
                    received,
                    total,
                    entries,
                }),
                CatchUpAction::Install(state, snap) => self.install_snapshot(*state, snap, out),
                CatchUpAction::Failed(reason) => {
                    tracing::warn!(node = %self.cfg.node, reason = %reason, "snapshot transfer failed; will retry");
                    self.metrics.snapshot_failures += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
