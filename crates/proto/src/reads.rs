//! Consistent reads without a log entry: Raft's ReadIndex.
//!
//! A consistent read needs an index that every write committed before the
//! read began is at or below; the reader then waits until its own replica
//! has applied that index. The master learns one by asking Raft: Raft
//! notes its commit index, confirms with a heartbeat round that a majority
//! still follows it (so no newer master can have committed past it), and
//! answers. Reads share rounds: one round is in flight at a time, and every
//! read that arrives meanwhile waits for the next one, so a burst of reads
//! costs one heartbeat round, not one each (etcd's linearizable read loop).
//!
//! A follower asks the master (`Direct::ReadIndex`) on behalf of its
//! readers, the same way: one ask in flight, the reads that arrive
//! meanwhile go in the next. It asks again (the new master, or after a
//! silence) until their deadline. A master that stops leading hands its
//! own readers over to the follower side and refuses the ones it was
//! asked for, so that they ask the new master.
//!
//! Pure and deterministic: the node core feeds it events and time and
//! performs the `ReadAction`s it answers.

use crate::pending::ReplyTo;
use crate::wire::Refusal;
use shoal_model::{EventIdx, NodeId};
use std::time::Duration;

/// How long a read may wait for its index before it is refused with
/// `NoQuorum`: a master that cannot reach a majority confirms nothing.
pub const READ_WAIT: Duration = Duration::from_secs(1);
/// A round not confirmed within this is dropped and its reads go in the
/// next one (Raft drops a read it cannot serve yet without a word).
pub const ROUND_RETRY: Duration = Duration::from_millis(300);
/// A follower asks the master again after this long without an answer.
pub const ASK_AGAIN: Duration = Duration::from_millis(300);
/// Reads waiting at once, on either side; one more is refused `Busy`.
pub const MAX_READS: usize = 16_384;

/// Who waits for a read index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    /// A client of this node.
    Local(ReplyTo),
    /// A follower's reader, by the id the follower gave it.
    Remote { node: NodeId, id: u64 },
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadAction {
    /// Master: start a ReadIndex round under this context.
    Round(u64),
    /// Follower: ask the master for a read index.
    Ask { to: NodeId, id: u64 },
    /// A reader's answer: the index to wait for, or why there is none.
    Answer(Reader, Result<EventIdx, Refusal>),
}

/// What the node knows when it calls in.
#[derive(Clone, Debug, Default)]
pub struct ReadView {
    /// This node leads Raft.
    pub leading: bool,
    /// Raft can serve a read now (its leader committed in its term).
    pub can_read: bool,
    /// The master this node believes in, if another node.
    pub master: Option<NodeId>,
}

#[derive(Debug)]
struct Waiting {
    reader: Reader,
    deadline: Duration,
}

#[derive(Debug)]
struct Round {
    ctx: u64,
    started: Duration,
    readers: Vec<Waiting>,
}

/// A follower's question to the master, for the readers it carries.
#[derive(Debug)]
struct Ask {
    id: u64,
    to: NodeId,
    sent: Duration,
    readers: Vec<Waiting>,
}

