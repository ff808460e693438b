//! Rebuilding State from a snapshot's batches, hashing as it goes.
//!
//! Each collection arrives as sorted batches; its map is built in one pass
//! with full nodes (`tree::SortedBuilder`) rather than by inserts. Entries
//! out of order are refused: a snapshot from a well-behaved node never has
//! them.
//!
//! Outcomes arrive keyed by their command's digest. Snapshots written
//! before digests (format 2 and older) key them by command id: those are
//! converted, sorted by digest at the end, and their hash is summed as
//! their writer computed it, so the snapshot's promised state hash can
//! still be checked.

use super::hashed_map::SortedHashedBuilder;
use super::{Deployment, Key, KvEntry, Meta, NodeInfo, OutcomeRecord, State, Task};
use crate::hash::{entry_hash, Family, StateHash};
use crate::ids::{CommandDigest, CommandId, EventIdx, NodeId, TaskId, Term};
use crate::tree::{NotAscending, TreeMap};

/// Why a snapshot's entries cannot make a State.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{collection} entries are not in strictly ascending key order")]
pub struct BuildError {
    pub collection: &'static str,
}

fn in_order(collection: &'static str) -> impl Fn(NotAscending) -> BuildError {
    move |_| BuildError { collection }
}

/// Batches of one collection may come in any number, each continuing in
/// key order from the one before.
#[derive(Debug)]
pub struct StateBuilder {
    state: State,
    nodes: SortedHashedBuilder<NodeId, NodeInfo>,
    kv: SortedHashedBuilder<Key, KvEntry>,
    tasks: SortedHashedBuilder<TaskId, Task>,
    deployments: SortedHashedBuilder<String, Deployment>,
    outcomes: SortedHashedBuilder<CommandDigest, OutcomeRecord>,
    /// Outcomes by age, sorted at the end.
    ages: Vec<((u64, EventIdx), CommandDigest)>,
    /// Outcomes that came keyed by command id, the last of those ids, and
    /// the sum of their hashes as keyed by id.
    by_id: Vec<(CommandDigest, OutcomeRecord)>,
    last_id: Option<CommandId>,
    by_id_hash: StateHash,
}

impl StateBuilder {
    pub fn new(index: EventIdx, term: Term, meta: Meta) -> Self {
        let mut state = State::new();
        state.set_meta(meta);
        state.index = index;
        state.term = term;
        StateBuilder {
            state,
            nodes: SortedHashedBuilder::new(Family::Node),
            kv: SortedHashedBuilder::new(Family::Kv),
            tasks: SortedHashedBuilder::new(Family::Task),
            deployments: SortedHashedBuilder::new(Family::Deployment),
            outcomes: SortedHashedBuilder::new(Family::Outcome),
            ages: Vec::new(),
            by_id: Vec::new(),
            last_id: None,
            by_id_hash: StateHash::default(),
        }
    }

    pub fn meta(&mut self, meta: Meta) {
        self.state.set_meta(meta);
    }

    pub fn nodes(&mut self, batch: Vec<(NodeId, NodeInfo)>) -> Result<(), BuildError> {
        for (k, v) in batch {
            self.nodes.push(k, v).map_err(in_order("node"))?;
        }
        Ok(())
    }

    pub fn kv(&mut self, batch: Vec<(Key, KvEntry)>) -> Result<(), BuildError> {
        for (k, v) in batch {
            if v.ttl_ms.is_some() {
                self.state.expiring.insert(k.clone());
            }
            self.kv.push(k, v).map_err(in_order("key-value"))?;
        }
        Ok(())
    }

    pub fn tasks(&mut self, batch: Vec<(TaskId, Task)>) -> Result<(), BuildError> {
        for (k, v) in batch {
            self.tasks.push(k, v).map_err(in_order("task"))?;
        }
        Ok(())
    }

    pub fn deployments(&mut self, batch: Vec<(String, Deployment)>) -> Result<(), BuildError> {
        for (k, v) in batch {
            self.deployments
                .push(k, v)
                .map_err(in_order("deployment"))?;
        }
        Ok(())
    }

    pub fn outcomes(
        &mut self,
        batch: Vec<(CommandDigest, OutcomeRecord)>,
    ) -> Result<(), BuildError> {
        self.ages.reserve(batch.len());
        for (k, v) in batch {
            self.ages.push(((v.at_ms, v.idx), k));
            self.outcomes.push(k, v).map_err(in_order("outcome"))?;
        }
        Ok(())
    }

    /// Outcomes keyed by command id, as snapshots of format 2 and older
    /// carry them.
    pub fn outcomes_by_id(
        &mut self,
        batch: Vec<(CommandId, OutcomeRecord)>,
    ) -> Result<(), BuildError> {
        self.by_id.reserve(batch.len());
        for (id, v) in batch {
            if self.last_id.as_ref().is_some_and(|last| *last >= id) {
                return Err(BuildError {
                    collection: "outcome",
                });
            }
            self.by_id_hash.add(entry_hash(Family::Outcome, &id, &v));
            self.by_id.push((CommandDigest::of(&id), v));
            self.last_id = Some(id);
        }
        Ok(())
    }

    pub fn finish(self) -> Result<State, BuildError> {
        self.finish_with_written_hash().map(|(state, _)| state)
    }

    /// State, and its hash as the snapshot's writer computed it: equal to
    /// `state.hash()` unless outcomes came keyed by command id.
    pub fn finish_with_written_hash(mut self) -> Result<(State, StateHash), BuildError> {
        let by_id = !self.by_id.is_empty();
        if by_id {
            let mut outcomes = std::mem::take(&mut self.by_id);
            outcomes.sort_unstable_by_key(|(d, _)| *d);
            self.outcomes(outcomes)?;
        }
        let mut state = self.state;
        state.nodes = self.nodes.finish();
        state.kv = self.kv.finish();
        state.tasks = self.tasks.finish();
        state.deployments = self.deployments.finish();
        state.outcomes = self.outcomes.finish();
        state.outcome_weight = state
            .outcomes
            .as_map()
            .values()
            .map(|r| r.outcome.weight())
            .sum();
        let mut ages = self.ages;
        ages.sort_unstable_by_key(|a| a.0);
        state.outcome_age = TreeMap::from_sorted(ages).map_err(in_order("outcome age"))?;
        let mut written = state.hash();
        if by_id {
            // The writer summed the outcomes keyed by id.
            written.sub(state.outcomes.hash().0);
            written.add(self.by_id_hash.0);
        }
        Ok((state, written))
    }
}
