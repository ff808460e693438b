//! Commit through Raft (TiKV's raft-rs), wrapped so that the node core and
//! the simulator drive it the same way.
//!
//! The wrapper writes Raft's entries and hard state to the `LogStore` and
//! lets no message that depends on them leave before they are durable
//! (`durable`: the fsync runs off the event loop), hands out only
//! committed entries, and applies membership changes as they commit.
//! Raft's log is not State: a lagging member that Raft catches up with a
//! (data-less) snapshot reports `SnapshotInstalled`, and the replica loads
//! State through the snapshot transfer, like any follower.
//!
//! Determinism: raft-rs draws election timeouts from a thread-local RNG.
//! We pin its range to one value (twice the election ticks) and fire the
//! election ourselves at a timeout drawn from our seeded RNG, redrawn each
//! time Raft restarts its election clock, so a simulation replays exactly.

use crate::log_store::LogStore;
use crate::wire::Refusal;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState as PbHardState, Message,
    MessageType, Snapshot,
};
use raft::{RawNode, StateRole, Storage as _};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_model::{EventIdx, RaftId, Term};
use std::collections::BTreeMap;
use std::time::Duration;

pub use raft::storage::MemStorage;

mod durable;
mod entries;
mod ready;
mod types;
mod validate;

pub use types::{RaftBase, RaftConfig, RaftError, RaftOutput, Won};

use durable::Durability;
use entries::{membership_of, to_log_entry, to_raft_entry};

/// Runs raft-rs code, turning a panic inside it into `Poisoned`: a message
/// that slipped past validation must not end the process. The caller drops
/// this core and starts a new one from the durable log, as after a crash.
fn contained<T>(f: impl FnOnce() -> T) -> Result<T, RaftError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned());
        RaftError::Poisoned(why)
    })
}

pub struct RaftCore {
    raw: RawNode<MemStorage>,
    cfg: RaftConfig,
    rng: SmallRng,
    /// Our election timeout in ticks, in `[election, 2 * election)`.
    timeout: usize,
    last_elapsed: usize,
    leader: u64,
    /// The last leader this member knew (0: none yet), and the leader that
    /// told it to campaign at once (`MsgTimeoutNow`), if one did since.
    last_leader: u64,
    handed_from: Option<u64>,
    heard: BTreeMap<u64, Duration>,
    now: Duration,
    tick_len: Duration,
    durable: Durability,
    /// Whether this member led at the last ready it handled.
    led: bool,
}

