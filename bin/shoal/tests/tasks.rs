//! Tasks end to end: real `shoal up` processes on 127.0.0.1 running
//! commands and the synthetic runner, driven through the CLI and HTTP.

mod cluster;

use cluster::*;
use reqwest::Method;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn task(p: &Proc, id: &str) -> Value {
    p.get(&format!("/v1/tasks/{id}")).unwrap_or(Value::Null)
}

#[test]
fn a_command_streams_its_output_and_the_cli_exits_with_its_status() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 1, &["--allow-exec", "--stop-grace", "1s"]);
    let p = &procs[0];
    assert!(wait_for(secs(20), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));

    let o = p.cli(&[
        "run",
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        "echo $GREETING token=$SHOAL_FENCING_TOKEN attempt=$SHOAL_ATTEMPT; echo oops >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("hi token="), "{out}");
    assert!(out.trim_end().ends_with("attempt=1"), "{out}");
    let token: u64 = out
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(token > 0);
    assert!(text(&o.stderr).contains("oops"));
    let id = text(&o.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("shoal: task "))
        .unwrap()
        .to_owned();

    // The task's end is durable, and its output stays readable.
    let t = task(p, &id);
    assert_eq!(t["status"]["state"], "finished", "{t}");
    assert_eq!(t["status"]["exit_code"], 3);
    assert_eq!(t["status"]["class"], "failed");
    let logs = p.cli(&["logs", &id]);
    assert_eq!(text(&logs.stdout), out);
    assert!(text(&logs.stderr).contains("oops"));

    // A timeout stops the run (124); a cancel stops it with SIGTERM.
    let o = p.cli(&["run", "--timeout", "500ms", "--", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    let o = p.cli(&[
        "run",
        "--detach",
        "--",
        "sh",
        "-c",
        "trap 'echo stopping; exit 9' TERM; echo started; while true; do sleep 0.1; done",
    ]);
    let id = text(&o.stdout).trim().to_owned();
    assert!(wait_for(secs(10), || task(p, &id)["status"]["state"] == "running"));
    assert!(wait_for(secs(5), || text(&p.cli(&["logs", &id]).stdout)
        .contains("started")));
    let c = p.cli(&["cancel", &id]);
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert_eq!(task(p, &id)["status"]["state"], "cancelled");
    assert!(
        wait_for(secs(10), || text(&p.cli(&["logs", &id]).stdout)
            .contains("stopping")),
        "the group got SIGTERM"
    );

    // The synthetic runner: N chunks, then the chosen status.
    let o = p.cli(&["run", "--synthetic", "5:20:7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(text(&o.stdout).lines().count(), 5);

    // Over HTTP: a submission without a token is refused.
    let anon = client()
        .post(p.url("/v1/tasks"))
        .json(&serde_json::json!({"synthetic": {"chunks": 1}}))
        .send()
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}

#[test]
fn user_commands_need_an_explicit_flag_and_a_closed_cluster() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Listening beyond loopback without a cluster key: refused at start.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "up",
            "--no-mdns",
            "--allow-exec",
            "--listen",
            "/ip4/0.0.0.0/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("open"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--allow-exec"),
        "{}",
        text(&o.stderr)
    );

    // Without the flag, commands are refused with a reason; the synthetic
    // runner still works.
    let procs = cluster(tmp.path(), 1, &[]);
    let p = &procs[0];
    assert!(wait_for(secs(20), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));
    let o = p.cli(&["run", "--", "true"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("exec_disabled"),
        "{}",
        text(&o.stderr)
    );
    let o = p.cli(&["run", "--synthetic", "2:10:0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn a_task_on_a_killed_node_completes_elsewhere_with_one_result() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    // n1 serves the client and takes no work; n2 and n3 are the pool.
    let mut procs = cluster(tmp.path(), 1, &["--label", "pool=front"]);
    let seed = procs[0].addr();
    for name in ["n2", "n3"] {
        let mut p = Proc::new(
            tmp.path(),
            name,
            vec![
                "--label".into(),
                "pool=work".into(),
                "--peer".into(),
                seed.clone(),
            ],
        );
        p.start();
        procs.push(p);
    }
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);

    let front = &procs[0];
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "run",
            "--label",
            "pool=work",
            "--synthetic",
            "30:100:0",
            "--api",
            &front.url(""),
        ])
        .arg("--token-dir")
        .arg(&front.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Find the task and the node running it.
    let mut running = None;
    assert!(
        wait_for(secs(20), || {
            let list = front.get("/v1/tasks").unwrap_or(Value::Null);
            running = list["tasks"].as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["status"]["state"] == "running")
                    .map(|t| {
                        (
                            t["id"].as_str().unwrap().to_owned(),
                            t["status"]["node"].as_str().unwrap().to_owned(),
                        )
                    })
            });
            running.is_some()
        }),
        "the task starts"
    );
    let (id, worker) = running.unwrap();
    let wi = procs
        .iter()
        .position(|p| p.status().is_some_and(|s| s["node_id"] == worker.as_str()))
        .unwrap();
    assert_ne!(wi, 0, "the front node takes no work");
    std::thread::sleep(Duration::from_millis(500));
    procs[wi].sigkill();

    let mut status = None;
    wait_for(secs(60), || {
        status = run.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = run.kill();
        panic!("`shoal run` did not end");
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("attempt 2 on node"), "{err}");
    assert!(
        out.contains("chunk 30/30 of task") && out.contains("(attempt 2)"),
        "{out}"
    );
    assert_eq!(
        out.matches("chunk 30/30").count(),
        1,
        "one full run to the end: {out}"
    );

    let t = task(front, &id);
    assert_eq!(t["status"]["state"], "finished", "{t}");
    assert_eq!(t["status"]["exit_code"], 0);
    assert_eq!(t["attempt"], 2);
    assert_ne!(t["node"], worker.as_str());
    // The cluster agrees on it, and the dead worker's lease cannot report.
    let alive: Vec<&Proc> = procs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != wi)
        .map(|(_, p)| p)
        .collect();
    expect_agreed(&alive, secs(20), "after the re-placement");
}

