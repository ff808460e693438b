//! Durable events (state transitions, in the log), transient events (never in
//! the log), client commands and their outcomes.

use crate::ids::{ClusterId, CommandId, EventIdx, FencingToken, NodeId, TaskId, Term};
use crate::ports::PortRange;
use crate::LeaderReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the event encoding. Bumped on any incompatible change; a node
/// refuses entries, snapshots and peers of a version it cannot read.
pub const EVENT_FORMAT_VERSION: u16 = 1;

/// A committed event with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub idx: EventIdx,
    pub term: Term,
    pub event: Event,
}

/// A durable event: a state transition, and nothing else (invariant 5,
/// `crates/proto/PROTOCOL.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The first entry of every master's term; changes nothing.
    Noop,
    /// The founder's first entry: the cluster id, and the founder as voter.
    ClusterFounded {
        cluster_id: ClusterId,
        founder: NodeId,
        addr: String,
        at_ms: u64,
    },
    /// A node joined (or rejoined) and was given a Raft id.
    NodeJoined {
        node: NodeId,
        addr: String,
        at_ms: u64,
    },
    /// The master's failure detector changed its view of a node.
    NodeLiveness { node: NodeId, liveness: Liveness },
    /// A node left on purpose (`shoal leave`).
    NodeLeft { node: NodeId },
    /// A dead or departed node is removed from State (logged clean-up).
    NodeForgotten { node: NodeId },
    /// A node's role in Raft changed; mirrors a committed Raft conf change.
    Membership { node: NodeId, role: Role },
    /// A client command, stamped with the master's wall clock.
    Command { cmd: Command, at_ms: u64 },
    /// A key whose TTL ran out on the master's clock; ignored if the key
    /// changed since (its version differs).
    KvExpired { key: String, version: EventIdx },
    /// A task granted to a node; the grant's index is its fencing token.
    TaskGranted {
        task: TaskId,
        node: NodeId,
        lease_ms: u64,
    },
    /// A lease the master saw lapse (TTL plus margin) without renewal.
    TaskLeaseExpired { task: TaskId, token: FencingToken },
    /// Finished tasks dropped after their retention (logged clean-up).
    TasksForgotten { tasks: Vec<TaskId> },
    /// A replica of a deployment placed on a node; the index is its token.
    ReplicaPlaced {
        deployment: String,
        replica: u32,
        node: NodeId,
        port: u16,
    },
    /// A replica taken off its node (dead node, crash backoff, scale-down).
    ReplicaUnplaced {
        deployment: String,
        replica: u32,
        token: FencingToken,
    },
    /// Command outcomes older than the retry window are dropped.
    OutcomesExpired { before_ms: u64 },
}

/// What a node is to Raft. (Serde names are what JSON shows.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Voter,
    Learner,
    Follower,
}

/// The failure detector's view of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// A client request, with the id the client minted for it. A retry carries
/// the same id and gets the first outcome back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub op: Op,
}

