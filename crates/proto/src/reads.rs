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
//! A follower's reader asks the master (`Direct::ReadIndex`) and waits for
//! the index, asking again (the new master, or after a silence) until its
//! deadline. A master that stops leading hands its own readers over to
//! the follower side and refuses the ones it was asked for, so that they
//! ask the new master.
//!
//! Pure and deterministic: the node core feeds it events and time and
//! performs the `ReadAction`s it answers.

use crate::pending::ReplyTo;
use crate::wire::Refusal;
use shoal_model::{EventIdx, NodeId};
use std::collections::BTreeMap;
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

/// A follower's reader, waiting for the master's answer.
#[derive(Debug)]
struct Asked {
    reply: ReplyTo,
    deadline: Duration,
    /// Whom it was last sent to, and when.
    sent: Option<(NodeId, Duration)>,
}

#[derive(Debug, Default)]
pub struct Reads {
    /// Round contexts and follower request ids, never reused.
    next: u64,
    /// Master: reads for the next round.
    queued: Vec<Waiting>,
    round: Option<Round>,
    /// Follower: this node's readers, by the id sent to the master.
    asked: BTreeMap<u64, Asked>,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.round.is_none() && self.asked.is_empty()
    }

    fn waiting(&self) -> usize {
        self.queued.len() + self.round.as_ref().map_or(0, |r| r.readers.len()) + self.asked.len()
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
        let deadline = now + READ_WAIT;
        match reader {
            Reader::Local(reply) if !view.leading => {
                let id = self.next_id();
                self.asked.insert(
                    id,
                    Asked {
                        reply,
                        deadline,
                        sent: None,
                    },
                );
            }
            reader => self.queued.push(Waiting { reader, deadline }),
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
        if self.round.as_ref().is_some_and(|r| r.ctx == ctx) {
            let round = self.round.take().expect("checked");
            acts.extend(
                round
                    .readers
                    .into_iter()
                    .map(|w| ReadAction::Answer(w.reader, Ok(index))),
            );
        }
        acts.extend(self.tick(now, view));
        acts
    }

    /// The master answered a read this node asked for. An answer from a
    /// node it was not sent to is ignored (returns false).
    pub fn answered(
        &mut self,
        from: &NodeId,
        id: u64,
        result: Result<EventIdx, Refusal>,
    ) -> (bool, Vec<ReadAction>) {
        let Some(a) = self.asked.get_mut(&id) else {
            return (true, Vec::new());
        };
        if a.sent.as_ref().is_none_or(|(to, _)| to != from) {
            return (false, Vec::new());
        }
        match result {
            // It no longer leads: ask the next master this node hears of,
            // or this one again after a while.
            Err(Refusal::NotMaster) => (true, Vec::new()),
            result => {
                let a = self.asked.remove(&id).expect("present");
                (
                    true,
                    vec![ReadAction::Answer(Reader::Local(a.reply), result)],
                )
            }
        }
    }

    /// Rounds to start, reads to hand over, ask again or refuse.
    pub fn tick(&mut self, now: Duration, view: &ReadView) -> Vec<ReadAction> {
        let mut acts = Vec::new();
        if !view.leading {
            self.step_down(now, &mut acts);
        } else {
            // Became master: this node's own readers wait for rounds here.
            for (_, a) in std::mem::take(&mut self.asked) {
                self.queued.push(Waiting {
                    reader: Reader::Local(a.reply),
                    deadline: a.deadline,
                });
            }
        }
        if let Some(r) = self.round.take_if(|r| now >= r.started + ROUND_RETRY) {
            let mut readers = r.readers;
            readers.append(&mut self.queued);
            self.queued = readers;
        }
        let (mut expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(|w| now >= w.deadline);
        self.queued = kept;
        if let Some(r) = self.round.as_mut() {
            let (late, kept) = std::mem::take(&mut r.readers)
                .into_iter()
                .partition(|w| now >= w.deadline);
            r.readers = kept;
            expired.extend::<Vec<_>>(late);
        }
        acts.extend(
            expired
                .into_iter()
                .map(|w| ReadAction::Answer(w.reader, Err(Refusal::NoQuorum))),
        );
        if view.leading && view.can_read && self.round.is_none() && !self.queued.is_empty() {
            let ctx = self.next_id();
            self.round = Some(Round {
                ctx,
                started: now,
                readers: std::mem::take(&mut self.queued),
            });
            acts.push(ReadAction::Round(ctx));
        }
        self.follower_tick(now, view, &mut acts);
        acts
    }

    /// Not leading: own readers go to the follower side, followers' are
    /// told to ask the new master.
    fn step_down(&mut self, now: Duration, acts: &mut Vec<ReadAction>) {
        let mut readers: Vec<Waiting> = self.round.take().map(|r| r.readers).unwrap_or_default();
        readers.append(&mut self.queued);
        for w in readers {
            match w.reader {
                Reader::Local(reply) if now < w.deadline => {
                    let id = self.next_id();
                    self.asked.insert(
                        id,
                        Asked {
                            reply,
                            deadline: w.deadline,
                            sent: None,
                        },
                    );
                }
                Reader::Local(reply) => acts.push(ReadAction::Answer(
                    Reader::Local(reply),
                    Err(Refusal::NoQuorum),
                )),
                remote => acts.push(ReadAction::Answer(remote, Err(Refusal::NotMaster))),
            }
        }
    }

    fn follower_tick(&mut self, now: Duration, view: &ReadView, acts: &mut Vec<ReadAction>) {
        let expired: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, a)| now >= a.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let a = self.asked.remove(&id).expect("present");
            acts.push(ReadAction::Answer(
                Reader::Local(a.reply),
                Err(Refusal::NoQuorum),
            ));
        }
        let Some(master) = view.master.as_ref().filter(|_| !view.leading) else {
            return;
        };
        for (id, a) in &mut self.asked {
            let due = match &a.sent {
                None => true,
                Some((to, at)) => to != master || now >= *at + ASK_AGAIN,
            };
            if due {
                a.sent = Some((master.clone(), now));
                acts.push(ReadAction::Ask {
                    to: master.clone(),
                    id: *id,
                });
            }
        }
    }

    /// The next time a deadline, retry or resend is due.
    pub fn next_wake(&self) -> Option<Duration> {
        let round = self.round.as_ref().map(|r| r.started + ROUND_RETRY);
        let in_round = self.round.iter().flat_map(|r| &r.readers);
        let queued = self.queued.iter().chain(in_round).map(|w| w.deadline).min();
        let asked = self
            .asked
            .values()
            .map(|a| match &a.sent {
                Some((_, at)) => a.deadline.min(*at + ASK_AGAIN),
                None => a.deadline,
            })
            .min();
        [round, queued, asked].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests;
