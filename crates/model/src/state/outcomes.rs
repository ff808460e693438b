//! Command outcomes by client-minted id (invariant 7): a command applied
//! once stores what it returned; a retry with the same id gets that back
//! and changes nothing, across master changes. Outcomes are kept for the
//! retry window and expire by a logged event, oldest first; past the cap
//! the oldest is dropped. An outcome is stored under its id's digest
//! (`CommandDigest`), 16 bytes that need no allocation of their own.

use super::validate::Limits;
use super::State;
use crate::event::Outcome;
use crate::ids::{CommandDigest, CommandId, EventIdx};
use serde::{Deserialize, Serialize};

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

impl State {
    /// Master clock of the oldest stored command outcome.
    pub fn oldest_outcome_ms(&self) -> Option<u64> {
        self.outcome_age.first().map(|((at, _), _)| *at)
    }

    /// The stored result of a command applied before.
    pub(super) fn known_command(
        &self,
        id: &CommandId,
        digest: &CommandDigest,
    ) -> Option<CommandResult> {
        self.outcomes.get(digest).map(|rec| CommandResult {
            id: id.clone(),
            outcome: rec.outcome.clone(),
            idx: rec.idx,
            duplicate: true,
        })
    }

    pub(super) fn record_outcome(
        &mut self,
        idx: EventIdx,
        id: &CommandId,
        digest: CommandDigest,
        outcome: Outcome,
        at_ms: u64,
    ) -> CommandResult {
        while self.outcomes.len() > 0
            && self.outcome_weight + outcome.weight() > Limits::MAX_OUTCOMES
        {
            self.drop_oldest_outcome();
        }
        let rec = OutcomeRecord {
            outcome: outcome.clone(),
            idx,
            at_ms,
        };
        self.insert_outcome(digest, rec);
        CommandResult {
            id: id.clone(),
            outcome,
            idx,
            duplicate: false,
        }
    }

    /// Every stored outcome goes through here, keeping the age index.
    pub(super) fn insert_outcome(&mut self, digest: CommandDigest, rec: OutcomeRecord) {
        self.outcome_age.insert((rec.at_ms, rec.idx), digest);
        self.outcome_weight += rec.outcome.weight();
        if let Some(old) = self.outcomes.insert(digest, rec) {
            self.outcome_weight -= old.outcome.weight();
        }
    }

    /// Outcomes stamped before `before_ms` go (the retry window passed).
    pub(super) fn outcomes_expired(&mut self, before_ms: u64) {
        while let Some(((at, _), _)) = self.outcome_age.first() {
            if *at >= before_ms {
                break;
            }
            self.drop_oldest_outcome();
        }
    }

    fn drop_oldest_outcome(&mut self) {
        let Some((&age, _)) = self.outcome_age.first() else {
            return;
        };
        if let Some((_, id)) = self.outcome_age.remove_with_key(&age) {
            if let Some(old) = self.outcomes.remove(&id) {
                self.outcome_weight -= old.outcome.weight();
            }
        }
    }
}
