//! The chaos checker: drives faults on a namespaced cluster built by
//! `tests/chaos/cluster.sh`, sends a bounded stream of commands and tasks
//! through random nodes meanwhile, then checks what must hold:
//!
//! - every live node reaches the same state hash;
//! - every acknowledged increment is applied exactly once (each saw its own
//!   value; the final counter lies between the acknowledged and the sent);
//! - every acknowledged task ends, once, successfully;
//! - no node crashed (every node the harness did not kill still runs, and
//!   no log shows a panic);
//! - memory stayed bounded (peak RSS of every node under a limit).
//!
//! It prints a report (time to form, each host's traffic while idle,
//! faults, commands sent, acknowledged and refused, detection, failover
//! and convergence times) as text and JSON, and exits 1
//! on any violation. Times are reported, not asserted, except generous
//! bounds that catch a hang. Run it through `tests/chaos/run.sh`.

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod cluster;
mod load;
mod traffic;
use cluster::*;
use load::{client, Load};
use shoal_bench::quantile;

const SUBNET: &str = "10.231.77";
/// Bounds that catch a hang, not targets.
const FORM_LIMIT: Duration = Duration::from_secs(120);
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
const CLIENTS: usize = 4;

struct Args {
    hosts: usize,
    duration: Duration,
    dir: PathBuf,
    scripts: PathBuf,
    seed: u64,
    max_rss_mb: u64,
    json: Option<PathBuf>,
    /// The faults to cycle through (`--faults partition,link-flap`).
    faults: Vec<Fault>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        hosts: 5,
        duration: Duration::from_secs(120),
        dir: PathBuf::from("/tmp/shoal-chaos"),
        scripts: PathBuf::from("tests/chaos"),
        seed: 1,
        max_rss_mb: 1024,
        json: None,
        faults: Fault::ALL.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().context(format!("{flag} needs a value"));
        match flag.as_str() {
            "--hosts" => a.hosts = val()?.parse()?,
            "--duration" => a.duration = Duration::from_secs(val()?.parse()?),
            "--dir" => a.dir = val()?.into(),
            "--scripts" => a.scripts = val()?.into(),
            "--seed" => a.seed = val()?.parse()?,
            "--max-rss-mb" => a.max_rss_mb = val()?.parse()?,
            "--json" => a.json = Some(val()?.into()),
            "--faults" => a.faults = val()?.split(',').map(Fault::parse).collect::<Result<_>>()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillRestart,
    KillMaster,
    LinkFlap,
    Partition,
    Loss,
    Delay,
    Pause,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::KillRestart,
        Fault::KillMaster,
        Fault::LinkFlap,
        Fault::Partition,
        Fault::Loss,
        Fault::Delay,
        Fault::Pause,
    ];

    /// `kill-restart`, `link-flap`, ...: the name in kebab case.
    fn parse(name: &str) -> Result<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| kebab(&format!("{f:?}")) == name)
            .with_context(|| format!("no fault {name:?}"))
    }
}

fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Writes sent to the minority side of a partition, one every 400 ms
/// (round-robin over its hosts) for `span`, each on its own thread and
/// from inside its host (`write.sh`: the checker is cut off from the
/// minority): how long each took to be answered, and how (the error code,
/// "committed", or "unanswered" after 3 s).
fn minority_writes(a: &Args, minority: &[usize], span: Duration) -> Vec<(f64, String)> {
    let out = Mutex::new(Vec::new());
    let t0 = Instant::now();
    if minority.is_empty() {
        std::thread::sleep(span);
        return Vec::new();
    }
    std::thread::scope(|s| {
        let mut i = 0;
        while t0.elapsed() < span {
            let host = minority[i % minority.len()];
            i += 1;
            let out = &out;
            s.spawn(move || {
                let sent = Instant::now();
                let key = format!("minority-{}", rand::random::<u64>());
                let answer = Command::new(a.scripts.join("write.sh"))
                    .args([&host.to_string(), &key])
                    .env("CHAOS_DIR", &a.dir)
                    .output();
                let took = sent.elapsed().as_secs_f64();
                let text = answer
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mut lines = text.lines();
                let body: Value = lines
                    .next()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(Value::Null);
                let how = match lines.next().unwrap_or("000") {
                    "200" => "committed".to_owned(),
                    "000" => "unanswered".to_owned(),
                    _ => body["error"]["code"].as_str().unwrap_or("?").to_owned(),
                };
                if let Ok(mut o) = out.lock() {
                    o.push((took, how));
                }
            });
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    out.into_inner().unwrap_or_default()
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool> {
    let a = args()?;
    let token = std::fs::read_to_string(a.dir.join("token")).context("the cluster's token")?;
    let api = Api {
        // A connection per request: one kept from before a partition or
        // a cut link waits for TCP to retry after the heal, and the times
        // measured would be the checker's, not the cluster's.
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(0)
            .build()?,
        token: token.trim().to_owned(),
    };
    let all: Vec<usize> = (1..=a.hosts).collect();
    let mut violations: Vec<String> = Vec::new();

    // Formation by mDNS.
    let formed = wait_rounds(FORM_LIMIT, a.hosts, || {
        converged(&api, &all)
            && api.get(1, "/v1/nodes").is_some_and(|n| {
                n["nodes"].as_array().is_some_and(|ns| {
                    ns.len() == a.hosts
                        && ns
                            .iter()
                            .filter(|x| x["role"] == "voter" || x["role"] == "master")
                            .count()
                            == 3.min(a.hosts)
                })
            })
    });
    let Some(formed) = formed else {
        bail!("the cluster did not form within {FORM_LIMIT:?}");
    };
    eprintln!(
        "chaos: {} hosts formed one cluster in {:.1}s",
        a.hosts,
        formed.as_secs_f64()
    );

    // Traffic per host while idle, before any load.
    let idle_traffic = traffic::idle(&a, &api, Duration::from_secs(10));
    eprintln!("chaos: idle traffic by role {}", idle_traffic["by_role"]);

    // Memory, sampled throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(Mutex::new(BTreeMap::<usize, u64>::new()));
    let sampler = {
        let (stop, peak, dir, hosts) = (stop.clone(), peak_rss.clone(), a.dir.clone(), a.hosts);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for i in 1..=hosts {
                    if let Some(kb) = pid_of(&dir, i).and_then(rss_kb) {
                        let mut p = peak.lock().unwrap();
                        let e = p.entry(i).or_default();
                        *e = (*e).max(kb);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let load = Arc::new(Load {
        acked: Mutex::new(vec![Vec::new(); CLIENTS]),
        unknown: Mutex::new(vec![0; CLIENTS]),
        ..Load::default()
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (api, load, stop) = (api.clone(), load.clone(), stop.clone());
            let (hosts, seed) = (a.hosts, a.seed);
            std::thread::spawn(move || client(api, hosts, t, load, stop, seed))
        })
        .collect();

    // Faults, one after another, each healed and converged before the next.
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let mut faults = Vec::new();
    let kinds = a.faults.clone();
    let mut refusals: Vec<(f64, String)> = Vec::new();
    let begin = Instant::now();
    let mut k = 0;
    while begin.elapsed() < a.duration {
        let fault = kinds[k % kinds.len()];
        k += 1;
        // Start from a healthy cluster: every node alive in the master's
        // view (a node just resumed may still show as dead).
        let healthy = wait(CONVERGE_LIMIT, || {
            api.get(1, "/v1/nodes").is_some_and(|n| {
                n["nodes"].as_array().is_some_and(|ns| {
                    ns.len() == a.hosts && ns.iter().all(|x| x["liveness"] == "alive")
                })
            })
        });
        if healthy.is_none() {
            violations.push(format!(
                "the cluster did not become healthy before {fault:?}"
            ));
        }
        let master = master_host(&api, &all);
        let victim = loop {
            let v = rng.gen_range(1..=a.hosts);
            if Some(v) != master || a.hosts == 1 {
                break v;
            }
        };
        let vs = victim.to_string();
        let mut rec = json!({"fault": format!("{fault:?}"), "at_s": begin.elapsed().as_secs_f64()});
        match fault {
            Fault::KillRestart | Fault::KillMaster => {
                let target = if matches!(fault, Fault::KillMaster) {
                    master.unwrap_or(victim)
                } else {
                    victim
                };
                let ts = target.to_string();
                let id = node_id(&api, target);
                let t0 = Instant::now();
                script(&a, "kill.sh", &[&ts]);
                let others: Vec<usize> = all.iter().copied().filter(|i| *i != target).collect();
                rec["target"] = json!(target);
                // From the kill: the first write committed through another
                // node, then the others marking the victim dead.
                if matches!(fault, Fault::KillMaster) {
                    let failover = wait(Duration::from_secs(30), || {
                        let o = others[rng.gen_range(0..others.len())];
                        api.post(
                            o,
                            "/v1/kv/chaos-probe/incr",
                            &format!("probe-{}", rng.gen::<u64>()),
                            None,
                        )
                        .0 == 200
                    });
                    rec["failover_s"] = json!(failover.map(|_| t0.elapsed().as_secs_f64()));
                }
                let detected = wait(Duration::from_secs(30), || {
                    others.iter().any(|o| {
                        api.get(*o, "/v1/nodes").is_some_and(|n| {
                            n["nodes"].as_array().is_some_and(|ns| {
                                ns.iter().any(|x| {
                                    Some(x["node_id"].as_str().unwrap_or("")) == id.as_deref()
                                        && x["liveness"] == "dead"
                                })
                            })
                        })
                    })
                });
                rec["detection_s"] = json!(detected.map(|_| t0.elapsed().as_secs_f64()));
                script(&a, "cluster.sh", &["start", &ts]);
            }
            Fault::LinkFlap => {
                rec["target"] = json!(victim);
                script(&a, "link.sh", &["down", &vs]);
                std::thread::sleep(Duration::from_secs(5));
                script(&a, "link.sh", &["up", &vs]);
            }
            Fault::Partition => {
                // Fewer than half the hosts, holding fewer than half the
                // voters (the master may be among them): that side can
                // commit nothing.
                let voter = |i: usize| {
                    api.get(i, "/v1/status")
                        .is_some_and(|s| s["role"] == "voter" || s["role"] == "master")
                };
                let voters: Vec<usize> = all.iter().copied().filter(|i| voter(*i)).collect();
                let mut shuffled = all.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.gen_range(0..=i));
                }
                let mut minority: Vec<usize> = Vec::new();
                for h in shuffled {
                    let held = minority.iter().filter(|m| voters.contains(m)).count();
                    let is_voter = voters.contains(&h);
                    if minority.len() < a.hosts / 2 && !(is_voter && (held + 1) * 2 >= voters.len())
                    {
                        minority.push(h);
                    }
                }
                minority.sort_unstable();
                let list = minority
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                rec["minority"] = json!(minority);
                script(&a, "partition.sh", &["split", &list]);
                // Meanwhile, writes to the minority side: each must be
                // refused, and soon.
                let probes = minority_writes(&a, &minority, Duration::from_secs(8));
                let mut took: Vec<f64> = probes.iter().map(|(t, _)| *t).collect();
                rec["minority_writes"] = json!(probes.len());
                rec["minority_answer_p99_s"] = json!(quantile(&mut took, 0.99));
                if probes.iter().any(|(_, how)| how == "committed") {
                    violations.push("a write on the minority side committed".into());
                }
                refusals.extend(probes);
                script(&a, "partition.sh", &["heal"]);
            }
            Fault::Loss => {
                rec["target"] = json!(victim);
                rec["percent"] = json!(20);
                script(&a, "loss.sh", &["on", &vs, "20"]);
                std::thread::sleep(Duration::from_secs(8));
                script(&a, "loss.sh", &["off", &vs]);
            }
            Fault::Delay => {
                rec["target"] = json!(victim);
                rec["delay_ms"] = json!(300);
                script(&a, "delay.sh", &["on", &vs, "300"]);
                std::thread::sleep(Duration::from_secs(8));
                script(&a, "delay.sh", &["off", &vs]);
            }
            Fault::Pause => {
                rec["target"] = json!(victim);
                script(&a, "pause.sh", &["stop", &vs]);
                std::thread::sleep(Duration::from_secs(4));
                script(&a, "pause.sh", &["cont", &vs]);
            }
        }
        // Converged under load: everyone past what was committed when the
        // fault was healed, under one master.
        let target = max_commit(&api, &all);
        let conv = wait_rounds(CONVERGE_LIMIT, a.hosts, || caught_up(&api, &all, target));
        rec["converge_s"] = json!(conv.map(|d| d.as_secs_f64()));
        if conv.is_none() {
            violations.push(format!(
                "no convergence within {CONVERGE_LIMIT:?} after {fault:?}"
            ));
            rec["statuses"] = json!(all
                .iter()
                .map(|i| api.get(*i, "/v1/status").unwrap_or(Value::Null))
                .collect::<Vec<_>>());
        }
        eprintln!("chaos: {rec}");
        faults.push(rec);
    }

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let _ = sampler.join();
    if wait_rounds(CONVERGE_LIMIT, a.hosts, || converged(&api, &all)).is_none() {
        let statuses: Vec<String> = all
            .iter()
            .map(|i| {
                let s = api.get(*i, "/v1/status").unwrap_or(Value::Null);
                format!(
                    "h{i}: role {} master {} applied {} commit {} hash {}",
                    s["role"],
                    s["master_id"],
                    s["applied_index"],
                    s["commit_index"],
                    s["state_hash"]
                )
            })
            .collect();
        violations.push(format!(
            "the nodes did not end on one state hash: {}",
            statuses.join("; ")
        ));
    }

    // Exactly once: increments.
    let acked = load.acked.lock().unwrap().clone();
    let unknown = load.unknown.lock().unwrap().clone();
    for (t, values) in acked.iter().enumerate() {
        let v = api
            .get(1, &format!("/v1/kv/chaos-c{t}?consistent=true"))
            .and_then(|v| v["value"].as_i64())
            .unwrap_or(0);
        let distinct: BTreeSet<i64> = values.iter().copied().collect();
        if distinct.len() != values.len() {
            violations.push(format!(
                "client {t}: two acknowledged increments saw one value"
            ));
        }
        let (lo, hi) = (values.len() as i64, values.len() as i64 + unknown[t] as i64);
        if v < lo || v > hi || distinct.last().is_some_and(|m| *m > v) {
            violations.push(format!(
                "client {t}: counter {v}, {lo} acknowledged, {} unknown",
                unknown[t]
            ));
        }
    }
    // Exactly once: tasks end, successfully. One listing per look.
    let tasks = load.tasks.lock().unwrap().clone();
    let statuses = || -> BTreeMap<String, Value> {
        api.get(1, "/v1/tasks?limit=100000")
            .and_then(|v| v["tasks"].as_array().cloned())
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_owned(),
                    t["status"].clone(),
                )
            })
            .collect()
    };
    let mut last = BTreeMap::new();
    wait(CONVERGE_LIMIT, || {
        last = statuses();
        tasks
            .iter()
            .all(|id| last.get(id).is_some_and(|s| s["state"] == "finished"))
    });
    for id in &tasks {
        match last.get(id) {
            Some(s) if s["state"] == "finished" && s["exit_code"] == 0 => {}
            other => violations.push(format!("task {id} ended as {other:?}")),
        }
    }
    // No crash.
    for i in &all {
        match pid_of(&a.dir, *i) {
            Some(pid) if running(pid) => {}
            other => violations.push(format!("host {i}: node not running ({other:?})")),
        }
        let log = std::fs::read_to_string(a.dir.join(format!("h{i}.log"))).unwrap_or_default();
        if log.contains("panicked") {
            violations.push(format!("host {i}: a panic in its log"));
        }
    }
    // Bounded memory.
    let peak = peak_rss.lock().unwrap().clone();
    for (i, kb) in &peak {
        if *kb > a.max_rss_mb * 1024 {
            violations.push(format!(
                "host {i}: peak RSS {} MiB over {} MiB",
                kb / 1024,
                a.max_rss_mb
            ));
        }
    }

    let refused = load.refused.lock().unwrap().clone();
    // Each kind of fault's times, over every time it was injected.
    let mut times = BTreeMap::new();
    for kind in &kinds {
        let name = format!("{kind:?}");
        for figure in ["converge_s", "failover_s", "detection_s"] {
            let mut xs: Vec<f64> = faults
                .iter()
                .filter(|f| f["fault"] == name.as_str())
                .filter_map(|f| f[figure].as_f64())
                .collect();
            if !xs.is_empty() {
                let (p50, p99) = (quantile(&mut xs, 0.5), quantile(&mut xs, 0.99));
                times.insert(
                    format!("{}_{figure}", kebab(&name)),
                    json!({"n": xs.len(), "p50": p50, "p99": p99}),
                );
            }
        }
    }
    let mut answered: Vec<f64> = refusals.iter().map(|(t, _)| *t).collect();
    let mut hows: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, how) in &refusals {
        *hows.entry(how.as_str()).or_default() += 1;
    }
    let report = json!({
        "hosts": a.hosts,
        "duration_s": begin.elapsed().as_secs_f64(),
        "formation_s": formed.as_secs_f64(),
        "idle_traffic": idle_traffic,
        "faults": faults,
        "commands": {
            "sent": load.sent.load(Ordering::Relaxed),
            "acknowledged_increments": acked.iter().map(|v| v.len()).sum::<usize>(),
            "acknowledged_tasks": tasks.len(),
            "unknown": unknown.iter().sum::<u64>(),
            "refusals": refused,
        },
        "times": times,
        "minority_writes": {
            "n": refusals.len(),
            "answered_p50_s": quantile(&mut answered, 0.5),
            "answered_p99_s": quantile(&mut answered, 0.99),
            "answers": hows,
        },
        "peak_rss_mib": peak.iter().map(|(i, kb)| (i.to_string(), kb / 1024)).collect::<BTreeMap<_, _>>(),
        "violations": violations,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &a.json {
        std::fs::write(p, report.to_string())?;
    }
    if violations.is_empty() {
        eprintln!("chaos: no violation");
        Ok(true)
    } else {
        eprintln!("chaos: {} violation(s)", violations.len());
        Ok(false)
    }
}
