//! Leaving on purpose (`shoal leave`, SIGTERM): the node hands its runs
//! back, stops its replicas, has the master record `NodeLeft` (records it
//! itself as master), and hands leadership to the most caught-up alive
//! voter. A left voter's seat is filled without the grace period.

use super::io::Output;
use super::Node;
use crate::log_store::LogStore;
use crate::wire::Direct;
use shoal_model::{Event, Liveness, NodeId, Role};
use std::time::Duration;

/// How often a leaving node repeats its next step until it is done.
const LEAVE_STEP_EVERY: Duration = Duration::from_millis(500);

/// A node that is leaving: when it takes its next step.
#[derive(Debug)]
pub(super) struct Leaving {
    pub next_step: Duration,
}

impl<L: LogStore> Node<L> {
    pub(super) fn drain(&mut self, out: &mut Vec<Output>) {
        tracing::info!(node = %self.cfg.node, "leaving: handing back runs, replicas and leadership");
        self.leaving = Some(Leaving {
            next_step: self.now,
        });
        let acts = self.worker.drain();
        self.run_worker(acts, out);
        let acts = self.replicas.drain();
        self.run_replicas(acts, out);
    }

    /// After `Input::Drain`: every run handed back and reported, every
    /// replica stopped, the leave recorded in State, and leadership with
    /// another voter (or this node alone in its cluster).
    pub fn drained(&self) -> bool {
        let alone = self.alone() || self.no_voter_heard();
        self.worker.drained()
            && self.replicas.running() == 0
            && (alone || (self.left() && !self.is_master()))
    }

    /// Leaving, and no other voter heard within the node timeout: nobody
    /// can record the leave or take the lead (all nodes stopped at once,
    /// or this one is cut off), so waiting longer is for nothing; the
    /// others mark it dead when they come back.
    fn no_voter_heard(&self) -> bool {
        self.leaving.is_some()
            && self
                .state
                .members(Role::Voter)
                .into_iter()
                .all(|(_, n)| n == self.cfg.node || !self.peers.heard(&n, self.now))
    }

    fn alone(&self) -> bool {
        self.state
            .nodes()
            .iter()
            .all(|(n, i)| *n == self.cfg.node || i.liveness != Liveness::Alive)
    }

    /// Whether State records this node as gone (or never had it).
    fn left(&self) -> bool {
        self.state
            .nodes()
            .get(&self.cfg.node)
            .is_none_or(|n| n.liveness == Liveness::Left)
    }

    /// While leaving: ask the master to record it; as master, record it,
    /// then hand leadership to the most caught-up voter.
    pub(super) fn leave_step(&mut self, out: &mut Vec<Output>) {
        let Some(next_step) = self.leave_wake() else {
            return;
        };
        if self.now < next_step || self.alone() {
            return;
        }
        self.leaving = Some(Leaving {
            next_step: self.now + LEAVE_STEP_EVERY,
        });
        let recorded = self
            .state
            .nodes()
            .get(&self.cfg.node)
            .is_some_and(|n| n.liveness == Liveness::Left);
        if !self.is_master() {
            if let (false, Some(l)) = (recorded, self.master_view.id.clone()) {
                self.send(l, Direct::Leave, out);
            }
            return;
        }
        if !recorded {
            let me = self.cfg.node.clone();
            let _ = self.propose(&Event::NodeLeft { node: me });
            return;
        }
        let target = self
            .state
            .members(Role::Voter)
            .into_iter()
            .filter(|(_, n)| *n != self.cfg.node)
            .filter(|(_, n)| {
                self.state
                    .nodes()
                    .get(n)
                    .is_some_and(|i| i.liveness == Liveness::Alive)
            })
            .max_by_key(|(r, _)| self.raft.as_ref().and_then(|x| x.matched(*r)));
        if let (Some((rid, node)), Some(raft)) = (target, self.raft.as_mut()) {
            tracing::info!(to = %node, "handing leadership over");
            raft.transfer_leader(rid);
        }
    }

    /// A node tells the master it leaves.
    pub(super) fn on_leave(&mut self, from: NodeId) {
        let member = self
            .state
            .nodes()
            .get(&from)
            .is_some_and(|n| n.liveness != Liveness::Left);
        if self.is_master() && member {
            tracing::info!(node = %from, "a node leaves");
            let _ = self.propose(&Event::NodeLeft { node: from });
        }
    }

    /// When a leaving node takes its next step.
    pub(super) fn leave_wake(&self) -> Option<Duration> {
        self.leaving.as_ref().map(|l| l.next_step)
    }
}