#[test]
fn acknowledged_commands_survive_a_killed_master_exactly_once() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);
    let master = procs
        .iter()
        .position(|p| p.status().is_some_and(|s| s["role"] == "master"))
        .unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != master).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (p, acked, stop) = (&procs[others[t % 2]], &acked, &stop);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
                    let key = format!("c-{t}-{i}");
                    // Retried under one key until answered (bounded).
                    for _ in 0..100 {
                        let (code, v) = p.write(
                            Method::POST,
                            "/v1/kv/total/incr",
                            None,
                            &[("Idempotency-Key", &key)],
                        );
                        if code == 200 {
                            acked.lock().unwrap().push(v["value"].as_i64().unwrap());
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        procs[master].sigkill();
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= 40,
        "the clients got through: {}",
        acked.len()
    );
    let distinct: std::collections::BTreeSet<i64> = acked.iter().copied().collect();
    assert_eq!(distinct.len(), acked.len(), "no two commands saw one value");
    let total = procs[others[0]]
        .get("/v1/kv/total?consistent=true")
        .unwrap()["value"]
        .as_i64()
        .unwrap();
    assert_eq!(
        total as usize,
        acked.len(),
        "every acknowledged increment applied once, nothing else"
    );
    assert_eq!(distinct, (1..=total).collect(), "values 1..=total");
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .status()
        .is_ok_and(|s| s.success())
}

/// Replica -> (node, pid) from the pid files the replicas write.
fn replica_pids(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("pid-") {
            let pid = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.push((rest.to_owned(), pid.trim().to_owned()));
        }
    }
    out.sort();
    out
}

