//! What clients send: the bodies the HTTP API accepts, parsed and checked
//! into commands.
//!
//! Every function here takes the raw body bytes and answers a command (or
//! the part of one the body gives) or [`Invalid`], which the API answers
//! as 400 `invalid` with the message. Nothing here touches the network or
//! the State, so the parsers are fuzzed on their own (`fuzz/`,
//! target `http_body`). Limits on the command itself (key and value sizes,
//! collection caps) are the model's `validate_op`, which the node runs on
//! every command whatever its source.
//!
//! ```text
//! PUT  /v1/kv/KEY                  the value, as UTF-8 text
//! POST /v1/kv/KEY/set-if-absent    the value; add, remove: the member; push: the value
//! POST /v1/kv/KEY/cas              {"expected": V | null, "value": V}
//! POST /v1/kv/KEY/lock             {"holder": H, "ttl_ms": N}
//! POST /v1/kv/KEY/keepalive        {"token": T}; unlock: the same
//! Shoal-Fence: LOCK:TOKEN          (header) any key-value write, fenced
//! POST /v1/tasks                   a task (below)
//! POST /v1/txn                    {"guards": [{"key": K, "version": N}], "ops": [{"op": "set", "key": K, "value": V}]}
//! POST /v1/deployments             {"name", "replicas", what to run, "cpu_milli", "mem_bytes"}
//! ```
//!
//! What to run is `{"cmd": ["make", "-j4"], "env": {"K": "V"}, "cwd": "/src"}`
//! or `{"synthetic": {"chunks": N, "interval_ms": N, "exit_code": N}}`; a task
//! adds `"node", "labels", "timeout_ms", "max_attempts", "cpu_milli",
//! "mem_bytes"`.

mod run;
mod txn;

pub use run::{deploy, task, DeployBody, ResourceFields, RunnerFields, Synthetic, TaskBody};
pub use txn::{txn, TxnBody, TxnGuard, TxnOp, TXN_SHAPE};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use shoal_model::{FencingToken, Op};
use utoipa::ToSchema;

/// Attempts a task gets unless it asks otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 20;
/// The synthetic runner's bounds: chunks, and the gap between them.
pub const MAX_SYNTHETIC_CHUNKS: u32 = 1_000_000;
pub const MAX_SYNTHETIC_INTERVAL_MS: u64 = 3_600_000;

/// A body that does not say what its route needs; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

pub(crate) fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A JSON body of shape `T`; `shape` names it in the error.
pub(crate) fn json<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Invalid> {
    let fail = |e: serde_json::Error| invalid(format!("the body must be {shape}: {e}"));
    let first = match serde_json::from_slice(body) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    // Only a body that did not parse as it is is read again, through a
    // tree whose integral floats are made integers.
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(fail(first));
    };
    if !integral(&mut value) {
        return Err(fail(first));
    }
    T::deserialize(value).map_err(|_| fail(first))
}

/// JSON has one kind of number: `3.0` is the integer 3 as much as `3` is
/// (JSON Schema says so too), and clients whose numbers are floats send
/// it that way. Numbers without a fraction that fit in 64 bits are made
/// integers before the fields are read. Says whether any was.
fn integral(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 || !f.is_finite() {
                return false;
            }
            // Both bounds are powers of two, so exact as f64.
            if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = Value::from(f as u64);
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *value = Value::from(f as i64);
            } else {
                return false;
            }
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| integral(v) | any),
        Value::Object(fields) => fields.values_mut().fold(false, |any, v| integral(v) | any),
        _ => false,
    }
}

/// A text body (a value or a member); `what` names it in the error.
pub fn text(body: &[u8], what: &str) -> Result<String, Invalid> {
    String::from_utf8(body.to_vec()).map_err(|_| invalid(format!("the {what} must be UTF-8 text")))
}

/// `{"token": T}`: the fencing token of a lock held.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenBody {
    #[schema(maximum = 18446744073709551615u64)]
    token: u64,
}

/// `{"token": T}`: the fencing token of a lock held.
pub fn token(body: &[u8]) -> Result<FencingToken, Invalid> {
    let b: TokenBody = json(body, "{\"token\": T}")?;
    Ok(FencingToken(b.token))
}

/// What a `Shoal-Fence` header must look like.
pub const FENCE_SHAPE: &str = "Shoal-Fence must be LOCK:TOKEN";

