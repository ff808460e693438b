//! The Raft glue: a node runs a `RaftCore` while State makes it a voter or
//! a learner, steps Raft's messages into it, ticks it, and takes what it
//! commits into the ordered buffer. The master is whoever Raft says leads;
//! `sync_master_role` is the one place that creates and drops the master's
//! state when that changes.

use super::io::Output;
use super::master::MasterState;
use super::publish::Release;
use super::timers::Timer;
use super::{Node, StartError};
use crate::consensus::{RaftBase, RaftCore, RaftError, RaftOutput, Won};
use crate::log_store::LogStore;
use crate::wire::{Direct, Gossip, Refusal};
use rand::Rng;
use shoal_model::{LeaderReason, LogEntry, NodeId, RaftId, Role, State, Term};

/// Where a member's Raft log starts: State's index, term and membership.
pub(super) fn base_of(state: &State) -> RaftBase {
    let ids = |role| state.members(role).into_iter().map(|(r, _)| r).collect();
    RaftBase {
        index: state.index(),
        term: state.term(),
        voters: ids(Role::Voter),
        learners: ids(Role::Learner),
    }
}

/// Committed entries are broadcast in batches of at most this many bytes.
const BROADCAST_BATCH_BYTES: usize = 512 << 10;

impl<L: LogStore> Node<L> {
    pub fn is_master(&self) -> bool {
        self.raft.as_ref().is_some_and(|r| r.is_leader())
    }

    /// The master, with a quorum heard from within an election timeout: a
    /// master without one may already be replaced.
    pub(super) fn leads_with_quorum(&self) -> bool {
        self.raft
            .as_ref()
            .is_some_and(|r| r.is_leader() && r.quorum_recently_active())
    }

    /// The term this node knows: Raft's, or the one a follower heard.
    pub(super) fn term(&self) -> Term {
        self.raft
            .as_ref()
            .map_or(self.master_view.term, |r| r.term())
    }

    pub(super) fn start_raft(&mut self, id: RaftId, base: RaftBase) -> Result<(), StartError> {
        if self.storage.is_some() {
            // Started again once the disk takes writes (`storage`).
            return Ok(());
        }
        let seed = self.cfg.seed ^ (id.0 << 32) ^ self.rng.gen::<u32>() as u64;
        let core = RaftCore::start(
            id,
            self.cfg.raft,
            base,
            &mut self.log,
            seed,
            self.cfg.raft_tick,
        )?;
        self.raft = Some(core);
        self.timers.set(Timer::Raft, self.now);
        Ok(())
    }

    pub(super) fn stop_raft(&mut self) {
        self.raft = None;
        self.timers.cancel(Timer::Raft);
        self.sync_master_role();
    }

