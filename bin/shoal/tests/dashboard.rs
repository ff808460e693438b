//! The dashboard end to end in headless Chromium (Debian's `chromium`,
//! installed by `tests/setup.sh`): a 3-node loopback cluster appears, a
//! killed node turns suspect then dead, a screenshot is saved, and the
//! page says when it lost its node. Driven over the DevTools protocol.

mod cluster;

use base64::Engine as _;
use cluster::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("SHOAL_CHROMIUM") {
        return Some(p);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|b| b.to_string())
}

/// A headless browser, ended by its PID.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(bin: &str, profile: &std::path::Path) -> Browser {
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium prints its DevTools address");
        let port = browser_url
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let targets: Value = client()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        let (ws, _) = tungstenite::connect(page.as_str()).expect("connect to the page");
        Browser {
            child,
            ws,
            next_id: 1,
        }
    }

    /// One DevTools command and its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Message::Text(t) = self.ws.read().unwrap() {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
        panic!("no answer to {method}");
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// node id -> liveness, as the page shows it.
    fn rows(&mut self) -> Vec<(String, String)> {
        let v = self.eval(
            "JSON.stringify([...document.querySelectorAll('tr[data-node]')]\
             .map(r => [r.dataset.node, r.dataset.liveness]))",
        );
        serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
    }
}