/// The `Shoal-Fence: LOCK:TOKEN` header: `op` applies only while that lock
/// holds that fencing token.
pub fn fence(header: &str, op: Op) -> Result<Op, Invalid> {
    let (lock, token) = header
        .rsplit_once(':')
        .ok_or_else(|| invalid(FENCE_SHAPE))?;
    let token = token
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(FENCE_SHAPE))?;
    Ok(Op::Fenced {
        lock: lock.to_owned(),
        token: FencingToken(token),
        op: Box::new(op),
    })
}

/// A compare-and-set: `value` is set only if the key holds `expected`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CasBody {
    /// The value expected now; null: the key must be absent.
    #[schema(max_length = 65536)]
    expected: Option<String>,
    #[schema(max_length = 65536)]
    value: String,
}

/// `POST /v1/kv/KEY/cas`.
pub fn cas(key: String, body: &[u8]) -> Result<Op, Invalid> {
    let b: CasBody = json(body, "{\"expected\": V or null, \"value\": V}")?;
    Ok(Op::KvCas {
        key,
        expected: b.expected,
        value: b.value,
    })
}

/// Who takes a lock, and for how long unless kept alive.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LockBody {
    #[schema(max_length = 65536)]
    holder: String,
    #[schema(minimum = 1, maximum = 18446744073709551615u64)]
    ttl_ms: u64,
}

/// `POST /v1/kv/NAME/lock`.
pub fn lock(name: String, body: &[u8]) -> Result<Op, Invalid> {
    let b: LockBody = json(body, "{\"holder\": H, \"ttl_ms\": N}")?;
    Ok(Op::LockAcquire {
        name,
        holder: b.holder,
        ttl_ms: b.ttl_ms,
    })
}