#[derive(Debug, Default)]
pub struct Reads {
    /// Round contexts and ask ids, never reused.
    next: u64,
    /// Master: reads for the next round, and the round in flight.
    queued: Vec<Waiting>,
    round: Option<Round>,
    /// Follower: this node's reads for the next ask, and the ask in
    /// flight (the same sharing as the master's rounds).
    unasked: Vec<Waiting>,
    ask: Option<Ask>,
    /// The master that last said it no longer leads, and when: it is not
    /// asked again until `ASK_AGAIN` has passed.
    refused_by: Option<(NodeId, Duration)>,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
            && self.round.is_none()
            && self.unasked.is_empty()
            && self.ask.is_none()
    }

    fn waiting(&self) -> usize {
        self.queued.len()
            + self.round.as_ref().map_or(0, |r| r.readers.len())
            + self.unasked.len()
            + self.ask.as_ref().map_or(0, |a| a.readers.len())
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A client of this node asks for a read index.
    pub fn read(&mut self, reply: ReplyTo, now: Duration, view: &ReadView) -> Vec<ReadAction> {
        self.enqueue(Reader::Local(reply), now, view)
    }

    /// A follower asks this node (as master) for a read index.
    pub fn asked_by(
        &mut self,
        node: NodeId,
        id: u64,
        now: Duration,
        view: &ReadView,
    ) -> Vec<ReadAction> {
        let reader = Reader::Remote { node, id };
        if !view.leading {
            return vec![ReadAction::Answer(reader, Err(Refusal::NotMaster))];
        }
        self.enqueue(reader, now, view)
    }

    fn enqueue(&mut self, reader: Reader, now: Duration, view: &ReadView) -> Vec<ReadAction> {
        if self.waiting() >= MAX_READS {
            return vec![ReadAction::Answer(reader, Err(Refusal::Busy))];
        }
        let w = Waiting {
            reader,
            deadline: now + READ_WAIT,
        };
        if view.leading {
            self.queued.push(w);
        } else {
            self.unasked.push(w);
        }
        self.tick(now, view)
    }

    /// Raft confirmed round `ctx` at `index`.
    pub fn ready(
        &mut self,
        ctx: u64,
        index: EventIdx,
        now: Duration,
        view: &ReadView,
    ) -> Vec<ReadAction> {
        let mut acts = Vec::new();
        if let Some(round) = self.round.take_if(|r| r.ctx == ctx) {
            acts.extend(answer(round.readers, Ok(index)));
        }
        acts.extend(self.tick(now, view));
        acts
    }

    /// The master answered this node's ask `id`. An answer from a node it
    /// was not sent to is ignored and reported (false); a late answer to
    /// an earlier ask is ignored.
    pub fn answered(
        &mut self,
        from: &NodeId,
        id: u64,
        result: Result<EventIdx, Refusal>,
        now: Duration,
    ) -> (bool, Vec<ReadAction>) {
        let Some(ask) = self.ask.take_if(|a| a.id == id) else {
            return (true, Vec::new());
        };
        if ask.to != *from {
            self.ask = Some(ask);
            return (false, Vec::new());
        }
        match result {
            // It no longer leads: ask the next master this node hears of,
            // or this one again after a while.
            Err(Refusal::NotMaster) => {
                self.refused_by = Some((from.clone(), now));
                let mut readers = ask.readers;
                readers.append(&mut self.unasked);
                self.unasked = readers;
                (true, Vec::new())
            }
            result => (true, answer(ask.readers, result)),
        }
    }

    /// Rounds and asks to start, reads to hand over, ask again or refuse.
    pub fn tick(&mut self, now: Duration, view: &ReadView) -> Vec<ReadAction> {
        let mut acts = Vec::new();
        if view.leading {
            // Became master: this node's own reads wait for rounds here.
            let asked = self.ask.take().map(|a| a.readers).unwrap_or_default();
            self.queued.extend(asked);
            self.queued.append(&mut self.unasked);
        } else {
            self.step_down(&mut acts);
        }
        // A round or an ask unanswered for long is dropped; its reads go
        // in the next one.
        if let Some(r) = self.round.take_if(|r| now >= r.started + ROUND_RETRY) {
            requeue(&mut self.queued, r.readers);
        }
        let stale = |a: &Ask| now >= a.sent + ASK_AGAIN || view.master.as_ref() != Some(&a.to);
        if let Some(a) = self.ask.take_if(|a| stale(a)) {
            requeue(&mut self.unasked, a.readers);
        }
        let in_round = self.round.as_mut().map(|r| &mut r.readers);
        let in_ask = self.ask.as_mut().map(|a| &mut a.readers);
        for readers in [
            Some(&mut self.queued),
            Some(&mut self.unasked),
            in_round,
            in_ask,
        ]
        .into_iter()
        .flatten()
        {
            let (late, kept) = std::mem::take(readers)
                .into_iter()
                .partition(|w| now >= w.deadline);
            *readers = kept;
            acts.extend(answer(late, Err(Refusal::NoQuorum)));
        }
        if view.leading && view.can_read && self.round.is_none() && !self.queued.is_empty() {
            let ctx = self.next_id();
            self.round = Some(Round {
                ctx,
                started: now,
                readers: std::mem::take(&mut self.queued),
            });
            acts.push(ReadAction::Round(ctx));
        }
        self.maybe_ask(now, view, &mut acts);
        acts
    }

    /// Not leading: followers' reads are told to ask the new master; this
    /// node's own go to the follower side.
    fn step_down(&mut self, acts: &mut Vec<ReadAction>) {
        let mut readers: Vec<Waiting> = self.round.take().map(|r| r.readers).unwrap_or_default();
        readers.append(&mut self.queued);
        for w in readers {
            match w.reader {
                Reader::Local(_) => self.unasked.push(w),
                remote => acts.push(ReadAction::Answer(remote, Err(Refusal::NotMaster))),
            }
        }
    }

    fn maybe_ask(&mut self, now: Duration, view: &ReadView, acts: &mut Vec<ReadAction>) {
        if self.ask.is_some() || self.unasked.is_empty() || view.leading {
            return;
        }
        let Some(master) = view.master.clone() else {
            return;
        };
        let refused = self
            .refused_by
            .as_ref()
            .is_some_and(|(m, at)| *m == master && now < *at + ASK_AGAIN);
        if refused {
            return;
        }
        let id = self.next_id();
        acts.push(ReadAction::Ask {
            to: master.clone(),
            id,
        });
        self.ask = Some(Ask {
            id,
            to: master,
            sent: now,
            readers: std::mem::take(&mut self.unasked),
        });
    }

    /// The next time a deadline, retry or ask is due.
    pub fn next_wake(&self) -> Option<Duration> {
        let round = self.round.as_ref().map(|r| r.started + ROUND_RETRY);
        let ask = self.ask.as_ref().map(|a| a.sent + ASK_AGAIN);
        let refused = self
            .refused_by
            .as_ref()
            .filter(|_| !self.unasked.is_empty())
            .map(|(_, at)| *at + ASK_AGAIN);
        let in_round = self.round.iter().flat_map(|r| &r.readers);
        let in_ask = self.ask.iter().flat_map(|a| &a.readers);
        let deadline = self
            .queued
            .iter()
            .chain(&self.unasked)
            .chain(in_round)
            .chain(in_ask)
            .map(|w| w.deadline)
            .min();
        [round, ask, refused, deadline].into_iter().flatten().min()
    }
}

/// Readers whose round or ask was dropped go first in the next one.
fn requeue(queue: &mut Vec<Waiting>, mut readers: Vec<Waiting>) {
    readers.append(queue);
    *queue = readers;
}

fn answer(readers: Vec<Waiting>, result: Result<EventIdx, Refusal>) -> Vec<ReadAction> {
    readers
        .into_iter()
        .map(|w| ReadAction::Answer(w.reader, result.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
