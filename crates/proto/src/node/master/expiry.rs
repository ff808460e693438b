//! Expiry on the master's clock: keys with a TTL (set-if-absent, locks),
//! command outcomes past the retry window, finished tasks past their
//! retention. Each is a logged event (invariant 6), proposed by the master.
//!
//! A TTL runs on the master's monotonic clock from when it first saw the
//! key's current version; it restarts at each election (a new master has
//! no earlier clock) and never ends within one node timeout of it.

use shoal_model::Event;
use shoal_model::{EventIdx, Key, State, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often outcomes and finished tasks are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Finished tasks forgotten per sweep at most (one event stays small).
const FORGET_PER_SWEEP: usize = 1000;

#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub outcomes: Duration,
    pub tasks: Duration,
}

#[derive(Debug)]
pub struct Expiry {
    /// Per key with a TTL: the version seen and when it expires.
    deadlines: BTreeMap<Key, (EventIdx, Duration)>,
    /// Expiries proposed, not yet applied.
    pending: BTreeSet<(Key, EventIdx)>,
    next_sweep: Duration,
}

impl Expiry {
    /// A sweep runs at the first plan tick of a term.
    pub fn new(now: Duration) -> Self {
        Expiry {
            deadlines: BTreeMap::new(),
            pending: BTreeSet::new(),
            next_sweep: now,
        }
    }

    /// The expiries to propose now; `earliest` is one node timeout after
    /// this master's election; `wall_ms` the master's wall clock, which
    /// outcomes and tasks are stamped with.
    pub fn plan(
        &mut self,
        state: &State,
        now: Duration,
        earliest: Duration,
        wall_ms: u64,
        retention: Retention,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let keys = state.expiring();
        self.deadlines.retain(|k, _| keys.contains(k));
        for key in keys {
            let Some(entry) = state.kv().get(key) else {
                continue;
            };
            let Some(ttl) = entry.ttl_ms else { continue };
            let deadline = (now + Duration::from_millis(ttl)).max(earliest);
            let d = self
                .deadlines
                .entry(key.clone())
                .or_insert((entry.version, deadline));
            if d.0 != entry.version {
                *d = (entry.version, deadline);
            }
            if now >= d.1 && !self.pending.contains(&(key.clone(), entry.version)) {
                events.push(Event::KvExpired {
                    key: key.to_string(),
                    version: entry.version,
                });
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            events.extend(sweep(state, wall_ms, retention));
        }
        events
    }

    /// An expiry was proposed: not proposed again until it applies.
    pub fn proposed(&mut self, key: String, version: EventIdx) {
        self.pending.insert((Key::from(key), version));
    }

    pub fn on_applied(&mut self, key: &str, version: EventIdx) {
        self.pending.remove(&(Key::from(key), version));
    }
}

/// Outcomes and finished tasks older than their retention.
fn sweep(state: &State, wall_ms: u64, retention: Retention) -> Vec<Event> {
    let mut events = Vec::new();
    let cutoff = wall_ms.saturating_sub(retention.outcomes.as_millis() as u64);
    if state.oldest_outcome_ms().is_some_and(|t| t < cutoff) {
        events.push(Event::OutcomesExpired { before_ms: cutoff });
    }
    let cutoff = wall_ms.saturating_sub(retention.tasks.as_millis() as u64);
    let old: Vec<TaskId> = state
        .tasks()
        .iter()
        .filter(|(_, t)| t.status.is_terminal() && t.updated_at_ms < cutoff)
        .map(|(id, _)| id.clone())
        .take(FORGET_PER_SWEEP)
        .collect();
    if !old.is_empty() {
        events.push(Event::TasksForgotten { tasks: old });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{Command, CommandId, Envelope, Op, Term};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn state_with(ops: Vec<Op>, at_ms: u64) -> State {
        let mut s = State::new();
        for (i, op) in ops.into_iter().enumerate() {
            let cmd = Command {
                id: CommandId(format!("c{i}")),
                op,
            };
            let idx = s.index().next();
            s.apply(&Envelope {
                idx,
                term: Term(1),
                event: Event::Command { cmd, at_ms },
            })
            .unwrap();
        }
        s
    }

    const RETAIN: Retention = Retention {
        outcomes: Duration::from_secs(600),
        tasks: Duration::from_secs(3600),
    };

    #[test]
    fn a_ttl_runs_from_when_the_master_saw_the_version_and_not_before_it_settled() {
        let s = state_with(
            vec![Op::KvSetIfAbsent {
                key: "k".into(),
                value: "v".into(),
                ttl_ms: Some(1000),
            }],
            0,
        );
        let mut e = Expiry::new(secs(100));
        // Elected at 100 s with a 2 s node timeout: nothing before 102 s.
        let earliest = secs(102);
        assert!(e.plan(&s, secs(100), earliest, 0, RETAIN).is_empty());
        assert!(e.plan(&s, secs(101), earliest, 0, RETAIN).is_empty());
        let got = e.plan(&s, secs(102), earliest, 0, RETAIN);
        assert_eq!(
            got,
            vec![Event::KvExpired {
                key: "k".into(),
                version: EventIdx(1)
            }]
        );
        e.proposed("k".into(), EventIdx(1));
        assert!(
            e.plan(&s, secs(103), earliest, 0, RETAIN).is_empty(),
            "proposed once"
        );
    }

    #[test]
    fn outcomes_past_the_retry_window_are_swept_every_thirty_seconds() {
        let s = state_with(
            vec![Op::KvSet {
                key: "k".into(),
                value: "v".into(),
            }],
            1_000,
        );
        let mut e = Expiry::new(secs(0));
        let wall = 1_000 + 601_000;
        assert_eq!(
            e.plan(&s, secs(0), secs(0), wall, RETAIN),
            vec![Event::OutcomesExpired {
                before_ms: 1_000 + 1_000
            }]
        );
        assert!(e.plan(&s, secs(29), secs(0), wall, RETAIN).is_empty());
        assert_eq!(e.plan(&s, secs(30), secs(0), wall, RETAIN).len(), 1);
    }
}
