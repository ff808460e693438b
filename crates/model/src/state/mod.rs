//! The replicated State and `apply`: a pure, total, deterministic function of
//! the committed log (invariant 1).
//!
//! Collections are persistent maps (`tree::TreeMap`): cloning State is O(1),
//! so a snapshot can be encoded from a clone off the event loop while the
//! loop keeps applying. Each keeps its own share of the state hash
//! (`HashedMap`); State's hash is their sum, with the cluster-wide `Meta`.
//!
//! Each domain has a file with its types, its commands and its events:
//! `members` (nodes and Raft roles), `kv` (keys, sets, lists, locks),
//! `tasks`, `deployments`, `outcomes` (command ids, invariant 7). `validate`
//! holds the caps and shape checks, `builder` rebuilds State from a
//! snapshot.

mod builder;
mod deployments;
mod hashed_map;
mod kv;
mod members;
mod outcomes;
mod tasks;
mod txn;
mod validate;

pub use builder::{BuildError, StateBuilder};
pub use deployments::{Deployment, ReplicaPlacement};
pub use kv::{Key, KvEntry, KvValue};
pub use members::NodeInfo;
pub use outcomes::{Applied, CommandResult, OutcomeRecord, RequestDigest};
pub use tasks::{Task, TaskStatus};
pub use validate::{validate_op, Limits};

use crate::event::{Command, Envelope, Event, Op, Outcome, Rejection};
use crate::hash::{entry_hash, Family, StateHash};
use crate::ids::{ClusterId, CommandDigest, CommandId, EventIdx, TaskId, Term};
use crate::tree::TreeMap;
use hashed_map::HashedMap;
use imbl::OrdSet;
use serde::{Deserialize, Serialize};

/// Cluster-wide scalars.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    pub cluster_id: Option<ClusterId>,
    pub founded_at_ms: u64,
    pub next_raft_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event {got} is not consecutive: expected {expected}")]
    OutOfOrder { expected: EventIdx, got: EventIdx },
}

/// The replicated cluster State.
#[derive(Clone, Debug)]
pub struct State {
    index: EventIdx,
    term: Term,
    meta: Meta,
    meta_hash: StateHash,
    nodes: HashedMap<crate::ids::NodeId, NodeInfo>,
    kv: HashedMap<Key, KvEntry>,
    /// Keys with a TTL, for the master's expiry tick. Derived from `kv`.
    expiring: OrdSet<Key>,
    tasks: HashedMap<TaskId, Task>,
    deployments: HashedMap<String, Deployment>,
    /// Outcomes by the digest of their command's id.
    outcomes: HashedMap<CommandDigest, OutcomeRecord>,
    /// Outcomes by age, for expiry and for the cap. Derived from `outcomes`.
    outcome_age: TreeMap<(u64, EventIdx), CommandDigest>,
    /// The stored outcomes' weights summed (`Outcome::weight`), for the
    /// cap. Derived from `outcomes`.
    outcome_weight: usize,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

fn meta_hash(meta: &Meta) -> StateHash {
    let mut h = StateHash::default();
    h.add(entry_hash(Family::Meta, &(), meta));
    h
}

fn sum(parts: [StateHash; 6]) -> StateHash {
    let mut h = StateHash::default();
    for p in parts {
        h.add(p.0);
    }
    h
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
        let meta = Meta::default();
        State {
            index: EventIdx::ZERO,
            term: Term::default(),
            meta_hash: meta_hash(&meta),
            meta,
            nodes: HashedMap::new(Family::Node),
            kv: HashedMap::new(Family::Kv),
            expiring: OrdSet::new(),
            tasks: HashedMap::new(Family::Task),
            deployments: HashedMap::new(Family::Deployment),
            outcomes: HashedMap::new(Family::Outcome),
            outcome_age: TreeMap::new(),
            outcome_weight: 0,
        }
    }

    pub fn index(&self) -> EventIdx {
        self.index
    }

    pub fn term(&self) -> Term {
        self.term
    }

    /// The state hash at `index`: a sum kept up to date by every change.
    pub fn hash(&self) -> StateHash {
        sum([
            self.meta_hash,
            self.nodes.hash(),
            self.kv.hash(),
            self.tasks.hash(),
            self.deployments.hash(),
            self.outcomes.hash(),
        ])
    }

