//! Client commands: admission, routing to the master, and the answer.
//!
//! A command is admitted once, by `admit`, wherever it enters: at the node
//! whose client sent it, and again at the master (State may have moved on
//! since). A command whose id State already holds gets its stored outcome
//! (invariant 7); an invalid one is refused before it reaches the log.
//! The receiving node waits for it (`PendingCommands`) and answers when its
//! own replica applies it; the master sequences it into a proposal.

use super::io::Output;
use super::Node;
use crate::log_store::LogStore;
use crate::pending::{PendingAction, ReplyTo};
use crate::sequencer::Sequenced;
use crate::wire::{Direct, Refusal};
use shoal_model::{validate_op, Command, CommandId, EventIdx, NodeId, Outcome, State};

/// What admission decides for a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Applied before: this is what it returned.
    Known { idx: EventIdx, outcome: Outcome },
    /// Refused at the edge: it would never apply.
    Invalid(String),
    /// To be committed.
    New,
}

/// The one admission rule, for every place a command enters.
pub fn admit(cmd: &Command, state: &State) -> Admission {
    if let Some((idx, outcome)) = state.known(cmd) {
        return Admission::Known { idx, outcome };
    }
    match validate_op(&cmd.op) {
        Ok(()) => Admission::New,
        Err(reason) => Admission::Invalid(reason),
    }
}

impl<L: LogStore> Node<L> {
    /// A client of this node submits a command.
    pub(super) fn submit(&mut self, cmd: Command, reply: ReplyTo, out: &mut Vec<Output>) {
        if let Some(reason) = self.storage_fault() {
            let refusal = Refusal::Storage(reason.to_owned());
            return self.run_pending(vec![PendingAction::Reply(reply, Err(refusal))], out);
        }
        let acts = match admit(&cmd, &self.state) {
            Admission::Known { idx, outcome } => {
                vec![PendingAction::Reply(reply, Ok((idx, outcome)))]
            }
            Admission::Invalid(reason) => {
                vec![PendingAction::Reply(reply, Err(Refusal::Invalid(reason)))]
            }
            Admission::New => self.pending.submit(cmd, reply, self.now),
        };
        self.run_pending(acts, out);
    }

    pub(super) fn run_pending(&mut self, acts: Vec<PendingAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                PendingAction::Reply(to, reply) => out.push(Output::Reply { to, reply }),
                PendingAction::Forward(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    /// Resends and time-outs of waiting commands.
    pub(super) fn tick_pending(&mut self, out: &mut Vec<Output>) {
        let master_known = self.master_in_sight();
        let master = self.master_view.id.as_ref().filter(|_| master_known);
        self.pending.master_is(master, self.now);
        if self.pending.next_wake().is_none_or(|t| t > self.now) {
            return;
        }
        let acts = self.pending.on_tick(self.now, master_known);
        self.run_pending(acts, out);
    }

    /// Routes a command to the sequencer: here if this node is the master,
    /// else to the master. `origin` is the node that forwarded it (None:
    /// this node's own client, a report of this node's runs).
    pub(super) fn sequence(&mut self, cmd: Command, origin: Option<NodeId>, out: &mut Vec<Output>) {
        if !self.is_master() {
            match (origin, self.master_view.id.clone()) {
                (Some(o), _) => self.refuse(cmd.id, Refusal::NotMaster, Some(o), out),
                (None, Some(l)) if l != self.cfg.node => self.send(l, Direct::Forward(cmd), out),
                (None, _) => {}
            }
            return;
        }
        let refusal = match admit(&cmd, &self.state) {
            // The sender learns the outcome from its own replica.
            Admission::Known { .. } => None,
            Admission::Invalid(reason) => Some(Refusal::Invalid(reason)),
            Admission::New => self.propose_command(&cmd),
        };
        if let Some(reason) = refusal {
            self.refuse(cmd.id, reason, origin, out);
        }
    }

    fn propose_command(&mut self, cmd: &Command) -> Option<Refusal> {
        let (Some(m), Some(raft)) = (self.master.as_mut(), self.raft.as_mut()) else {
            return Some(Refusal::NotMaster);
        };
        match m.sequencer.submit(cmd, self.wall_ms, self.now) {
            Sequenced::InFlight => None,
            Sequenced::Refused(r) => Some(r),
            Sequenced::Propose(data) => match raft.propose(data) {
                Ok(()) => None,
                Err(r) => {
                    m.sequencer.not_proposed(&cmd.id);
                    self.metrics.proposals_refused += 1;
                    Some(r)
                }
            },
        }
    }

    fn refuse(
        &mut self,
        id: CommandId,
        reason: Refusal,
        origin: Option<NodeId>,
        out: &mut Vec<Output>,
    ) {
        match origin {
            Some(o) => self.send(o, Direct::ForwardRefused { id, reason }, out),
            None => {
                let acts = self.pending.on_refused(&id, reason, self.now);
                self.run_pending(acts, out);
            }
        }
    }

    /// The master refused a command this node forwarded. Only the node it
    /// was forwarded to (the master it believes in) can refuse it.
    pub(super) fn on_forward_refused(
        &mut self,
        from: &NodeId,
        id: CommandId,
        reason: Refusal,
        out: &mut Vec<Output>,
    ) {
        if self.master_view.id.as_ref() != Some(from) {
            self.metrics.untrusted_messages += 1;
            return;
        }
        let acts = self.pending.on_refused(&id, reason, self.now);
        self.run_pending(acts, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{Envelope, Event, Op, Term};

    fn set(id: &str, key: &str) -> Command {
        Command {
            id: CommandId::from(id),
            op: Op::KvSet {
                key: key.into(),
                value: "v".into(),
            },
        }
    }

    #[test]
    fn a_known_id_gets_its_outcome_an_invalid_command_a_reason() {
        let mut s = State::new();
        assert_eq!(admit(&set("a", "k"), &s), Admission::New);
        assert!(matches!(admit(&set("b", ""), &s), Admission::Invalid(_)));
        s.apply(&Envelope {
            idx: EventIdx(1),
            term: Term(1),
            event: Event::Command {
                cmd: set("a", "k"),
                at_ms: 0,
            },
        })
        .unwrap();
        assert_eq!(
            admit(&set("a", "k"), &s),
            Admission::Known {
                idx: EventIdx(1),
                outcome: Outcome::Done
            }
        );
    }
}
