//! Client commands waiting on this node. A command that passed admission
//! (`node::commands`) is forwarded to the master and answered when this
//! node's own replica applies it (so a reply means the write is visible
//! here), resent with the same id until then, and failed with a clear
//! reason when it cannot commit.

use crate::wire::{CommandReply, Refusal};
use shoal_model::{
    Command, CommandId, CommandResult, EventIdx, NodeId, Outcome, Rejection, RequestDigest, State,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// An opaque handle the shell uses to route a reply to its client.
pub type ReplyTo = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingAction {
    Forward(Command),
    Reply(ReplyTo, CommandReply),
}

#[derive(Clone, Copy, Debug)]
pub struct PendingConfig {
    pub max_waiting: usize,
    pub resend_every: Duration,
    /// With no master in sight for this long, a write fails `no quorum`.
    pub no_master_grace: Duration,
    pub timeout: Duration,
}

impl Default for PendingConfig {
    fn default() -> Self {
        PendingConfig {
            max_waiting: 10_000,
            resend_every: Duration::from_millis(500),
            // A write on the minority side of a partition is refused
            // within a second of its arrival: the master is out of sight
            // 900 ms after its last heartbeat (`master_in_sight`).
            no_master_grace: Duration::from_millis(800),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Waiting {
    cmd: Command,
    request: RequestDigest,
    replies: Vec<ReplyTo>,
    since: Duration,
    resend_at: Duration,
}

#[derive(Debug)]
pub struct PendingCommands {
    cfg: PendingConfig,
    waiting: BTreeMap<CommandId, Waiting>,
    /// No waiting command has anything due before this (a lower bound:
    /// `on_tick` makes it exact again).
    next_due: Option<Duration>,
    /// The live master last seen (`master_is`).
    master: Option<NodeId>,
}

impl PendingCommands {
    pub fn new(cfg: PendingConfig) -> Self {
        PendingCommands {
            cfg,
            waiting: BTreeMap::new(),
            next_due: None,
            master: None,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// A command admitted at this node: forward it, or join the clients
    /// already waiting for the same id.
    pub fn submit(&mut self, cmd: Command, reply: ReplyTo, now: Duration) -> Vec<PendingAction> {
        let request = RequestDigest::of(&cmd.op);
        if let Some(w) = self.waiting.get_mut(&cmd.id) {
            if w.request != request {
                let reused = Outcome::Rejected(Rejection::IdReused);
                return vec![PendingAction::Reply(reply, Ok((EventIdx::ZERO, reused)))];
            }
            w.replies.push(reply);
            return vec![];
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return vec![PendingAction::Reply(reply, Err(Refusal::Busy))];
        }
        self.waiting.insert(
            cmd.id.clone(),
            Waiting {
                cmd: cmd.clone(),
                request,
                replies: vec![reply],
                since: now,
                resend_at: now + self.cfg.resend_every,
            },
        );
        self.note_due(now + self.cfg.resend_every);
        vec![PendingAction::Forward(cmd)]
    }

    /// This node's replica applied a command.
    pub fn on_applied(&mut self, r: &CommandResult) -> Vec<PendingAction> {
        let Some(w) = self.waiting.remove(&r.id) else {
            return vec![];
        };
        // Another request applied under this id (sent through another node).
        let outcome = if w.request == r.request {
            r.outcome.clone()
        } else {
            Outcome::Rejected(Rejection::IdReused)
        };
        w.replies
            .into_iter()
            .map(|to| PendingAction::Reply(to, Ok((r.idx, outcome.clone()))))
            .collect()
    }

    /// State jumped (a snapshot): answer whatever it already holds.
    pub fn on_state_replaced(&mut self, state: &State) -> Vec<PendingAction> {
        let done: Vec<(CommandId, EventIdx, Outcome)> = self
            .waiting
            .iter()
            .filter_map(|(id, w)| {
                let (idx, outcome) = state.known(&w.cmd)?;
                Some((id.clone(), idx, outcome))
            })
            .collect();
        let mut out = Vec::new();
        for (id, idx, outcome) in done {
            let w = self.waiting.remove(&id).expect("listed above");
            out.extend(
                w.replies
                    .into_iter()
                    .map(|to| PendingAction::Reply(to, Ok((idx, outcome.clone())))),
            );
        }
        out
    }

    /// The master refused the command.
    pub fn on_refused(
        &mut self,
        id: &CommandId,
        refusal: Refusal,
        now: Duration,
    ) -> Vec<PendingAction> {
        match refusal {
            // Another node leads now, or soon: resend shortly.
            Refusal::NotMaster => {
                if let Some(w) = self.waiting.get_mut(id) {
                    w.resend_at = now + self.cfg.resend_every / 4;
                    let at = w.resend_at;
                    self.note_due(at);
                }
                vec![]
            }
            refusal => match self.waiting.remove(id) {
                Some(w) => w
                    .replies
                    .into_iter()
                    .map(|to| PendingAction::Reply(to, Err(refusal.clone())))
                    .collect(),
                None => vec![],
            },
        }
    }

    /// The live master this node sees now, if any. When a new one comes
    /// into sight (a failover), every waiting command is resent to it at
    /// once rather than at its next resend.
    pub fn master_is(&mut self, master: Option<&NodeId>, now: Duration) {
        if master.is_none() || master == self.master.as_ref() {
            return;
        }
        self.master = master.cloned();
        for w in self.waiting.values_mut() {
            w.resend_at = now;
        }
        if !self.waiting.is_empty() {
            self.note_due(now);
        }
    }

    /// Fails every waiting command (this master lost its quorum).
    pub fn fail_all(&mut self, why: Refusal) -> Vec<PendingAction> {
        std::mem::take(&mut self.waiting)
            .into_values()
            .flat_map(|w| {
                w.replies
                    .into_iter()
                    .map(|to| PendingAction::Reply(to, Err(why.clone())))
            })
            .collect()
    }

    fn note_due(&mut self, at: Duration) {
        self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
    }

    /// When `on_tick` next has something to do: a resend, or a command
    /// that times out (sooner while no master is known).
    pub fn next_wake(&self) -> Option<Duration> {
        self.next_due
    }

    /// Resends and time-outs. `master_known`: a live master is in sight.
    pub fn on_tick(&mut self, now: Duration, master_known: bool) -> Vec<PendingAction> {
        if self.next_due.is_none_or(|d| d > now) {
            return vec![];
        }
        let mut out = Vec::new();
        let cfg = self.cfg;
        let expired: Vec<CommandId> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                let age = now.saturating_sub(w.since);
                age >= cfg.timeout || (!master_known && age >= cfg.no_master_grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let w = self.waiting.remove(&id).expect("listed above");
            let why = if master_known {
                Refusal::Timeout
            } else {
                Refusal::NoQuorum
            };
            out.extend(
                w.replies
                    .into_iter()
                    .map(|to| PendingAction::Reply(to, Err(why.clone()))),
            );
        }
        if master_known {
            for w in self.waiting.values_mut() {
                if w.resend_at <= now {
                    w.resend_at = now + cfg.resend_every;
                    out.push(PendingAction::Forward(w.cmd.clone()));
                }
            }
        }
        // Without a master, resends wait; the grace period is what is due.
        self.next_due = self
            .waiting
            .values()
            .flat_map(|w| {
                let resend = if master_known {
                    w.resend_at
                } else {
                    now + cfg.resend_every
                };
                [resend, w.since + cfg.timeout, w.since + cfg.no_master_grace]
            })
            .filter(|t| *t > now)
            .min();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{EventIdx, Op, Outcome};

    fn cmd(id: &str) -> Command {
        Command {
            id: CommandId::from(id),
            op: Op::KvIncrBy {
                key: "k".into(),
                by: 1,
            },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waiters_are_answered_once_applied_and_retries_share_one_forward() {
        let mut r = PendingCommands::new(PendingConfig::default());
        assert_eq!(
            r.submit(cmd("a"), 1, ms(0)),
            vec![PendingAction::Forward(cmd("a"))]
        );
        assert!(r.submit(cmd("a"), 2, ms(10)).is_empty());
        let res = CommandResult {
            id: CommandId::from("a"),
            request: RequestDigest::of(&cmd("a").op),
            outcome: Outcome::Int(1),
            idx: EventIdx(4),
            duplicate: false,
        };
        let replies = r.on_applied(&res);
        assert_eq!(replies.len(), 2);
        assert!(replies.contains(&PendingAction::Reply(2, Ok((EventIdx(4), Outcome::Int(1))))));
        assert!(r.is_empty());
    }

    #[test]
    fn another_request_under_a_waiting_or_applied_id_is_refused() {
        let reused = Ok((EventIdx::ZERO, Outcome::Rejected(Rejection::IdReused)));
        let mut r = PendingCommands::new(PendingConfig::default());
        r.submit(cmd("a"), 1, ms(0));
        let mut other = cmd("a");
        other.op = Op::KvDelete { key: "k".into() };
        assert_eq!(
            r.submit(other.clone(), 2, ms(1)),
            vec![PendingAction::Reply(2, reused)]
        );
        // The id applied for another request (sent through another node).
        let res = CommandResult {
            id: CommandId::from("a"),
            request: RequestDigest::of(&other.op),
            outcome: Outcome::Done,
            idx: EventIdx(4),
            duplicate: false,
        };
        assert_eq!(
            r.on_applied(&res),
            vec![PendingAction::Reply(
                1,
                Ok((EventIdx(4), Outcome::Rejected(Rejection::IdReused)))
            )]
        );
    }

    #[test]
    fn resends_until_applied_and_fails_fast_without_a_master() {
        let mut r = PendingCommands::new(PendingConfig::default());
        r.submit(cmd("a"), 1, ms(0));
        assert_eq!(r.next_wake(), Some(ms(500)), "wakes for the resend");
        assert!(r.on_tick(ms(400), true).is_empty());
        assert_eq!(
            r.on_tick(ms(500), true),
            vec![PendingAction::Forward(cmd("a"))]
        );
        assert_eq!(
            r.next_wake(),
            Some(ms(800)),
            "the grace ends before the resend"
        );
        // No master for the grace period: `no quorum`.
        assert!(r.on_tick(ms(700), false).is_empty());
        assert_eq!(r.next_wake(), Some(ms(800)), "wakes when the grace ends");
        assert_eq!(
            r.on_tick(ms(800), false),
            vec![PendingAction::Reply(1, Err(Refusal::NoQuorum))]
        );
        r.submit(cmd("b"), 2, ms(0));
        assert_eq!(
            r.on_refused(&CommandId::from("b"), Refusal::NoQuorum, ms(1)),
            vec![PendingAction::Reply(2, Err(Refusal::NoQuorum))]
        );
    }

    #[test]
    fn a_new_master_in_sight_gets_every_waiting_command_at_once() {
        let mut r = PendingCommands::new(PendingConfig::default());
        let (m1, m2) = (NodeId::from("m1"), NodeId::from("m2"));
        r.master_is(Some(&m1), ms(0));
        r.submit(cmd("a"), 1, ms(0));
        r.submit(cmd("b"), 2, ms(0));
        r.master_is(Some(&m1), ms(100));
        assert!(
            r.on_tick(ms(100), true).is_empty(),
            "same master: no resend"
        );
        r.master_is(None, ms(200));
        r.master_is(Some(&m2), ms(300));
        assert_eq!(r.next_wake(), Some(ms(300)));
        assert_eq!(
            r.on_tick(ms(300), true),
            vec![
                PendingAction::Forward(cmd("a")),
                PendingAction::Forward(cmd("b"))
            ]
        );
    }
}