    /// Starts or stops the Raft core to match this node's role in State.
    pub(super) fn sync_raft_membership(&mut self) -> Result<(), StartError> {
        let Some(me) = self.state.nodes().get(&self.cfg.node).cloned() else {
            return Ok(());
        };
        match (me.role, self.raft.is_some()) {
            (Role::Voter | Role::Learner, false) => {
                let base = base_of(&self.state);
                self.start_raft(me.raft_id, base)?;
            }
            (Role::Follower, true) => {
                tracing::info!(node = %self.cfg.node, "left the voters; continuing as a follower");
                self.stop_raft();
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn refresh_raft_peers(&mut self) {
        self.raft_peers = self
            .state
            .nodes()
            .iter()
            .map(|(n, i)| (i.raft_id, n.clone()))
            .collect();
    }

    /// A Raft message from a member. From a sender that is not a member
    /// here (yet), or to a node not running Raft, it is dropped; Raft
    /// retries. One a correct member never sends is dropped and counted.
    pub(super) fn on_raft_message(&mut self, from: &NodeId, bytes: &[u8], out: &mut Vec<Output>) {
        let rid = self.state.nodes().get(from).map(|n| n.raft_id);
        let (Some(raft), Some(rid)) = (self.raft.as_mut(), rid) else {
            return;
        };
        match raft.step(rid, bytes, self.now) {
            Ok(()) => {}
            Err(RaftError::Poisoned(why)) => self.restart_raft(&why, out),
            Err(RaftError::NotMember(_)) => self.metrics.untrusted_messages += 1,
            Err(e) => {
                self.metrics.bad_messages += 1;
                tracing::warn!(from = %from, error = %e, "raft message dropped");
            }
        }
    }

    /// Starts Raft as the disk says this node takes part: a voter or
    /// learner in State, or the founder before its founding entry applied
    /// (its Raft log alone says it is the only voter).
    pub(super) fn start_raft_from_disk(&mut self) -> Result<(), StartError> {
        let founder_restart = self.cluster.is_some()
            && self.state.cluster_id().is_none()
            && self.log.membership().voters == vec![1];
        if founder_restart {
            let base = RaftBase {
                voters: vec![RaftId(1)],
                ..Default::default()
            };
            return self.start_raft(RaftId(1), base);
        }
        self.sync_raft_membership()
    }

    /// raft-rs failed inside: its memory cannot be trusted, its disk can.
    /// Start it again from the log, as after a crash of this process.
    fn restart_raft(&mut self, why: &str, out: &mut Vec<Output>) {
        tracing::error!(reason = %why, "raft failed; starting it again from the log");
        self.metrics.raft_restarts += 1;
        // The new core takes the log as durable: a write of the old one
        // may still wait for its fsync.
        if let Err(e) = self.log.sync() {
            return self.storage_failed(&e, out);
        }
        self.stop_raft();
        if let Err(e) = self.start_raft_from_disk() {
            self.fail(format!("could not start raft again: {e}"), out);
        }
    }

    /// Raft's tick. A master that has not heard from a majority cannot
    /// commit what waits here: it fails those commands now rather than at
    /// their time-out.
    pub(super) fn raft_tick(&mut self, out: &mut Vec<Output>) {
        let Some(r) = self.raft.as_mut() else {
            return;
        };
        if let Err(e) = r.tick(self.now) {
            self.restart_raft(&e.to_string(), out);
            return;
        }
        self.timers.set(Timer::Raft, self.now + self.cfg.raft_tick);
        let Some(r) = self.raft.as_ref() else {
            return;
        };
        if r.is_leader() && !r.quorum_recently_active() && !self.pending.is_empty() {
            let acts = self.pending.fail_all(Refusal::NoQuorum);
            self.run_pending(acts, out);
        }
    }

    /// Handles everything Raft has ready: messages out, committed entries
    /// into the buffer (and onto gossip, as master), leader changes.
    pub(super) fn drive_raft(&mut self, out: &mut Vec<Output>) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        let outputs = raft.drive(&mut self.log);
        self.raft_outputs(outputs, out);
    }

    /// A log fsync run off the loop (`Output::SyncLog`) ended: the log
    /// takes the outcome, then Raft, whose waiting answers may leave.
    pub(super) fn on_log_synced(
        &mut self,
        id: u64,
        result: std::io::Result<()>,
        out: &mut Vec<Output>,
    ) {
        if let Err(e) = self.log.synced(id, result) {
            self.metrics.proposals_refused += 1;
            return self.storage_failed(&e, out);
        }
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        let outputs = raft.persisted(id, &mut self.log);
        self.raft_outputs(outputs, out);
    }

    fn raft_outputs(&mut self, outputs: Result<Vec<RaftOutput>, RaftError>, out: &mut Vec<Output>) {
        let outputs = match outputs {
            Ok(o) => o,
            Err(RaftError::Poisoned(why)) => return self.restart_raft(&why, out),
            Err(RaftError::Log(e)) => {
                // Storage that cannot persist must not acknowledge: stop
                // taking part in Raft until it works again.
                self.metrics.proposals_refused += 1;
                return self.storage_failed(&e, out);
            }
            Err(e) => {
                tracing::error!(error = %e, "raft failed; leaving the voters");
                self.metrics.proposals_refused += 1;
                self.stop_raft();
                return;
            }
        };
        let Some(raft) = self.raft.as_ref() else {
            return;
        };
        let is_leader = raft.is_leader();
        for o in outputs {
            match o {
                RaftOutput::Sync(job) => out.push(Output::SyncLog(job)),
                RaftOutput::Send { to, msg } => match self.raft_peers.get(&to) {
                    Some(node) => self.send(node.clone(), Direct::Raft(msg), out),
                    None => tracing::debug!(raft_id = %to, "no node for raft id"),
                },
                RaftOutput::Committed(entries) => {
                    if is_leader {
                        self.broadcast_committed(&entries, out);
                    }
                    self.catch_up.offer(entries);
                }
                RaftOutput::SnapshotInstalled { index, .. } => self.catch_up.note_commit(index),
                RaftOutput::ReadReady { ctx, index } => self.on_read_ready(ctx, index, out),
                RaftOutput::LeaderChanged { leader, term, won } => {
                    self.metrics.leader_changes += 1;
                    self.master_view.id = leader.and_then(|r| self.raft_peers.get(&r).cloned());
                    let node = |r: RaftId| self.raft_peers.get(&r).cloned();
                    self.master_view.reason = won.map(|w| match w {
                        Won::HandedOver { from } => match node(from) {
                            Some(from) => LeaderReason::HandedOver { from },
                            None => LeaderReason::Elected { previous: None },
                        },
                        Won::Elected { previous } => LeaderReason::Elected {
                            previous: previous.and_then(node),
                        },
                    });
                    // The founder leads before State names anyone.
                    if leader == Some(RaftId(1)) && self.state.cluster_id().is_none() && is_leader {
                        self.master_view.id = Some(self.cfg.node.clone());
                        self.master_view.reason = Some(LeaderReason::Founded);
                    }
                    self.master_view.term = term;
                }
            }
        }
        self.sync_master_role();
        if !self.is_master() {
            // What it held as master goes out in the same turn it stops.
            self.publish_committed(true, out);
        }
    }

    /// Creates the master's state when this node starts leading and drops
    /// it when it stops: every term starts the master's clocks afresh.
    pub(super) fn sync_master_role(&mut self) {
        match (self.is_master(), self.master.is_some()) {
            (true, false) => {
                tracing::info!(node = %self.cfg.node, term = %self.term(), "became master");
                self.master = Some(MasterState::new(self.now));
                self.timers.set(Timer::Plan, self.now);
            }
            (false, true) => {
                self.master = None;
                self.timers.cancel(Timer::Plan);
            }
            _ => {}
        }
    }

    /// What the master committed goes to the other Raft members
    /// one-to-one (`Direct::Committed`) at once, and to the followers on
    /// gossip, paced (`publish`).
    fn broadcast_committed(&mut self, entries: &[LogEntry], out: &mut Vec<Output>) {
        let members: Vec<NodeId> = [Role::Voter, Role::Learner]
            .into_iter()
            .flat_map(|role| self.state.members(role))
            .map(|(_, n)| n)
            .collect();
        for batch in batches(entries) {
            for to in &members {
                self.send(to.clone(), Direct::Committed(batch.to_vec()), out);
            }
        }
        self.publish.hold(entries);
        self.publish_committed(false, out);
    }

    /// Gossips the commits held, if they are due (or `force`), else sets
    /// the timer for when they are.
    pub(super) fn publish_committed(&mut self, force: bool, out: &mut Vec<Output>) {
        match self.publish.release(self.now, force) {
            Release::Nothing => {}
            Release::At(at) => self.timers.set(Timer::Publish, at),
            Release::Now(entries) => {
                self.timers.cancel(Timer::Publish);
                for batch in batches(&entries) {
                    let frame = self.frame(Gossip::Committed(batch.to_vec()));
                    out.push(Output::Broadcast(frame));
                }
            }
        }
    }
}

/// `entries` cut into runs of at most `BROADCAST_BATCH_BYTES` (one entry
/// at least).
fn batches(entries: &[LogEntry]) -> impl Iterator<Item = &[LogEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|e| {
                bytes += e.size_hint();
                bytes <= BROADCAST_BATCH_BYTES
            })
            .count()
            .max(1);
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}