/// The operations a command can ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    KvSet {
        key: String,
        value: String,
    },
    KvSetIfAbsent {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    KvCas {
        key: String,
        expected: Option<String>,
        value: String,
    },
    KvIncrBy {
        key: String,
        by: i64,
    },
    KvDelete {
        key: String,
    },
    SetAdd {
        key: String,
        member: String,
    },
    SetRemove {
        key: String,
        member: String,
    },
    ListPush {
        key: String,
        value: String,
    },
    LockAcquire {
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    LockKeepalive {
        name: String,
        token: FencingToken,
    },
    LockRelease {
        name: String,
        token: FencingToken,
    },
    TaskSubmit {
        spec: TaskSpec,
    },
    TaskCancel {
        task: TaskId,
    },
    TaskDelete {
        task: TaskId,
    },
    /// A worker's report on a run it holds a lease for.
    TaskReport {
        task: TaskId,
        token: FencingToken,
        report: TaskReport,
    },
    Deploy {
        name: String,
        spec: InstanceSpec,
        replicas: u32,
    },
    Undeploy {
        name: String,
    },
    /// A worker's report on a replica it runs.
    ReplicaReport {
        deployment: String,
        replica: u32,
        token: FencingToken,
        status: ReplicaStatus,
    },
    /// Changes nothing: its commit tells a reader that everything committed
    /// before it is visible. Its outcome is not stored. Consistent reads
    /// no longer use it (they take a read index, `shoal_proto::reads`);
    /// it stays so that logs holding one still decode.
    Barrier,
    /// A key-value write applied only while lock `lock` is held with
    /// `token`: a holder that lost its lock cannot write with it.
    Fenced {
        lock: String,
        token: FencingToken,
        op: Box<Op>,
    },
    /// Key-value writes applied together or not at all: if every guard
    /// holds, each op in order (each sees the ones before it); if an op is
    /// refused, none. One command, so one idempotency key (etcd's Txn).
    Txn {
        guards: Vec<Guard>,
        ops: Vec<Op>,
    },
    /// Removes a dead or departed member (`shoal nodes remove`; etcd's
    /// `member remove`). A live one is refused. A follower is forgotten at
    /// once (`Applied(true)`); a voter or learner is marked left, which
    /// frees its seat, and is forgotten by the same command given again
    /// once its seat has moved (`Applied(false)` until then).
    NodeRemove {
        node: NodeId,
    },
    /// Drains a member (`drain`) or takes it back (`shoal nodes drain`,
    /// Nomad's `node drain`): a drained node is given no new tasks or
    /// replicas and its replicas are placed elsewhere; tasks running on it
    /// finish there. `Applied(changed)`; an unknown node is `NotFound`.
    NodeDrain {
        node: NodeId,
        drain: bool,
    },
}

/// A condition on one key that a transaction checks before it writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Guard {
    pub key: String,
    pub check: Check,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Check {
    /// The key exists (true) or is absent (false).
    Exists(bool),
    /// The key exists and was last changed at this index.
    Version(EventIdx),
    /// The key holds this value (a string, or an integer in its text form).
    Value(String),
}

impl Op {
    /// Writes to one key-value entry (the ops a fence may guard).
    pub fn is_kv_write(&self) -> bool {
        matches!(
            self,
            Op::KvSet { .. }
                | Op::KvSetIfAbsent { .. }
                | Op::KvCas { .. }
                | Op::KvIncrBy { .. }
                | Op::KvDelete { .. }
                | Op::SetAdd { .. }
                | Op::SetRemove { .. }
                | Op::ListPush { .. }
        )
    }

    /// The one key a key-value write or a lock op names.
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::KvSet { key, .. }
            | Op::KvSetIfAbsent { key, .. }
            | Op::KvCas { key, .. }
            | Op::KvIncrBy { key, .. }
            | Op::KvDelete { key }
            | Op::SetAdd { key, .. }
            | Op::SetRemove { key, .. }
            | Op::ListPush { key, .. } => Some(key),
            Op::LockAcquire { name, .. }
            | Op::LockKeepalive { name, .. }
            | Op::LockRelease { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The keys it writes (a lock is a key too), or checks (a guard, a
    /// fence's lock).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Op::Fenced { lock, op, .. } => {
                let mut keys = vec![lock.as_str()];
                keys.extend(op.keys());
                keys
            }
            Op::Txn { guards, ops } => guards
                .iter()
                .map(|g| g.key.as_str())
                .chain(ops.iter().flat_map(Op::keys))
                .collect(),
            op => op.key().into_iter().collect(),
        }
    }
}

impl Event {
    /// The keys a committed event touches: a command's, or the key that
    /// expired. Events about nodes, tasks and replicas touch none.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Event::Command { cmd, .. } => cmd.op.keys(),
            Event::KvExpired { key, .. } => vec![key],
            _ => vec![],
        }
    }
}

/// The outcome of a command, stored under its id (invariant 7).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// The value read or replaced.
    Value(Option<String>),
    /// The value after an increment.
    Int(i64),
    /// Whether a conditional write (set-if-absent, compare-and-set) took.
    Applied(bool),
    /// A lock grant.
    Token(FencingToken),
    /// The id of a created task.
    Task(TaskId),
    Rejected(Rejection),
    /// Every guard of a transaction held: each op's outcome, in order.
    Txn(Vec<Outcome>),
    /// A transaction's guard (by position) did not hold: nothing changed.
    GuardFailed {
        guard: u32,
    },
}

impl Outcome {
    /// What the outcome counts for against the cap on stored outcomes.
    pub fn weight(&self) -> usize {
        match self {
            Outcome::Txn(results) => 1 + results.len(),
            _ => 1,
        }
    }
}

/// Why a well-formed command was refused by State.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("key holds a value of another type")]
    WrongType,
    #[error("integer overflow")]
    Overflow,
    #[error("stale fencing token")]
    StaleToken,
    #[error("not found")]
    NotFound,
    #[error("lock is held by {holder}")]
    LockHeld { holder: String },
    #[error("task has not finished")]
    NotFinished,
    #[error("limit reached: {what}")]
    Full { what: String },
    #[error("invalid: {reason}")]
    Invalid { reason: String },
    /// An op of a transaction was refused, so none of its ops applied.
    #[error("transaction op {op}: {reason}")]
    InTxn { op: u32, reason: Box<Rejection> },
    /// The command's id (an `Idempotency-Key`) was applied before for
    /// another request.
    #[error(
        "this id (Idempotency-Key) was used for another request; use a new one for each request"
    )]
    IdReused,
}

/// What to run for a task or an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Runner {
    /// A user command (remote execution; off unless the operator enables it).
    Exec {
        cmd: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    /// The built-in synthetic runner: `chunks` output lines every
    /// `interval_ms`, then `exit_code`.
    Synthetic {
        chunks: u32,
        interval_ms: u64,
        exit_code: i32,
    },
}

/// What a run needs from a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_milli: u32,
    pub mem_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskSpec {
    pub runner: Runner,
    pub timeout_ms: Option<u64>,
    pub node: Option<NodeId>,
    pub labels: BTreeMap<String, String>,
    pub resources: Resources,
    pub max_attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub runner: Runner,
    pub resources: Resources,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskReport {
    Running,
    Finished { exit_code: i32, class: ExitClass },
}

/// How a run ended; only `Transient` failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitClass {
    Success,
    Failed,
    Transient,
    Timeout,
    Cancelled,
}