/// The writes named by the last path segment of `/v1/kv/KEY/VERB`; `None`
/// when there is no such verb.
pub fn verb(
    key: String,
    verb: &str,
    ttl_ms: Option<u64>,
    body: &[u8],
) -> Result<Option<Op>, Invalid> {
    Ok(Some(match verb {
        "set-if-absent" => Op::KvSetIfAbsent {
            key,
            value: text(body, "value")?,
            ttl_ms,
        },
        "add" => Op::SetAdd {
            key,
            member: text(body, "member")?,
        },
        "remove" => Op::SetRemove {
            key,
            member: text(body, "member")?,
        },
        "push" => Op::ListPush {
            key,
            value: text(body, "value")?,
        },
        "keepalive" => Op::LockKeepalive {
            name: key,
            token: token(body)?,
        },
        "unlock" => Op::LockRelease {
            name: key,
            token: token(body)?,
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{Check, EventIdx, Runner};

    #[test]
    fn a_task_is_a_command_or_the_synthetic_runner_never_both() {
        let t = task(br#"{"cmd": ["make", "-j4"], "env": {"K": "V"}}"#).unwrap();
        assert!(
            matches!(&t.runner, Runner::Exec { cmd, args, .. } if cmd == "make" && args == &["-j4"])
        );
        assert_eq!(t.max_attempts, DEFAULT_ATTEMPTS);
        let t = task(br#"{"synthetic": {"chunks": 3}, "timeout_ms": 0}"#).unwrap();
        assert_eq!(t.timeout_ms, None, "a zero timeout means none");
        for bad in [
            &br#"{"cmd": ["true"], "synthetic": {"chunks": 1}}"#[..],
            br#"{}"#,
            br#"{"cmd": []}"#,
            br#"{"cmd": [""]}"#,
            br#"{"cmd": ["true"], "max_attempts": 0}"#,
            br#"{"cmd": ["true"], "max_attempts": 21}"#,
            br#"{"synthetic": {"chunks": 1000001}}"#,
            br#"{"cmd": ["true"], "node": ""}"#,
            br#"[1, 2]"#,
            b"\xff",
        ] {
            let e = task(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn deployments_are_capped_in_replicas() {
        let ok = deploy(br#"{"name": "web", "replicas": 2, "synthetic": {"chunks": 1}}"#).unwrap();
        assert!(matches!(ok, Op::Deploy { replicas: 2, .. }));
        let e =
            deploy(br#"{"name": "web", "replicas": 65, "synthetic": {"chunks": 1}}"#).unwrap_err();
        assert_eq!(e.0, "at most 64 replicas");
        let e = deploy(br#"{"replicas": 1, "synthetic": {"chunks": 1}}"#).unwrap_err();
        assert!(e.0.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction_and_nothing_else() {
        let held = |body: &str| lock("l".into(), body.as_bytes());
        let ttl = |op: Op| match op {
            Op::LockAcquire { ttl_ms, .. } => ttl_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ttl(held(r#"{"holder": "h", "ttl_ms": 5000.0}"#).unwrap()),
            5000
        );
        assert_eq!(
            ttl(held(r#"{"holder": "h", "ttl_ms": 5e3}"#).unwrap()),
            5000
        );
        assert!(held(r#"{"holder": "h", "ttl_ms": 5000.5}"#).is_err());
        assert!(held(r#"{"holder": "h", "ttl_ms": -1.0}"#).is_err());
        assert!(held(r#"{"holder": "h", "ttl_ms": 1.8446744073709552e19}"#).is_err());
        let t = task(br#"{"synthetic": {"chunks": 3.0, "exit_code": -2.0}, "max_attempts": 2.0}"#)
            .unwrap();
        assert_eq!(t.max_attempts, 2);
        assert!(matches!(
            t.runner,
            Runner::Synthetic {
                chunks: 3,
                exit_code: -2,
                ..
            }
        ));
        // Text stays text.
        let Op::KvCas { value, .. } =
            cas("k".into(), br#"{"expected": null, "value": "1.0"}"#).unwrap()
        else {
            panic!("a compare-and-set")
        };
        assert_eq!(value, "1.0");
    }

    #[test]
    fn kv_bodies_say_what_shape_they_need() {
        assert_eq!(
            verb("k".into(), "push", None, b"v").unwrap(),
            Some(Op::ListPush {
                key: "k".into(),
                value: "v".into()
            })
        );
        assert_eq!(verb("k".into(), "explode", None, b"").unwrap(), None);
        assert!(verb("k".into(), "add", None, b"\xc3\x28")
            .unwrap_err()
            .0
            .contains("UTF-8"));
        assert_eq!(
            verb("l".into(), "unlock", None, br#"{"token": 7}"#).unwrap(),
            Some(Op::LockRelease {
                name: "l".into(),
                token: FencingToken(7)
            })
        );
        let e = verb("l".into(), "keepalive", None, br#"{"token": -1}"#).unwrap_err();
        assert!(e.0.starts_with("the body must be {\"token\": T}"), "{e}");
        assert!(matches!(
            cas("k".into(), br#"{"expected": null, "value": "v"}"#).unwrap(),
            Op::KvCas { expected: None, .. }
        ));
        assert!(lock("l".into(), br#"{"holder": "me"}"#)
            .unwrap_err()
            .0
            .contains("ttl_ms"));
        let set = || Op::KvSet {
            key: "k".into(),
            value: "v".into(),
        };
        assert!(matches!(
            fence("a:b:7", set()).unwrap(),
            Op::Fenced { lock, token: FencingToken(7), .. } if lock == "a:b"
        ));
        for bad in ["7", "l:", "l:-1", "l:x", "l:18446744073709551616"] {
            assert_eq!(fence(bad, set()).unwrap_err().0, FENCE_SHAPE, "{bad}");
        }
    }

    #[test]
    fn a_transaction_names_each_op_and_one_check_per_guard() {
        let op = txn(
            br#"{"guards": [{"key": "a", "version": 3}, {"key": "b", "exists": false},
                                     {"key": "c", "value": "x"}],
                          "ops": [{"op": "set", "key": "a", "value": "1"},
                                  {"op": "incr", "key": "n"},
                                  {"op": "cas", "key": "c", "expected": "x", "value": "y"},
                                  {"op": "set-if-absent", "key": "b", "value": "v", "ttl_ms": 9},
                                  {"op": "delete", "key": "d"}]}"#,
        )
        .unwrap();
        let Op::Txn { guards, ops } = op else {
            panic!("{op:?}")
        };
        assert_eq!(
            guards.iter().map(|g| &g.check).collect::<Vec<_>>(),
            [
                &Check::Version(EventIdx(3)),
                &Check::Exists(false),
                &Check::Value("x".into())
            ]
        );
        assert_eq!(ops.len(), 5);
        assert_eq!(
            ops[1],
            Op::KvIncrBy {
                key: "n".into(),
                by: 1
            }
        );
        for bad in [
            &br#"{"guards": []}"#[..],
            br#"{"ops": [{"op": "lock", "key": "a"}]}"#,
            br#"{"ops": [{"op": "set", "key": "a"}]}"#,
            br#"{"ops": [{"op": "set", "key": "a", "value": "1", "ttl": 5}]}"#,
            br#"{"guards": [{"key": "a"}], "ops": [{"op": "delete", "key": "a"}]}"#,
            br#"{"guards": [{"key": "a", "exists": true, "value": "1"}], "ops": [{"op": "delete", "key": "a"}]}"#,
            br#"{"ops": [], "then": []}"#,
        ] {
            let e = txn(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
