//! Keys and values: strings and counters, sets, lists and locks, each
//! write atomic because the master orders them. A key with a TTL
//! (set-if-absent, a lock) is listed in `expiring` for the master's clock;
//! its expiry is a logged event that names the version it expires, so a
//! key written since is left alone.

use super::validate::{full, Limits};
use super::{rejected, State};
use crate::event::{Op, Outcome, Rejection};
use crate::ids::{EventIdx, FencingToken};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A key as State holds it: up to 24 bytes inline, with no allocation of
/// its own; hashed, ordered and encoded exactly as a `String`.
pub type Key = compact_str::CompactString;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvValue {
    Str(String),
    Int(i64),
    Set(BTreeSet<String>),
    List(Vec<String>),
    Lock { holder: String, token: FencingToken },
}

impl KvValue {
    /// The textual form `get` returns for scalars.
    pub fn as_text(&self) -> Option<String> {
        match self {
            KvValue::Str(s) => Some(s.clone()),
            KvValue::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvEntry {
    pub value: KvValue,
    /// Index of the last change; a TTL restarts from it.
    pub version: EventIdx,
    pub ttl_ms: Option<u64>,
}

/// What a read-modify-write decides: the new value (None: unchanged), its
/// TTL, and the outcome.
type Write = Result<(Option<KvValue>, Option<u64>, Outcome), Rejection>;

impl State {
    /// Every change to `kv` goes through here, keeping `expiring` in step.
    pub(super) fn kv_put(&mut self, key: &str, entry: Option<KvEntry>) -> Option<KvEntry> {
        let Some(e) = entry else {
            self.expiring.remove(key);
            return self.kv.remove(key);
        };
        let key = Key::from(key);
        if e.ttl_ms.is_some() {
            self.expiring.insert(key.clone());
        } else {
            self.expiring.remove(&key);
        }
        self.kv.insert(key, e)
    }

    /// The token of the lock held under `name`, if one is.
    pub(super) fn lock_token(&self, name: &str) -> Option<FencingToken> {
        match self.kv.get(name).map(|e| &e.value) {
            Some(KvValue::Lock { token, .. }) => Some(*token),
            _ => None,
        }
    }

    /// A TTL ran out on the master's clock: the key goes, if it is still
    /// the version that expired.
    pub(super) fn kv_expired(&mut self, key: &str, version: EventIdx) {
        let expired = self
            .kv
            .get(key)
            .is_some_and(|e| e.version == version && e.ttl_ms.is_some());
        if expired {
            self.kv_put(key, None);
        }
    }

    /// The key-value operations (validated by the caller).
    pub(super) fn apply_kv(&mut self, idx: EventIdx, op: &Op) -> Outcome {
        match op {
            Op::KvSet { key, value } => self.kv_write(key, idx, |_| {
                Ok((Some(KvValue::Str(value.clone())), None, Outcome::Done))
            }),
            Op::KvSetIfAbsent { key, value, ttl_ms } => self.kv_write(key, idx, |cur| {
                Ok(match cur {
                    Some(_) => (None, None, Outcome::Applied(false)),
                    None => (
                        Some(KvValue::Str(value.clone())),
                        *ttl_ms,
                        Outcome::Applied(true),
                    ),
                })
            }),
            Op::KvCas {
                key,
                expected,
                value,
            } => self.kv_write(key, idx, |cur| cas(cur, expected.as_deref(), value)),
            Op::KvIncrBy { key, by } => self.kv_write(key, idx, |cur| incr(cur, *by)),
            Op::KvDelete { key } => {
                let old = self.kv_put(key, None);
                Outcome::Applied(old.is_some())
            }
            Op::SetAdd { key, member } => self.kv_write(key, idx, |cur| set_add(cur, member)),
            Op::SetRemove { key, member } => self.set_remove(idx, key, member),
            Op::ListPush { key, value } => self.kv_write(key, idx, |cur| {
                let mut list = match cur.map(|e| &e.value) {
                    None => Vec::new(),
                    Some(KvValue::List(l)) => l.clone(),
                    Some(_) => return Err(Rejection::WrongType),
                };
                if list.len() >= Limits::MAX_COLLECTION_LEN {
                    return Err(full("list elements"));
                }
                list.push(value.clone());
                let len = list.len() as i64;
                Ok((Some(KvValue::List(list)), None, Outcome::Int(len)))
            }),
            Op::LockAcquire {
                name,
                holder,
                ttl_ms,
            } => self.kv_write(name, idx, |cur| lock(cur, holder, *ttl_ms, idx)),
            Op::LockKeepalive { name, token } => self.kv_write(name, idx, |cur| match cur {
                Some(KvEntry {
                    value: v @ KvValue::Lock { token: t, .. },
                    ttl_ms,
                    ..
                }) if t == token => Ok((Some(v.clone()), *ttl_ms, Outcome::Done)),
                _ => Err(Rejection::StaleToken),
            }),
            Op::LockRelease { name, token } => {
                if self.lock_token(name) == Some(*token) {
                    self.kv_put(name, None);
                    Outcome::Done
                } else {
                    rejected(Rejection::StaleToken)
                }
            }
            // Routed here by `apply_op` only for the operations above.
            _ => super::invalid("not a key-value operation"),
        }
    }

    fn set_remove(&mut self, idx: EventIdx, key: &str, member: &str) -> Outcome {
        let set = match self.kv.get(key).map(|e| &e.value) {
            None => return Outcome::Applied(false),
            Some(KvValue::Set(s)) => s,
            Some(_) => return rejected(Rejection::WrongType),
        };
        if !set.contains(member) {
            return Outcome::Applied(false);
        }
        let mut set = set.clone();
        set.remove(member);
        let entry = (!set.is_empty()).then_some(KvEntry {
            value: KvValue::Set(set),
            version: idx,
            ttl_ms: None,
        });
        self.kv_put(key, entry);
        Outcome::Applied(true)
    }

    /// Read-modify-write of one key. `f` sees the current entry.
    fn kv_write(
        &mut self,
        key: &str,
        idx: EventIdx,
        f: impl FnOnce(Option<&KvEntry>) -> Write,
    ) -> Outcome {
        let cur = self.kv.get(key);
        let exists = cur.is_some();
        match f(cur) {
            Err(r) => rejected(r),
            Ok((None, _, outcome)) => outcome,
            Ok((Some(value), ttl_ms, outcome)) => {
                if !exists && self.kv.len() >= Limits::MAX_KV_KEYS {
                    return rejected(full("keys"));
                }
                let entry = KvEntry {
                    value,
                    version: idx,
                    ttl_ms,
                };
                self.kv_put(key, Some(entry));
                outcome
            }
        }
    }
}

fn cas(cur: Option<&KvEntry>, expected: Option<&str>, value: &str) -> Write {
    let current = match cur {
        None => None,
        Some(e) => Some(e.value.as_text().ok_or(Rejection::WrongType)?),
    };
    Ok(if current.as_deref() == expected {
        (
            Some(KvValue::Str(value.to_owned())),
            None,
            Outcome::Applied(true),
        )
    } else {
        (None, None, Outcome::Applied(false))
    })
}

/// A counter keeps its TTL; a string that holds a number becomes one.
fn incr(cur: Option<&KvEntry>, by: i64) -> Write {
    let (n, ttl) = match cur {
        None => (0, None),
        Some(KvEntry {
            value: KvValue::Int(n),
            ttl_ms,
            ..
        }) => (*n, *ttl_ms),
        Some(KvEntry {
            value: KvValue::Str(s),
            ttl_ms,
            ..
        }) => (s.parse::<i64>().map_err(|_| Rejection::WrongType)?, *ttl_ms),
        Some(_) => return Err(Rejection::WrongType),
    };
    let n = n.checked_add(by).ok_or(Rejection::Overflow)?;
    Ok((Some(KvValue::Int(n)), ttl, Outcome::Int(n)))
}

fn set_add(cur: Option<&KvEntry>, member: &str) -> Write {
    let mut set = match cur.map(|e| &e.value) {
        None => BTreeSet::new(),
        Some(KvValue::Set(s)) => s.clone(),
        Some(_) => return Err(Rejection::WrongType),
    };
    if set.contains(member) {
        return Ok((None, None, Outcome::Applied(false)));
    }
    if set.len() >= Limits::MAX_COLLECTION_LEN {
        return Err(full("set members"));
    }
    set.insert(member.to_owned());
    Ok((Some(KvValue::Set(set)), None, Outcome::Applied(true)))
}

/// A free lock is taken with the command's index as its token; its holder
/// taking it again keeps the token and renews the TTL.
fn lock(cur: Option<&KvEntry>, holder: &str, ttl_ms: u64, idx: EventIdx) -> Write {
    match cur.map(|e| &e.value) {
        None => Ok((
            Some(KvValue::Lock {
                holder: holder.to_owned(),
                token: FencingToken(idx.0),
            }),
            Some(ttl_ms),
            Outcome::Token(FencingToken(idx.0)),
        )),
        Some(KvValue::Lock { holder: h, token }) if h == holder => Ok((
            Some(KvValue::Lock {
                holder: h.clone(),
                token: *token,
            }),
            Some(ttl_ms),
            Outcome::Token(*token),
        )),
        Some(KvValue::Lock { holder: h, .. }) => Err(Rejection::LockHeld { holder: h.clone() }),
        Some(_) => Err(Rejection::WrongType),
    }
}
