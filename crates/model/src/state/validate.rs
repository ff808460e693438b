//! What a command may be: the caps on every collection (invariant 6) and
//! the shape checks that refuse a bad command at the edge, before it
//! reaches the log. `apply` runs the same checks, so it stays total if one
//! does reach it.

use crate::event::{Op, Rejection};

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
    pub const MAX_OUTCOMES: usize = 1_000_000;
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
            if !op.is_kv_write() {
                return Err("a fence guards key-value writes only".into());
            }
            validate_op(op)
        }
        Op::Barrier
        | Op::TaskSubmit { .. }
        | Op::TaskCancel { .. }
        | Op::TaskDelete { .. }
        | Op::TaskReport { .. } => Ok(()),
    }
}
