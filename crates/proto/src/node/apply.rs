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
use shoal_model::{Envelope, Event, EventIdx, LogEntry, Op, State};

/// Bytes read from the log per batch while replaying it at start.
const REPLAY_BATCH_BYTES: usize = 8 << 20;

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
    pub(super) fn apply_ready(&mut self, out: &mut Vec<Output>) -> bool {
        let member = self.raft.is_some();
        let mut applied_any = false;
        let mut to_persist = Vec::new();
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
            applied_any = true;
            self.metrics.events_applied += 1;
            self.note_snapshot_point();
            // Raft writes a member's log; an entry that reached a member
            // by gossip ahead of Raft is kept too, so that it survives a
            // demotion or restart.
            if !member || entry.idx > self.log.last_index() {
                to_persist.push(entry);
            }
            membership_changed |= self.after_apply(&env);
            if let Some(result) = applied.command {
                let acts = self.pending.on_applied(&result);
                self.run_pending(acts, out);
            }
        }
        if !to_persist.is_empty() {
            if let Err(e) = self.persist_applied(to_persist, member) {
                self.storage_failed(&e, out);
            }
        }
        if membership_changed {
            self.members_changed();
            if let Err(e) = self.sync_raft_membership() {
                self.fail(format!("could not start raft: {e}"), out);
            }
        }
        if applied_any {
            self.catch_up.on_applied();
            self.maybe_local_snapshot(out);
        }
        applied_any
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

    /// A follower keeps the committed entries it applied, so that it can
    /// restart from its own disk and serve ranges to others.
    fn persist_applied(
        &mut self,
        mut entries: Vec<LogEntry>,
        member: bool,
    ) -> Result<(), shoal_log::LogError> {
        if member {
            // Never reset or overwrite Raft's log: only extend it.
            entries.retain(|e| e.idx > self.log.last_index());
            let next = self.log.last_index().next();
            let run = entries
                .iter()
                .enumerate()
                .take_while(|(i, e)| e.idx.0 == next.0 + *i as u64)
                .count();
            entries.truncate(run);
            if entries.is_empty() {
                return Ok(());
            }
        }
        let first = entries[0].idx;
        let last = entries[entries.len() - 1].idx;
        if self.log.last_index().next() < first || self.log.first_index() > first {
            self.log.reset(first)?;
        }
        let mut skip = 0;
        if first <= self.log.last_index() {
            // Entries already held (a former voter's log): keep those that
            // match, replace from the first that differs.
            let held = self
                .log
                .read(first, self.log.last_index().min(last), usize::MAX)?;
            skip = held
                .iter()
                .zip(&entries)
                .take_while(|(a, b)| a.term == b.term)
                .count();
        }
        if skip < entries.len() {
            self.log.append(&entries[skip..])?;
        }
        let hs = self.log.hard_state();
        self.log.set_hard_state(HardState {
            commit: last.0,
            ..hs
        })?;
        self.log.sync()
    }

    /// Every `local_snapshot_every` events, State at the snapshot point is
    /// saved to disk (built off the loop; the same bytes it serves) and the
    /// log compacted below it. A node catching up from far behind waits
    /// until it is near the commit: an encode on the way would compete with
    /// applying for the CPU, and be stale at once.
    /// It waits at most `LOCAL_SNAPSHOT_DEFER` intervals, so its log stays
    /// bounded however long it trails.
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
        let due = since >= every && (behind < every || since >= every * LOCAL_SNAPSHOT_DEFER);
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

    /// A local snapshot was written: the log below it, less what is kept
    /// for lagging replicas, can go.
    pub(super) fn on_local_snapshot_saved(&mut self, index: EventIdx) {
        self.local_snapshot_building = false;
        self.metrics.local_snapshots_saved += 1;
        self.last_local_snapshot = index;
        let floor = EventIdx(index.0.saturating_sub(self.cfg.log_retain) + 1);
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
        let index = state.index();
        tracing::info!(node = %self.cfg.node, index = %index, "installed snapshot");
        self.metrics.snapshots_installed += 1;
        self.point = Some(state.clone());
        self.state = state;
        self.worker.note_state_replaced();
        self.replicas_dirty = true;
        self.catch_up.installed(index);
        if self.raft.is_none() {
            if let Err(e) = self.log.reset(index.next()) {
                self.fail(format!("could not reset the log: {e}"), out);
                return;
            }
        }
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
