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
//! With `no_snapshot` only the last reason applies. A snapshot is asked
//! for on gossip; replicas answer with offers, and the one a trusted node
//! vouched for is pulled from every replica that offered the same bytes
//! (`offers`, `crate::snapshot_transfer`). Only one transfer runs at a
//! time; while a snapshot is wanted for a log longer than it is worth,
//! no ranges are fetched (they would be thrown away when the snapshot
//! lands), and a failed transfer is asked for again after a pause.

use crate::gap_fetcher::{GapAction, GapConfig, GapFetcher, PeerLog};
use crate::ordered_buffer::{BufferLimits, OrderedBuffer};
use crate::snapshot_transfer::{EncodedSnapshot, Progress, ReceiveConfig, SnapshotReceiver};
use crate::wire::{FetchRange, RangeReply, SnapshotRequest, SNAPSHOT_CHUNK_BYTES};
use offers::Offered;
use shoal_model::{EventIdx, LogEntry, NodeId, State};
use std::time::Duration;

mod node;
mod offers;
mod transfer;

#[derive(Clone, Copy, Debug)]
pub struct CatchUpConfig {
    /// Behind by more than this, and by more events than State holds
    /// entries (replaying the tail would cost more than loading State
    /// anew), catch up by snapshot instead of ranges.
    pub snapshot_threshold: u64,
    /// Never ask for a snapshot unless no replica holds the range.
    pub no_snapshot: bool,
    /// Replicas build the snapshots they serve at multiples of this
    /// index, so that they build the same bytes; the tail past one comes
    /// by range.
    pub snapshot_point_every: u64,
    /// Once a trusted replica offered a snapshot, other offers are awaited
    /// this much longer.
    pub offer_wait: Duration,
    /// With no trusted offer by then, the request has failed.
    pub offer_timeout: Duration,
    /// Sources of one transfer, at most.
    pub max_sources: usize,
    /// Chunk size of the snapshots this node builds to serve.
    pub chunk_bytes: u32,
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
            snapshot_point_every: 1024,
            offer_wait: Duration::from_millis(50),
            offer_timeout: Duration::from_secs(10),
            max_sources: 4,
            chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            retry_after: Duration::from_secs(1),
            gaps: GapConfig::default(),
            receive: ReceiveConfig::default(),
            buffer: BufferLimits::default(),
        }
    }
}

/// A replica of this node's cluster that could serve ranges or vouch for a
/// snapshot, as its heartbeats describe it.
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
    Fetch {
        peer: NodeId,
        range: FetchRange,
    },
    /// Ask on gossip for a snapshot past `have`, the one at `resume` if
    /// a replica still holds it (part of it is here).
    Ask {
        session: u64,
        have: EventIdx,
        resume: Option<EventIdx>,
    },
    /// Ask `to` for a chunk of the snapshot (`again`: it came late
    /// elsewhere).
    SnapshotRequest {
        to: NodeId,
        req: SnapshotRequest,
        again: bool,
    },
    /// A transfer began (`resumed`: it goes on from the bytes an earlier
    /// one of the same snapshot left).
    SnapshotStarted {
        sources: Vec<NodeId>,
        index: EventIdx,
        behind: u64,
        resumed: bool,
    },
    Progress(Progress),
    /// A source was dropped (`bad`: it sent bytes that were not offered).
    Dropped {
        source: NodeId,
        reason: String,
        bad: bool,
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

/// An offer that is not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum BadOffer {
    /// No request of this session is open.
    Unasked,
    /// It does not describe a byte string (`SnapshotOffer::check`).
    Malformed(String),
}

/// Where the one snapshot transfer stands.
#[derive(Debug)]
enum Transfer {
    Idle,
    /// Asked on gossip; offers come in.
    Asking(Asking),
    Receiving(Box<SnapshotReceiver>),
}

#[derive(Debug)]
struct Asking {
    session: u64,
    have: EventIdx,
    master: Option<NodeId>,
    offers: Vec<Offered>,
    /// Set once a trusted replica offered: when to choose.
    decide_at: Option<Duration>,
    give_up_at: Duration,
}

/// Offers kept per request, at most.
const MAX_OFFERS: usize = 64;

#[derive(Debug)]
pub struct CatchUp {
    cfg: CatchUpConfig,
    buffer: OrderedBuffer,
    gaps: GapFetcher,
    transfer: Transfer,
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
    /// Entries in this node's State (keys, outcomes, ...).
    state_entries: u64,
    /// A transfer that lost every source, with what arrived: resumed if
    /// the same snapshot is chosen again.
    parked: Option<Box<SnapshotReceiver>>,
}

impl CatchUp {
    /// `next` is the first index State has not applied; `session_tag`
    /// should differ between process starts (the incarnation).
    pub fn new(cfg: CatchUpConfig, next: EventIdx, session_tag: u64, now: Duration) -> Self {
        CatchUp {
            cfg,
            buffer: OrderedBuffer::new(next, cfg.buffer),
            gaps: GapFetcher::new(cfg.gaps),
            transfer: Transfer::Idle,
            need_snapshot: false,
            retry_at: now,
            session: 0,
            session_tag: (session_tag & 0xffff) << 48,
            known_commit: EventIdx(next.0.saturating_sub(1)),
            state_entries: 0,
            parked: None,
        }
    }

    pub fn known_commit(&self) -> EventIdx {
        self.known_commit
    }

    /// Whether a snapshot is asked for or under way.
    pub fn receiving(&self) -> bool {
        !matches!(self.transfer, Transfer::Idle)
    }

