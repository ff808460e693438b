//! `POST /v1/txn`: guards on keys, then key-value writes, all applied or
//! none. The types here are what the body is parsed into, and their
//! schemas are what the API's OpenAPI description says of it.

use crate::{invalid, json, Invalid};
use serde::Deserialize;
use shoal_model::{Check, EventIdx, Guard, Op};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// One op of a transaction, named by `"op"`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TxnOp {
    /// Set the key to the value -> {}.
    Set {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[schema(max_length = 65536)]
        value: String,
    },
    /// Delete the key -> applied.
    Delete {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
    },
    /// Add to an integer -> value.
    Incr {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[serde(default = "one")]
        #[schema(default = 1)]
        by: i64,
    },
    /// Compare-and-set -> applied.
    Cas {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        /// Null or absent: the key must be absent.
        #[schema(max_length = 65536)]
        expected: Option<String>,
        #[schema(max_length = 65536)]
        value: String,
    },
    /// Set unless the key is there -> applied.
    SetIfAbsent {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[schema(max_length = 65536)]
        value: String,
        #[schema(minimum = 1, maximum = 18446744073709551615u64)]
        ttl_ms: Option<u64>,
    },
    /// Add a set member -> applied.
    Add {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[schema(max_length = 65536)]
        member: String,
    },
    /// Remove a set member -> applied.
    Remove {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[schema(max_length = 65536)]
        member: String,
    },
    /// Append to a list -> value (the new length).
    Push {
        #[schema(min_length = 1, max_length = 512)]
        key: String,
        #[schema(max_length = 65536)]
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

/// A condition on one key: give exactly one of `exists`, `version` and
/// `value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnGuard {
    key: String,
    exists: Option<bool>,
    version: Option<u64>,
    value: Option<String>,
}

/// A guard's check in its schema: the field, what it says, its type.
type CheckSchema = (&'static str, &'static str, fn() -> ObjectBuilder);

/// Its schema says what `guard` checks: the key, and exactly one check
/// (the others absent or null).
impl PartialSchema for TxnGuard {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let checks: [CheckSchema; 3] = [
            ("exists", "whether the key is there", || {
                ObjectBuilder::new().schema_type(Type::Boolean)
            }),
            ("version", "the index of the key's last change", || {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(u64::MAX))
            }),
            ("value", "the key's value", || {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(65536))
            }),
        ];
        let mut one_of = OneOfBuilder::new().description(Some(
            "a condition on one key: give exactly one of exists, version and value",
        ));
        for (given, _, _) in &checks {
            let mut guard = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("key", text().min_length(Some(1)).max_length(Some(512)))
                .required("key")
                .required(*given)
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
            for (name, what, other) in &checks {
                guard = if name == given {
                    guard.property(*name, other().description(Some(*what)))
                } else {
                    guard.property(*name, ObjectBuilder::new().schema_type(Type::Null))
                };
            }
            one_of = one_of.item(guard);
        }
        one_of.into()
    }
}

impl ToSchema for TxnGuard {}

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

/// A transaction: every guard must hold, then the ops apply in order, each
/// seeing the ones before; keys and values together at most 1 MiB.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    #[serde(default)]
    #[schema(max_items = 64)]
    guards: Vec<TxnGuard>,
    #[schema(min_items = 1, max_items = 1024)]
    ops: Vec<TxnOp>,
}

/// `POST /v1/txn`: `{"guards": [...], "ops": [...]}`.
pub fn txn(body: &[u8]) -> Result<Op, Invalid> {
    let b: TxnBody = json(body, TXN_SHAPE)?;
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
