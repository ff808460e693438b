//! Applying committed entries to State (invariants 1 and 3), what a node
//! does after each (answer waiting clients, note membership and work
//! changes), keeping them in the follower's own log, and local snapshots.
//!
//! Also the two other ways State changes: the log replayed at start, and a
//! State that arrived whole by snapshot.

use super::io::Output;
use super::{Node, StartError};
use crate::log_store::LogStore;
use crate::snapshot_transfer::EncodedSnapshot;
use shoal_log::HardState;
use shoal_model::{Envelope, Event, EventIdx, LogEntry, Op, State, Term};
use std::time::Duration;

/// Where State stood before a batch was applied: the batch joins the log
/// there.
#[derive(Clone, Copy, Debug)]
pub(super) struct Applied {
    pub index: EventIdx,
    pub term: Term,
}

/// Bytes read from the log per batch while replaying it at start.
const REPLAY_BATCH_BYTES: usize = 8 << 20;

/// For replicas that trail, the log is kept down to this many times
/// `log_retain` below a local snapshot, at most.
const TRAILING_RETAIN: u64 = 4;
/// A replica counts as trailing, not gone, while heard from within this:
/// the ones that trail are the ones a loaded host starves, and they miss
/// heartbeats by more than the node timeout.
const TRAILING_HEARD: Duration = Duration::from_secs(60);

/// Where the log is compacted to after a local snapshot at `index`:
/// `retain` entries below it are kept, and more while a replica with
/// State heard lately (`applied`, from its heartbeats) trails further:
/// down to the first entry it lacks, but at most `TRAILING_RETAIN` times
/// `retain` below the snapshot. A replica that a loaded host slowed (a join storm: twenty
/// joiners applying on two cores) then goes on by range, rather than
/// load all of State a second time.
pub(super) fn compaction_floor(
    index: EventIdx,
    retain: u64,
    applied: impl IntoIterator<Item = EventIdx>,
) -> EventIdx {
    let kept = |n: u64| EventIdx(index.0.saturating_sub(n) + 1);
    let (floor, lowest) = (kept(retain), kept(retain.saturating_mul(TRAILING_RETAIN)));
    applied
        .into_iter()
        .filter(|a| *a > EventIdx::ZERO)
        .map(|a| a.next().max(lowest))
        .fold(floor, EventIdx::min)
}

/// Replays the committed tail of the log past `state` (a local snapshot,
/// or empty State) at start.
pub(super) fn replay(state: &mut State, log: &mut impl LogStore) -> Result<(), StartError> {
    let commit = EventIdx(log.hard_state().commit).min(log.last_index());
    let mut from = state.index().next();
    if from < log.first_index() {
        return Ok(());
    }
    while from <= commit {
        let batch = log.read(from, commit, REPLAY_BATCH_BYTES)?;
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            let env = entry.envelope().map_err(|reason| StartError::Entry {
                idx: entry.idx,
                reason,
            })?;
            state.apply(&env)?;
        }
        from = state.index().next();
    }
    Ok(())
}

impl<L: LogStore> Node<L> {
    /// Applies every entry the buffer can release. Returns whether any was.
    ///
    /// While the disk fails, nothing more is applied: State runs ahead of
    /// this node's log by at most the one batch whose writing failed, and
    /// that batch is written first once the disk works (`storage`).
    pub(super) fn apply_ready(&mut self, out: &mut Vec<Output>) -> bool {
        if self.storage.is_some() {
            return false;
        }
        let member = self.raft.is_some();
        let before = Applied {
            index: self.state.index(),
            term: self.state.term(),
        };
        let mut batch = Vec::new();
        let mut membership_changed = false;
        while let Some(entry) = self.catch_up.pop_next() {
            let env = match entry.envelope() {
                Ok(env) => env,
                Err(e) => {
                    self.fail(
                        format!("committed entry {} is unreadable: {e}", entry.idx),
                        out,
                    );
                    return false;
                }
            };
            let applied = match self.state.apply(&env) {
                Ok(a) => a,
                Err(e) => {
                    self.fail(format!("apply failed: {e}"), out);
                    return false;
                }
            };
            self.metrics.events_applied += 1;
            self.note_snapshot_point();
            batch.push(entry);
            membership_changed |= self.after_apply(&env);
            if let Some(result) = applied.command {
                let acts = self.pending.on_applied(&result);
                self.run_pending(acts, out);
            }
        }
        if batch.is_empty() {
            return false;
        }
        self.keep_applied(before, &batch, member, out);
        if membership_changed {
            self.members_changed();
            if let Err(e) = self.sync_raft_membership() {
                self.fail(format!("could not start raft: {e}"), out);
            }
            // Demoted by this batch: Raft's last writes (the commit that
            // applied it) are not synced yet, and nothing syncs them now
            // Raft is gone; the log is kept as a follower keeps it.
            if member && self.raft.is_none() {
                self.keep_applied(before, &batch, false, out);
            }
        }
        self.catch_up.on_applied();
        self.maybe_local_snapshot(out);
        true
    }

