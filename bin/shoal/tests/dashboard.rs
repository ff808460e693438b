//! The dashboard end to end in headless Chromium (`browser`): a 5-node
//! loopback cluster under a steady load appears, with its roles, who hears
//! whom and its quorum; a task is cancelled and a dead member removed from
//! the page; a killed node turns suspect then dead, and is marked so;
//! screenshots are saved; and when its node goes away the page offers the
//! others. The history is checked over HTTP too.

mod browser;
mod cluster;

use browser::{chromium, Browser};
use cluster::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tests of this file run one at a time: each starts a cluster, one a
/// browser too, on a machine that may have two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Increments the key `load` through `url`'s node every 20 ms until
/// `stop` is set, for at most 10,000 requests or five minutes: the writes
/// the page plots. Answers how many succeeded.
fn load(p: &Proc, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let (url, token) = (p.url("/v1/kv/load/incr"), p.token());
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(300);
        let mut ok = 0;
        for _ in 0..10_000 {
            if stop.load(Ordering::Relaxed) || Instant::now() > until {
                break;
            }
            let r = client().post(&url).bearer_auth(&token).send();
            ok += u64::from(r.is_ok_and(|r| r.status().is_success()));
            std::thread::sleep(Duration::from_millis(20));
        }
        ok
    })
}

/// The members as a node lists them (`/v1/nodes`); none if it does not
/// answer.
fn node_list(p: &Proc) -> Vec<Value> {
    let nodes = p.get("/v1/nodes").map(|v| v["nodes"].clone());
    nodes
        .and_then(|n| n.as_array().cloned())
        .unwrap_or_default()
}

/// Each member's role, as a node lists them.
fn roles(p: &Proc) -> Vec<(String, String)> {
    node_list(p)
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
            (s("node_id"), s("role"))
        })
        .collect()
}

