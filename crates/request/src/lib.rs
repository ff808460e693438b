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

use serde::de::DeserializeOwned;
use serde::Deserialize;
use shoal_model::{
    Check, EventIdx, FencingToken, Guard, InstanceSpec, Limits, NodeId, Op, Resources, Runner,
    TaskSpec,
};
use std::collections::BTreeMap;

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

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A JSON body of shape `T`; `shape` names it in the error.
fn json<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Invalid> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("the body must be {shape}: {e}")))
}

/// A text body (a value or a member); `what` names it in the error.
pub fn text(body: &[u8], what: &str) -> Result<String, Invalid> {
    String::from_utf8(body.to_vec()).map_err(|_| invalid(format!("the {what} must be UTF-8 text")))
}

/// `{"token": T}`: the fencing token of a lock held.
pub fn token(body: &[u8]) -> Result<FencingToken, Invalid> {
    #[derive(Deserialize)]
    struct Body {
        token: u64,
    }
    let b: Body = json(body, "{\"token\": T}")?;
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

/// `POST /v1/kv/KEY/cas`.
pub fn cas(key: String, body: &[u8]) -> Result<Op, Invalid> {
    #[derive(Deserialize)]
    struct Body {
        /// The value expected now; null: the key must be absent.
        expected: Option<String>,
        value: String,
    }
    let b: Body = json(body, "{\"expected\": V or null, \"value\": V}")?;
    Ok(Op::KvCas {
        key,
        expected: b.expected,
        value: b.value,
    })
}

/// `POST /v1/kv/NAME/lock`.
pub fn lock(name: String, body: &[u8]) -> Result<Op, Invalid> {
    #[derive(Deserialize)]
    struct Body {
        holder: String,
        ttl_ms: u64,
    }
    let b: Body = json(body, "{\"holder\": H, \"ttl_ms\": N}")?;
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

/// One op of a transaction, named by `"op"`.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
enum TxnOp {
    Set {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    Incr {
        key: String,
        #[serde(default = "one")]
        by: i64,
    },
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
    },
    SetIfAbsent {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    Add {
        key: String,
        member: String,
    },
    Remove {
        key: String,
        member: String,
    },
    Push {
        key: String,
        value: String,
    },
}

fn one() -> i64 {
    1
}

impl From<TxnOp> for Op {
    fn from(op: TxnOp) -> Op {
        match op {
            TxnOp::Set { key, value } => Op::KvSet { key, value },
            TxnOp::Delete { key } => Op::KvDelete { key },
            TxnOp::Incr { key, by } => Op::KvIncrBy { key, by },
            TxnOp::Cas {
                key,
                expected,
                value,
            } => Op::KvCas {
                key,
                expected,
                value,
            },
            TxnOp::SetIfAbsent { key, value, ttl_ms } => Op::KvSetIfAbsent { key, value, ttl_ms },
            TxnOp::Add { key, member } => Op::SetAdd { key, member },
            TxnOp::Remove { key, member } => Op::SetRemove { key, member },
            TxnOp::Push { key, value } => Op::ListPush { key, value },
        }
    }
}

/// A guard: the key and exactly one of `exists`, `version`, `value`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnGuard {
    key: String,
    exists: Option<bool>,
    version: Option<u64>,
    value: Option<String>,
}

impl TxnGuard {
    fn guard(self) -> Result<Guard, Invalid> {
        let check = match (self.exists, self.version, self.value) {
            (Some(e), None, None) => Check::Exists(e),
            (None, Some(v), None) => Check::Version(EventIdx(v)),
            (None, None, Some(v)) => Check::Value(v),
            _ => {
                return Err(invalid(format!(
                    "guard on {:?}: give exactly one of exists, version and value",
                    self.key
                )))
            }
        };
        Ok(Guard {
            key: self.key,
            check,
        })
    }
}

/// `POST /v1/txn`: `{"guards": [...], "ops": [...]}`.
pub fn txn(body: &[u8]) -> Result<Op, Invalid> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        guards: Vec<TxnGuard>,
        ops: Vec<TxnOp>,
    }
    let b: Body = json(body, TXN_SHAPE)?;
    let guards = b
        .guards
        .into_iter()
        .map(TxnGuard::guard)
        .collect::<Result<_, _>>()?;
    Ok(Op::Txn {
        guards,
        ops: b.ops.into_iter().map(Op::from).collect(),
    })
}

