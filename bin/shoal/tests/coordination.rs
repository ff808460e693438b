//! The coordination primitives end to end: real `shoal up` processes on
//! 127.0.0.1, driven over HTTP and through the CLI.
//!
//! Past 600 lines on purpose: every test file here is a binary of its
//! own that links the whole node, so the primitives' tests share one
//! rather than add a link to every test run.

mod cluster;
/// The CLI's reader of server-sent events.
#[path = "../src/sse.rs"]
mod sse;

use cluster::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A write retried under one idempotency key until it is answered.
fn retried(p: &Proc, method: Method, path: &str, body: Option<&str>, key: &str) -> Value {
    for _ in 0..20 {
        let (code, v) = p.write(method.clone(), path, body, &[("Idempotency-Key", key)]);
        if code == 200 {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} via {} never answered", p.name);
}

#[test]
fn concurrent_clients_through_different_nodes_see_atomic_primitives() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = agreed_cluster(tmp.path(), 3);

    // Increments: 6 clients x 40 through all three nodes end on the exact
    // sum, and every increment saw a different value.
    let seen: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..6 {
            let (p, seen) = (&procs[t % 3], &seen);
            s.spawn(move || {
                for i in 0..40 {
                    let v = retried(
                        p,
                        Method::POST,
                        "/v1/kv/count/incr",
                        None,
                        &format!("inc-{t}-{i}"),
                    );
                    seen.lock().unwrap().push(v["value"].as_i64().unwrap());
                }
            });
        }
    });
    let seen = seen.into_inner().unwrap();
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=240).collect(),
        "each increment saw its own value"
    );
    for p in &procs {
        let v = p.get("/v1/kv/count?consistent=true").unwrap();
        assert_eq!(v["value"], 240, "{}: {v}", p.name);
    }

    // A key used for an increment, sent again with another request, through
    // every node: 422, and nothing pushed; the increment itself, sent
    // again, gets its first answer.
    let first = retried(
        &procs[0],
        Method::POST,
        "/v1/kv/count/incr",
        None,
        "inc-0-0",
    );
    for p in &procs {
        let (code, v) = p.write(
            Method::POST,
            "/v1/kv/other/push",
            Some("x"),
            &[("Idempotency-Key", "inc-0-0")],
        );
        assert_eq!(code, 422, "{}: {v}", p.name);
        assert_eq!(v["error"]["code"], "idempotency_key_reused", "{v}");
    }
    assert_eq!(
        procs[1].get("/v1/kv/other?consistent=true").unwrap()["error"]["code"],
        "not_found"
    );
    let again = retried(
        &procs[2],
        Method::POST,
        "/v1/kv/count/incr",
        None,
        "inc-0-0",
    );
    assert_eq!(again["value"], first["value"]);

    // Set-if-absent: 12 racers, exactly one winner, and its value stays.
    let winners: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..12 {
            let (p, winners) = (&procs[t % 3], &winners);
            s.spawn(move || {
                let me = format!("racer-{t}");
                let v = retried(
                    p,
                    Method::POST,
                    "/v1/kv/leader/set-if-absent",
                    Some(&me),
                    &format!("nx-{t}"),
                );
                if v["applied"] == true {
                    winners.lock().unwrap().push(me);
                }
            });
        }
    });
    let winners = winners.into_inner().unwrap();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let v = procs[2].get("/v1/kv/leader?consistent=true").unwrap();
    assert_eq!(v["value"], winners[0].as_str());

    // A retried command returns its first outcome, through another node.
    let first = retried(&procs[0], Method::POST, "/v1/kv/r/incr", None, "retry-me");
    retried(
        &procs[1],
        Method::POST,
        "/v1/kv/r/incr",
        None,
        "someone-else",
    );
    let again = retried(&procs[2], Method::POST, "/v1/kv/r/incr", None, "retry-me");
    assert_eq!(first["value"], 1);
    assert_eq!(again, first, "same value, same index");
    assert_eq!(
        procs[0].get("/v1/kv/r?consistent=true").unwrap()["value"],
        2
    );

    // A consistent read on a follower sees a write just made elsewhere.
    let (code, w) = procs[0].set("fresh", "yes");
    assert_eq!(code, 200, "{w}");
    let v = procs[2].get("/v1/kv/fresh?consistent=true").unwrap();
    assert_eq!(v["value"], "yes");
    assert!(v["index"].as_u64() >= w["index"].as_u64());

    // Writes need the token; reads on loopback do not.
    let anon = client()
        .post(procs[1].url("/v1/kv/count/incr"))
        .send()
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    let body: Value = anon.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = client()
        .put(procs[1].url("/v1/kv/count"))
        .bearer_auth("not-the-token")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(procs[1].get("/v1/kv/count").unwrap()["value"], 240);
}