#[test]
fn replicas_spread_with_ports_and_move_off_a_leaving_or_restarted_node() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("cluster.key");
    assert!(std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster-key")
        .arg(&key)
        .output()
        .unwrap()
        .status
        .success());
    let key = key.to_string_lossy().into_owned();
    let mut procs = cluster(
        tmp.path(),
        3,
        &["--cluster-key", &key, "--allow-exec", "--stop-grace", "1s"],
    );
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);

    let pids = tmp.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script = format!(
        "echo \"replica $SHOAL_REPLICA port $PORT\"; echo $$ > {}/pid-$SHOAL_REPLICA-$SHOAL_FENCING_TOKEN; exec sleep 600",
        pids.display()
    );
    let o = procs[0].cli(&[
        "deploy",
        "web",
        "--replicas",
        "2",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let placed = |p: &Proc| -> Vec<Value> {
        p.get("/v1/deployments/web")
            .map(|v| v["placements"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    };
    assert!(
        wait_for(secs(20), || {
            let ps = placed(&procs[0]);
            ps.len() == 2
                && ps.iter().all(|p| p["status"] == "running")
                && replica_pids(&pids).len() == 2
        }),
        "two replicas run: {:?}",
        placed(&procs[0])
    );
    let ps = placed(&procs[0]);
    assert_ne!(ps[0]["node"], ps[1]["node"], "spread over two nodes");
    for p in &ps {
        let addr = p["addr"].as_str().unwrap();
        assert_eq!(addr, format!("127.0.0.1:{}", p["port"]), "{p}");
    }
    let list = procs[0].cli(&["deployments"]);
    assert!(
        text(&list.stdout).contains("127.0.0.1:"),
        "{}",
        text(&list.stdout)
    );

    // kill -9 of a node with a replica, and a quick restart: its old
    // process is killed and the replica started afresh on the same token.
    let node_of = |p: &Proc| {
        p.status()
            .map(|s| s["node_id"].clone())
            .unwrap_or(Value::Null)
    };
    let host = (0..3)
        .find(|i| ps.iter().any(|p| p["node"] == node_of(&procs[*i])))
        .unwrap();
    let r = ps
        .iter()
        .find(|p| p["node"] == node_of(&procs[host]))
        .unwrap()
        .clone();
    let key_of = format!("{}-{}", r["replica"], r["token"]);
    let old_pid = replica_pids(&pids)
        .into_iter()
        .find(|(k, _)| *k == key_of)
        .unwrap()
        .1;
    std::fs::remove_file(pids.join(format!("pid-{key_of}"))).unwrap();
    procs[host].kill();
    assert!(
        alive(&old_pid),
        "the replica outlives a kill -9 of its node"
    );
    procs[host].start();
    assert!(
        wait_for(secs(20), || replica_pids(&pids)
            .iter()
            .any(|(k, _)| *k == key_of)),
        "the replica started again on its node"
    );
    assert!(
        wait_for(secs(5), || !alive(&old_pid)),
        "the old process was killed"
    );

    // `shoal leave` on a node with a replica: it exits, and the replica
    // runs on the node left over.
    let leaving = (0..3)
        .filter(|i| *i != host)
        .find(|i| {
            placed(&procs[*i])
                .iter()
                .any(|p| p["node"] == node_of(&procs[*i]))
        })
        .unwrap_or(host);
    let leaving_id = node_of(&procs[leaving]);
    let stayer_of = |l: usize| (0..3).find(|i| *i != l).unwrap();
    let on_leaving: Vec<String> = placed(&procs[stayer_of(leaving)])
        .iter()
        .filter(|p| p["node"] == leaving_id)
        .map(|p| format!("{}-{}", p["replica"], p["token"]))
        .collect();
    let leaving_pids: Vec<String> = replica_pids(&pids)
        .into_iter()
        .filter(|(k, _)| on_leaving.contains(k))
        .map(|(_, p)| p)
        .collect();
    assert!(!leaving_pids.is_empty(), "the leaving node runs a replica");
    let o = procs[leaving].cli(&["leave"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        wait_for(secs(20), || !procs[leaving].running()),
        "the leaving node exits"
    );
    let stayer = (0..3).find(|i| *i != leaving).unwrap();
    assert!(
        wait_for(secs(30), || {
            let ps = placed(&procs[stayer]);
            ps.len() == 2
                && ps
                    .iter()
                    .all(|p| p["node"] != leaving_id && p["status"] == "running")
        }),
        "replicas moved off the leaving node: {:?}",
        placed(&procs[stayer])
    );
    for pid in &leaving_pids {
        assert!(!alive(pid), "the leaving node stopped its replica {pid}");
    }
    let nodes = procs[stayer].get("/v1/nodes").unwrap();
    let me = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == leaving_id)
        .cloned();
    assert_eq!(
        me.map(|n| n["liveness"].clone()),
        Some("left".into()),
        "{nodes}"
    );

    // Undeploy stops them all.
    let o = procs[stayer].cli(&["undeploy", "web"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        wait_for(secs(15), || replica_pids(&pids)
            .iter()
            .all(|(_, p)| !alive(p))),
        "every replica process ended"
    );

    // A replica that keeps crashing shows its restarts and last exit code,
    // on the API and in `shoal deployments`.
    let o = procs[stayer].cli(&["deploy", "flaky", "--", "sh", "-c", "sleep 1; exit 4"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let replica = |p: &Proc| {
        p.get("/v1/deployments/flaky")
            .map(|v| v["placements"][0].clone())
            .unwrap_or_default()
    };
    assert!(
        wait_for(secs(30), || {
            let r = replica(&procs[stayer]);
            r["last_exit"] == 4 && r["restarts"].as_u64() >= Some(1)
        }),
        "{}",
        replica(&procs[stayer])
    );
    let o = procs[stayer].cli(&["deployments"]);
    let out = text(&o.stdout);
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("flaky"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row.get(5), Some(&"4"), "LAST EXIT column: {out}");
    let o = procs[stayer].cli(&["undeploy", "flaky"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}
