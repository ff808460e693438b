//! One Raft ready: what it writes goes to the log, what may leave is
//! sent, what committed is handed out.

use super::entries::{membership_of, to_log_entry};
use super::{RaftCore, RaftError, RaftOutput};
use crate::log_store::LogStore;
use shoal_log::HardState;
use shoal_model::{EventIdx, LogEntry, RaftId, Term};

impl RaftCore {
    pub(super) fn handle_ready(
        &mut self,
        log: &mut dyn LogStore,
        out: &mut Vec<RaftOutput>,
    ) -> Result<(), RaftError> {
        if self.is_leader() && !self.led && self.durable.pending() {
            // A sole voter can win at once, with its own writes of the
            // last term not yet durable; raft-rs takes leadership only
            // from a durable log.
            log.sync()?;
            let (upto, msgs) = self.durable.all_durable();
            self.raw.on_persist_ready(upto);
            self.sends(msgs, out);
        }
        self.led = self.is_leader();
        let mut rd = self.raw.ready();
        let number = rd.number();
        if let Some(ss) = rd.ss() {
            if ss.leader_id != self.leader {
                self.leader = ss.leader_id;
                out.push(RaftOutput::LeaderChanged {
                    leader: (ss.leader_id != 0).then_some(RaftId(ss.leader_id)),
                    term: Term(self.raw.raft.term),
                    won: self.why_won(ss.leader_id),
                });
            }
        }
        for rs in rd.take_read_states() {
            if let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                out.push(RaftOutput::ReadReady {
                    ctx: u64::from_be_bytes(ctx),
                    index: EventIdx(rs.index),
                });
            }
        }
        // A leader sends before persisting (Raft thesis 10.2.1).
        self.sends(rd.take_messages(), out);
        let snapshot = !rd.snapshot().is_empty();
        if snapshot {
            let snap = rd.snapshot().clone();
            let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
            let cs = snap.get_metadata().get_conf_state().clone();
            self.raw.mut_store().wl().apply_snapshot(snap)?;
            log.reset(EventIdx(index + 1))?;
            log.set_membership(membership_of(&cs))?;
            out.push(RaftOutput::SnapshotInstalled {
                index: EventIdx(index),
                term: Term(term),
            });
        }
        let committed = rd.take_committed_entries();
        self.commit(committed, log, out)?;
        let wrote = rd.must_sync() || !rd.entries().is_empty();
        if !rd.entries().is_empty() {
            let ents: Vec<LogEntry> = rd.entries().iter().map(to_log_entry).collect();
            log.append(&ents)?;
            self.raw.mut_store().wl().append(rd.entries())?;
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().wl().set_hardstate(hs.clone());
            log.set_hard_state(HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            })?;
        }
        let msgs = rd.take_persisted_messages();
        self.raw.advance_append_async(rd);
        let now = self.durable.handled(number, wrote, msgs);
        self.sends(now, out);
        if snapshot {
            // Rare: make this ready durable here rather than off the loop.
            log.sync()?;
            let (upto, msgs) = self.durable.all_durable();
            self.raw.on_persist_ready(upto);
            self.sends(msgs, out);
        }
        self.raw.advance_apply();
        Ok(())
    }
}
