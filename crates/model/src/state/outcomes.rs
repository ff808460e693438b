//! Command outcomes by client-minted id (invariant 7): a command applied
//! once stores what it returned; a retry with the same id gets that back
//! and changes nothing, across master changes. Outcomes are kept for the
//! retry window and expire by a logged event, oldest first; past the cap
//! the oldest is dropped. An outcome is stored under its id's digest
//! (`CommandDigest`), 16 bytes that need no allocation of their own.

use super::validate::Limits;
use super::State;
use crate::event::{Command, Op, Outcome, Rejection};
use crate::ids::{CommandDigest, CommandId, EventIdx};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub outcome: Outcome,
    /// Index of the event that produced it.
    pub idx: EventIdx,
    pub at_ms: u64,
    /// The request that produced it; None in snapshots written before
    /// requests were recorded (format 3 and older).
    pub request: Option<RequestDigest>,
}

/// The state hash covers what a command returned, not the digest of its
/// request: a node that loaded an older snapshot (no digests) and one that
/// applied the same commands hold the same State, and derive the same
/// digest from every command applied since.
impl std::hash::Hash for OutcomeRecord {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.outcome.hash(h);
        self.idx.hash(h);
        self.at_ms.hash(h);
    }
}

/// A digest of a command's request (its op), kept with its outcome: a
/// command whose id was applied before is answered with that outcome only
/// if it asks the same; another request under a used id is refused
/// (`Rejection::IdReused`). 64 bits of xxh3: a collision could only hide a
/// client's reuse of its own id, never reach another client's result
/// (ids are digested with SHA-256, `CommandDigest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDigest(pub u64);

impl RequestDigest {
    pub fn of(op: &Op) -> Self {
        let bytes = postcard::to_allocvec(op).expect("ops serialize into a Vec");
        RequestDigest(xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

/// A command's result as `apply` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    pub id: CommandId,
    /// The request applied (or found applied before) under that id.
    pub request: RequestDigest,
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

    /// The answer to a command whose id was applied before: its stored
    /// outcome if it asks what was asked then, else a refusal.
    pub fn known(&self, cmd: &Command) -> Option<(EventIdx, Outcome)> {
        let r = self.known_command(cmd, &CommandDigest::of(&cmd.id), RequestDigest::of(&cmd.op))?;
        Some((r.idx, r.outcome))
    }

    pub(super) fn known_command(
        &self,
        cmd: &Command,
        digest: &CommandDigest,
        request: RequestDigest,
    ) -> Option<CommandResult> {
        self.outcomes.get(digest).map(|rec| CommandResult {
            id: cmd.id.clone(),
            request,
            outcome: match rec.request {
                Some(r) if r != request => Outcome::Rejected(Rejection::IdReused),
                _ => rec.outcome.clone(),
            },
            idx: rec.idx,
            duplicate: true,
        })
    }

    pub(super) fn record_outcome(
        &mut self,
        idx: EventIdx,
        id: &CommandId,
        (digest, request): (CommandDigest, RequestDigest),
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
            request: Some(request),
        };
        self.insert_outcome(digest, rec);
        CommandResult {
            id: id.clone(),
            request,
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