    /// Hashes every entry from scratch; equal to `hash()` unless State is
    /// corrupt. For tests and for verifying a decoded snapshot.
    pub fn recompute_hash(&self) -> StateHash {
        sum([
            meta_hash(&self.meta),
            self.nodes.recompute(),
            self.kv.recompute(),
            self.tasks.recompute(),
            self.deployments.recompute(),
            self.outcomes.recompute(),
        ])
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn cluster_id(&self) -> Option<&ClusterId> {
        self.meta.cluster_id.as_ref()
    }

    pub fn nodes(&self) -> &TreeMap<crate::ids::NodeId, NodeInfo> {
        self.nodes.as_map()
    }

    pub fn kv(&self) -> &TreeMap<Key, KvEntry> {
        self.kv.as_map()
    }

    pub fn tasks(&self) -> &TreeMap<TaskId, Task> {
        self.tasks.as_map()
    }

    pub fn deployments(&self) -> &TreeMap<String, Deployment> {
        self.deployments.as_map()
    }

    /// Stored outcomes by the digest of their command's id.
    pub fn outcomes(&self) -> &TreeMap<CommandDigest, OutcomeRecord> {
        self.outcomes.as_map()
    }

    pub fn outcome(&self, id: &CommandId) -> Option<&OutcomeRecord> {
        self.outcomes.get(&CommandDigest::of(id))
    }

    /// Keys that carry a TTL (locks and set-if-absent keys).
    pub fn expiring(&self) -> &OrdSet<Key> {
        &self.expiring
    }

    fn set_meta(&mut self, meta: Meta) {
        self.meta_hash = meta_hash(&meta);
        self.meta = meta;
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
            } => self.cluster_founded(cluster_id, founder, addr, *at_ms),
            Event::NodeJoined { node, addr, at_ms } => self.node_joined(node, addr, *at_ms),
            Event::NodeLiveness { node, liveness } => self.node_liveness(node, *liveness),
            Event::NodeLeft { node } => self.node_left(node),
            Event::NodeForgotten { node } => self.node_forgotten(node),
            Event::Membership { node, role } => self.membership(node, *role),
            Event::Command { cmd, at_ms } => return Some(self.apply_command(idx, cmd, *at_ms)),
            Event::KvExpired { key, version } => self.kv_expired(key, *version),
            Event::TaskGranted {
                task,
                node,
                lease_ms,
            } => self.task_granted(idx, task, node, *lease_ms),
            Event::TaskLeaseExpired { task, token } => self.task_lease_expired(task, *token),
            Event::TasksForgotten { tasks } => self.tasks_forgotten(tasks),
            Event::ReplicaPlaced {
                deployment,
                replica,
                node,
                port,
            } => self.replica_placed(idx, deployment, *replica, node, *port),
            Event::ReplicaUnplaced {
                deployment,
                replica,
                token,
            } => self.replica_unplaced(deployment, *replica, *token),
            Event::OutcomesExpired { before_ms } => self.outcomes_expired(*before_ms),
        }
        None
    }

    /// A command, once per id (invariant 7): a repeat returns the outcome
    /// stored the first time and changes nothing.
    fn apply_command(&mut self, idx: EventIdx, cmd: &Command, at_ms: u64) -> CommandResult {
        let digest = CommandDigest::of(&cmd.id);
        let request = RequestDigest::of(&cmd.op);
        if let Some(known) = self.known_command(cmd, &digest, request) {
            return known;
        }
        let outcome = self.apply_op(idx, &cmd.id, &cmd.op, at_ms);
        if cmd.op == Op::Barrier {
            // A barrier only orders: it leaves no trace in State.
            return CommandResult {
                id: cmd.id.clone(),
                request,
                outcome,
                idx,
                duplicate: false,
            };
        }
        self.record_outcome(idx, &cmd.id, (digest, request), outcome, at_ms)
    }

    fn apply_op(&mut self, idx: EventIdx, id: &CommandId, op: &Op, at_ms: u64) -> Outcome {
        if let Err(reason) = validate_op(op) {
            return invalid(&reason);
        }
        match op {
            Op::TaskSubmit { spec } => self.task_submit(id, spec, at_ms),
            Op::TaskCancel { task } => self.task_cancel(task, at_ms),
            Op::TaskDelete { task } => self.task_delete(task),
            Op::TaskReport {
                task,
                token,
                report,
            } => self.task_report(task, *token, report, at_ms),
            Op::Deploy {
                name,
                spec,
                replicas,
            } => self.deploy(name, spec, *replicas),
            Op::Undeploy { name } => self.undeploy(name),
            Op::ReplicaReport {
                deployment,
                replica,
                token,
                status,
            } => self.replica_report(deployment, *replica, *token, status),
            Op::Barrier => Outcome::Done,
            Op::NodeRemove { node } => self.node_remove(node),
            Op::NodeDrain { node, drain } => self.node_drain(node, *drain),
            Op::Fenced { lock, token, op } => {
                if self.lock_token(lock) == Some(*token) {
                    self.apply_op(idx, id, op, at_ms)
                } else {
                    rejected(Rejection::StaleToken)
                }
            }
            Op::Txn { guards, ops } => self.apply_txn(idx, guards, ops),
            kv => self.apply_kv(idx, kv),
        }
    }
}

#[cfg(test)]
mod tests;
