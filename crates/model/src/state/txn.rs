//! Transactions: key-value writes applied together or not at all. The
//! guards are checked first; then each op applies in order and sees the
//! ones before it. If an op is refused, every key the transaction touched
//! is put back as it was, so State (and its hash) is as if the
//! transaction never ran.

use super::kv::KvEntry;
use super::{rejected, State};
use crate::event::{Check, Guard, Op, Outcome, Rejection};
use crate::ids::EventIdx;
use std::collections::HashMap;

impl State {
    pub(super) fn apply_txn(&mut self, idx: EventIdx, guards: &[Guard], ops: &[Op]) -> Outcome {
        if let Some(i) = guards.iter().position(|g| !self.guard_holds(g)) {
            return Outcome::GuardFailed { guard: i as u32 };
        }
        // What each touched key held before the transaction.
        let mut before: HashMap<&str, Option<KvEntry>> = HashMap::with_capacity(ops.len());
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let key = op.key().unwrap_or_default();
            if !before.contains_key(key) {
                before.insert(key, self.kv.get(key).cloned());
            }
            match self.apply_kv(idx, op) {
                Outcome::Rejected(reason) => {
                    for (key, entry) in before {
                        self.kv_put(key, entry);
                    }
                    return rejected(Rejection::InTxn {
                        op: i as u32,
                        reason: Box::new(reason),
                    });
                }
                outcome => results.push(outcome),
            }
        }
        Outcome::Txn(results)
    }

    pub(super) fn guard_holds(&self, g: &Guard) -> bool {
        let entry = self.kv.get(g.key.as_str());
        match &g.check {
            Check::Exists(exists) => entry.is_some() == *exists,
            Check::Version(v) => entry.is_some_and(|e| e.version == *v),
            Check::Value(v) => entry.and_then(|e| e.value.as_text()).as_deref() == Some(v),
        }
    }
}