    /// What an applied event changes besides State. Returns whether the
    /// membership changed.
    fn after_apply(&mut self, env: &Envelope) -> bool {
        if let Some(m) = self.master.as_mut() {
            m.on_applied(&env.event);
        }
        match &env.event {
            Event::ClusterFounded { .. }
            | Event::NodeJoined { .. }
            | Event::NodeForgotten { .. }
            | Event::NodeLeft { .. }
            | Event::Membership { .. } => return true,
            Event::TaskGranted { task, node, .. } if *node == self.cfg.node => {
                self.worker.note_granted(task.clone());
            }
            Event::ReplicaPlaced { .. } | Event::ReplicaUnplaced { .. } => {
                self.replicas_dirty = true;
            }
            Event::Command { cmd, .. }
                if matches!(cmd.op, Op::Deploy { .. } | Op::Undeploy { .. }) =>
            {
                self.replicas_dirty = true;
            }
            _ => {}
        }
        false
    }

    /// `persist_applied`, and on failure the node stops taking writes
    /// until the disk works, with the batch to write first then.
    fn keep_applied(
        &mut self,
        before: Applied,
        batch: &[LogEntry],
        member: bool,
        out: &mut Vec<Output>,
    ) {
        if self.storage.is_some() {
            return;
        }
        if let Err(e) = self.persist_applied(before, batch, member) {
            self.storage_failed(&e, out);
            if let Some(fault) = self.storage.as_mut() {
                fault.unwritten = Some((before, batch.to_vec()));
            }
        }
    }