/// What a transaction's body looks like, for errors and help.
pub const TXN_SHAPE: &str = r#"{"guards": [{"key": K, "exists"|"version"|"value": X}], "ops": [{"op": "set"|"delete"|"incr"|"cas"|"set-if-absent"|"add"|"remove"|"push", "key": K, ...}]}"#;

#[derive(Deserialize)]
struct Synthetic {
    chunks: u32,
    #[serde(default)]
    interval_ms: u64,
    #[serde(default)]
    exit_code: i32,
}

/// What to run, as tasks and deployments take it: a command, or the
/// synthetic runner.
#[derive(Deserialize)]
struct RunnerFields {
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    synthetic: Option<Synthetic>,
}

impl RunnerFields {
    fn runner(self) -> Result<Runner, Invalid> {
        match (self.cmd, self.synthetic) {
            (Some(cmd), None) => {
                let mut it = cmd.into_iter();
                let program = it
                    .next()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| invalid("cmd must name a program"))?;
                Ok(Runner::Exec {
                    cmd: program,
                    args: it.collect(),
                    env: self.env,
                    cwd: self.cwd,
                })
            }
            (None, Some(y)) => {
                if y.chunks > MAX_SYNTHETIC_CHUNKS || y.interval_ms > MAX_SYNTHETIC_INTERVAL_MS {
                    return Err(invalid(format!(
                        "synthetic: at most {MAX_SYNTHETIC_CHUNKS} chunks, {} h apart",
                        MAX_SYNTHETIC_INTERVAL_MS / 3_600_000
                    )));
                }
                Ok(Runner::Synthetic {
                    chunks: y.chunks,
                    interval_ms: y.interval_ms,
                    exit_code: y.exit_code,
                })
            }
            _ => Err(invalid("give exactly one of cmd and synthetic")),
        }
    }
}

/// `POST /v1/tasks`. A task pinned to a node names it; whether that node
/// is in the cluster is for the caller, who holds the State.
pub fn task(body: &[u8]) -> Result<TaskSpec, Invalid> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(flatten)]
        run: RunnerFields,
        node: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
        max_attempts: Option<u32>,
        #[serde(default)]
        cpu_milli: u32,
        #[serde(default)]
        mem_bytes: u64,
    }
    let b: Body = json(body, "a task: {\"cmd\": [...]} or {\"synthetic\": {...}}")?;
    let runner = b.run.runner()?;
    let node = b
        .node
        .map(|n| NodeId::parse(&n).map_err(|e| invalid(e.to_string())))
        .transpose()?;
    let max_attempts = b.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
    if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
        return Err(invalid(format!("max_attempts must be 1..={MAX_ATTEMPTS}")));
    }
    Ok(TaskSpec {
        runner,
        timeout_ms: b.timeout_ms.filter(|t| *t > 0),
        node,
        labels: b.labels,
        resources: Resources {
            cpu_milli: b.cpu_milli,
            mem_bytes: b.mem_bytes,
        },
        max_attempts,
    })
}

/// `POST /v1/deployments`.
pub fn deploy(body: &[u8]) -> Result<Op, Invalid> {
    #[derive(Deserialize)]
    struct Body {
        name: String,
        replicas: u32,
        #[serde(flatten)]
        run: RunnerFields,
        #[serde(default)]
        cpu_milli: u32,
        #[serde(default)]
        mem_bytes: u64,
    }
    let b: Body = json(
        body,
        "a deployment: {\"name\", \"replicas\", \"cmd\": [...] or \"synthetic\": {...}}",
    )?;
    if b.replicas > Limits::MAX_REPLICAS {
        return Err(invalid(format!(
            "at most {} replicas",
            Limits::MAX_REPLICAS
        )));
    }
    Ok(Op::Deploy {
        name: b.name,
        replicas: b.replicas,
        spec: InstanceSpec {
            runner: b.run.runner()?,
            resources: Resources {
                cpu_milli: b.cpu_milli,
                mem_bytes: b.mem_bytes,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
