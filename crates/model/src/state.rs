//! The replicated State and `apply`: a pure, total, deterministic function of
//! the committed log (DESIGN invariant 1).
//!
//! Collections are persistent maps (`imbl::OrdMap`): cloning State is O(1),
//! so a snapshot can be encoded from a clone off the event loop while the
//! loop keeps applying.

use crate::event::{
    Command, Envelope, Event, ExitClass, InstanceSpec, Liveness, Op, Outcome, Rejection,
    ReplicaStatus, Role, TaskReport, TaskSpec,
};
use crate::hash::{entry_hash, Family, StateHash};
use crate::ids::{ClusterId, CommandId, EventIdx, FencingToken, NodeId, RaftId, TaskId, Term};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

/// Caps on every collection (DESIGN invariant 5). A command that would pass
/// one is refused with `Rejection::Full`; logged clean-ups keep the rest small.
#[derive(Debug)]
pub struct Limits;

impl Limits {
    pub const MAX_KEY_LEN: usize = 512;
    pub const MAX_VALUE_LEN: usize = 64 * 1024;
    pub const MAX_KV_KEYS: usize = 8_000_000;
    /// Members of one set, or elements of one list.
    pub const MAX_COLLECTION_LEN: usize = 4096;
    pub const MAX_NODES: usize = 1024;
    pub const MAX_TASKS: usize = 100_000;
    pub const MAX_DEPLOYMENTS: usize = 1024;
    pub const MAX_REPLICAS: u32 = 64;
    /// Stored command outcomes; past it the oldest is dropped.
    pub const MAX_OUTCOMES: usize = 1_000_000;
}

/// Cluster-wide scalars.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    pub cluster_id: Option<ClusterId>,
    pub founded_at_ms: u64,
    pub next_raft_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_id: RaftId,
    pub addr: String,
    pub role: Role,
    pub liveness: Liveness,
    pub joined_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvValue {
    Str(String),
    Int(i64),
    Set(BTreeSet<String>),
    List(Vec<String>),
    Lock { holder: String, token: FencingToken },
}

impl KvValue {
    /// The textual form `get` returns for scalars.
    pub fn as_text(&self) -> Option<String> {
        match self {
            KvValue::Str(s) => Some(s.clone()),
            KvValue::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvEntry {
    pub value: KvValue,
    /// Index of the last change; a TTL restarts from it.
    pub version: EventIdx,
    pub ttl_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Queued,
    Leased {
        node: NodeId,
        token: FencingToken,
        lease_ms: u64,
    },
    Running {
        node: NodeId,
        token: FencingToken,
        lease_ms: u64,
    },
    Finished {
        exit_code: i32,
        class: ExitClass,
    },
    Failed {
        reason: String,
    },
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Finished { .. } | TaskStatus::Failed { .. } | TaskStatus::Cancelled
        )
    }

    /// The lease token if the task is held by a node.
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            TaskStatus::Leased { token, .. } | TaskStatus::Running { token, .. } => Some(*token),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// Runs started so far (1 after the first grant).
    pub attempt: u32,
    /// The node of the latest grant: where its output was produced.
    pub node: Option<NodeId>,
    pub submitted_at_ms: u64,
    /// Master clock of the last status change that came with a command.
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    pub node: NodeId,
    pub token: FencingToken,
    pub port: u16,
    pub status: ReplicaStatus,
    pub restarts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deployment {
    pub spec: InstanceSpec,
    pub replicas: u32,
    pub placements: BTreeMap<u32, Placement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub outcome: Outcome,
    /// Index of the event that produced it.
    pub idx: EventIdx,
    pub at_ms: u64,
}

/// A command's result as `apply` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    pub id: CommandId,
    pub outcome: Outcome,
    /// Where the outcome was first produced.
    pub idx: EventIdx,
    /// True when the id had been applied before: nothing changed this time.
    pub duplicate: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub command: Option<CommandResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event {got} is not consecutive: expected {expected}")]
    OutOfOrder { expected: EventIdx, got: EventIdx },
}

/// The replicated cluster State.
#[derive(Clone, Debug, Default)]
pub struct State {
    index: EventIdx,
    term: Term,
    meta: Meta,
    nodes: OrdMap<NodeId, NodeInfo>,
    kv: OrdMap<String, KvEntry>,
    tasks: OrdMap<TaskId, Task>,
    deployments: OrdMap<String, Deployment>,
    outcomes: OrdMap<CommandId, OutcomeRecord>,
    /// Keys with a TTL, for the master's expiry tick. Derived from `kv`.
    expiring: imbl::OrdSet<String>,
    /// Outcomes by age, for expiry and for the cap. Derived from `outcomes`.
    outcome_age: OrdMap<(u64, EventIdx), CommandId>,
    hash: StateHash,
}

/// Rebuilds a State from a snapshot's batches, hashing as it goes. Batches
/// of one collection may come in any number; keys must not repeat.
#[derive(Debug)]
pub struct StateBuilder {
    state: State,
}

impl StateBuilder {
    pub fn new(index: EventIdx, term: Term, meta: Meta) -> Self {
        let mut state = State::new();
        state.set_meta(meta);
        state.index = index;
        state.term = term;
        StateBuilder { state }
    }

