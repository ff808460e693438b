//! What goes into the node core and what comes out: the shell (a real
//! node's event loop, or the simulator) delivers `Input`s and performs
//! `Output`s, and reads `Status` and `Metrics` between steps.

use crate::log_store::LaterRead;
use crate::pending::ReplyTo;
use crate::replicas::ReplicaRun;
use crate::snapshot_transfer::{ChunkRead, EncodedSnapshot, Progress};
use crate::wire::{CommandReply, Direct, Frame, Gossip, RangeReply};
use crate::worker::{StopReason, TaskRun};
use serde::{Deserialize, Serialize};
use shoal_log::{LogError, SyncJob};
use shoal_model::{
    ClusterId, Command, EventIdx, ExitClass, FencingToken, LeaderReason, NodeId, OutputChunk,
    PortRange, State, StateHash, TaskId, Term,
};
use std::time::Duration;

#[derive(Debug)]
pub enum Input {
    /// The time asked for by the last `Output::Wake` has come. (Any input
    /// runs the timers that are due; this one only brings time.)
    Wake,
    Direct(Frame<Direct>),
    Gossip(Frame<Gossip>),
    /// A client command; the answer comes back as `Output::Reply`.
    Submit {
        cmd: Command,
        reply: ReplyTo,
    },
    /// A client's consistent read asks for the index to read at: every
    /// write committed before it is at or below the index that comes back
    /// as `Output::Reply` (with `Outcome::Done`).
    ReadIndex {
        reply: ReplyTo,
    },
    /// The shell finished `Output::BuildSnapshot`.
    SnapshotBuilt {
        snap: EncodedSnapshot,
        save: Saved,
    },
    /// This host's free capacity, measured after `Output::MeasureHost`.
    HostCapacity(HostMeasure),
    /// A run started by `Output::StartRun` or `StartReplica` ended.
    RunExited {
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
    },
    /// A chunk of output from a run on this node.
    RunOutput(OutputChunk),
    /// A client of this node follows a task's output: ask the node that
    /// runs it to send it here for a while. Renewed by the client.
    WatchOutput(TaskId),
    /// This node's API shows the nodes' reports (`/v1/nodes`, the
    /// dashboard): a follower asks a member for those it does not hear
    /// (`reports`). Renewed while they are read.
    WantReports,
    /// Stop taking work and hand back what runs here (`shoal leave`).
    Drain,
    /// The log fsync `Output::SyncLog` asked for ended.
    LogSynced {
        id: u64,
        result: std::io::Result<()>,
    },
}

/// What became of a build's `save` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    NotAsked,
    Saved,
    Failed,
    /// Not a build: the local snapshot this node started from, read
    /// again from its file to be served (it holds it as if built).
    Loaded,
}

#[derive(Debug)]
pub enum Output {
    /// Run this log fsync off the loop (`SyncJob::wait`) and hand its
    /// outcome back as `Input::LogSynced`. At most one is under way.
    SyncLog(SyncJob),
    Send {
        to: NodeId,
        frame: Frame<Direct>,
    },
    /// Read these log entries where blocking is allowed, not on the
    /// loop, and send `to` the frame `RangeRead::reply` makes of them.
    SendRange {
        to: NodeId,
        frame: Frame<RangeRead>,
    },
    /// Read this snapshot chunk where blocking is allowed, not on the
    /// loop, and send `to` the frame `ChunkRead::reply` makes of it.
    SendChunk {
        to: NodeId,
        frame: Frame<ChunkRead>,
    },
    Broadcast(Frame<Gossip>),
    Reply {
        to: ReplyTo,
        reply: CommandReply,
    },
    /// Deliver `Input::Wake` at `at` (monotonic, as `now`). Replaces any
    /// wake asked for before; the core never needs two.
    Wake {
        at: Duration,
    },
    /// Encode this State off the loop, hashing it in chunks of
    /// `chunk_bytes`; `save` also writes it to disk.
    BuildSnapshot {
        state: Box<State>,
        save: bool,
        chunk_bytes: u32,
    },
    /// Write a snapshot received and verified whole to disk, off the loop,
    /// and answer as for `BuildSnapshot` with `save`: the bytes that came
    /// are the bytes to keep and to serve, with no encode.
    SaveSnapshot {
        snap: EncodedSnapshot,
    },
    /// This node now belongs to this cluster: persist it.
    ClusterAdopted(ClusterId),
    /// This node gave up the cluster it founded alone (see `discovery`):
    /// forget its id.
    ClusterGivenUp(ClusterId),
    /// Receive committed entries on gossip, or stop: a node that holds no
    /// State of its cluster yet (a joiner) cannot check them (its State
    /// comes by snapshot, the tail by range), so it does not take them,
    /// nor relay them, nor slow their senders while it loads.
    FollowCommitted(bool),
    /// The addresses of the members this node talks to, all of them: keep
    /// a connection to each. One named before and not now is kept no
    /// longer (a voter that became a follower).
    Keep(Vec<String>),
    /// A member fell silent (no heartbeat for three intervals): drop the
    /// connection to it and dial it afresh, so that the path is new once
    /// the link or partition heals rather than a connection whose
    /// retransmissions back off.
    Reconnect(NodeId),
    /// Measure this host's free capacity; answer with `Input::HostCapacity`.
    MeasureHost {
        /// The replica ports to look for in use.
        replica_ports: PortRange,
    },
    /// Snapshot download progress while catching up.
    CatchUp(Progress),
    /// A State arrived by snapshot and replaced the local one.
    SnapshotInstalled {
        index: EventIdx,
    },
    /// Start (or restart, after a crash) a replica of a deployment. It is
    /// stopped with `StopRun`.
    StartReplica(ReplicaRun),
    /// Start a task's run.
    StartRun(TaskRun),
    /// Stop a run: SIGTERM to its group, a grace period, SIGKILL. Its end
    /// comes back as `Input::RunExited`.
    StopRun {
        token: FencingToken,
        reason: StopReason,
    },
    /// A chunk of task output this node recorded (from a local run or a
    /// subscription): for this node's own clients.
    TaskOutput(OutputChunk),
    /// The node cannot go on (duplicate identity, unreadable log entry,
    /// failed storage); the shell logs it and exits.
    Fatal(String),
}

