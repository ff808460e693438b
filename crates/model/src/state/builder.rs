//! Rebuilding State from a snapshot's batches, hashing as it goes.

use super::{Deployment, KvEntry, Meta, NodeInfo, OutcomeRecord, State, Task};
use crate::ids::{CommandId, EventIdx, NodeId, TaskId, Term};

/// Batches of one collection may come in any number; keys must not repeat.
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
        for (k, v) in batch {
            self.state.nodes.insert(k, v);
        }
    }

    pub fn kv(&mut self, batch: Vec<(String, KvEntry)>) {
        for (k, v) in batch {
            self.state.kv_put(k, Some(v));
        }
    }

    pub fn tasks(&mut self, batch: Vec<(TaskId, Task)>) {
        for (k, v) in batch {
            self.state.tasks.insert(k, v);
        }
    }

    pub fn deployments(&mut self, batch: Vec<(String, Deployment)>) {
        for (k, v) in batch {
            self.state.deployments.insert(k, v);
        }
    }

    pub fn outcomes(&mut self, batch: Vec<(CommandId, OutcomeRecord)>) {
        for (k, v) in batch {
            self.state.insert_outcome(k, v);
        }
    }

    pub fn finish(self) -> State {
        self.state
    }
}