    /// A node keeps the committed entries it applied (`batch`, applied
    /// after `before`), so that it can restart from its own disk and serve
    /// ranges to others. Raft writes a member's log; an entry that reached
    /// a member by gossip ahead of Raft is kept too, so that it survives a
    /// demotion or restart.
    ///
    /// The log is extended only where it holds the applied entries up to
    /// there: its entry at the join has the term of the one applied (by
    /// the log matching property, so do all before it). A log whose tail
    /// differs (an uncommitted tail of a term that lost) is Raft's to
    /// mend on a member; elsewhere it is replaced from the first entry that
    /// differs, or emptied when that one is not in the batch.
    pub(super) fn persist_applied(
        &mut self,
        before: Applied,
        batch: &[LogEntry],
        member: bool,
    ) -> Result<(), shoal_log::LogError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (first, last) = (first.idx, last.idx);
        let held = self.log.last_index();
        if member && held >= last {
            return Ok(());
        }
        // The term applied at each index from `before` to `last`.
        let term_at = |idx: EventIdx| {
            if idx == before.index {
                Some(before.term)
            } else {
                let i = idx.0.checked_sub(first.0)?;
                batch.get(i as usize).map(|e| e.term)
            }
        };
        let floor = self.log.first_index();
        let join = held.min(last);
        // An entry at or below the log's commit is the committed one, as
        // applied: only an entry past it is read to compare.
        let committed = join.0 <= self.log.hard_state().commit;
        let from = if held < before.index {
            // A gap between the log and the batch.
            None
        } else if join < floor || committed || self.log_term(join)? == term_at(join) {
            Some(held.next())
        } else if member {
            return Ok(());
        } else {
            // The first entry that differs: replaced if the batch has it.
            let held_here = self.log.read(before.index.max(floor), join, usize::MAX)?;
            let differs = held_here
                .iter()
                .find(|e| Some(e.term) != term_at(e.idx))
                .map_or(join, |e| e.idx);
            (differs >= first).then_some(differs)
        };
        let from = match from {
            Some(from) => from,
            None if member => return Ok(()),
            None => {
                self.log.reset(first)?;
                first
            }
        };
        if from <= last {
            self.log.append(&batch[(from.0 - first.0) as usize..])?;
        }
        // Raft refuses to start from a commit past the log's end.
        let hs = self.log.hard_state();
        let commit = hs.commit.max(last.0).min(self.log.last_index().0);
        self.log.set_hard_state(HardState { commit, ..hs })?;
        self.log.sync()
    }

    /// The term of the log's entry at `idx`, if it holds it.
    fn log_term(&mut self, idx: EventIdx) -> Result<Option<Term>, shoal_log::LogError> {
        if idx < self.log.first_index() || idx > self.log.last_index() {
            return Ok(None);
        }
        Ok(self.log.read(idx, idx, 1)?.first().map(|e| e.term))
    }

    /// Every `local_snapshot_every` events, State at the snapshot point is
    /// saved to disk (built off the loop; the same bytes it serves) and the
    /// log compacted below it. Where the interval spans snapshot points,
    /// it is taken at the points that are multiples of it (rounded up to
    /// a point): the same indexes on every replica, so the local snapshots
    /// members hold, and offer to joiners while their tail is short, are
    /// the same bytes and every member is a source of them. A node
    /// catching up from far behind waits until it is near the commit: an
    /// encode on the way would compete with applying for the CPU, and be
    /// stale at once. It waits at most `LOCAL_SNAPSHOT_DEFER` intervals, so
    /// its log stays bounded however long it trails; past that it takes
    /// the snapshot where it stands.
    fn maybe_local_snapshot(&mut self, out: &mut Vec<Output>) {
        const LOCAL_SNAPSHOT_DEFER: u64 = 10;
        let every = self.cfg.local_snapshot_every;
        let since = self
            .state
            .index()
            .0
            .saturating_sub(self.last_local_snapshot.0);
        let behind = self
            .catch_up
            .known_commit()
            .0
            .saturating_sub(self.state.index().0);
        let overdue = since >= every * LOCAL_SNAPSHOT_DEFER;
        let due = match self.local_snapshot_step() {
            Some(step) => {
                // Not half an interval after the last one (a snapshot
                // installed just before): the next step then.
                let at_step = self.point.as_ref().is_some_and(|p| {
                    p.index().0.is_multiple_of(step)
                        && p.index().0 >= self.last_local_snapshot.0 + step / 2
                });
                (at_step && behind < every) || overdue
            }
            None => since >= every && (behind < every || overdue),
        };
        if !self.local_snapshot_building && due {
            self.local_snapshot_building = true;
            // The snapshot point when there is a new one (the bytes it
            // serves), else the present.
            let point = self.snapshot_point();
            let state = if point.index() > self.last_local_snapshot {
                point
            } else {
                &self.state
            };
            out.push(Output::BuildSnapshot {
                state: Box::new(state.clone()),
                save: true,
                chunk_bytes: self.cfg.catch_up.chunk_bytes,
            });
        }
    }

    /// The indexes local snapshots are taken at, the multiples of this,
    /// when the interval spans snapshot points (`None`: every interval
    /// from the last one, where it stands).
    fn local_snapshot_step(&self) -> Option<u64> {
        let every = self.cfg.local_snapshot_every;
        let point = self.cfg.catch_up.snapshot_point_every.max(1);
        (every >= point).then(|| every.div_ceil(point) * point)
    }

    /// A local snapshot was written: the log below it, less what is kept
    /// for lagging replicas, can go.
    pub(super) fn on_local_snapshot_saved(&mut self, index: EventIdx) {
        self.local_snapshot_building = false;
        self.metrics.local_snapshots_saved += 1;
        self.last_local_snapshot = index;
        let trailing =
            self.peers
                .applied_heard_within(self.cluster.as_ref(), self.now, TRAILING_HEARD);
        let floor = compaction_floor(index, self.cfg.log_retain, trailing);
        if let Err(e) = self.log.compact(floor) {
            tracing::warn!(error = %e, "log compaction failed");
        }
    }

    /// A State that arrived by snapshot replaces this node's own; the
    /// snapshot's bytes are saved and served as they came.
    pub(super) fn install_snapshot(
        &mut self,
        state: State,
        snap: EncodedSnapshot,
        out: &mut Vec<Output>,
    ) {
        if state.index() <= self.state.index() {
            return;
        }
        if let (Some(mine), Some(theirs)) = (&self.cluster, state.cluster_id()) {
            if mine != theirs {
                self.metrics.foreign_messages += 1;
                return;
            }
        }
        if self.storage.is_some() {
            // Taken again once the disk works: a log that cannot be
            // emptied would not fit the State.
            return;
        }
        let index = state.index();
        if self.raft.is_none() {
            if let Err(e) = self.log.reset(index.next()) {
                self.storage_failed(&e, out);
                return;
            }
        }
        tracing::info!(node = %self.cfg.node, index = %index, "installed snapshot");
        self.metrics.snapshots_installed += 1;
        self.point = Some(state.clone());
        self.state = state;
        self.worker.note_state_replaced();
        self.replicas_dirty = true;
        self.catch_up.installed(index);
        self.last_local_snapshot = index;
        self.local_snapshot_building = true;
        out.push(Output::SaveSnapshot { snap });
        out.push(Output::SnapshotInstalled { index });
        self.members_changed();
        if let Err(e) = self.sync_raft_membership() {
            self.fail(format!("could not start raft: {e}"), out);
            return;
        }
        let acts = self.pending.on_state_replaced(&self.state);
        self.run_pending(acts, out);
    }
}
