//! Data sets shared by shoal's benchmarks.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_model::{
    encode_event, Command, CommandId, EntryKind, Envelope, Event, EventIdx, KvEntry, KvValue,
    LogEntry, Meta, Op, State, StateBuilder, Term,
};

/// A 100-byte value that compresses about 2x: 50 random bytes in hex.
pub fn value(rng: &mut SmallRng) -> String {
    let mut s = String::with_capacity(100);
    for _ in 0..50 {
        let b: u8 = rng.gen();
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn key(i: u64) -> String {
    format!("key-{i:010}")
}

/// A State holding `n` distinct keys with 100-byte values, built directly.
pub fn kv_state(n: u64) -> State {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut b = StateBuilder::new(EventIdx(n), Term(1), Meta::default());
    let batch: Vec<(String, KvEntry)> = (0..n)
        .map(|i| {
            (
                key(i),
                KvEntry {
                    value: KvValue::Str(value(&mut rng)),
                    version: EventIdx(i + 1),
                    ttl_ms: None,
                },
            )
        })
        .collect();
    b.kv(batch);
    b.finish()
}

/// `n` committed set commands, as log entries from index `from`.
pub fn set_entries(from: u64, n: u64) -> Vec<LogEntry> {
    let mut rng = SmallRng::seed_from_u64(2);
    (0..n)
        .map(|i| {
            let event = Event::Command {
                cmd: Command {
                    id: CommandId(format!("c{}", from + i)),
                    op: Op::KvSet {
                        key: key(i),
                        value: value(&mut rng),
                    },
                },
                at_ms: 0,
            };
            LogEntry {
                idx: EventIdx(from + i),
                term: Term(1),
                kind: EntryKind::Normal,
                data: encode_event(&event),
                context: vec![],
            }
        })
        .collect()
}

pub fn envelopes(entries: &[LogEntry]) -> Vec<Envelope> {
    entries
        .iter()
        .map(|e| e.envelope().expect("valid entries"))
        .collect()
}
