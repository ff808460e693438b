//! The master's sequencer: an admitted command → a durable event to
//! propose. (Admission, `node::commands::admit`, has already answered a
//! command whose id State holds and refused an invalid one.) A command
//! already proposed in this term is not proposed twice; if an old master's
//! copy commits after all, `apply` sees the id and changes nothing: at
//! most once, across master changes (invariant 7).

use crate::wire::Refusal;
use shoal_model::{encode_event, Command, CommandId, Event};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sequenced {
    /// Propose these bytes.
    Propose(Vec<u8>),
    /// Already proposed and not yet applied.
    InFlight,
    Refused(Refusal),
}

#[derive(Debug)]
pub struct Sequencer {
    in_flight: BTreeMap<CommandId, Duration>,
    max_in_flight: usize,
    /// A proposal not applied after this long may have been dropped by
    /// Raft; it may be proposed again (apply dedupes it if both commit).
    stale_after: Duration,
}

impl Sequencer {
    pub fn new(max_in_flight: usize, stale_after: Duration) -> Self {
        Sequencer {
            in_flight: BTreeMap::new(),
            max_in_flight,
            stale_after,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// An admitted command; `wall_ms` is stamped into its event.
    pub fn submit(&mut self, cmd: &Command, wall_ms: u64, now: Duration) -> Sequenced {
        if let Some(at) = self.in_flight.get(&cmd.id) {
            if now.saturating_sub(*at) < self.stale_after {
                return Sequenced::InFlight;
            }
        }
        let stale = self.stale_after;
        self.in_flight
            .retain(|_, at| now.saturating_sub(*at) < stale);
        if self.in_flight.len() >= self.max_in_flight {
            return Sequenced::Refused(Refusal::Busy);
        }
        self.in_flight.insert(cmd.id.clone(), now);
        Sequenced::Propose(encode_event(&Event::Command {
            cmd: cmd.clone(),
            at_ms: wall_ms,
        }))
    }

    /// Raft refused the proposal: forget it so a retry may propose again.
    pub fn not_proposed(&mut self, id: &CommandId) {
        self.in_flight.remove(id);
    }

    pub fn on_applied(&mut self, id: &CommandId) {
        self.in_flight.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{decode_event, Op};

    fn incr(id: &str) -> Command {
        Command {
            id: CommandId::from(id),
            op: Op::KvIncrBy {
                key: "k".into(),
                by: 1,
            },
        }
    }

    #[test]
    fn a_command_is_proposed_once_while_in_flight() {
        let mut q = Sequencer::new(10, Duration::from_secs(5));
        let now = Duration::ZERO;
        let Sequenced::Propose(bytes) = q.submit(&incr("a"), 77, now) else {
            panic!()
        };
        assert_eq!(
            decode_event(&bytes).unwrap(),
            Event::Command {
                cmd: incr("a"),
                at_ms: 77
            }
        );
        assert_eq!(q.submit(&incr("a"), 78, now), Sequenced::InFlight);
        q.on_applied(&CommandId::from("a"));
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn excess_commands_are_refused_and_a_stale_one_gives_its_slot_up() {
        let mut q = Sequencer::new(1, Duration::from_secs(5));
        assert!(matches!(
            q.submit(&incr("a"), 0, Duration::ZERO),
            Sequenced::Propose(_)
        ));
        assert_eq!(
            q.submit(&incr("b"), 0, Duration::ZERO),
            Sequenced::Refused(Refusal::Busy)
        );
        assert!(matches!(
            q.submit(&incr("b"), 0, Duration::from_secs(6)),
            Sequenced::Propose(_)
        ));
        // Raft refused it: it may be proposed again at once.
        q.not_proposed(&CommandId::from("b"));
        assert!(matches!(
            q.submit(&incr("b"), 0, Duration::from_secs(6)),
            Sequenced::Propose(_)
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::node::commands::{admit, Admission};
    use proptest::prelude::*;
    use shoal_model::{decode_event, Envelope, Op, State, Term};

    proptest! {
        /// Under any interleaving of submissions, retries and commits, each
        /// id is applied at most once and a known id never yields an event
        /// (admission, then the sequencer, as on the master).
        #[test]
        fn every_id_is_applied_at_most_once(ops in prop::collection::vec((0u8..8, any::<bool>()), 1..200)) {
            let mut s = State::new();
            let mut q = Sequencer::new(64, Duration::from_secs(5));
            let mut proposed: Vec<Vec<u8>> = Vec::new();
            let mut applied = std::collections::BTreeMap::new();
            for (i, (id, commit)) in ops.into_iter().enumerate() {
                let cmd = Command { id: CommandId(format!("c{id}")), op: Op::KvIncrBy { key: "k".into(), by: 1 } };
                let now = Duration::from_millis(i as u64);
                match admit(&cmd, &s) {
                    Admission::Known { .. } => prop_assert!(s.outcome(&cmd.id).is_some()),
                    Admission::Invalid(r) => prop_assert!(false, "valid command refused: {}", r),
                    Admission::New => match q.submit(&cmd, 0, now) {
                        Sequenced::Propose(bytes) => {
                            prop_assert!(s.outcome(&cmd.id).is_none(), "a known id was proposed");
                            proposed.push(bytes);
                        }
                        Sequenced::InFlight | Sequenced::Refused(_) => {}
                    },
                }
                if commit && !proposed.is_empty() {
                    let event = decode_event(&proposed.remove(0)).unwrap();
                    let r = s.apply(&Envelope { idx: s.index().next(), term: Term(1), event }).unwrap();
                    let res = r.command.unwrap();
                    q.on_applied(&res.id);
                    if !res.duplicate {
                        *applied.entry(res.id).or_insert(0) += 1;
                    }
                }
            }
            prop_assert!(applied.values().all(|n| *n == 1));
            let total: i64 = applied.len() as i64;
            let value = match s.kv().get("k").map(|e| &e.value) {
                Some(shoal_model::KvValue::Int(n)) => *n,
                _ => 0,
            };
            prop_assert_eq!(value, total);
        }
    }
}