/// Counters for metrics; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub events_applied: u64,
    pub nacks_sent: u64,
    pub ranges_served: u64,
    pub snapshot_bytes_sent: u64,
    /// Snapshot chunk bytes that arrived, taken or not.
    pub snapshot_bytes_received: u64,
    /// Of those, bytes not taken: a chunk that came twice (asked again
    /// after it was late), or for a transfer no longer under way.
    pub snapshot_bytes_unused: u64,
    /// Snapshot chunks asked of another source after they came late.
    pub snapshot_chunks_asked_again: u64,
    pub snapshots_installed: u64,
    /// Local snapshots this node saved to its own disk.
    pub local_snapshots_saved: u64,
    pub snapshot_failures: u64,
    /// Snapshot transfers that went on from where an earlier one of the
    /// same snapshot stopped.
    pub snapshot_transfers_resumed: u64,
    /// Snapshot sources dropped for a chunk that was not the one offered.
    pub snapshot_bad_chunks: u64,
    /// Snapshot offers this node made to others.
    pub snapshot_offers_sent: u64,
    /// Snapshots this node encoded to serve others.
    pub snapshot_builds: u64,
    pub leader_changes: u64,
    pub bad_messages: u64,
    pub foreign_messages: u64,
    /// Lone clusters this node founded and gave up for another (see
    /// `discovery`).
    pub clusters_given_up: u64,
    pub proposals_refused: u64,
    /// ReadIndex rounds this node started as master (each serves every
    /// consistent read that waited for it).
    pub read_rounds: u64,
    /// Times raft-rs failed inside and was started again from the log.
    pub raft_restarts: u64,
    /// Range replies not (or no longer) asked for: late, or unsolicited.
    pub unasked_replies: u64,
    /// Committed entries from a node this one does not know as a member.
    pub untrusted_messages: u64,
}

/// What the shell measured of this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostMeasure {
    /// CPU not in use over the last interval, in millicores.
    pub cpu_free_milli: u32,
    pub mem_free_bytes: u64,
    /// Space free on the disk of the node's data directory.
    pub disk_free_bytes: u64,
    /// Ports of this node's replica range that the host has in use.
    pub ports_taken: Vec<u16>,
}

/// What a node is in its cluster, as `shoal status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// The Raft leader: it sequences commands and runs the plan tick.
    Master,
    /// A Raft voter that does not lead.
    Voter,
    /// Follows by gossip (learners being caught up count here too).
    Follower,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Voter => "voter",
            NodeRole::Follower => "follower",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: NodeId,
    pub cluster_id: Option<ClusterId>,
    pub role: NodeRole,
    pub master_id: Option<NodeId>,
    /// Why the master leads, once this node has heard it say so.
    pub master_reason: Option<LeaderReason>,
    pub term: Term,
    pub applied_index: EventIdx,
    pub commit_index: EventIdx,
    pub state_hash: StateHash,
    pub peers: Vec<NodeId>,
    /// Why this node's disk does not take writes, while it does not.
    pub storage_error: Option<String>,
    /// On the master, while a voter seat stays empty: why no node can
    /// take it.
    pub voter_shortfall: Option<String>,
}

/// What this node knows of another from its heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSummary {
    pub node: NodeId,
    pub addr: String,
    pub since_heard: Duration,
    pub applied: EventIdx,
    pub commit: EventIdx,
    pub same_cluster: bool,
}

/// A range reply whose entries are read off the event loop
/// (`Output::SendRange`): a 2 MiB range took a member's loop 4-7 ms to
/// read and as long again to encode, and every write waited behind it.
#[derive(Clone, Debug)]
pub struct RangeRead {
    read: LaterRead,
    /// How far the server vouched: `NotYet`'s `last` if the read fails.
    vouched: EventIdx,
}

impl RangeRead {
    /// A reply of the entries `read` reads, from a replica that vouches
    /// for the log up to `vouched`.
    pub fn new(read: LaterRead, vouched: EventIdx) -> Self {
        RangeRead { read, vouched }
    }

    /// The reply, read from the log: blocks on its files.
    pub fn reply(self) -> Direct {
        let from = self.read.from();
        let not_yet = self.not_yet();
        Direct::Range(match self.read.read() {
            Ok(entries) if !entries.is_empty() => RangeReply::Entries { from, entries },
            // Compacted, or the log reset under a snapshot, since it was
            // asked: the asker asks again and hears why.
            Ok(_) | Err(LogError::Compacted(_)) => not_yet,
            Err(e) => {
                tracing::warn!(error = %e, "range read failed");
                not_yet
            }
        })
    }

    /// The reply when the read cannot be made now (too many are under
    /// way): not yet, ask again or ask another replica.
    pub fn deferred(self) -> Direct {
        Direct::Range(self.not_yet())
    }

    fn not_yet(&self) -> RangeReply {
        RangeReply::NotYet {
            from: self.read.from(),
            last: self.vouched,
        }
    }
}
