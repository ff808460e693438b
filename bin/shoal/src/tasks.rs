//! `shoal run`, `shoal logs`, `shoal tasks`, `shoal cancel`.

use crate::client::{encode, Body, Client};
use crate::sse::SseFrames;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run on this node only.
    #[arg(long)]
    pub node: Option<String>,
    /// Run only on nodes started with this label (repeatable).
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    pub label: Vec<(String, String)>,
    /// Stop the run after this long (exit status 124).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Runs at most, counting retries after transient failures (exit 75,
    /// a lost node).
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// CPU the run needs, in millicores.
    #[arg(long, default_value_t = 0)]
    pub cpu_milli: u32,
    /// Memory the run needs, in bytes.
    #[arg(long, default_value_t = 0)]
    pub mem_bytes: u64,
    /// Print the task id and return at once.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub run: RunnerArgs,
}

/// What to run: a command with its environment, or the synthetic runner.
#[derive(Args, Debug)]
pub struct RunnerArgs {
    /// Environment variable for the command (repeatable).
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory on the node.
    #[arg(long)]
    pub cwd: Option<String>,
    /// The built-in synthetic runner instead of a command:
    /// CHUNKS:INTERVAL_MS:EXIT_CODE, e.g. 10:100:0.
    #[arg(long, value_name = "N:MS:CODE", conflicts_with = "cmd")]
    pub synthetic: Option<String>,
    /// The command and its arguments (a replica finds its port in PORT).
    #[arg(last = true, required_unless_present = "synthetic")]
    pub cmd: Vec<String>,
}

