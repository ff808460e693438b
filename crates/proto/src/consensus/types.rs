//! What the Raft wrapper takes and hands out: its settings, where a
//! member's log starts, what a drive produces, why a member won, and its
//! errors.

use shoal_log::{LogError, SyncJob};
use shoal_model::{EventIdx, LogEntry, RaftId, Term};

#[derive(Clone, Copy, Debug)]
pub struct RaftConfig {
    /// Ticks without a leader before an election (randomised up to twice).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Raft entries kept in memory behind the applied index, for followers
    /// that lag a little; older ones are served from the durable log.
    pub keep_in_memory: u64,
    pub max_msg_bytes: u64,
    /// Appends in flight to one voter. Small on purpose: proposals made
    /// while appends are in flight go out together in the next one, so
    /// under load one Raft round (one message each way, one fsync per
    /// voter) carries many writes, and idle a write goes out at once.
    /// With 256, every write was a round of its own: 5.1 messages per
    /// write against 0.3 with 2 (`bench/src/bin/writes.rs`).
    pub max_inflight: usize,
    /// Whether the log's fsync runs off the event loop: `drive` hands it
    /// out as `RaftOutput::Sync` and `persisted` takes its end. Otherwise
    /// `drive` waits for it (tests that step one core by hand).
    pub sync_off_loop: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_ticks: 10,
            heartbeat_ticks: 2,
            keep_in_memory: 10_000,
            max_msg_bytes: 1 << 20,
            max_inflight: 2,
            sync_off_loop: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RaftOutput {
    Send {
        to: RaftId,
        msg: Vec<u8>,
    },
    /// Run this fsync off the loop, then hand its outcome to the log
    /// (`LogStore::synced`) and, if it succeeded, to `RaftCore::persisted`.
    Sync(SyncJob),
    /// Newly committed entries, in order.
    Committed(Vec<LogEntry>),
    /// Raft skipped this member's log forward to `index`: State must be
    /// brought there by the snapshot transfer.
    SnapshotInstalled {
        index: EventIdx,
        term: Term,
    },
    LeaderChanged {
        leader: Option<RaftId>,
        term: Term,
        /// When this member is the new leader: why it won.
        won: Option<Won>,
    },
    /// The leader confirmed read round `ctx` (`read_index`): a majority
    /// still followed it after it noted commit index `index`.
    ReadReady {
        ctx: u64,
        index: EventIdx,
    },
}

/// Why a member won an election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Won {
    /// The leader `from` handed leadership over (`transfer_leader`).
    HandedOver { from: RaftId },
    /// It heard nothing from the leader it knew (`previous`, if any) for
    /// an election timeout, and a majority voted for it. `previous` is the
    /// member itself when it led last and lost its majority in between.
    Elected { previous: Option<RaftId> },
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("malformed raft message: {0}")]
    Malformed(String),
    #[error("refused raft message: {0}")]
    Refused(String),
    /// From a node this Raft does not count as a member (one removed, or
    /// not yet added): dropped; it learns its new role from State.
    #[error("raft message from {0}, not a member")]
    NotMember(RaftId),
    /// raft-rs panicked; its in-memory state can no longer be trusted and
    /// the core must be started again from the log.
    #[error("raft failed inside ({0}); restarting it from the log")]
    Poisoned(String),
}

/// Where a member's Raft log starts: an index and term already in State,
/// with the membership at that index.
#[derive(Clone, Debug, Default)]
pub struct RaftBase {
    pub index: EventIdx,
    pub term: Term,
    pub voters: Vec<RaftId>,
    pub learners: Vec<RaftId>,
}