#[test]
fn a_dead_holders_lock_is_reclaimed_after_its_ttl_and_its_token_is_refused() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = agreed_cluster(tmp.path(), 3);
    // The holder: `shoal lock` running a command that records its token
    // and pid, then waits.
    let marker = tmp.path().join("held");
    let script = format!(
        "echo $SHOAL_FENCING_TOKEN $$ > {0}.tmp && mv {0}.tmp {0} && exec sleep 30",
        marker.display()
    );
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["lock", "L", "--ttl", "2s", "--api", &procs[1].url("")])
        .arg("--token-dir")
        .arg(&procs[1].dir)
        .args(["--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    assert!(
        wait_for(secs(20), || marker.exists()),
        "the command runs under the lock"
    );
    let text = std::fs::read_to_string(&marker).unwrap();
    let mut parts = text.split_whitespace();
    let old: u64 = parts.next().unwrap().parse().unwrap();
    let sleeper: u32 = parts.next().unwrap().parse().unwrap();
    let lock = |p: &Proc, who: &str| {
        p.write(
            Method::POST,
            "/v1/kv/L/lock",
            Some(&format!(r#"{{"holder":"{who}","ttl_ms":5000}}"#)),
            &[("Content-Type", "application/json")],
        )
    };
    let (code, v) = lock(&procs[0], "other");
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (409, "lock_held".into()),
        "{v}"
    );
    // Its fenced writes go through while it holds the lock.
    let fence = format!("L:{old}");
    let (code, v) = procs[2].write(
        Method::PUT,
        "/v1/kv/guarded",
        Some("old holder"),
        &[("Shoal-Fence", &fence)],
    );
    assert_eq!(code, 200, "{v}");

    // The holder dies (kill -9 of `shoal lock` and of its command).
    holder.kill().unwrap();
    holder.wait().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &sleeper.to_string()])
        .status();

    // Another client gets the lock once the lease ran out on the master.
    let mut new = None;
    assert!(
        wait_for(secs(15), || {
            let (code, v) = lock(&procs[0], "other");
            if code == 200 {
                new = v["token"].as_u64();
            }
            new.is_some()
        }),
        "the lock is reclaimed"
    );
    let new = new.unwrap();
    assert!(new > old, "tokens grow: {old} then {new}");
    // The old holder's token is refused now, for writes and for renewals.
    let (code, v) = procs[2].write(
        Method::PUT,
        "/v1/kv/guarded",
        Some("stale"),
        &[("Shoal-Fence", &fence)],
    );
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (409, "stale_token".into()),
        "{v}"
    );
    let (code, v) = procs[1].write(
        Method::POST,
        "/v1/kv/L/keepalive",
        Some(&format!(r#"{{"token":{old}}}"#)),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (409, "stale_token".into()),
        "{v}"
    );
    let new_fence = format!("L:{new}");
    let (code, _) = procs[0].write(
        Method::PUT,
        "/v1/kv/guarded",
        Some("new holder"),
        &[("Shoal-Fence", &new_fence)],
    );
    assert_eq!(code, 200);
    assert_eq!(
        procs[1].get("/v1/kv/guarded?consistent=true").unwrap()["value"],
        "new holder"
    );
}

#[test]
fn the_cli_speaks_every_primitive_and_lock_runs_a_command() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 1, &[]);
    let p = &procs[0];
    assert!(wait_for(secs(20), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));

    let ok = |args: &[&str]| {
        let o = p.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout(&o)
    };
    ok(&["kv", "set", "app/a", "1"]);
    ok(&["kv", "set", "app/b", "2"]);
    ok(&["kv", "set", "other", "3"]);
    assert_eq!(ok(&["kv", "get", "app/a"]), "1");
    assert_eq!(ok(&["kv", "get", "app/a", "--consistent"]), "1");
    assert_eq!(ok(&["kv", "list", "app/"]), "app/a\t1\napp/b\t2");
    assert_eq!(ok(&["kv", "incr", "n", "5"]), "5");
    assert_eq!(ok(&["kv", "incr", "n", "-2"]), "3");
    // Conditional writes exit 3 when they do not apply.
    assert_eq!(ok(&["kv", "setnx", "once", "x", "--ttl", "1h"]), "true");
    let again = p.cli(&["kv", "setnx", "once", "y"]);
    assert_eq!(
        (again.status.code(), stdout(&again)),
        (Some(3), "false".into())
    );
    let cas = p.cli(&["kv", "cas", "once", "z", "--expected", "wrong"]);
    assert_eq!(cas.status.code(), Some(3));
    assert_eq!(ok(&["kv", "cas", "once", "z", "--expected", "x"]), "true");
    assert_eq!(ok(&["kv", "cas", "new", "v", "--absent"]), "true");
    assert_eq!(ok(&["kv", "sadd", "s", "m1"]), "true");
    assert_eq!(ok(&["kv", "sadd", "s", "m2"]), "true");
    assert_eq!(ok(&["kv", "srem", "s", "m1"]), "true");
    assert_eq!(ok(&["kv", "smembers", "s"]), "m2");
    for v in ["a", "b", "c"] {
        ok(&["kv", "push", "q", v]);
    }
    assert_eq!(ok(&["kv", "range", "q", "1", "-1"]), "b\nc");
    // A lock by its fencing token (a positional TOKEN, apart from the
    // API's --token).
    let token = ok(&["kv", "lock", "l", "--holder", "me", "--ttl", "30s"]);
    assert!(token.parse::<u64>().unwrap() > 0, "{token}");
    assert_eq!(ok(&["kv", "keepalive", "l", &token]), "ok");
    assert_eq!(ok(&["kv", "unlock", "l", &token]), "ok");
    assert!(!p.cli(&["kv", "get", "l"]).status.success(), "released");
    // Exit status: 3 for a write that did not apply, 2 for a usage error.
    assert_eq!(p.cli(&["kv", "delete", "never-set"]).status.code(), Some(3));
    assert_eq!(p.cli(&["kv", "sadd", "s", "m2"]).status.code(), Some(3));
    assert_eq!(p.cli(&["kv", "incr"]).status.code(), Some(2));
    // Listing goes on past a page; a limit stops it and says so.
    assert_eq!(ok(&["kv", "list", "app/", "--limit", "1"]), "app/a\t1");
    let page = p.get("/v1/kv?prefix=app/&limit=1").unwrap();
    assert_eq!(
        (page["truncated"].clone(), page["next"].clone()),
        (true.into(), "app/a".into())
    );
    let rest = p.get("/v1/kv?prefix=app/&limit=1&after=app/a").unwrap();
    assert_eq!(rest["keys"][0]["key"], "app/b");
    assert_eq!(rest["next"], Value::Null, "{rest}");
    // The CLI finds the token by the node's --data-dir, as `shoal up`
    // takes it; without one, a write says where to find it.
    let bare = |dir: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        c.args(["kv", "set", "by-dir", "1", "--api", &p.url("")])
            .env("XDG_DATA_HOME", tmp.path().join("no-such-home"))
            .env_remove("SHOAL_TOKEN")
            .env_remove("SHOAL_DATA_DIR");
        if let Some(d) = dir {
            c.arg("--data-dir").arg(d);
        }
        c.output().unwrap()
    };
    assert!(bare(Some(&p.dir)).status.success());
    let refused = bare(None);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("unauthorized") && why.contains("--data-dir"),
        "{why}"
    );
    // Over HTTP a key may hold slashes; an operation is the last segment.
    assert_eq!(p.set("conf/db/url", "pg://x").0, 200);
    assert_eq!(p.get("/v1/kv/conf/db/url").unwrap()["value"], "pg://x");
    assert_eq!(p.get("/v1/kv/conf%2Fdb%2Furl").unwrap()["value"], "pg://x");
    assert_eq!(p.incr("hits/today").0, 200);
    assert_eq!(ok(&["kv", "get", "hits/today"]), "1");
    for v in ["x", "y"] {
        let (code, _) = p.write(reqwest::Method::POST, "/v1/kv/jobs/q/push", Some(v), &[]);
        assert_eq!(code, 200);
    }
    let items = p.get("/v1/kv/jobs/q/range?start=-1").unwrap();
    assert_eq!(items["items"], serde_json::json!(["y"]), "{items}");
    assert_eq!(ok(&["kv", "delete", "other"]), "true");
    let gone = p.cli(&["kv", "get", "other"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not_found"));
    // A wrong type is a clear error.
    let wrong = p.cli(&["kv", "incr", "q"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong_type"));

    // `shoal lock` runs the command with the token, passes its exit
    // status on, and releases the lock.
    let out = tmp.path().join("token");
    let script = format!(
        "echo $SHOAL_LOCK $SHOAL_FENCING_TOKEN > {}; exit 7",
        out.display()
    );
    let o = p.cli(&["lock", "job", "--ttl", "3s", "--", "sh", "-c", &script]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen = std::fs::read_to_string(&out).unwrap();
    let token: u64 = seen.trim().strip_prefix("job ").unwrap().parse().unwrap();
    assert!(token > 0);
    let after = p.cli(&["kv", "get", "job"]);
    assert!(!after.status.success(), "released: {}", stdout(&after));
    // `shoal watch` prints the committed events, as JSON lines if asked.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["watch", "--from", "1", "--json", "--api", &p.url("")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let frames: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["type"], "event", "{f}");
        assert_eq!(f["data"]["idx"], i + 1, "{f}");
    }
    assert!(
        frames
            .iter()
            .any(|f| f["data"]["event"]["ClusterFounded"].is_object()),
        "{frames:?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    // With --prefix, only the writes to keys under it (app/a, app/b).
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["watch", "--from", "1", "--prefix", "app/", "--json"])
        .args(["--api", &p.url("")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let keys: Vec<Value> = (0..2)
        .map(|_| {
            let f: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            assert_eq!(f["type"], "event", "{f}");
            f["data"]["event"]["Command"]["cmd"]["op"]["KvSet"]["key"].clone()
        })
        .collect();
    assert_eq!(keys, ["app/a", "app/b"]);
    let _ = watch.kill();
    let _ = watch.wait();

    // Without the token the CLI's writes are refused.
    let anon = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["kv", "set", "x", "1", "--api", &p.url(""), "--token-dir"])
        .arg(tmp.path().join("nowhere"))
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap();
    assert!(!anon.status.success());
    assert!(String::from_utf8_lossy(&anon.stderr).contains("unauthorized"));
}

fn items<K: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(v: &Value) -> Vec<(K, V)> {
    serde_json::from_value(v.clone()).expect("a state batch decodes")
}

#[test]
fn a_watcher_from_zero_after_compaction_rebuilds_the_masters_state() {
    use shoal_model::{Envelope, EventIdx, Meta, StateBuilder, Term};
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(
        tmp.path(),
        1,
        &["--snapshot-every", "200", "--log-retain", "50"],
    );
    let p = &procs[0];
    assert!(wait_for(secs(20), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));
    for i in 0..400 {
        assert_eq!(p.set(&format!("k{i}"), "v").0, 200);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Writes go on while the watcher reads.
        s.spawn(|| {
            for i in 0..300 {
                let (code, _) = p.incr(&format!("n{}", i % 7));
                assert_eq!(code, 200);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let resp = client()
            .get(p.url("/v1/events?from=0"))
            .timeout(Duration::from_secs(120))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
        let frames = sse::SseFrames::new(std::io::BufReader::new(resp));
        let mut builder: Option<StateBuilder> = None;
        let mut state = None;
        let mut snapshots = 0;
        let mut events = 0;
        let mut behind = 0;
        for (kind, v) in frames {
            match kind.as_str() {
                "snapshot" => {
                    snapshots += 1;
                    let meta: Meta = serde_json::from_value(v["meta"].clone()).unwrap();
                    builder = Some(StateBuilder::new(
                        EventIdx(v["index"].as_u64().unwrap()),
                        Term(v["term"].as_u64().unwrap()),
                        meta,
                    ));
                    state = None;
                }
                "state" => {
                    let b = builder.as_mut().expect("state frames follow a header");
                    let (name, list) = v.as_object().unwrap().iter().next().unwrap();
                    match name.as_str() {
                        "nodes" => b.nodes(items(list)),
                        "kv" => b.kv(items(list)),
                        "tasks" => b.tasks(items(list)),
                        "deployments" => b.deployments(items(list)),
                        "outcomes" => b.outcomes(items(list)),
                        other => panic!("unknown batch {other}"),
                    }
                    .expect("the stream sends each collection in key order")
                }
                "snapshot_end" => {
                    let s = builder.take().unwrap().finish().unwrap();
                    assert_eq!(s.hash().to_string(), v["state_hash"].as_str().unwrap());
                    state = Some(s);
                }
                "event" => {
                    let env: Envelope = serde_json::from_value(v).unwrap();
                    let s = state.as_mut().expect("events follow State here");
                    s.apply(&env).expect("events come in order");
                    events += 1;
                }
                // The log moved past this reader: State comes again.
                "behind" => behind += 1,
                other => panic!("unknown frame {other}"),
            }
            if let Some(s) = &state {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    let st = p.status().unwrap();
                    if st["applied_index"].as_u64() == Some(s.index().0) {
                        assert_eq!(st["state_hash"].as_str().unwrap(), s.hash().to_string());
                        assert!(snapshots >= 1, "the log was compacted: State came first");
                        assert!(events > 0, "then events followed live");
                        assert!(behind < snapshots, "State follows every `behind`");
                        return;
                    }
                }
            }
        }
        panic!("the stream ended early");
    });
}

#[test]
fn every_documented_endpoint_exists_and_every_error_is_json() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(tmp.path(), 1, &[]);
    let p = &procs[0];
    // Ready: the master, holding the State its founding entry made (503
    // before, by design: a readiness probe's answer, not an error).
    assert!(wait_for(secs(20), || p
        .get("/ready")
        .is_some_and(|r| r["ready"] == true)));
    let doc = p.get("/v1/openapi.json").unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{}", paths.len());
    for (path, ops) in paths {
        let url = path
            .replace("{key}", "some-key")
            .replace("{id}", "some-task")
            .replace("{name}", "some-deployment");
        for method in ops.as_object().unwrap().keys() {
            if method == "parameters" || url == "/v1/leave" {
                continue;
            }
            let m: Method = method.to_uppercase().parse().unwrap();
            let streaming =
                ops[method]["responses"]["200"]["content"]["text/event-stream"].is_object();
            let mut req = client()
                .request(m.clone(), p.url(&url))
                .bearer_auth(p.token())
                .timeout(Duration::from_secs(5));
            if m != Method::GET && m != Method::DELETE {
                req = req.header("Content-Type", "application/json").body("{}");
            }
            let r = req.send().unwrap();
            let status = r.status().as_u16();
            if streaming && r.status().is_success() {
                // An event stream answered: its headers are enough.
                continue;
            }
            let body: Value = r.json().unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("");
            assert!(
                code != "no_route" && code != "method_not_allowed",
                "{method} {path} is documented but not served: {body}"
            );
            if status >= 400 {
                assert!(
                    !code.is_empty(),
                    "{method} {path}: error without a JSON code: {status} {body}"
                );
            }
        }
    }
    // Errors from outside the handlers are JSON too.
    let (code, v) = p.write(Method::GET, "/v1/nowhere", None, &[]);
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("no_route")));
    let (code, v) = p.write(Method::PATCH, "/v1/status", None, &[]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let big = "x".repeat(300 << 10);
    let (code, v) = p.write(Method::PUT, "/v1/kv/big", Some(&big), &[]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    let (code, v) = p.write(
        Method::POST,
        "/v1/kv/l/lock",
        Some("not json"),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid", "{v}");
    // A JSON body must say it is one (a browser's plain form post cannot).
    let lock = r#"{"holder": "me", "ttl_ms": 1000}"#;
    let (code, v) = p.write(
        Method::POST,
        "/v1/kv/l/lock",
        Some(lock),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{v}"
    );
    // A compare-and-set's two largest values fit in one body.
    let value = "v".repeat(64 << 10);
    let cas = json!({"expected": value, "value": value}).to_string();
    let (code, v) = p.write(
        Method::POST,
        "/v1/kv/big/cas",
        Some(&cas),
        &[("Content-Type", "application/json")],
    );
    assert_eq!((code, v["applied"].as_bool()), (200, Some(false)), "{v}");
}
