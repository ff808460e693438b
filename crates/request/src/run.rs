//! What to run: `POST /v1/tasks` and `POST /v1/deployments`. The types
//! here are what the bodies are parsed into, and their schemas are what
//! the API's OpenAPI description says of them.

use crate::{invalid, json, Invalid, DEFAULT_ATTEMPTS, MAX_ATTEMPTS};
use crate::{MAX_SYNTHETIC_CHUNKS, MAX_SYNTHETIC_INTERVAL_MS};
use serde::Deserialize;
use shoal_model::{InstanceSpec, Limits, NodeId, Op, Resources, Runner, TaskSpec};
use std::collections::BTreeMap;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The synthetic runner: `chunks` lines of output, `interval_ms` apart,
/// then it exits with `exit_code`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Synthetic {
    #[schema(maximum = 1_000_000)]
    chunks: u32,
    #[serde(default)]
    #[schema(maximum = 3_600_000)]
    interval_ms: u64,
    #[serde(default)]
    exit_code: i32,
}

/// What to run, as tasks and deployments take it: a command, or the
/// synthetic runner, never both.
#[derive(Debug, Deserialize)]
pub struct RunnerFields {
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    synthetic: Option<Synthetic>,
}

/// Its schema says what `runner` checks: exactly one of a command (with
/// its environment and directory) and the synthetic runner. Both
/// branches know every field, so a body with both (or with either
/// malformed) matches one branch at most.
impl PartialSchema for RunnerFields {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let fields = || {
            let cmd = ArrayBuilder::new()
                .items(text().min_length(Some(1)))
                .min_items(Some(1))
                .description(Some("the program, then its arguments"));
            let env = ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(text()));
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("cmd", cmd)
                .property("env", env)
                .property("cwd", text())
                .property("synthetic", Synthetic::schema())
        };
        OneOfBuilder::new()
            .item(fields().required("cmd"))
            .item(fields().required("synthetic"))
            .description(Some(
                "what to run: a command (cmd, env, cwd) or the synthetic runner, not both",
            ))
            .into()
    }
}

impl ToSchema for RunnerFields {
    fn name() -> std::borrow::Cow<'static, str> {
        "Runner".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Synthetic::name().into(), Synthetic::schema()));
    }
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

/// What a task or an instance asks of the node it runs on.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResourceFields {
    #[serde(default)]
    cpu_milli: u32,
    #[serde(default)]
    #[schema(maximum = 18446744073709551615u64)]
    mem_bytes: u64,
}

impl From<ResourceFields> for Resources {
    fn from(r: ResourceFields) -> Resources {
        Resources {
            cpu_milli: r.cpu_milli,
            mem_bytes: r.mem_bytes,
        }
    }
}

/// A task: what to run, where it may run, and how often to try.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskBody {
    #[serde(flatten)]
    run: RunnerFields,
    #[serde(flatten)]
    resources: ResourceFields,
    /// Run on this node only (a member's node id).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    node: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// 0 or absent: none.
    #[schema(maximum = 18446744073709551615u64)]
    timeout_ms: Option<u64>,
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<u32>,
}

/// `POST /v1/tasks`. A task pinned to a node names it; whether that node
/// is in the cluster is for the caller, who holds the State.
pub fn task(body: &[u8]) -> Result<TaskSpec, Invalid> {
    let b: TaskBody = json(body, "a task: {\"cmd\": [...]} or {\"synthetic\": {...}}")?;
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
        resources: b.resources.into(),
        max_attempts,
    })
}

/// A deployment: `replicas` long-running instances of what to run.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Deployment)]
pub struct DeployBody {
    #[schema(min_length = 1, max_length = 512)]
    name: String,
    #[schema(maximum = 64)]
    replicas: u32,
    #[serde(flatten)]
    run: RunnerFields,
    #[serde(flatten)]
    resources: ResourceFields,
}

/// `POST /v1/deployments`.
pub fn deploy(body: &[u8]) -> Result<Op, Invalid> {
    let b: DeployBody = json(
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
            resources: b.resources.into(),
        },
    })
}
