//! What a Raft message from a peer must be before raft-rs sees it.
//!
//! raft-rs trusts its peers: a heartbeat that commits past the log, an
//! append whose entries skip indices or rewrite committed ones, a snapshot
//! with an impossible membership, each ends in a panic inside it. A shoal
//! node checks every message first and drops (and counts) what a correct
//! member never sends (invariant 9). Only the kinds members exchange are
//! let in: proposals, read requests and leadership transfers travel
//! between shoal's nodes in their own frames, never as Raft messages.

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::RawNode;
use raft::Storage;

/// Whether `from` is a voter or learner of this Raft's configuration.
pub(super) fn member<S: Storage>(raw: &RawNode<S>, from: u64) -> bool {
    let conf = raw.raft.prs().conf();
    conf.voters().contains(from) || conf.learners().contains(&from)
}

/// Why a member's message is refused.
pub(super) fn check<S: Storage>(raw: &RawNode<S>, from: u64, msg: &Message) -> Result<(), String> {
    use MessageType::*;
    let raft = &raw.raft;
    let log = &raft.raft_log;
    match msg.get_msg_type() {
        MsgHeartbeat => {
            if msg.commit > log.last_index() {
                return Err(format!(
                    "heartbeat commits {} past the log's last index {}",
                    msg.commit,
                    log.last_index()
                ));
            }
        }
        MsgAppend => check_append(msg)?,
        MsgSnapshot => {
            let meta = msg.get_snapshot().get_metadata();
            if meta.index == 0 {
                return Err("a snapshot at index 0".into());
            }
            check_conf_state(meta.get_conf_state())?;
        }
        MsgAppendResponse | MsgHeartbeatResponse => {
            if msg.index > log.last_index() && !msg.reject {
                return Err(format!(
                    "a response claims index {} past the log's last {}",
                    msg.index,
                    log.last_index()
                ));
            }
        }
        MsgTimeoutNow => {
            if raft.leader_id != from {
                return Err(format!("{from} is not the leader and asks for an election"));
            }
        }
        MsgRequestVote | MsgRequestVoteResponse | MsgRequestPreVote | MsgRequestPreVoteResponse => {
        }
        other => return Err(format!("{other:?} is not sent between nodes")),
    }
    Ok(())
}

/// Entries follow the message's index one by one, in its term at most.
/// (Contiguity is also what keeps an append from reaching a committed
/// index: raft-rs answers one that starts below the commit without
/// looking at its entries.)
fn check_append(msg: &Message) -> Result<(), String> {
    for (k, e) in msg.get_entries().iter().enumerate() {
        let want = msg.index + 1 + k as u64;
        if e.index != want {
            return Err(format!("entry {} where {want} should be", e.index));
        }
        if e.term > msg.term {
            return Err(format!(
                "entry {} of term {} in a term-{} append",
                e.index, e.term, msg.term
            ));
        }
    }
    if msg.index > 0 && msg.log_term > msg.term {
        return Err(format!(
            "previous term {} after the append's {}",
            msg.log_term, msg.term
        ));
    }
    Ok(())
}

/// Single-step membership only: some voters, no learner also a voter, no
/// joint state.
fn check_conf_state(cs: &ConfState) -> Result<(), String> {
    if cs.voters.is_empty() {
        return Err("a membership without voters".into());
    }
    if cs.learners.iter().any(|l| cs.voters.contains(l)) {
        return Err("a learner that is also a voter".into());
    }
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return Err("a joint membership".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn append(index: u64, log_term: u64, term: u64, entries: Vec<Entry>) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = index;
        m.log_term = log_term;
        m.term = term;
        m.set_entries(entries.into());
        m
    }

    #[test]
    fn appends_must_be_consecutive_and_within_their_term() {
        let ok = append(3, 1, 2, vec![entry(4, 1), entry(5, 1), entry(6, 2)]);
        assert!(check_append(&ok).is_ok());
        assert!(
            check_append(&append(5, 1, 2, vec![entry(7, 2)])).is_err(),
            "skips 6"
        );
        assert!(
            check_append(&append(5, 1, 2, vec![entry(1, 1)])).is_err(),
            "back to 1"
        );
        assert!(
            check_append(&append(5, 1, 2, vec![entry(6, 3)])).is_err(),
            "a future term"
        );
        assert!(check_append(&append(5, 3, 2, vec![])).is_err());
    }

    #[test]
    fn a_membership_needs_voters_and_no_joint_state() {
        let mut cs = ConfState::default();
        assert!(check_conf_state(&cs).is_err());
        cs.voters = vec![1, 2];
        assert!(check_conf_state(&cs).is_ok());
        cs.learners = vec![2];
        assert!(check_conf_state(&cs).is_err());
        cs.learners = vec![3];
        cs.voters_outgoing = vec![1];
        assert!(check_conf_state(&cs).is_err());
    }
}
