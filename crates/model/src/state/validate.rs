//! What a command may be: the caps on every collection (invariant 6) and
//! the shape checks that refuse a bad command at the edge, before it
//! reaches the log. `apply` runs the same checks, so it stays total if one
//! does reach it.

use crate::event::{Check, Guard, Op, Rejection};

/// Caps on every collection. A command that would pass one is refused
/// with `Rejection::Full`; logged clean-ups keep the rest small.
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
    /// Stored outcomes, a transaction's counting once per op (plus one);
    /// past it the oldest is dropped.
    pub const MAX_OUTCOMES: usize = 1_000_000;
    /// Ops and guards of one transaction, and the bytes of its keys and
    /// values together.
    pub const MAX_TXN_OPS: usize = 1024;
    pub const MAX_TXN_GUARDS: usize = 64;
    pub const MAX_TXN_BYTES: usize = 1 << 20;
}

pub(crate) fn full(what: &str) -> Rejection {
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

/// Checks a command's shape.
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
            if !op.is_kv_write() && !matches!(**op, Op::Txn { .. }) {
                return Err("a fence guards key-value writes only".into());
            }
            validate_op(op)
        }
        Op::Txn { guards, ops } => validate_txn(guards, ops),
        Op::Barrier
        | Op::NodeRemove { .. }
        | Op::NodeDrain { .. }
        | Op::TaskSubmit { .. }
        | Op::TaskCancel { .. }
        | Op::TaskDelete { .. }
        | Op::TaskReport { .. } => Ok(()),
    }
}

fn validate_txn(guards: &[Guard], ops: &[Op]) -> Result<(), String> {
    if ops.is_empty() || ops.len() > Limits::MAX_TXN_OPS {
        return Err(format!("a transaction has 1..={} ops", Limits::MAX_TXN_OPS));
    }
    if guards.len() > Limits::MAX_TXN_GUARDS {
        return Err(format!(
            "a transaction has at most {} guards",
            Limits::MAX_TXN_GUARDS
        ));
    }
    let mut bytes = 0;
    for g in guards {
        check_key(&g.key)?;
        bytes += g.key.len();
        if let Check::Value(v) = &g.check {
            check_value(v)?;
            bytes += v.len();
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if !op.is_kv_write() {
            return Err(format!(
                "transaction op {i}: only key-value writes (no locks, no nesting)"
            ));
        }
        validate_op(op).map_err(|e| format!("transaction op {i}: {e}"))?;
        bytes += op_bytes(op);
    }
    if bytes > Limits::MAX_TXN_BYTES {
        return Err(format!(
            "a transaction's keys and values exceed {} bytes",
            Limits::MAX_TXN_BYTES
        ));
    }
    Ok(())
}

/// The bytes of a key-value write's key and values.
fn op_bytes(op: &Op) -> usize {
    match op {
        Op::KvSet { key, value }
        | Op::ListPush { key, value }
        | Op::KvSetIfAbsent { key, value, .. }
        | Op::SetAdd { key, member: value }
        | Op::SetRemove { key, member: value } => key.len() + value.len(),
        Op::KvCas {
            key,
            expected,
            value,
        } => key.len() + value.len() + expected.as_ref().map_or(0, String::len),
        Op::KvIncrBy { key, .. } | Op::KvDelete { key } => key.len(),
        _ => 0,
    }
}
