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