    pub fn meta(&mut self, meta: Meta) {
        self.state.set_meta(meta);
    }

    pub fn nodes(&mut self, batch: Vec<(NodeId, NodeInfo)>) {
        let s = &mut self.state;
        for (k, v) in batch {
            put(&mut s.hash, &mut s.nodes, Family::Node, k, Some(v));
        }
    }

    pub fn kv(&mut self, batch: Vec<(String, KvEntry)>) {
        for (k, v) in batch {
            self.state.kv_put(k, Some(v));
        }
    }

    pub fn tasks(&mut self, batch: Vec<(TaskId, Task)>) {
        let s = &mut self.state;
        for (k, v) in batch {
            put(&mut s.hash, &mut s.tasks, Family::Task, k, Some(v));
        }
    }

    pub fn deployments(&mut self, batch: Vec<(String, Deployment)>) {
        let s = &mut self.state;
        for (k, v) in batch {
            put(
                &mut s.hash,
                &mut s.deployments,
                Family::Deployment,
                k,
                Some(v),
            );
        }
    }

    pub fn outcomes(&mut self, batch: Vec<(CommandId, OutcomeRecord)>) {
        let s = &mut self.state;
        for (k, v) in batch {
            s.outcome_age.insert((v.at_ms, v.idx), k.clone());
            put(&mut s.hash, &mut s.outcomes, Family::Outcome, k, Some(v));
        }
    }

    pub fn finish(self) -> State {
        self.state
    }
}

/// Inserts or removes one entry and keeps the State hash in step. Every
/// change to a hashed collection goes through here.
fn put<K, V>(
    hash: &mut StateHash,
    map: &mut OrdMap<K, V>,
    family: Family,
    key: K,
    value: Option<V>,
) -> Option<V>
where
    K: Ord + Clone + Hash,
    V: Clone + Hash,
{
    let old = match value {
        Some(v) => {
            hash.add(entry_hash(family, &key, &v));
            map.insert(key.clone(), v)
        }
        None => map.remove(&key),
    };
    if let Some(o) = &old {
        hash.sub(entry_hash(family, &key, o));
    }
    old
}

fn rejected(r: Rejection) -> Outcome {
    Outcome::Rejected(r)
}

fn invalid(reason: &str) -> Outcome {
    rejected(Rejection::Invalid {
        reason: reason.to_owned(),
    })
}

impl State {
    pub fn new() -> Self {
        let mut s = State::default();
        s.hash.add(entry_hash(Family::Meta, &(), &s.meta));
        s
    }

