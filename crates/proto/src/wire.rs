//! Messages between nodes, and their versioned encoding.
//!
//! One-to-one messages (`Direct`) carry Raft traffic, range fetches,
//! snapshot chunks, forwarded commands, lease renewals and task output. Broadcast messages (`Gossip`)
//! carry committed entries and transient events. Every frame starts with the
//! protocol version and the sender's cluster id; a node drops (and counts)
//! frames of another version or another cluster.

use serde::{Deserialize, Serialize};
use shoal_model::{
    ClusterId, Command, CommandId, EventIdx, FencingToken, LogEntry, NodeId, Outcome, OutputChunk,
    TaskId, TransientEvent,
};

pub const PROTOCOL_VERSION: u16 = 2;
/// The largest frame any node sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Snapshot chunk payload size: well under the message cap.
pub const SNAPSHOT_CHUNK_BYTES: u32 = 1 << 20;
/// Entries returned by one range fetch stop after this many bytes.
pub const RANGE_MAX_BYTES: u32 = 2 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<M> {
    pub version: u16,
    /// The sender's cluster, or none while it has not joined one.
    pub cluster: Option<ClusterId>,
    pub from: NodeId,
    pub msg: M,
}

/// One-to-one messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direct {
    /// A Raft message, protobuf-encoded as Raft defines it.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    FetchRange(FetchRange),
    Range(RangeReply),
    SnapshotRequest(SnapshotRequest),
    SnapshotChunk(SnapshotChunk),
    SnapshotRefused {
        session: u64,
        reason: String,
    },
    /// A command forwarded to the master. The sender learns the outcome
    /// from its own replica once the event is applied there.
    Forward(Command),
    /// The master could not take a forwarded command.
    ForwardRefused {
        id: CommandId,
        reason: Refusal,
    },
    /// A node with State asks the master to be recorded as a member.
    Join {
        addr: String,
    },
    /// A worker asks the master to renew its leases; `at_ms` (the worker's
    /// clock) comes back in the answer.
    LeaseRenew {
        leases: Vec<(TaskId, FencingToken)>,
        at_ms: u64,
    },
    LeaseRenewed {
        tokens: Vec<FencingToken>,
        at_ms: u64,
    },
    /// Send me a task's output from `from_seq` of `attempt` on, and what
    /// follows, for a while.
    OutputSubscribe {
        task: TaskId,
        attempt: u32,
        from_seq: u64,
    },
    /// Output chunks of runs, to a subscriber.
    Output(Vec<OutputChunk>),
    /// The sender is leaving the cluster on purpose (`shoal leave`).
    Leave,
    /// The sender's heartbeat, sent one-to-one to a node it had not heard
    /// from before: a new node learns who is there, who leads and what is
    /// committed at once, not a heartbeat interval later.
    Heartbeat(shoal_model::Heartbeat),
    /// A follower's consistent read asks the master for an index to read
    /// at (`crate::reads`); `id` is the follower's.
    ReadIndex {
        id: u64,
    },
    ReadIndexReply {
        id: u64,
        result: Result<EventIdx, Refusal>,
    },
}

/// Broadcast messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Committed(Vec<LogEntry>),
    Transient(TransientEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRange {
    pub from: EventIdx,
    pub to: EventIdx,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeReply {
    /// Entries from the requested start, possibly fewer than asked.
    Entries {
        from: EventIdx,
        entries: Vec<LogEntry>,
    },
    /// The start is below this node's log: ask for a snapshot instead.
    Compacted { from: EventIdx, floor: EventIdx },
    /// This node does not hold the start yet.
    NotYet { from: EventIdx, last: EventIdx },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub session: u64,
    /// None for a new transfer; the snapshot's index when resuming, so a
    /// chunk always comes from the same snapshot.
    pub index: Option<EventIdx>,
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub session: u64,
    pub index: EventIdx,
    pub total_len: u64,
    pub sha256: [u8; 32],
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Why a command did not reach the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no quorum: a majority of voters is unreachable, so the write cannot be committed")]
    NoQuorum,
    #[error("not the master")]
    NotMaster,
    #[error("the master is busy: too many commands in flight")]
    Busy,
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("timed out waiting for the command to commit")]
    Timeout,
    #[error("this node has not joined a cluster yet")]
    NotJoined,
    /// This node's disk does not take writes (the reason, e.g. "disk
    /// full: ..."). The write may still be recorded once it does: retry
    /// under the same idempotency key.
    #[error("this node cannot write to its disk ({0}); retry once it can")]
    Storage(String),
}

/// The answer a client gets for a command.
pub type CommandReply = Result<(EventIdx, Outcome), Refusal>;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the message cap")]
    TooLarge(usize),
    #[error("protocol version {found} is not spoken here (this node speaks {supported})")]
    Version { found: u16, supported: u16 },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

pub fn encode<M: Serialize>(frame: &Frame<M>) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_allocvec(frame)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode<M: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<Frame<M>, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_input_is_an_error() {
        let f = Frame {
            version: PROTOCOL_VERSION,
            cluster: Some(ClusterId::from("c")),
            from: NodeId::from("n"),
            msg: Direct::FetchRange(FetchRange {
                from: EventIdx(3),
                to: EventIdx(9),
            }),
        };
        let bytes = encode(&f).unwrap();
        assert_eq!(decode::<Direct>(&bytes).unwrap(), f);
        let mut other = bytes.clone();
        other[0] = 7;
        assert!(matches!(
            decode::<Direct>(&other),
            Err(WireError::Version { found: 7, .. })
        ));
        for cut in 0..bytes.len() {
            assert!(decode::<Direct>(&bytes[..cut]).is_err());
        }
    }
}
