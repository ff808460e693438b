//! Messages between nodes, and their versioned encoding.
//!
//! One-to-one messages (`Direct`) carry Raft traffic, the master's word
//! of what it committed to the other Raft members, range fetches,
//! snapshot offers and chunks, forwarded commands, lease renewals, task
//! output, and the reports a member relays to a follower's dashboard.
//! Broadcast messages (`Gossip`) carry committed entries, transient
//! events and requests for a snapshot. Every frame starts with the
//! protocol version and the sender's cluster id; a node drops (and counts)
//! frames of another version or another cluster.

use serde::{Deserialize, Serialize};
use shoal_model::{
    ClusterId, Command, CommandId, EventIdx, FencingToken, LogEntry, NodeId, NodeMetrics, Outcome,
    OutputChunk, TaskId, TransientEvent,
};

pub const PROTOCOL_VERSION: u16 = 9;
/// The largest frame any node sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Snapshot chunk payload size: well under the message cap.
pub const SNAPSHOT_CHUNK_BYTES: u32 = 1 << 20;
/// Chunk hashes in one offer, at most: a 64 GiB snapshot in 1 MiB chunks,
/// 2 MiB of hashes.
pub const MAX_SNAPSHOT_CHUNKS: usize = 1 << 16;
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

impl<M> Frame<M> {
    /// The same frame around another message.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Frame<N> {
        Frame {
            version: self.version,
            cluster: self.cluster,
            from: self.from,
            msg: f(self.msg),
        }
    }
}

/// One-to-one messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direct {
    /// A Raft message, protobuf-encoded as Raft defines it.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    FetchRange(FetchRange),
    Range(RangeReply),
    /// An answer to `Gossip::SnapshotWanted`: a snapshot this node serves.
    SnapshotOffer(SnapshotOffer),
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
    /// A transient event sent one-to-one: a heartbeat to a node heard for
    /// the first time (a new node learns who is there, who leads and what
    /// is committed at once, not a heartbeat interval later), and a
    /// follower's heartbeats and capacity, which go to the members only.
    Transient(TransientEvent),
    /// A follower's consistent read asks the master for an index to read
    /// at (`crate::reads`); `id` is the follower's.
    ReadIndex {
        id: u64,
    },
    ReadIndexReply {
        id: u64,
        result: Result<EventIdx, Refusal>,
    },
    /// Entries the master has just committed, to each Raft member: Raft
    /// tells a member the commit only with the next append or heartbeat,
    /// and the members take no committed gossip (they would relay the
    /// followers' traffic on the core their acknowledgements need).
    Committed(Vec<LogEntry>),
    /// A follower whose API is read asks a member for what the other
    /// nodes last reported (capacity, build, hearing): a follower hears
    /// only the members, which hear every node.
    ReportsWanted,
    /// A member's answer: the reports it holds, at most `MAX_RELAYED`.
    Reports(Vec<RelayedReport>),
}

/// Reports one `Direct::Reports` carries at most (a LAN cluster is far
/// smaller; each report is bounded, see `placement::Capacities`).
pub const MAX_RELAYED: usize = 256;

/// A node's report as a member holds it, and how long ago it came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedReport {
    pub metrics: NodeMetrics,
    pub age_ms: u64,
}

/// Broadcast messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Committed(Vec<LogEntry>),
    Transient(TransientEvent),
    /// The sender needs a snapshot past `have` (its own topic). Replicas
    /// that hold one, or can make one, answer one-to-one with an offer;
    /// the bytes then move one-to-one, never on gossip. `resume` names the
    /// snapshot whose transfer stopped part way: a replica that still
    /// holds it offers that one, and the sender goes on where it stopped.
    SnapshotWanted {
        session: u64,
        have: EventIdx,
        resume: Option<EventIdx>,
    },
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

/// A snapshot a replica serves. The encoding at an index is the same on
/// every replica (sorted batches, one compression level), so offers of one
/// snapshot from several replicas are equal, and a receiver pulls its
/// chunks from all of them, checking each against `chunks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    pub session: u64,
    pub index: EventIdx,
    pub total_len: u64,
    /// SHA-256 of the whole byte string.
    pub sha256: [u8; 32],
    pub chunk_bytes: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<[u8; 32]>,
    /// Transfers the sender is serving now.
    pub busy: u32,
}

impl SnapshotOffer {
    /// Whether the offer describes a byte string: chunk size within the
    /// cap, one hash per chunk.
    pub fn check(&self) -> Result<(), String> {
        if self.chunk_bytes == 0 || self.chunk_bytes > SNAPSHOT_CHUNK_BYTES {
            return Err(format!("chunk size {} is out of range", self.chunk_bytes));
        }
        let n = self.total_len.div_ceil(u64::from(self.chunk_bytes));
        if n == 0 || n != self.chunks.len() as u64 || self.chunks.len() > MAX_SNAPSHOT_CHUNKS {
            return Err(format!(
                "{} chunk hashes for {} bytes in chunks of {}",
                self.chunks.len(),
                self.total_len,
                self.chunk_bytes
            ));
        }
        Ok(())
    }

    /// Whether both offers are of the same bytes.
    pub fn same_snapshot(&self, other: &SnapshotOffer) -> bool {
        self.index == other.index
            && self.total_len == other.total_len
            && self.sha256 == other.sha256
            && self.chunk_bytes == other.chunk_bytes
            && self.chunks == other.chunks
    }

    /// Where chunk `k` starts, and its length.
    pub fn chunk_span(&self, k: u32) -> Option<(u64, usize)> {
        let start = u64::from(k) * u64::from(self.chunk_bytes);
        (start < self.total_len).then(|| {
            let len = (self.total_len - start).min(u64::from(self.chunk_bytes));
            (start, len as usize)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub session: u64,
    /// The offered snapshot's index: a chunk always comes from it.
    pub index: EventIdx,
    pub chunk: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub session: u64,
    pub index: EventIdx,
    pub chunk: u32,
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
        other[0] = PROTOCOL_VERSION as u8 + 1;
        assert!(matches!(
            decode::<Direct>(&other),
            Err(WireError::Version { found, .. }) if found == PROTOCOL_VERSION + 1
        ));
        for cut in 0..bytes.len() {
            assert!(decode::<Direct>(&bytes[..cut]).is_err());
        }
    }
}