/// The tests of this file run one at a time: each starts a cluster, one a
/// browser too, on a machine that may have two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_dashboard_shows_nodes_appear_and_a_killed_one_turn_suspect_then_dead() {
    let _g = serial();
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium is missing: tests/setup.sh installs it"
        );
        eprintln!("skipped: no chromium (tests/setup.sh installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut procs = cluster(tmp.path(), 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, Duration::from_secs(30), "formation");
    expect_voters(&procs, 3);
    for k in ["app/1", "app/2", "app/3", "other/1"] {
        let (code, v) = procs[0].set(k, &"x".repeat(100));
        assert_eq!(code, 200, "{v}");
    }
    let o = procs[0].cli(&["run", "--synthetic", "2:10:0"]);
    assert!(o.status.success(), "{o:?}");
    let long = procs[0].cli(&["run", "--detach", "--synthetic", "1000:100:0"]);
    assert!(long.status.success(), "{long:?}");
    let long = stdout(&long);

    let mut b = Browser::start(&bin, &tmp.path().join("profile"));
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({"url": procs[0].url("/")}));
    let ids: Vec<String> = procs
        .iter()
        .map(|p| p.status().unwrap()["node_id"].as_str().unwrap().to_owned())
        .collect();
    let all_alive = wait_for(Duration::from_secs(20), || {
        let rows = b.rows();
        rows.len() == 3 && rows.iter().all(|(id, l)| ids.contains(id) && l == "alive")
    });
    assert!(all_alive, "three alive nodes on the page: {:?}", b.rows());
    // Each node's build, as it reports it.
    assert!(
        wait_for(Duration::from_secs(10), || b
            .eval("document.querySelectorAll('tr[data-version]').length")
            == json!(3)),
        "versions on the page"
    );
    // Tasks show their command, attempts and age; keys come a page at a
    // time, narrowed by the filter, values cut short.
    let task = b.eval(
        "[...document.querySelectorAll('tr[data-task] td')].map(td => td.textContent).join('|')",
    );
    let task = task.as_str().unwrap_or_default().to_owned();
    assert!(
        task.contains("synthetic 2×10ms → 0") && task.contains("1/3"),
        "{task}"
    );
    let keys = |b: &mut Browser| {
        let v = b.eval(
            "JSON.stringify([...document.querySelectorAll('tr[data-key]')].map(r => r.dataset.key))",
        );
        serde_json::from_str::<Vec<String>>(v.as_str().unwrap_or("[]")).unwrap_or_default()
    };
    assert!(
        wait_for(Duration::from_secs(10), || keys(&mut b).len() == 4),
        "{:?}",
        keys(&mut b)
    );
    b.eval(
        "const f = document.getElementById('kv-filter'); f.value = 'app/'; \
         f.dispatchEvent(new Event('input'));",
    );
    assert!(
        wait_for(Duration::from_secs(10), || keys(&mut b)
            == ["app/1", "app/2", "app/3"]),
        "the filter narrows the keys: {:?}",
        keys(&mut b)
    );
    let preview = b.eval("document.querySelector('tr[data-key] td:nth-child(2)').textContent");
    assert_eq!(
        preview.as_str().map(|p| p.chars().count()),
        Some(81),
        "{preview}"
    );
    let quorum = |b: &mut Browser| {
        let v = b.eval(
            "['q-voters','q-healthy','q-survives']\
             .map(id => document.getElementById(id).textContent).join(' ')",
        );
        v.as_str().unwrap_or_default().to_owned()
    };
    assert!(
        wait_for(Duration::from_secs(10), || quorum(&mut b) == "3 3 1"),
        "3 voters, 3 healthy, one loss survivable: {}",
        quorum(&mut b)
    );
    // Actions take the token typed into the page: cancel a task.
    let token = procs[0].token();
    b.eval(&format!(
        "const t = document.getElementById('token'); t.value = '{token}'; \
         t.dispatchEvent(new Event('input'));"
    ));
    let state = |p: &Proc| field(&p.get(&format!("/v1/tasks/{long}")), "status")["state"].clone();
    let clicked = wait_for(Duration::from_secs(10), || {
        b.eval(&format!(
            "(() => {{ const c = document.querySelector('tr[data-task=\"{long}\"] button.cancel'); \
             if (c) c.click(); return !!c; }})()"
        )) == json!(true)
    });
    assert!(clicked, "a cancel button on the running task");
    assert!(
        wait_for(Duration::from_secs(15), || state(&procs[0]) == "cancelled"),
        "cancelled from the page: {} ({})",
        state(&procs[0]),
        b.eval("document.getElementById('said').textContent")
    );
    // The history plots draw a point a second.
    let points = |b: &mut Browser| {
        b.eval(
            "(document.querySelector('#plot-eps polyline')?.getAttribute('points') || '')\
             .split(' ').filter(Boolean).length",
        )
        .as_u64()
        .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(15), || points(&mut b) >= 3),
        "events/s plotted: {} points",
        points(&mut b)
    );

    // Kill a node that neither serves the page nor is the master.
    let master = procs[0].status().unwrap()["master_id"].clone();
    let victim = (1..3).find(|i| master != ids[*i].as_str()).unwrap();
    procs[victim].sigkill();
    let mut seen = Vec::new();
    let dead = wait_for(Duration::from_secs(20), || {
        let l = b
            .rows()
            .into_iter()
            .find(|(id, _)| *id == ids[victim])
            .map(|(_, l)| l)
            .unwrap_or_default();
        if seen.last() != Some(&l) {
            seen.push(l.clone());
        }
        l == "dead"
    });
    assert!(dead, "the killed node is marked dead: {seen:?}");
    assert!(
        seen.iter().any(|l| l == "suspect"),
        "it was suspect before dead: {seen:?}"
    );
    // The quorum panel counts it: one voter down, no more loss survivable.
    let q = quorum(&mut b);
    assert!(q == "3 2 0" || q == "2 2 0", "after a voter died: {q}");
    // Its death is marked on the plots' time axis, and listed.
    let tail = &ids[victim][ids[victim].len() - 12..];
    let marked = wait_for(Duration::from_secs(10), || {
        b.eval(&format!(
            "!!document.querySelector('#plot-lag g.mark[data-kind=liveness]') && \
             [...document.querySelectorAll('#marks div[data-kind=liveness]')]\
             .some(d => d.textContent.includes('{tail} dead'))"
        )) == json!(true)
    });
    assert!(
        marked,
        "the death is marked: {}",
        b.eval("document.getElementById('marks').textContent")
    );
    for (name, width, height) in [
        ("dashboard.png", 1400, 900),
        ("dashboard-phone.png", 390, 844),
    ] {
        let size = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        b.call("Emulation.setDeviceMetricsOverride", size);
        std::thread::sleep(Duration::from_millis(300));
        let shot = b.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    // A dead member is removed from the page.
    let removed = b.eval(&format!(
        "(() => {{ const r = document.querySelector('tr[data-node=\"{}\"] button.remove'); \
         if (r) r.click(); return !!r; }})()",
        ids[victim]
    ));
    assert_eq!(removed, json!(true), "a remove button on the dead node");
    let gone = wait_for(Duration::from_secs(40), || {
        let rows = b.rows();
        rows.len() == 2 && rows.iter().all(|(id, _)| *id != ids[victim])
    });
    assert!(
        gone,
        "removed from the page: {:?} ({})",
        b.rows(),
        b.eval("document.getElementById('said').textContent")
    );

    // The page says so when its node goes away.
    procs[0].sigkill();
    let lost = wait_for(Duration::from_secs(15), || {
        b.eval("document.getElementById('banner').classList.contains('on')") == json!(true)
    });
    assert!(lost, "the page shows that it lost its connection");
    procs[0].kill();
}

