//! Client commands waiting on this node. A command is forwarded to the
//! master and answered when this node's own replica applies it (so a reply
//! means the write is visible here), resent with the same id until then,
//! and failed with a clear reason when it cannot commit.

use crate::wire::{CommandReply, Refusal};
use shoal_model::{validate_op, Command, CommandId, CommandResult, State};
use std::collections::BTreeMap;
use std::time::Duration;

/// An opaque handle the shell uses to route a reply to its client.
pub type ReplyTo = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAction {
    Forward(Command),
    Reply(ReplyTo, CommandReply),
}

#[derive(Clone, Copy, Debug)]
pub struct RequestConfig {
    pub max_waiting: usize,
    pub resend_every: Duration,
    /// With no master in sight for this long, a write fails `no quorum`.
    pub no_master_grace: Duration,
    pub timeout: Duration,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            max_waiting: 10_000,
            resend_every: Duration::from_millis(500),
            no_master_grace: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Waiting {
    cmd: Command,
    replies: Vec<ReplyTo>,
    since: Duration,
    resend_at: Duration,
}

#[derive(Debug)]
pub struct Requests {
    cfg: RequestConfig,
    waiting: BTreeMap<CommandId, Waiting>,
}

impl Requests {
    pub fn new(cfg: RequestConfig) -> Self {
        Requests {
            cfg,
            waiting: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn submit(
        &mut self,
        cmd: Command,
        reply: ReplyTo,
        state: &State,
        now: Duration,
    ) -> Vec<RequestAction> {
        if let Some(rec) = state.outcome(&cmd.id) {
            return vec![RequestAction::Reply(
                reply,
                Ok((rec.idx, rec.outcome.clone())),
            )];
        }
        if let Err(reason) = validate_op(&cmd.op) {
            return vec![RequestAction::Reply(reply, Err(Refusal::Invalid(reason)))];
        }
        if let Some(w) = self.waiting.get_mut(&cmd.id) {
            w.replies.push(reply);
            return vec![];
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return vec![RequestAction::Reply(reply, Err(Refusal::Busy))];
        }
        self.waiting.insert(
            cmd.id.clone(),
            Waiting {
                cmd: cmd.clone(),
                replies: vec![reply],
                since: now,
                resend_at: now + self.cfg.resend_every,
            },
        );
        vec![RequestAction::Forward(cmd)]
    }

    /// This node's replica applied a command.
    pub fn on_applied(&mut self, r: &CommandResult) -> Vec<RequestAction> {
        match self.waiting.remove(&r.id) {
            Some(w) => w
                .replies
                .into_iter()
                .map(|to| RequestAction::Reply(to, Ok((r.idx, r.outcome.clone()))))
                .collect(),
            None => vec![],
        }
    }

    /// State jumped (a snapshot): answer whatever it already holds.
    pub fn on_state_replaced(&mut self, state: &State) -> Vec<RequestAction> {
        let done: Vec<CommandId> = self
            .waiting
            .keys()
            .filter(|id| state.outcome(id).is_some())
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in done {
            let rec = state.outcome(&id).expect("filtered above");
            let w = self.waiting.remove(&id).expect("filtered above");
            out.extend(
                w.replies
                    .into_iter()
                    .map(|to| RequestAction::Reply(to, Ok((rec.idx, rec.outcome.clone())))),
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
    ) -> Vec<RequestAction> {
        match refusal {
            // Another node leads now, or soon: resend shortly.
            Refusal::NotMaster => {
                if let Some(w) = self.waiting.get_mut(id) {
                    w.resend_at = now + self.cfg.resend_every / 4;
                }
                vec![]
            }
            refusal => match self.waiting.remove(id) {
                Some(w) => w
                    .replies
                    .into_iter()
                    .map(|to| RequestAction::Reply(to, Err(refusal.clone())))
                    .collect(),
                None => vec![],
            },
        }
    }

    /// Fails every waiting command (this master lost its quorum).
    pub fn fail_all(&mut self, why: Refusal) -> Vec<RequestAction> {
        std::mem::take(&mut self.waiting)
            .into_values()
            .flat_map(|w| {
                w.replies
                    .into_iter()
                    .map(|to| RequestAction::Reply(to, Err(why.clone())))
            })
            .collect()
    }

    /// Resends and time-outs. `master_since` is how long a master has been
    /// known (None: none is).
    pub fn on_tick(&mut self, now: Duration, master_known: bool) -> Vec<RequestAction> {
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
                    .map(|to| RequestAction::Reply(to, Err(why.clone()))),
            );
        }
        if master_known {
            for w in self.waiting.values_mut() {
                if w.resend_at <= now {
                    w.resend_at = now + cfg.resend_every;
                    out.push(RequestAction::Forward(w.cmd.clone()));
                }
            }
        }
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
        let s = State::new();
        let mut r = Requests::new(RequestConfig::default());
        assert_eq!(
            r.submit(cmd("a"), 1, &s, ms(0)),
            vec![RequestAction::Forward(cmd("a"))]
        );
        assert!(r.submit(cmd("a"), 2, &s, ms(10)).is_empty());
        let res = CommandResult {
            id: CommandId::from("a"),
            outcome: Outcome::Int(1),
            idx: EventIdx(4),
            duplicate: false,
        };
        let replies = r.on_applied(&res);
        assert_eq!(replies.len(), 2);
        assert!(replies.contains(&RequestAction::Reply(2, Ok((EventIdx(4), Outcome::Int(1))))));
        assert!(r.is_empty());
    }

    #[test]
    fn resends_until_applied_and_fails_fast_without_a_master() {
        let s = State::new();
        let mut r = Requests::new(RequestConfig::default());
        r.submit(cmd("a"), 1, &s, ms(0));
        assert!(r.on_tick(ms(400), true).is_empty());
        assert_eq!(
            r.on_tick(ms(500), true),
            vec![RequestAction::Forward(cmd("a"))]
        );
        // No master for the grace period: `no quorum`.
        assert!(r.on_tick(ms(4900), false).is_empty());
        assert_eq!(
            r.on_tick(ms(5000), false),
            vec![RequestAction::Reply(1, Err(Refusal::NoQuorum))]
        );
        r.submit(cmd("b"), 2, &s, ms(0));
        assert_eq!(
            r.on_refused(&CommandId::from("b"), Refusal::NoQuorum, ms(1)),
            vec![RequestAction::Reply(2, Err(Refusal::NoQuorum))]
        );
    }
}