    /// Whether `plan` may need the sources: a transfer under way, or
    /// something known to be missing. When not, they need not be gathered
    /// (an O(peers) step on every input otherwise).
    pub fn has_work(&self) -> bool {
        self.receiving() || self.need_snapshot || self.known_commit >= self.buffer.next()
    }

    /// How many entries this node's State holds: a lag shorter than that
    /// is fetched by range (a node that just loaded a large snapshot
    /// fetches its tail rather than load another).
    pub fn note_state_entries(&mut self, n: u64) {
        self.state_entries = n;
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

    /// State was replaced by a snapshot at `index`: go on from `index + 1`.
    /// The commit heard of so far is forgotten too: a joiner heard it from
    /// before it knew whom to believe; members' heartbeats bring it again.
    pub fn installed(&mut self, index: EventIdx) {
        self.parked = None;
        self.buffer.fast_forward_to(index.next());
        self.gaps.reset();
        self.known_commit = index;
    }

    /// The "range or snapshot" decision, after every step. `applied` is
    /// State's index; `joining` that State has no cluster yet; `sources`
    /// the replicas of this cluster whose word counts; `master` the one
    /// believed to lead (spared as a source of snapshots and of ranges
    /// when another will do; `PeerLog::spared`).
    pub fn plan(
        &mut self,
        now: Duration,
        applied: EventIdx,
        joining: bool,
        sources: &[Source],
        master: Option<&NodeId>,
    ) -> Vec<CatchUpAction> {
        if self.receiving() {
            return vec![];
        }
        // Ranges wait while the log to read is longer than a snapshot, in
        // the pause after a failed transfer too: the snapshot throws away
        // what they bring, and a joiner reading a long log from its start
        // loads whoever still holds it (the master, most often) for
        // nothing. A joiner with a short log to read reads it meanwhile:
        // a young cluster may have no snapshot to offer.
        let mut out =
            if self.snapshot_wanted(applied, joining) && self.log_too_long(applied, sources) {
                Vec::new()
            } else {
                self.plan_ranges(now, sources, master)
            };
        out.extend(self.plan_snapshot(now, applied, joining, sources, master));
        out
    }

    /// Whether this node is to load a snapshot rather than fetch ranges
    /// (the reasons in the module's doc).
    fn snapshot_wanted(&self, applied: EventIdx, joining: bool) -> bool {
        let behind = self.known_commit.0.saturating_sub(applied.0);
        let joining = joining && self.known_commit > EventIdx::ZERO;
        let wanted = self.need_snapshot
            || (!self.cfg.no_snapshot && (self.lag_too_long(applied) || joining));
        wanted && behind > 0
    }

    /// Whether more entries are missing than a snapshot is worth.
    fn lag_too_long(&self, applied: EventIdx) -> bool {
        let behind = self.known_commit.0.saturating_sub(applied.0);
        behind > self.cfg.snapshot_threshold.max(self.state_entries)
    }

    /// Whether the log this node lacks is longer than a snapshot is worth,
    /// or starts below what every live source still holds.
    fn log_too_long(&self, applied: EventIdx, sources: &[Source]) -> bool {
        let held = sources.iter().any(|s| s.live && s.floor <= applied.next());
        self.lag_too_long(applied) || !held
    }

    /// Ranges asked of the live sources, the master spared (`PeerLog`).
    fn plan_ranges(
        &mut self,
        now: Duration,
        sources: &[Source],
        master: Option<&NodeId>,
    ) -> Vec<CatchUpAction> {
        let gaps = self.buffer.gaps(self.known_commit, 8);
        let logs: Vec<PeerLog> = sources
            .iter()
            .filter(|s| s.live)
            .map(|s| PeerLog {
                node: s.node.clone(),
                floor: s.floor,
                applied: s.applied,
                spared: master == Some(&s.node),
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

    /// Asks on gossip when a snapshot is wanted and a replica whose word
    /// counts is live to vouch for one.
    fn plan_snapshot(
        &mut self,
        now: Duration,
        applied: EventIdx,
        joining: bool,
        sources: &[Source],
        master: Option<&NodeId>,
    ) -> Vec<CatchUpAction> {
        if now < self.retry_at {
            return vec![];
        }
        if !self.snapshot_wanted(applied, joining) {
            // A transfer parked to go on with is not wanted either: what
            // it holds (up to a snapshot's bytes) goes.
            self.need_snapshot = false;
            self.parked = None;
            return vec![];
        }
        if !sources.iter().any(|s| s.live && s.applied > applied) {
            return vec![];
        }
        self.session = self.session.wrapping_add(1) | self.session_tag;
        self.transfer = Transfer::Asking(Asking {
            session: self.session,
            have: applied,
            master: master.cloned(),
            offers: Vec::new(),
            decide_at: None,
            give_up_at: now + self.cfg.offer_timeout,
        });
        self.need_snapshot = false;
        vec![CatchUpAction::Ask {
            session: self.session,
            have: applied,
            resume: self.parked.as_ref().map(|rx| rx.offer().index),
        }]
    }

    /// When this part next has something to do on its own: a gap to confirm
    /// or re-ask, a late chunk, offers to choose among, the end of a pause
    /// after a failure. Only times after `now`: what is due now was done by
    /// the step that ran.
    pub fn next_wake(&self, now: Duration) -> Option<Duration> {
        let mut times = Vec::new();
        match &self.transfer {
            Transfer::Receiving(rx) => times.extend(rx.next_wake()),
            Transfer::Asking(a) => {
                times.extend(a.decide_at);
                times.push(a.give_up_at);
            }
            Transfer::Idle => {
                times.extend(self.gaps.next_wake(now));
                if self.need_snapshot || self.known_commit >= self.buffer.next() {
                    times.push(self.retry_at);
                }
            }
        }
        times.into_iter().filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests;