#[test]
fn the_dashboard_shows_a_cluster_under_load_and_what_happens_to_it() {
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
    let mut procs = cluster(tmp.path(), 5, &[]);
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, Duration::from_secs(30), "formation");
    expect_voters(&procs, 3);
    for k in ["app/1", "app/2", "app/3", "other/1"] {
        let (code, v) = procs[0].set(k, &"x".repeat(100));
        assert_eq!(code, 200, "{v}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(&procs[0], stop.clone());
    let o = procs[0].cli(&["run", "--synthetic", "2:10:0"]);
    assert!(o.status.success(), "{o:?}");
    let long = procs[0].cli(&["run", "--detach", "--synthetic", "1000:100:0"]);
    assert!(long.status.success(), "{long:?}");
    let long = stdout(&long);

    let mut b = Browser::start(&bin, &tmp.path().join("profile"));
    b.open(&procs[0].url("/"));
    let ids: Vec<String> = procs
        .iter()
        .map(|p| p.status().unwrap()["node_id"].as_str().unwrap().to_owned())
        .collect();
    let all_alive = wait_for(Duration::from_secs(20), || {
        let rows = b.rows();
        rows.len() == 5 && rows.iter().all(|(id, l)| ids.contains(id) && l == "alive")
    });
    assert!(all_alive, "five alive nodes on the page: {:?}", b.rows());
    // Each node's build, as it reports it.
    assert!(
        wait_for(Duration::from_secs(10), || b
            .eval("document.querySelectorAll('tr[data-version]').length")
            == json!(5)),
        "versions on the page"
    );
    // A follower hears only the members, and shows every node's build
    // all the same: its API asks a member for the reports it lacks.
    let follower_ids: Vec<String> = (roles(&procs[0]).into_iter())
        .filter(|(_, role)| role == "follower")
        .map(|(id, _)| id)
        .collect();
    assert!(!follower_ids.is_empty(), "{:?}", roles(&procs[0]));
    for id in &follower_ids {
        let f = &procs[ids.iter().position(|i| i == id).unwrap()];
        let builds = || -> usize {
            (node_list(f).iter())
                .filter(|n| n["version"].as_str().is_some_and(|v| !v.is_empty()))
                .count()
        };
        assert!(
            wait_for(Duration::from_secs(10), || builds() == 5),
            "follower {id} shows {} builds: {:?}",
            builds(),
            f.get("/v1/nodes")
        );
    }
    // The topology draws each role its own way: one master and the other
    // voters as circles, the followers as squares (two more voters and two
    // followers, or three and one if a loaded machine had a follower
    // promoted in the meantime).
    let shapes = |b: &mut Browser| {
        b.eval(
            "['master','voter','follower'].map(r => \
             [...document.querySelectorAll(`#topology [data-role=${r}]`)]\
             .map(e => e.tagName).join(',')).join(' ')",
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    };
    assert!(
        wait_for(Duration::from_secs(10), || [
            "circle circle,circle rect,rect",
            "circle circle,circle,circle rect"
        ]
        .contains(&shapes(&mut b).as_str())),
        "{}\n{}",
        shapes(&mut b),
        elections(&procs)
    );
    // Who hears whom: the master's row hears every node.
    let master = procs[0].status().unwrap()["master_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hears = |b: &mut Browser, from: &str, to: &str| {
        b.eval(&format!(
            "document.querySelector('#hearing td[data-from=\"{from}\"][data-to=\"{to}\"]')\
             ?.dataset.hears ?? null"
        ))
    };
    let everyone = wait_for(Duration::from_secs(10), || {
        let row: Vec<Value> = ids.iter().map(|to| hears(&mut b, &master, to)).collect();
        row.iter().filter(|h| *h == "yes").count() == 4 && row.contains(&json!("self"))
    });
    assert!(everyone, "{:?}", b.text("#hearing"));

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
        wait_for(Duration::from_secs(10), || keys(&mut b).len() == 5),
        "{:?}",
        keys(&mut b)
    );
    b.type_into("#kv-filter", "app/");
    assert!(
        wait_for(Duration::from_secs(10), || keys(&mut b)
            == ["app/1", "app/2", "app/3"]),
        "the filter narrows the keys: {:?} (filter {})",
        keys(&mut b),
        b.eval("document.getElementById('kv-filter').value")
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
    // Every voter healthy, one loss survivable: three voters, or four
    // with a follower promoted (see the shapes above).
    assert!(
        wait_for(Duration::from_secs(10), || ["3 3 1", "4 4 1"]
            .contains(&quorum(&mut b).as_str())),
        "voters, healthy, losses survivable: {}\n{}",
        quorum(&mut b),
        elections(&procs)
    );
    // The last three leader changes, newest first, each with its reason,
    // as the node's history holds them: the founding first of all, and
    // (a loaded machine may have held elections since) the current master
    // last. On a miss the nodes' logs say why each election came.
    let leaders = |b: &mut Browser| b.text("#q-leaders").unwrap_or_default();
    let changes = |p: &Proc| -> Vec<String> {
        let all = markers(p).into_iter().filter(|(k, _)| k == "leader");
        all.map(|(_, text)| text).collect()
    };
    let shown = wait_for(Duration::from_secs(10), || {
        let (page, all) = (leaders(&mut b), changes(&procs[0]));
        let master = procs[0].status().map(|s| s["master_id"].clone());
        let master = master.as_ref().and_then(Value::as_str).unwrap_or("-");
        let now = format!(
            "master {} (term ",
            &master[master.len().saturating_sub(12)..]
        );
        let last: Vec<&String> = all.iter().rev().take(3).collect();
        all.first()
            .is_some_and(|f| f.ends_with("(term 1): founded the cluster"))
            && all.last().is_some_and(|l| l.starts_with(&now))
            && page.lines().count() == last.len()
            && page
                .lines()
                .zip(&last)
                .all(|(line, m)| line.ends_with(m.as_str()))
    });
    assert!(
        shown,
        "page: {:?}\nhistory: {:?}\n{}",
        leaders(&mut b),
        changes(&procs[0]),
        elections(&procs)
    );
    // Actions take the token typed into the page: cancel a task.
    let token = procs[0].token();
    b.type_into("#token", &token);
    let state = |p: &Proc| field(&p.get(&format!("/v1/tasks/{long}")), "status")["state"].clone();
    let cancel = format!("tr[data-task=\"{long}\"] button.cancel");
    let clicked = wait_for(Duration::from_secs(10), || b.click(&cancel));
    assert!(clicked, "a cancel button on the running task");
    assert!(
        wait_for(Duration::from_secs(15), || state(&procs[0]) == "cancelled"),
        "cancelled from the page: {} ({:?})",
        state(&procs[0]),
        b.text("#said")
    );
    // The nodes' table redraws on every view, but a row's button stays the
    // same element while its action does: a press and a release on two
    // different elements make no click, and a click lost that way once
    // made this drain fail under load.
    // The row watched is one whose applied index the page's node hears: a
    // member hears every node, a follower only the members (`fan_in`), so
    // a follower's row on a follower's page keeps what it last heard.
    let all = roles(&procs[0]);
    let role_of = |id: &str| all.iter().find(|(i, _)| i == id).map(|(_, r)| r.clone());
    let watched = if role_of(&ids[0]).as_deref() == Some("follower") {
        ids[1..]
            .iter()
            .rev()
            .find(|id| role_of(id).is_some_and(|r| r != "follower"))
            .expect("a member besides the page's node")
            .clone()
    } else {
        ids[4].clone()
    };
    let row = format!("document.querySelector('tr[data-node=\"{watched}\"]')");
    let applied = format!("{row}?.children[5]?.textContent");
    let held = b.eval(&format!(
        "window.held = {row}?.querySelector('button.drain'); \
         window.heldAt = {applied}; !!window.held"
    ));
    assert_eq!(held, Value::Bool(true), "a drain button on {watched}");
    assert!(
        wait_for(Duration::from_secs(10), || {
            b.eval(&format!("{applied} !== window.heldAt")) == Value::Bool(true)
        }),
        "the row of {watched} redrawn with a new applied index (roles {all:?})"
    );
    assert_eq!(
        b.eval(&format!(
            "window.held.isConnected && window.held === {row}.querySelector('button.drain')"
        )),
        Value::Bool(true),
        "the drain button outlives the redraw"
    );
    // Drain a node from the page, and take it back.
    let drained = |b: &mut Browser| {
        b.eval(&format!(
            "document.querySelector('tr[data-node=\"{watched}\"]')?.dataset.drained ?? null"
        ))
    };
    for (action, after) in [("drain", "true"), ("undrain", "false")] {
        let click = format!("tr[data-node=\"{watched}\"] button.{action}");
        assert!(
            wait_for(Duration::from_secs(10), || b.click(&click)),
            "a {action} button"
        );
        assert!(
            wait_for(Duration::from_secs(10), || drained(&mut b) == after),
            "{action} from the page: {} ({:?})",
            drained(&mut b),
            b.text("#said")
        );
    }
    // The history plots draw a point a second: events/s, and each of the
    // five nodes' free CPU and memory.
    let points = |b: &mut Browser, plot: &str| {
        let v = b.eval(&format!(
            "JSON.stringify([...document.querySelectorAll('#{plot} polyline')]\
             .map(p => p.getAttribute('points').split(' ').filter(Boolean).length))"
        ));
        serde_json::from_str::<Vec<u64>>(v.as_str().unwrap_or("[]")).unwrap_or_default()
    };
    let plotted = wait_for(Duration::from_secs(15), || {
        let per_node = |b: &mut Browser, plot| {
            let p = points(b, plot);
            p.len() == 5 && p.iter().all(|n| *n >= 3)
        };
        points(&mut b, "plot-eps").first() >= Some(&3)
            && per_node(&mut b, "plot-cpu")
            && per_node(&mut b, "plot-mem")
    });
    assert!(
        plotted,
        "plotted: {:?} {:?} {:?}",
        points(&mut b, "plot-eps"),
        points(&mut b, "plot-cpu"),
        points(&mut b, "plot-mem")
    );

    // Kill a voter that neither serves the page nor is the master.
    let victim = roles(&procs[0])
        .into_iter()
        .filter(|(id, r)| r == "voter" && *id != ids[0])
        .find_map(|(id, _)| ids.iter().position(|i| *i == id))
        .expect("a voter other than the page's node");
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
    // The quorum panel counts it: one voter down, no more loss survivable
    // (with a follower already promoted, four seats and three healthy).
    let q = quorum(&mut b);
    assert!(
        ["3 2 0", "2 2 0", "4 3 0"].contains(&q.as_str()),
        "after a voter died: {q}"
    );
    // The hearing matrix: the master does not hear it, and it reports no
    // more.
    let unheard = wait_for(Duration::from_secs(15), || {
        hears(&mut b, &master, &ids[victim]) == "no"
            && hears(&mut b, &ids[victim], &master) == "unknown"
    });
    assert!(unheard, "{:?}", b.text("#hearing"));
    // Its death is marked on the plots' time axis, and listed.
    let tail = &ids[victim][ids[victim].len() - 12..];
    let marked = wait_for(Duration::from_secs(10), || {
        b.eval(&format!(
            "!!document.querySelector('#plot-lag g.mark[data-kind=liveness]') && \
             [...document.querySelectorAll('#marks div[data-kind=liveness]')]\
             .some(d => d.textContent.includes('{tail} dead'))"
        )) == json!(true)
    });
    assert!(marked, "the death is marked: {:?}", b.text("#marks"));
    // A follower takes the dead voter's seat: three healthy voters again.
    assert!(
        wait_for(Duration::from_secs(60), || quorum(&mut b) == "3 3 1"),
        "the seat is filled: {}",
        quorum(&mut b)
    );
    b.screenshot("dashboard.png", 1400, 900);
    b.screenshot("dashboard-phone.png", 390, 844);

    // A dead member is removed from the page.
    let remove = format!("tr[data-node=\"{}\"] button.remove", ids[victim]);
    // The table is redrawn from the view stream: wait for a drawing that
    // has the button.
    let clicked = wait_for(Duration::from_secs(10), || b.click(&remove));
    assert!(clicked, "a remove button on the dead node: {:?}", b.rows());
    let gone = wait_for(Duration::from_secs(40), || {
        let rows = b.rows();
        rows.len() == 4 && rows.iter().all(|(id, _)| *id != ids[victim])
    });
    assert!(
        gone,
        "removed from the page: {:?} ({:?})",
        b.rows(),
        b.text("#said")
    );
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "the load wrote");

    // When its node goes away the page says so, and offers the others.
    procs[0].sigkill();
    let links = |b: &mut Browser| {
        let v = b.eval(
            "JSON.stringify([...document.querySelectorAll('#banner.on a[data-follow]')]\
             .map(a => a.href).sort())",
        );
        serde_json::from_str::<Vec<String>>(v.as_str().unwrap_or("[]")).unwrap_or_default()
    };
    let mut others: Vec<String> = (1..5)
        .filter(|i| *i != victim)
        .map(|i| procs[i].url("/"))
        .collect();
    others.sort();
    assert!(
        wait_for(Duration::from_secs(15), || links(&mut b) == others),
        "the page offers the other nodes: {:?}, not {others:?}",
        links(&mut b)
    );
    assert!(b.click("#banner a[data-follow]"), "follow another node");
    let followed = wait_for(Duration::from_secs(20), || {
        let at = b.eval("location.href");
        at.as_str().is_some_and(|u| others.iter().any(|o| o == u)) && b.rows().len() == 4
    });
    assert!(followed, "{} {:?}", b.eval("location.href"), b.rows());
    procs[0].kill();
}

/// What each node logged about elections: why a master stepped down and
/// why a voter asked for votes.
fn elections(procs: &[Proc]) -> String {
    let mut said = String::new();
    for p in procs {
        for line in p.log().lines() {
            if ["became master", "stepping down", "asking for votes"]
                .iter()
                .any(|w| line.contains(w))
            {
                said.push_str(&format!("{}: {line}\n", p.name));
            }
        }
    }
    said
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
            && x["hosts"].as_object().is_some_and(|h| {
                h.len() == 3 && h.values().all(|n| n["mem_free_bytes"].as_u64() > Some(0))
            })
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
            && n["disk_free_bytes"].as_u64() > Some(0)
            && n["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION")))
            && n["started_ms"].as_u64() > Some(0)
    };
    let all_reported = wait_for(Duration::from_secs(10), || {
        let n = node_list(&procs[0]);
        n.len() == 3 && n.iter().all(reported)
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
