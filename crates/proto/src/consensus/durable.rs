//! What Raft wrote that is durable, and the answers that wait for it.
//!
//! Raft's writes (entries, vote, term) go to the log at once; the fsync
//! that makes them durable runs off the event loop, one at a time, each
//! covering everything written before it started. A leader's messages
//! leave before its own fsync (Raft thesis 10.2.1) and it counts itself
//! toward a commit only once that fsync ended. Every other member's
//! messages (its answers: "I hold these entries", "I vote for you") wait
//! until everything written up to the ready they came from is durable.
//! Readies are numbered in order by raft-rs; this tracks them by number.

use raft::eraftpb::Message;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(super) struct Durability {
    /// The last ready handled.
    last_ready: u64,
    /// The first ready whose writes no sync covers yet.
    first_unsynced: Option<u64>,
    /// The sync under way, by its job id.
    syncing: Option<u64>,
    /// Messages held until the readies up to theirs are durable, oldest
    /// first, with the number of the ready they came from.
    held: VecDeque<(u64, Vec<Message>)>,
}

impl Durability {
    /// Ready `number` was handled: it wrote to the log (`wrote`) and asks
    /// to send `msgs` once it is durable. Returns what may leave now:
    /// `msgs` if nothing up to this ready waits for the disk.
    pub fn handled(&mut self, number: u64, wrote: bool, msgs: Vec<Message>) -> Vec<Message> {
        self.last_ready = number;
        if wrote && self.first_unsynced.is_none() {
            self.first_unsynced = Some(number);
        }
        let waits = self.first_unsynced.is_some() || self.syncing.is_some();
        if !waits || msgs.is_empty() {
            return msgs;
        }
        self.held.push_back((number, msgs));
        Vec::new()
    }

    /// Whether some write is not yet known durable.
    pub fn pending(&self) -> bool {
        self.syncing.is_some() || self.first_unsynced.is_some()
    }

    /// Whether a sync should start: none is under way and some write is
    /// not covered.
    pub fn wants_sync(&self) -> bool {
        self.syncing.is_none() && self.first_unsynced.is_some()
    }

    /// Sync `id` started; it covers every write so far.
    pub fn sync_started(&mut self, id: u64) {
        self.syncing = Some(id);
        self.first_unsynced = None;
    }

    /// Sync `id` succeeded. Returns the last ready now durable with all
    /// before it, and the messages that may leave; `None` for a sync this
    /// core did not start (one of a core replaced since).
    pub fn sync_ended(&mut self, id: u64) -> Option<(u64, Vec<Message>)> {
        if self.syncing != Some(id) {
            return None;
        }
        self.syncing = None;
        let upto = self.first_unsynced.map_or(self.last_ready, |f| f - 1);
        Some((upto, self.release(upto)))
    }

    /// Everything written so far is durable (a sync made on the loop).
    pub fn all_durable(&mut self) -> (u64, Vec<Message>) {
        self.syncing = None;
        self.first_unsynced = None;
        (self.last_ready, self.release(self.last_ready))
    }

    fn release(&mut self, upto: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some((n, _)) = self.held.front() {
            if *n > upto {
                break;
            }
            out.extend(self.held.pop_front().expect("checked").1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: u64) -> Vec<Message> {
        vec![Message {
            to,
            ..Default::default()
        }]
    }

    fn to(msgs: &[Message]) -> Vec<u64> {
        msgs.iter().map(|m| m.to).collect()
    }

    #[test]
    fn answers_wait_for_the_sync_of_their_ready_and_of_every_ready_before() {
        let mut d = Durability::default();
        // Nothing written, nothing under way: an answer leaves at once.
        assert_eq!(to(&d.handled(1, false, msg(1))), vec![1]);
        assert!(!d.wants_sync());
        // Ready 2 wrote entries: its answer waits.
        assert!(d.handled(2, true, msg(2)).is_empty());
        assert!(d.wants_sync());
        d.sync_started(7);
        assert!(!d.wants_sync(), "one sync at a time");
        // Ready 3 wrote nothing, but a duplicate append's answer must not
        // overtake the entries of ready 2.
        assert!(d.handled(3, false, msg(3)).is_empty());
        // Ready 4 wrote while sync 7 ran: the next sync covers it.
        assert!(d.handled(4, true, msg(4)).is_empty());
        assert_eq!(d.sync_ended(6), None, "not this core's sync");
        let (upto, sent) = d.sync_ended(7).unwrap();
        assert_eq!((upto, to(&sent)), (3, vec![2, 3]));
        assert!(d.wants_sync());
        d.sync_started(8);
        let (upto, sent) = d.sync_ended(8).unwrap();
        assert_eq!((upto, to(&sent)), (4, vec![4]));
        assert!(!d.wants_sync());
        assert_eq!(to(&d.handled(5, false, msg(5))), vec![5]);
    }

    #[test]
    fn a_sync_on_the_loop_makes_everything_durable() {
        let mut d = Durability::default();
        assert!(d.handled(1, true, msg(1)).is_empty());
        d.sync_started(1);
        assert!(d.handled(2, true, msg(2)).is_empty());
        let (upto, sent) = d.all_durable();
        assert_eq!((upto, to(&sent)), (2, vec![1, 2]));
        assert_eq!(d.sync_ended(1), None, "overtaken");
        assert!(!d.wants_sync());
    }
}