impl std::fmt::Debug for RaftCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCore")
            .field("id", &self.raw.raft.id)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("leader", &self.leader)
            .finish()
    }
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl RaftCore {
    /// Starts a member from `base` plus whatever entries past it its log
    /// holds (a restart), or from `base` alone (a new member).
    pub fn start(
        id: RaftId,
        cfg: RaftConfig,
        base: RaftBase,
        log: &mut dyn LogStore,
        seed: u64,
        tick_len: Duration,
    ) -> Result<Self, RaftError> {
        let storage = MemStorage::new();
        {
            let mut w = storage.wl();
            let cs = ConfState::from((
                base.voters.iter().map(|r| r.0),
                base.learners.iter().map(|r| r.0),
            ));
            if base.index.0 > 0 {
                let mut snap = Snapshot::default();
                let meta = snap.mut_metadata();
                meta.index = base.index.0;
                meta.term = base.term.0;
                meta.set_conf_state(cs);
                w.apply_snapshot(snap)?;
            } else {
                w.set_conf_state(cs);
            }
            // Entries past the base that the log still holds (uncommitted
            // ones of a restarted voter).
            let from = base.index.next().max(log.first_index());
            if log.last_index() >= from && from == base.index.next() {
                let tail = log.read(from, log.last_index(), usize::MAX)?;
                let ents: Vec<Entry> = tail.iter().map(to_raft_entry).collect();
                w.append(&ents)?;
            }
        }
        let last = storage.last_index()?;
        let hs = log.hard_state();
        storage.wl().set_hardstate(PbHardState {
            term: hs.term.max(base.term.0),
            vote: if hs.term >= base.term.0 { hs.vote } else { 0 },
            commit: hs.commit.max(base.index.0).min(last),
            ..Default::default()
        });
        let config = raft::Config {
            id: id.0,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            min_election_tick: 2 * cfg.election_ticks,
            max_election_tick: 2 * cfg.election_ticks + 1,
            applied: base.index.0,
            max_size_per_msg: cfg.max_msg_bytes,
            max_inflight_msgs: cfg.max_inflight,
            check_quorum: true,
            pre_vote: true,
            // Followers learn a new commit index from the next append or
            // heartbeat (and, sooner, from the master's one-way
            // `Direct::Committed`), not from a round of empty appends and
            // their answers: that round was half of the frames, timers and
            // wake-ups each write cost the members.
            skip_bcast_commit: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, storage, &discard_logger())?;
        let mut core = RaftCore {
            timeout: cfg.election_ticks,
            last_elapsed: 0,
            raw,
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            leader: 0,
            last_leader: 0,
            handed_from: None,
            heard: BTreeMap::new(),
            now: Duration::ZERO,
            tick_len,
            durable: Durability::default(),
            led: false,
        };
        core.reroll_timeout();
        Ok(core)
    }

    pub fn id(&self) -> RaftId {
        RaftId(self.raw.raft.id)
    }

    pub fn term(&self) -> Term {
        Term(self.raw.raft.term)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether Raft has messages, entries or a state change to handle
    /// (`drive` takes them).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    pub fn commit_index(&self) -> EventIdx {
        EventIdx(self.raw.raft.raft_log.committed)
    }

    pub fn last_index(&self) -> EventIdx {
        EventIdx(self.raw.raft.raft_log.last_index())
    }

    pub fn voters(&self) -> Vec<RaftId> {
        let mut v: Vec<_> = self
            .raw
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .map(RaftId)
            .collect();
        v.sort();
        v
    }

    pub fn learners(&self) -> Vec<RaftId> {
        let mut v: Vec<_> = self
            .raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .map(RaftId)
            .collect();
        v.sort();
        v
    }

    /// How far a member's log matches the leader's (leader only).
    pub fn matched(&self, id: RaftId) -> Option<EventIdx> {
        self.raw.raft.prs().get(id.0).map(|p| EventIdx(p.matched))
    }

    pub fn has_pending_conf_change(&self) -> bool {
        self.raw.raft.has_pending_conf()
    }

    /// True while this leader has heard from a majority of voters within
    /// the longest election timeout: otherwise a write cannot commit soon,
    /// and is refused at once with `no quorum`. (One election timeout was
    /// too short: a voter's fsync stalling for 500 ms while the third
    /// voter's disk was full failed every waiting write.)
    pub fn quorum_recently_active(&self) -> bool {
        let window = self.tick_len * 2 * self.cfg.election_ticks as u32;
        let voters = self.raw.raft.prs().conf().voters().ids();
        let me = self.raw.raft.id;
        let alive = voters
            .iter()
            .filter(|v| {
                *v == me
                    || self
                        .heard
                        .get(v)
                        .is_some_and(|t| self.now.saturating_sub(*t) <= window)
            })
            .count();
        alive * 2 > voters.len()
    }

    fn reroll_timeout(&mut self) {
        let base = self.cfg.election_ticks;
        self.timeout = base + self.rng.gen_range(0..base);
    }

    /// Redraws our timeout whenever Raft restarted its election clock.
    fn after_op(&mut self) {
        let elapsed = self.raw.raft.election_elapsed;
        if elapsed < self.last_elapsed {
            self.reroll_timeout();
        }
        self.last_elapsed = elapsed;
    }

    pub fn tick(&mut self, now: Duration) -> Result<(), RaftError> {
        self.now = now;
        let was_leader = self.is_leader();
        if !was_leader && self.raw.raft.election_elapsed + 1 >= self.timeout {
            // Raft's own timeout is pinned at twice the election ticks:
            // bring it to the edge so this tick starts the election.
            self.raw.raft.election_elapsed = 2 * self.cfg.election_ticks - 1;
            if self.leader != 0 {
                tracing::info!(
                    term = self.raw.raft.term,
                    leader = self.leader,
                    heard = %self.heard_ago(),
                    "no heartbeat from the master for an election timeout; asking for votes"
                );
            }
        }
        contained(|| self.raw.tick())?;
        if was_leader && !self.is_leader() {
            tracing::warn!(
                term = self.raw.raft.term,
                heard = %self.heard_ago(),
                "stepping down: no majority of voters heard within an election timeout"
            );
        }
        self.after_op();
        Ok(())
    }

    /// How long ago each other voter was last heard, for the logs:
    /// `2: 120 ms, 3: never`.
    fn heard_ago(&self) -> String {
        let me = self.raw.raft.id;
        let mut ids: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        ids.sort_unstable();
        let ago = |id: &u64| match self.heard.get(id) {
            Some(t) => format!("{id}: {} ms", self.now.saturating_sub(*t).as_millis()),
            None => format!("{id}: never"),
        };
        let parts: Vec<String> = ids.iter().filter(|id| **id != me).map(ago).collect();
        parts.join(", ")
    }

    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raw.campaign()?;
        self.after_op();
        Ok(())
    }

    /// Steps a message received from `from`. A message that claims another
    /// sender, or does not parse, is an error for the caller to count.
    pub fn step(&mut self, from: RaftId, bytes: &[u8], now: Duration) -> Result<(), RaftError> {
        let msg =
            Message::parse_from_bytes(bytes).map_err(|e| RaftError::Malformed(e.to_string()))?;
        if msg.from != from.0 || msg.to != self.raw.raft.id {
            return Err(RaftError::Malformed(format!(
                "message from {} to {} arrived from {from}",
                msg.from, msg.to
            )));
        }
        if !validate::member(&self.raw, from.0) {
            return Err(RaftError::NotMember(from));
        }
        validate::check(&self.raw, from.0, &msg).map_err(RaftError::Refused)?;
        self.now = now;
        self.heard.insert(from.0, now);
        if msg.get_msg_type() == MessageType::MsgTimeoutNow {
            self.handed_from = Some(from.0);
        }
        let (was_leader, kind, their_term) = (self.is_leader(), msg.get_msg_type(), msg.term);
        let r = contained(|| self.raw.step(msg))?;
        if was_leader && !self.is_leader() {
            tracing::info!(
                term = self.raw.raft.term,
                from = from.0,
                their_term,
                message = ?kind,
                "stepping down: a voter is at a later term"
            );
        }
        self.after_op();
        match r {
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes an encoded event. Refused unless this node leads with a
    /// recently active quorum.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Refusal> {
        if !self.is_leader() {
            return Err(Refusal::NotMaster);
        }
        if !self.quorum_recently_active() {
            return Err(Refusal::NoQuorum);
        }
        self.raw.propose(vec![], data).map_err(|_| Refusal::Busy)
    }

    /// Proposes one membership change; `context` is the encoded
    /// `Event::Membership` the entry stands for.
    pub fn propose_membership(
        &mut self,
        change: ConfChangeType,
        node: RaftId,
        context: Vec<u8>,
    ) -> Result<(), Refusal> {
        if !self.is_leader() {
            return Err(Refusal::NotMaster);
        }
        if self.has_pending_conf_change() {
            return Err(Refusal::Busy);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = node.0;
        self.raw
            .propose_conf_change(context, cc)
            .map_err(|_| Refusal::Busy)
    }

    pub fn transfer_leader(&mut self, to: RaftId) {
        self.raw.transfer_leader(to.0);
        self.after_op();
    }

    /// Whether the leader can serve a read index now: Raft answers one
    /// only once the leader has committed an entry of its own term.
    pub fn can_read(&self) -> bool {
        self.is_leader() && self.raw.raft.commit_to_current_term()
    }

    /// Why this member leads now that `leader` does (None if it is
    /// another member, or nobody); remembers `leader` as the last known.
    fn why_won(&mut self, leader: u64) -> Option<Won> {
        let me = self.raw.raft.id;
        let won = (leader == me).then(|| match self.handed_from {
            Some(from) => Won::HandedOver { from: RaftId(from) },
            // `previous` is this member itself when it led last and lost
            // its majority in between.
            None => Won::Elected {
                previous: (self.last_leader != 0).then_some(RaftId(self.last_leader)),
            },
        });
        if leader != 0 {
            self.last_leader = leader;
            self.handed_from = None;
        }
        won
    }

    /// Starts a ReadIndex round under `ctx` (leader only); its answer
    /// comes out of `drive` as `ReadReady`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        contained(|| self.raw.read_index(ctx.to_be_bytes().to_vec()))
    }

    /// Handles everything Raft has ready: writes to the log, sends what
    /// may leave, hands out what committed; then starts the fsync of what
    /// was written (`RaftOutput::Sync`, or waited for here unless
    /// `sync_off_loop`).
    pub fn drive(&mut self, log: &mut dyn LogStore) -> Result<Vec<RaftOutput>, RaftError> {
        contained(|| self.drive_ready(log))?
    }

    /// The sync `id` that `drive` handed out succeeded, and the log took
    /// its outcome (`LogStore::synced`): answers that waited for it leave,
    /// and a leader counts its own entries toward a commit.
    pub fn persisted(
        &mut self,
        id: u64,
        log: &mut dyn LogStore,
    ) -> Result<Vec<RaftOutput>, RaftError> {
        contained(|| {
            let mut out = Vec::new();
            self.on_synced(id, &mut out);
            out.extend(self.drive_ready(log)?);
            Ok(out)
        })?
    }

    pub(super) fn on_synced(&mut self, id: u64, out: &mut Vec<RaftOutput>) {
        if let Some((upto, msgs)) = self.durable.sync_ended(id) {
            self.raw.on_persist_ready(upto);
            self.sends(msgs, out);
        }
    }

    fn drive_ready(&mut self, log: &mut dyn LogStore) -> Result<Vec<RaftOutput>, RaftError> {
        let mut out = Vec::new();
        loop {
            while self.raw.has_ready() {
                self.handle_ready(log, &mut out)?;
            }
            if !self.durable.wants_sync() {
                break;
            }
            let job = log.start_sync()?;
            self.durable.sync_started(job.id());
            if self.cfg.sync_off_loop {
                out.push(RaftOutput::Sync(job));
                break;
            }
            let result = job.wait();
            log.synced(job.id(), result)?;
            self.on_synced(job.id(), &mut out);
        }
        self.after_op();
        self.compact_memory()?;
        Ok(out)
    }

    pub(super) fn sends(&self, msgs: Vec<Message>, out: &mut Vec<RaftOutput>) {
        for m in msgs {
            let to = RaftId(m.to);
            let msg = m.write_to_bytes().expect("raft messages encode");
            out.push(RaftOutput::Send { to, msg });
        }
    }

    pub(super) fn commit(
        &mut self,
        entries: Vec<Entry>,
        log: &mut dyn LogStore,
        out: &mut Vec<RaftOutput>,
    ) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in &entries {
            if e.get_entry_type() == EntryType::EntryConfChange {
                let mut cc = ConfChange::default();
                cc.merge_from_bytes(e.get_data())
                    .map_err(|e| RaftError::Malformed(e.to_string()))?;
                let cs = self.raw.apply_conf_change(&cc)?;
                log.set_membership(membership_of(&cs))?;
                self.raw.mut_store().wl().set_conf_state(cs);
            }
        }
        out.push(RaftOutput::Committed(
            entries.iter().map(to_log_entry).collect(),
        ));
        Ok(())
    }

    fn compact_memory(&mut self) -> Result<(), RaftError> {
        let applied = self.raw.raft.raft_log.applied;
        let first = self.raw.store().first_index()?;
        if applied > first + 2 * self.cfg.keep_in_memory {
            self.raw
                .mut_store()
                .wl()
                .compact(applied - self.cfg.keep_in_memory)?;
        }
        Ok(())
    }
}

/// Membership change kinds, re-exported for the node core.
pub use raft::eraftpb::ConfChangeType as MembershipChange;

#[cfg(test)]
mod tests;