impl RunnerArgs {
    /// Adds the runner's fields to a request body.
    fn fill(&self, body: &mut Value) -> Result<()> {
        match &self.synthetic {
            Some(s) => body["synthetic"] = synthetic(s)?,
            None => {
                body["cmd"] = json!(self.cmd);
                body["env"] = json!(self.env.iter().cloned().collect::<BTreeMap<_, _>>());
                body["cwd"] = json!(self.cwd);
            }
        }
        Ok(())
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not K=V"))
}

fn synthetic(s: &str) -> Result<Value> {
    let parts: Vec<&str> = s.split(':').collect();
    let [n, ms, code] = parts[..] else {
        bail!("--synthetic must be CHUNKS:INTERVAL_MS:EXIT_CODE");
    };
    Ok(json!({
        "chunks": n.parse::<u32>().context("--synthetic chunks")?,
        "interval_ms": ms.parse::<u64>().context("--synthetic interval")?,
        "exit_code": code.parse::<i32>().context("--synthetic exit code")?,
    }))
}

/// Submits a task and follows it; returns the exit status to leave with.
pub fn run(c: &Client, a: RunArgs) -> Result<i32> {
    let mut body = json!({
        "node": a.node,
        "labels": a.label.iter().cloned().collect::<BTreeMap<_, _>>(),
        "timeout_ms": a.timeout.map(|t| t.as_millis() as u64),
        "max_attempts": a.attempts,
        "cpu_milli": a.cpu_milli,
        "mem_bytes": a.mem_bytes,
    });
    a.run.fill(&mut body)?;
    let v = c.write(Method::POST, "/v1/tasks", Body::Json(body), None)?;
    let id = v["task"]
        .as_str()
        .ok_or_else(|| anyhow!("the node answered without a task id: {v}"))?
        .to_owned();
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    eprintln!("shoal: task {id}");
    follow(c, &id)
}

/// Prints a task's output as it comes and returns its exit status.
fn follow(c: &Client, id: &str) -> Result<i32> {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut attempt_told = 0;
    for reconnect in 0..5 {
        if reconnect > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let resp = match c.stream(&format!("/v1/tasks/{}/output", encode(id))) {
            Ok(r) => r,
            Err(e) if reconnect < 4 => {
                eprintln!("shoal: {e}; retrying");
                continue;
            }
            Err(e) => return Err(e),
        };
        for (kind, v) in SseFrames::new(BufReader::new(resp)) {
            match kind.as_str() {
                "output" => {
                    let (attempt, seq) = (
                        v["attempt"].as_u64().unwrap_or(0),
                        v["seq"].as_u64().unwrap_or(0),
                    );
                    if seen.get(&attempt).is_some_and(|s| seq <= *s) {
                        continue;
                    }
                    seen.insert(attempt, seq);
                    let text = v["text"].as_str().unwrap_or("");
                    if v["stream"] == "stderr" {
                        let _ = std::io::stderr().write_all(text.as_bytes());
                    } else {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                    }
                }
                "status" => {
                    let attempt = v["attempt"].as_u64().unwrap_or(0);
                    if attempt > 1 && attempt != attempt_told {
                        attempt_told = attempt;
                        eprintln!(
                            "shoal: attempt {attempt} on node {}",
                            v["node"].as_str().unwrap_or("?")
                        );
                    }
                }
                "lagged" => {
                    eprintln!("shoal: output was dropped ({v}); `shoal logs {id}` has what is kept")
                }
                "end" => return Ok(ended(id, &v)),
                _ => {}
            }
        }
    }
    bail!("lost the node's stream; the task goes on: see `shoal logs {id}`")
}

/// Reports how a task ended; returns the exit status to leave with.
fn ended(id: &str, v: &Value) -> i32 {
    let st = &v["status"];
    match st["state"].as_str() {
        Some("finished") => {
            let code = st["exit_code"].as_i64().unwrap_or(1) as i32;
            match st["class"].as_str() {
                Some("timeout") => {
                    eprintln!("shoal: task {id} timed out");
                    124
                }
                Some("cancelled") => {
                    eprintln!("shoal: task {id} was cancelled");
                    130
                }
                _ => code,
            }
        }
        Some("failed") => {
            eprintln!(
                "shoal: task {id} failed: {}",
                st["reason"].as_str().unwrap_or("?")
            );
            1
        }
        Some("cancelled") => {
            eprintln!("shoal: task {id} was cancelled");
            130
        }
        other => {
            eprintln!("shoal: task {id} ended as {other:?}");
            1
        }
    }
}

pub fn logs(c: &Client, id: &str) -> Result<i32> {
    let v = c.get(&format!("/v1/tasks/{}/logs", encode(id)))?;
    let mut attempt = 0;
    for ch in v["chunks"].as_array().into_iter().flatten() {
        let a = ch["attempt"].as_u64().unwrap_or(0);
        if a != attempt && attempt != 0 {
            eprintln!("shoal: attempt {a}");
        }
        attempt = a;
        let text = ch["text"].as_str().unwrap_or("");
        if ch["stream"] == "stderr" {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(0)
}

pub fn list(c: &Client, json: bool) -> Result<i32> {
    let v = c.get("/v1/tasks")?;
    if json {
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{:<36} {:<10} {:>7} {:>5}  NODE",
        "TASK", "STATE", "ATTEMPT", "EXIT"
    );
    for t in v["tasks"].as_array().into_iter().flatten() {
        let st = &t["status"];
        println!(
            "{:<36} {:<10} {:>7} {:>5}  {}",
            t["id"].as_str().unwrap_or("?"),
            st["state"].as_str().unwrap_or("?"),
            t["attempt"],
            st["exit_code"]
                .as_i64()
                .map_or("-".into(), |c| c.to_string()),
            t["node"].as_str().unwrap_or("-"),
        );
    }
    Ok(0)
}

/// A write whose answer says whether it applied: prints which, and exits
/// 2 when it did not.
fn applied_or(c: &Client, method: Method, path: &str, yes: &str, no: &str) -> Result<i32> {
    let v = c.write(method, path, Body::None, None)?;
    if v["applied"] == true {
        println!("{yes}");
        Ok(0)
    } else {
        println!("{no}");
        Ok(crate::kv::NOT_APPLIED)
    }
}

pub fn cancel(c: &Client, id: &str) -> Result<i32> {
    let path = format!("/v1/tasks/{}/cancel", encode(id));
    applied_or(c, Method::POST, &path, "cancelled", "already finished")
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The deployment's name; deploying it again replaces its spec.
    pub name: String,
    /// How many replicas to keep running, spread across nodes.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// CPU each replica needs, in millicores.
    #[arg(long, default_value_t = 0)]
    pub cpu_milli: u32,
    /// Memory each replica needs, in bytes.
    #[arg(long, default_value_t = 0)]
    pub mem_bytes: u64,
    #[command(flatten)]
    pub run: RunnerArgs,
}

pub fn deploy(c: &Client, a: DeployArgs) -> Result<i32> {
    let mut body = json!({
        "name": a.name,
        "replicas": a.replicas,
        "cpu_milli": a.cpu_milli,
        "mem_bytes": a.mem_bytes,
    });
    a.run.fill(&mut body)?;
    let v = c.write(Method::POST, "/v1/deployments", Body::Json(body), None)?;
    println!("deployed {} (index {})", a.name, v["index"]);
    Ok(0)
}

pub fn undeploy(c: &Client, name: &str) -> Result<i32> {
    let path = format!("/v1/deployments/{}", encode(name));
    let (yes, no) = (
        format!("undeployed {name}"),
        format!("no deployment {name}"),
    );
    applied_or(c, Method::DELETE, &path, &yes, &no)
}

pub fn deployments(c: &Client, json: bool) -> Result<i32> {
    let v = c.get("/v1/deployments")?;
    if json {
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{:<20} {:>7}  {:<22} {:<10} {:>8} {:>9}  NODE",
        "NAME", "REPLICA", "ADDR", "STATUS", "RESTARTS", "LAST EXIT"
    );
    for d in v["deployments"].as_array().into_iter().flatten() {
        for p in d["placements"].as_array().into_iter().flatten() {
            let status = match &p["status"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!(
                "{:<20} {:>7}  {:<22} {:<10} {:>8} {:>9}  {}",
                d["name"].as_str().unwrap_or("?"),
                p["replica"],
                p["addr"].as_str().unwrap_or("-"),
                status,
                p["restarts"].as_u64().map_or("-".into(), |r| r.to_string()),
                p["last_exit"]
                    .as_i64()
                    .map_or("-".into(), |e| e.to_string()),
                p["node"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(0)
}

/// `shoal watch`: the committed event stream from `from` on.
pub fn watch(c: &Client, from: Option<u64>, prefix: Option<&str>, json_out: bool) -> Result<i32> {
    let mut query = Vec::new();
    if let Some(f) = from {
        query.push(format!("from={f}"));
    }
    if let Some(p) = prefix {
        query.push(format!("prefix={}", crate::client::encode(p)));
    }
    let path = match query.is_empty() {
        true => "/v1/events".to_owned(),
        false => format!("/v1/events?{}", query.join("&")),
    };
    let resp = c.stream(&path)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (kind, v) in SseFrames::new(BufReader::new(resp)) {
        let printed = if json_out {
            writeln!(out, "{}", json!({"type": kind, "data": v}))
        } else {
            match kind.as_str() {
                "event" => {
                    let ev = &v["event"];
                    let (name, body) = match ev {
                        Value::Object(m) if m.len() == 1 => {
                            let (k, b) = m.iter().next().expect("one");
                            (k.clone(), b.to_string())
                        }
                        other => (other.as_str().unwrap_or("?").to_owned(), String::new()),
                    };
                    writeln!(out, "{:>8} {:>4} {name} {body}", v["idx"], v["term"])
                }
                "snapshot" => writeln!(out, "-- state as of index {} --", v["index"]),
                "state" => {
                    let (name, n) = v
                        .as_object()
                        .and_then(|m| m.iter().next())
                        .map(|(k, items)| (k.clone(), items.as_array().map_or(0, |a| a.len())))
                        .unwrap_or_default();
                    writeln!(out, "   {n} {name}")
                }
                "snapshot_end" => writeln!(
                    out,
                    "-- state at {} complete, hash {} --",
                    v["index"],
                    v["state_hash"].as_str().unwrap_or("?")
                ),
                _ => Ok(()),
            }
        };
        if printed.and_then(|_| out.flush()).is_err() {
            return Ok(0);
        }
    }
    bail!("the node closed the event stream")
}