/// The markers of a node's dashboard history, as (kind, text).
fn markers(p: &Proc) -> Vec<(String, String)> {
    p.get("/v1/dashboard/history")
        .and_then(|h| h["markers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("text"))
        })
        .collect()
}

#[test]
fn the_history_samples_every_second_and_marks_a_peer_that_dies() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut procs = cluster(tmp.path(), 3, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, Duration::from_secs(30), "formation");
    let (code, v) = procs[0].set("k", "v");
    assert_eq!(code, 200, "{v}");
    let samples = |p: &Proc| {
        p.get("/v1/dashboard/history")
            .and_then(|h| h["samples"].as_array().cloned())
            .unwrap_or_default()
    };
    // Within a few samples of the write, one shows the cluster formed.
    let formed = |x: &Value| {
        x["master"].is_string()
            && x["members"].as_object().is_some_and(|m| m.len() == 3)
            && x["peers"].as_object().is_some_and(|p| p.len() == 2)
            && x["applied"].as_u64() > Some(0)
    };
    let ok = wait_for(Duration::from_secs(10), || {
        let s = samples(&procs[0]);
        s.len() >= 3 && s.last().is_some_and(formed)
    });
    let s = samples(&procs[0]);
    assert!(ok, "{:?}", s.last());
    let t: Vec<u64> = s.iter().map(|x| x["t_ms"].as_u64().unwrap()).collect();
    assert!(
        t.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 5_000),
        "{t:?}"
    );

    // A node other than the one asked and the master (so that its death
    // is committed).
    let ids: Vec<String> = procs
        .iter()
        .map(|p| p.status().unwrap()["node_id"].as_str().unwrap().to_owned())
        .collect();
    // Each member's capacity and build, as it reports them every second.
    let reported = |n: &Value| {
        n["mem_free_bytes"].as_u64() > Some(0)
            && n["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION")))
            && n["started_ms"].as_u64() > Some(0)
    };
    let all_reported = wait_for(Duration::from_secs(10), || {
        procs[0]
            .get("/v1/nodes")
            .and_then(|v| v["nodes"].as_array().cloned())
            .is_some_and(|n| n.len() == 3 && n.iter().all(reported))
    });
    assert!(all_reported, "{:?}", procs[0].get("/v1/nodes"));
    // Three voters first: a death with two would leave no majority to
    // record it.
    expect_voters(&procs, 3);
    let master = procs[0].status().unwrap()["master_id"].clone();
    let v = (1..3).find(|i| master != ids[*i].as_str()).unwrap();
    let tail = &ids[v][ids[v].len() - 12..];
    procs[v].kill();
    let marked = wait_for(Duration::from_secs(30), || {
        let m = markers(&procs[0]);
        m.contains(&("hearing".into(), format!("{tail} not heard")))
            && m.contains(&("liveness".into(), format!("{tail} dead")))
    });
    assert!(marked, "{:?}", markers(&procs[0]));
}