/// The exit status a command uses to ask for a retry (sysexits' EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: i32 = 75;

impl ExitClass {
    /// How a run's own exit status is classed: only EX_TEMPFAIL asks for
    /// a retry.
    pub fn of_exit_code(code: i32) -> ExitClass {
        match code {
            0 => ExitClass::Success,
            EXIT_TEMPFAIL => ExitClass::Transient,
            _ => ExitClass::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaStatus {
    Starting,
    Running,
    Crashed { exit_code: i32 },
}

/// Events that are not state transitions: they never enter the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransientEvent {
    Heartbeat(Heartbeat),
    Metrics(NodeMetrics),
    OutputChunk(OutputChunk),
    /// A command's outcome, sent to the client that asked.
    Ack {
        command: CommandId,
        idx: EventIdx,
        outcome: Outcome,
    },
}

/// A node's periodic sign of life, also carrying its replication progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    /// Where the node listens, so that nodes which only hear it through
    /// gossip can dial it.
    pub addr: String,
    pub cluster_id: Option<ClusterId>,
    /// Random per process start: two live processes with one identity are
    /// told apart by it.
    pub incarnation: u64,
    /// The sender's wall clock when its process started, and when it sent
    /// this: a heartbeat of an earlier run, replayed, is older than the
    /// process that hears it.
    pub started_ms: u64,
    pub sent_ms: u64,
    pub term: Term,
    pub applied: EventIdx,
    pub commit: EventIdx,
    /// The lowest index this node can still serve from its log.
    pub log_floor: EventIdx,
    pub leader: Option<NodeId>,
    /// The sender's cluster as the sender's State shows it; None before it
    /// holds State. Nodes of a cluster that holds nothing move to a cluster
    /// that stands before theirs (`crates/proto/src/node/discovery.rs`).
    pub standing: Option<Standing>,
    /// Whether the sender may hold a voter seat (not `--no-voter`): only
    /// such a node founds a cluster.
    pub voter: bool,
    /// From the master: why it leads.
    pub leader_reason: Option<LeaderReason>,
}

/// What orders two clusters that meet: one that holds data before one that
/// holds nothing, then the one founded first (then the smaller id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Keys, tasks, deployments or command outcomes: something a client
    /// wrote.
    pub holds_data: bool,
    pub founded_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetrics {
    pub node: NodeId,
    /// CPU not in use over the last interval (millicores).
    pub cpu_free_milli: u32,
    pub mem_free_bytes: u64,
    /// Space free on the disk of the node's data directory.
    pub disk_free_bytes: u64,
    /// Runs (tasks and replicas) under way on the node.
    pub running: u32,
    /// The node's labels (`shoal up --label K=V`), matched by task specs.
    pub labels: BTreeMap<String, String>,
    /// Whether the node runs user commands (`--allow-exec`).
    pub exec: bool,
    /// The host the node runs on (its machine and network namespace):
    /// nodes of one host share its ports.
    pub host: u64,
    /// The ports the node hands its replicas (`shoal up --replica-ports`).
    pub replica_ports: PortRange,
    /// Ports of that range some program on the host listens on (TCP), at
    /// most `PortRange::MAX_TAKEN`: no replica is given them.
    pub ports_taken: Vec<u16>,
    /// The build the node runs, and when its process started (wall
    /// clock, ms): for the dashboard.
    pub version: String,
    pub started_ms: u64,
    /// The members this node should hear and has not within the node
    /// timeout (a Raft member hears every node, a follower the Raft
    /// members): the dashboard's who-hears-whom.
    pub unheard: Vec<NodeId>,
    /// Where the node's HTTP API answers (`http://IP:PORT`), empty without
    /// one (`--no-api`): the dashboard offers it when its own node goes
    /// away.
    pub api: String,
    /// Whether the node takes tasks and replicas (not `--no-worker`).
    pub worker: bool,
    /// Whether the node may hold a voter seat (not `--no-voter`).
    pub voter: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub task: TaskId,
    pub attempt: u32,
    pub stream: Stream,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_names_every_key_it_writes_or_checks() {
        let set = |k: &str| Op::KvSet {
            key: k.into(),
            value: "v".into(),
        };
        assert_eq!(set("a").keys(), ["a"]);
        let fenced = Op::Fenced {
            lock: "l".into(),
            token: FencingToken(3),
            op: Box::new(set("a")),
        };
        assert_eq!(fenced.keys(), ["l", "a"]);
        let txn = Op::Txn {
            guards: vec![Guard {
                key: "g".into(),
                check: Check::Exists(true),
            }],
            ops: vec![set("a"), Op::KvDelete { key: "b".into() }],
        };
        assert_eq!(txn.keys(), ["g", "a", "b"]);
        assert!(Op::Undeploy { name: "web".into() }.keys().is_empty());
        let expired = Event::KvExpired {
            key: "t".into(),
            version: EventIdx(1),
        };
        assert_eq!(expired.keys(), ["t"]);
    }
}