    pub fn index(&self) -> EventIdx {
        self.index
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn hash(&self) -> StateHash {
        self.hash
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn cluster_id(&self) -> Option<&ClusterId> {
        self.meta.cluster_id.as_ref()
    }

    pub fn nodes(&self) -> &OrdMap<NodeId, NodeInfo> {
        &self.nodes
    }

    pub fn kv(&self) -> &OrdMap<String, KvEntry> {
        &self.kv
    }

    pub fn tasks(&self) -> &OrdMap<TaskId, Task> {
        &self.tasks
    }

    pub fn deployments(&self) -> &OrdMap<String, Deployment> {
        &self.deployments
    }

    pub fn outcomes(&self) -> &OrdMap<CommandId, OutcomeRecord> {
        &self.outcomes
    }

    pub fn outcome(&self, id: &CommandId) -> Option<&OutcomeRecord> {
        self.outcomes.get(id)
    }

    /// Nodes whose Raft role is `role`, by Raft id.
    pub fn members(&self, role: Role) -> Vec<(RaftId, NodeId)> {
        let mut v: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.role == role)
            .map(|(id, n)| (n.raft_id, id.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn node_by_raft_id(&self, raft_id: RaftId) -> Option<&NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.raft_id == raft_id)
            .map(|(id, _)| id)
    }

    /// Hashes every entry from scratch; equal to `hash()` unless State is
    /// corrupt. For tests and for verifying a decoded snapshot.
    pub fn recompute_hash(&self) -> StateHash {
        let mut h = StateHash::default();
        h.add(entry_hash(Family::Meta, &(), &self.meta));
        for (k, v) in &self.nodes {
            h.add(entry_hash(Family::Node, k, v));
        }
        for (k, v) in &self.kv {
            h.add(entry_hash(Family::Kv, k, v));
        }
        for (k, v) in &self.tasks {
            h.add(entry_hash(Family::Task, k, v));
        }
        for (k, v) in &self.deployments {
            h.add(entry_hash(Family::Deployment, k, v));
        }
        for (k, v) in &self.outcomes {
            h.add(entry_hash(Family::Outcome, k, v));
        }
        h
    }

    /// Applies the next committed event. Refuses any index but `index + 1`.
    pub fn apply(&mut self, env: &Envelope) -> Result<Applied, ApplyError> {
        let expected = self.index.next();
        if env.idx != expected {
            return Err(ApplyError::OutOfOrder {
                expected,
                got: env.idx,
            });
        }
        let command = self.apply_event(env.idx, &env.event);
        self.index = env.idx;
        self.term = env.term;
        Ok(Applied { command })
    }

    fn apply_event(&mut self, idx: EventIdx, event: &Event) -> Option<CommandResult> {
        match event {
            Event::Noop => {}
            Event::ClusterFounded {
                cluster_id,
                founder,
                addr,
                at_ms,
            } => {
                if self.meta.cluster_id.is_none() {
                    let mut meta = self.meta.clone();
                    meta.cluster_id = Some(cluster_id.clone());
                    meta.founded_at_ms = *at_ms;
                    meta.next_raft_id = 2;
                    self.set_meta(meta);
                    let info = NodeInfo {
                        raft_id: RaftId(1),
                        addr: addr.clone(),
                        role: Role::Voter,
                        liveness: Liveness::Alive,
                        joined_at_ms: *at_ms,
                    };
                    put(
                        &mut self.hash,
                        &mut self.nodes,
                        Family::Node,
                        founder.clone(),
                        Some(info),
                    );
                }
            }
            Event::NodeJoined { node, addr, at_ms } => self.node_joined(node, addr, *at_ms),
            Event::NodeLiveness { node, liveness } => self.update_node(node, |n| {
                if n.liveness != Liveness::Left || *liveness == Liveness::Alive {
                    n.liveness = *liveness;
                }
            }),
            Event::NodeLeft { node } => self.update_node(node, |n| n.liveness = Liveness::Left),
            Event::NodeForgotten { node } => {
                let gone = self.nodes.get(node).is_some_and(|n| {
                    matches!(n.liveness, Liveness::Dead | Liveness::Left)
                        && n.role == Role::Follower
                });
                if gone {
                    put(
                        &mut self.hash,
                        &mut self.nodes,
                        Family::Node,
                        node.clone(),
                        None,
                    );
                }
            }
            Event::Membership { node, role } => self.update_node(node, |n| n.role = *role),
            Event::Command { cmd, at_ms } => return Some(self.apply_command(idx, cmd, *at_ms)),
            Event::KvExpired { key, version } => {
                let expired = self
                    .kv
                    .get(key)
                    .is_some_and(|e| e.version == *version && e.ttl_ms.is_some());
                if expired {
                    self.kv_put(key.clone(), None);
                }
            }
            Event::TaskGranted {
                task,
                node,
                lease_ms,
            } => self.update_task(task, |t| {
                if t.status == TaskStatus::Queued {
                    t.attempt += 1;
                    t.node = Some(node.clone());
                    t.status = TaskStatus::Leased {
                        node: node.clone(),
                        token: FencingToken(idx.0),
                        lease_ms: *lease_ms,
                    };
                }
            }),
            Event::TaskLeaseExpired { task, token } => self.update_task(task, |t| {
                if t.status.token() == Some(*token) {
                    t.status = if t.attempt < t.spec.max_attempts.max(1) {
                        TaskStatus::Queued
                    } else {
                        TaskStatus::Failed {
                            reason: "lease expired".to_owned(),
                        }
                    };
                }
            }),
            Event::TasksForgotten { tasks } => {
                for id in tasks {
                    if self.tasks.get(id).is_some_and(|t| t.status.is_terminal()) {
                        put(
                            &mut self.hash,
                            &mut self.tasks,
                            Family::Task,
                            id.clone(),
                            None,
                        );
                    }
                }
            }
            Event::ReplicaPlaced {
                deployment,
                replica,
                node,
                port,
            } => self.update_deployment(deployment, |d| {
                if *replica < d.replicas {
                    let restarts = d.placements.get(replica).map_or(0, |p| p.restarts);
                    d.placements.insert(
                        *replica,
                        Placement {
                            node: node.clone(),
                            token: FencingToken(idx.0),
                            port: *port,
                            status: ReplicaStatus::Starting,
                            restarts,
                        },
                    );
                }
            }),
            Event::ReplicaUnplaced {
                deployment,
                replica,
                token,
            } => self.update_deployment(deployment, |d| {
                if d.placements.get(replica).is_some_and(|p| p.token == *token) {
                    d.placements.remove(replica);
                }
            }),
            Event::OutcomesExpired { before_ms } => {
                while let Some(((at, _), _)) = self.outcome_age.get_min() {
                    if *at >= *before_ms {
                        break;
                    }
                    self.drop_oldest_outcome();
                }
            }
        }
        None
    }

    /// Master clock of the oldest stored command outcome.
    pub fn oldest_outcome_ms(&self) -> Option<u64> {
        self.outcome_age.get_min().map(|((at, _), _)| *at)
    }

    /// Keys that carry a TTL (locks and set-if-absent keys).
    pub fn expiring(&self) -> &imbl::OrdSet<String> {
        &self.expiring
    }

    /// Every change to `kv` goes through here, keeping `expiring` in step.
    fn kv_put(&mut self, key: String, entry: Option<KvEntry>) -> Option<KvEntry> {
        if entry.as_ref().is_some_and(|e| e.ttl_ms.is_some()) {
            self.expiring.insert(key.clone());
        } else {
            self.expiring.remove(&key);
        }
        put(&mut self.hash, &mut self.kv, Family::Kv, key, entry)
    }

    fn set_meta(&mut self, meta: Meta) {
        self.hash.sub(entry_hash(Family::Meta, &(), &self.meta));
        self.hash.add(entry_hash(Family::Meta, &(), &meta));
        self.meta = meta;
    }

    fn node_joined(&mut self, node: &NodeId, addr: &str, at_ms: u64) {
        if self.nodes.contains_key(node) {
            self.update_node(node, |n| {
                n.addr = addr.to_owned();
                n.liveness = Liveness::Alive;
            });
            return;
        }
        if self.nodes.len() >= Limits::MAX_NODES || self.meta.cluster_id.is_none() {
            return;
        }
        let mut meta = self.meta.clone();
        let raft_id = RaftId(meta.next_raft_id);
        meta.next_raft_id += 1;
        self.set_meta(meta);
        let info = NodeInfo {
            raft_id,
            addr: addr.to_owned(),
            role: Role::Follower,
            liveness: Liveness::Alive,
            joined_at_ms: at_ms,
        };
        put(
            &mut self.hash,
            &mut self.nodes,
            Family::Node,
            node.clone(),
            Some(info),
        );
    }

    fn update_node(&mut self, node: &NodeId, f: impl FnOnce(&mut NodeInfo)) {
        if let Some(mut n) = self.nodes.get(node).cloned() {
            f(&mut n);
            put(
                &mut self.hash,
                &mut self.nodes,
                Family::Node,
                node.clone(),
                Some(n),
            );
        }
    }

    fn update_task(&mut self, id: &TaskId, f: impl FnOnce(&mut Task)) {
        if let Some(mut t) = self.tasks.get(id).cloned() {
            f(&mut t);
            put(
                &mut self.hash,
                &mut self.tasks,
                Family::Task,
                id.clone(),
                Some(t),
            );
        }
    }

    fn update_deployment(&mut self, name: &str, f: impl FnOnce(&mut Deployment)) {
        if let Some(mut d) = self.deployments.get(name).cloned() {
            f(&mut d);
            put(
                &mut self.hash,
                &mut self.deployments,
                Family::Deployment,
                name.to_owned(),
                Some(d),
            );
        }
    }

    fn drop_oldest_outcome(&mut self) {
        if let Some((age, id)) = self.outcome_age.get_min().cloned() {
            self.outcome_age.remove(&age);
            put(
                &mut self.hash,
                &mut self.outcomes,
                Family::Outcome,
                id,
                None,
            );
        }
    }

    fn apply_command(&mut self, idx: EventIdx, cmd: &Command, at_ms: u64) -> CommandResult {
        if let Some(rec) = self.outcomes.get(&cmd.id) {
            return CommandResult {
                id: cmd.id.clone(),
                outcome: rec.outcome.clone(),
                idx: rec.idx,
                duplicate: true,
            };
        }
        let outcome = self.apply_op(idx, &cmd.id, &cmd.op, at_ms);
        if cmd.op == Op::Barrier {
            return CommandResult {
                id: cmd.id.clone(),
                outcome,
                idx,
                duplicate: false,
            };
        }
        if self.outcomes.len() >= Limits::MAX_OUTCOMES {
            self.drop_oldest_outcome();
        }
        let rec = OutcomeRecord {
            outcome: outcome.clone(),
            idx,
            at_ms,
        };
        self.outcome_age.insert((at_ms, idx), cmd.id.clone());
        put(
            &mut self.hash,
            &mut self.outcomes,
            Family::Outcome,
            cmd.id.clone(),
            Some(rec),
        );
        CommandResult {
            id: cmd.id.clone(),
            outcome,
            idx,
            duplicate: false,
        }
    }

    fn apply_op(&mut self, idx: EventIdx, id: &CommandId, op: &Op, at_ms: u64) -> Outcome {
        if let Err(reason) = validate_op(op) {
            return invalid(&reason);
        }
        match op {
            Op::KvSet { key, value } => self.kv_write(key, idx, |_| {
                Ok((Some(KvValue::Str(value.clone())), None, Outcome::Done))
            }),
            Op::KvSetIfAbsent { key, value, ttl_ms } => self.kv_write(key, idx, |cur| {
                Ok(match cur {
                    Some(_) => (None, None, Outcome::Applied(false)),
                    None => (
                        Some(KvValue::Str(value.clone())),
                        *ttl_ms,
                        Outcome::Applied(true),
                    ),
                })
            }),
            Op::KvCas {
                key,
                expected,
                value,
            } => self.kv_write(key, idx, |cur| {
                let current = match cur {
                    None => None,
                    Some(e) => Some(e.value.as_text().ok_or(Rejection::WrongType)?),
                };
                Ok(if current == *expected {
                    (
                        Some(KvValue::Str(value.clone())),
                        None,
                        Outcome::Applied(true),
                    )
                } else {
                    (None, None, Outcome::Applied(false))
                })
            }),
            Op::KvIncrBy { key, by } => self.kv_write(key, idx, |cur| {
                let (n, ttl) = match cur {
                    None => (0, None),
                    Some(KvEntry {
                        value: KvValue::Int(n),
                        ttl_ms,
                        ..
                    }) => (*n, *ttl_ms),
                    Some(KvEntry {
                        value: KvValue::Str(s),
                        ttl_ms,
                        ..
                    }) => (s.parse::<i64>().map_err(|_| Rejection::WrongType)?, *ttl_ms),
                    Some(_) => return Err(Rejection::WrongType),
                };
                let n = n.checked_add(*by).ok_or(Rejection::Overflow)?;
                Ok((Some(KvValue::Int(n)), ttl, Outcome::Int(n)))
            }),
            Op::KvDelete { key } => {
                let old = self.kv_put(key.clone(), None);
                Outcome::Applied(old.is_some())
            }
            Op::SetAdd { key, member } => self.kv_write(key, idx, |cur| {
                let mut set = match cur.map(|e| &e.value) {
                    None => BTreeSet::new(),
                    Some(KvValue::Set(s)) => s.clone(),
                    Some(_) => return Err(Rejection::WrongType),
                };
                if set.contains(member) {
                    return Ok((None, None, Outcome::Applied(false)));
                }
                if set.len() >= Limits::MAX_COLLECTION_LEN {
                    return Err(full("set members"));
                }
                set.insert(member.clone());
                Ok((Some(KvValue::Set(set)), None, Outcome::Applied(true)))
            }),
            Op::SetRemove { key, member } => {
                let set = match self.kv.get(key).map(|e| &e.value) {
                    None => return Outcome::Applied(false),
                    Some(KvValue::Set(s)) => s,
                    Some(_) => return rejected(Rejection::WrongType),
                };
                if !set.contains(member) {
                    return Outcome::Applied(false);
                }
                let mut set = set.clone();
                set.remove(member);
                let entry = (!set.is_empty()).then_some(KvEntry {
                    value: KvValue::Set(set),
                    version: idx,
                    ttl_ms: None,
                });
                self.kv_put(key.clone(), entry);
                Outcome::Applied(true)
            }
            Op::ListPush { key, value } => self.kv_write(key, idx, |cur| {
                let mut list = match cur.map(|e| &e.value) {
                    None => Vec::new(),
                    Some(KvValue::List(l)) => l.clone(),
                    Some(_) => return Err(Rejection::WrongType),
                };
                if list.len() >= Limits::MAX_COLLECTION_LEN {
                    return Err(full("list elements"));
                }
                list.push(value.clone());
                let len = list.len() as i64;
                Ok((Some(KvValue::List(list)), None, Outcome::Int(len)))
            }),
            Op::LockAcquire {
                name,
                holder,
                ttl_ms,
            } => self.kv_write(name, idx, |cur| match cur.map(|e| &e.value) {
                None => Ok((
                    Some(KvValue::Lock {
                        holder: holder.clone(),
                        token: FencingToken(idx.0),
                    }),
                    Some(*ttl_ms),
                    Outcome::Token(FencingToken(idx.0)),
                )),
                Some(KvValue::Lock { holder: h, token }) if h == holder => Ok((
                    Some(KvValue::Lock {
                        holder: h.clone(),
                        token: *token,
                    }),
                    Some(*ttl_ms),
                    Outcome::Token(*token),
                )),
                Some(KvValue::Lock { holder: h, .. }) => {
                    Err(Rejection::LockHeld { holder: h.clone() })
                }
                Some(_) => Err(Rejection::WrongType),
            }),
            Op::LockKeepalive { name, token } => self.kv_write(name, idx, |cur| match cur {
                Some(KvEntry {
                    value: v @ KvValue::Lock { token: t, .. },
                    ttl_ms,
                    ..
                }) if t == token => Ok((Some(v.clone()), *ttl_ms, Outcome::Done)),
                _ => Err(Rejection::StaleToken),
            }),
            Op::LockRelease { name, token } => match self.kv.get(name).map(|e| &e.value) {
                Some(KvValue::Lock { token: t, .. }) if t == token => {
                    self.kv_put(name.clone(), None);
                    Outcome::Done
                }
                _ => rejected(Rejection::StaleToken),
            },
            Op::TaskSubmit { spec } => {
                let task_id = TaskId(id.0.clone());
                if self.tasks.contains_key(&task_id) {
                    return invalid("task exists");
                }
                if self.tasks.len() >= Limits::MAX_TASKS {
                    return rejected(full("tasks"));
                }
                let task = Task {
                    spec: spec.clone(),
                    status: TaskStatus::Queued,
                    attempt: 0,
                    node: None,
                    submitted_at_ms: at_ms,
                    updated_at_ms: at_ms,
                };
                put(
                    &mut self.hash,
                    &mut self.tasks,
                    Family::Task,
                    task_id.clone(),
                    Some(task),
                );
                Outcome::Task(task_id)
            }
            Op::TaskCancel { task } => match self.tasks.get(task) {
                None => rejected(Rejection::NotFound),
                Some(t) if t.status.is_terminal() => Outcome::Applied(false),
                Some(_) => {
                    self.update_task(task, |t| {
                        t.status = TaskStatus::Cancelled;
                        t.updated_at_ms = at_ms;
                    });
                    Outcome::Applied(true)
                }
            },
            Op::TaskDelete { task } => match self.tasks.get(task) {
                None => rejected(Rejection::NotFound),
                Some(t) if !t.status.is_terminal() => rejected(Rejection::NotFinished),
                Some(_) => {
                    put(
                        &mut self.hash,
                        &mut self.tasks,
                        Family::Task,
                        task.clone(),
                        None,
                    );
                    Outcome::Done
                }
            },
            Op::TaskReport {
                task,
                token,
                report,
            } => {
                let Some(t) = self.tasks.get(task) else {
                    return rejected(Rejection::NotFound);
                };
                let (node, lease_ms) = match &t.status {
                    TaskStatus::Leased {
                        node,
                        token: tk,
                        lease_ms,
                    }
                    | TaskStatus::Running {
                        node,
                        token: tk,
                        lease_ms,
                    } if tk == token => (node.clone(), *lease_ms),
                    _ => return rejected(Rejection::StaleToken),
                };
                self.update_task(task, |t| {
                    t.updated_at_ms = at_ms;
                    t.status = match report {
                        TaskReport::Running => TaskStatus::Running {
                            node,
                            token: *token,
                            lease_ms,
                        },
                        TaskReport::Finished {
                            class: ExitClass::Transient,
                            ..
                        } if t.attempt < t.spec.max_attempts.max(1) => TaskStatus::Queued,
                        TaskReport::Finished { exit_code, class } => TaskStatus::Finished {
                            exit_code: *exit_code,
                            class: *class,
                        },
                    };
                });
                Outcome::Done
            }
            Op::Deploy {
                name,
                spec,
                replicas,
            } => {
                let existing = self.deployments.get(name).cloned();
                if existing.is_none() && self.deployments.len() >= Limits::MAX_DEPLOYMENTS {
                    return rejected(full("deployments"));
                }
                let mut placements = existing
                    .filter(|d| d.spec == *spec)
                    .map(|d| d.placements)
                    .unwrap_or_default();
                placements.retain(|r, _| r < replicas);
                let d = Deployment {
                    spec: spec.clone(),
                    replicas: *replicas,
                    placements,
                };
                put(
                    &mut self.hash,
                    &mut self.deployments,
                    Family::Deployment,
                    name.clone(),
                    Some(d),
                );
                Outcome::Done
            }
            Op::Undeploy { name } => {
                let old = put(
                    &mut self.hash,
                    &mut self.deployments,
                    Family::Deployment,
                    name.clone(),
                    None,
                );
                Outcome::Applied(old.is_some())
            }
            Op::Barrier => Outcome::Done,
            Op::Fenced { lock, token, op } => match self.kv.get(lock).map(|e| &e.value) {
                Some(KvValue::Lock { token: t, .. }) if t == token => {
                    self.apply_op(idx, id, op, at_ms)
                }
                _ => rejected(Rejection::StaleToken),
            },
            Op::ReplicaReport {
                deployment,
                replica,
                token,
                status,
            } => {
                let current = self
                    .deployments
                    .get(deployment)
                    .and_then(|d| d.placements.get(replica))
                    .map(|p| p.token);
                if current != Some(*token) {
                    return rejected(Rejection::StaleToken);
                }
                self.update_deployment(deployment, |d| {
                    if let Some(p) = d.placements.get_mut(replica) {
                        if matches!(status, ReplicaStatus::Crashed { .. }) {
                            p.restarts += 1;
                        }
                        p.status = *status;
                    }
                });
                Outcome::Done
            }
        }
    }

    /// Read-modify-write of one key. `f` sees the current entry and returns
    /// the new value (None: unchanged), its TTL and the outcome.
    fn kv_write(
        &mut self,
        key: &str,
        idx: EventIdx,
        f: impl FnOnce(Option<&KvEntry>) -> Result<(Option<KvValue>, Option<u64>, Outcome), Rejection>,
    ) -> Outcome {
        let cur = self.kv.get(key);
        let exists = cur.is_some();
        match f(cur) {
            Err(r) => rejected(r),
            Ok((None, _, outcome)) => outcome,
            Ok((Some(value), ttl_ms, outcome)) => {
                if !exists && self.kv.len() >= Limits::MAX_KV_KEYS {
                    return rejected(full("keys"));
                }
                let entry = KvEntry {
                    value,
                    version: idx,
                    ttl_ms,
                };
                self.kv_put(key.to_owned(), Some(entry));
                outcome
            }
        }
    }
}

fn full(what: &str) -> Rejection {
    Rejection::Full {
        what: what.to_owned(),
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > Limits::MAX_KEY_LEN {
        return Err(format!("key must be 1..={} bytes", Limits::MAX_KEY_LEN));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.len() > Limits::MAX_VALUE_LEN {
        return Err(format!("value exceeds {} bytes", Limits::MAX_VALUE_LEN));
    }
    Ok(())
}

/// Checks a command's shape; the edge runs it too, so a bad command is
/// refused before it reaches the log, and `apply` stays total if one does.
pub fn validate_op(op: &Op) -> Result<(), String> {
    match op {
        Op::KvSet { key, value } | Op::ListPush { key, value } => {
            check_key(key)?;
            check_value(value)
        }
        Op::KvSetIfAbsent { key, value, ttl_ms } => {
            check_key(key)?;
            check_value(value)?;
            if *ttl_ms == Some(0) {
                return Err("ttl must be positive".into());
            }
            Ok(())
        }
        Op::KvCas {
            key,
            expected,
            value,
        } => {
            check_key(key)?;
            check_value(value)?;
            expected.as_deref().map_or(Ok(()), check_value)
        }
        Op::KvIncrBy { key, .. } | Op::KvDelete { key } => check_key(key),
        Op::SetAdd { key, member } | Op::SetRemove { key, member } => {
            check_key(key)?;
            check_value(member)
        }
        Op::LockAcquire {
            name,
            holder,
            ttl_ms,
        } => {
            check_key(name)?;
            check_value(holder)?;
            if *ttl_ms == 0 {
                return Err("lock ttl must be positive".into());
            }
            Ok(())
        }
        Op::LockKeepalive { name, .. } | Op::LockRelease { name, .. } => check_key(name),
        Op::Deploy { name, replicas, .. } => {
            check_key(name)?;
            if *replicas > Limits::MAX_REPLICAS {
                return Err(format!("at most {} replicas", Limits::MAX_REPLICAS));
            }
            Ok(())
        }
        Op::Undeploy { name }
        | Op::ReplicaReport {
            deployment: name, ..
        } => check_key(name),
        Op::Fenced { lock, op, .. } => {
            check_key(lock)?;
            if !op.is_kv_write() {
                return Err("a fence guards key-value writes only".into());
            }
            validate_op(op)
        }
        Op::Barrier
        | Op::TaskSubmit { .. }
        | Op::TaskCancel { .. }
        | Op::TaskDelete { .. }
        | Op::TaskReport { .. } => Ok(()),
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
