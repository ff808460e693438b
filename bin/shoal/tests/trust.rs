//! What a hostile or careless client cannot do to a node: stall it with
//! streams it never reads, hold connections forever, reach it by a name
//! that is not its own (DNS rebinding), or read secrets without the token.
//! Real `shoal up` processes on 127.0.0.1; every wait is bounded.

mod cluster;

use cluster::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A connection that sent `request` (a GET of `path` unless it is a
/// whole request already) and reads nothing yet.
fn send(api: u16, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", api)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s
}

fn get_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
}

/// Whether the peer has closed `s` (nothing is read from it).
fn closed_now(s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    match s.peek(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Reads until `done` holds for what arrived, the peer closes, or `limit`
/// passes. Returns what arrived and whether the peer closed.
fn read_for(s: &mut TcpStream, limit: Duration, done: impl Fn(&str) -> bool) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if done(&text) {
                    return (text.into_owned(), false);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (String::from_utf8_lossy(&got).into_owned(), false)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
}

/// The status code of a response's head.
fn status_of(head: &str) -> Option<u16> {
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn master(procs: &[Proc]) -> usize {
    let mut found = None;
    assert!(wait_for(secs(30), || {
        found = procs
            .iter()
            .position(|p| p.status().is_some_and(|s| s["role"] == "master"));
        found.is_some()
    }));
    found.unwrap()
}

#[test]
fn subscribers_that_never_read_cannot_stall_the_master() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = cluster(
        tmp.path(),
        3,
        &["--api-max-streams", "100", "--api-stall-timeout", "5s"],
    );
    let refs: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&refs, secs(30), "formation");
    expect_voters(&procs, 3);
    let m = &procs[master(&procs)];

    // About 16 MB of log: far more than the socket buffers of a stream.
    let value = "v".repeat(2048);
    std::thread::scope(|s| {
        for t in 0..8 {
            let value = &value;
            s.spawn(move || {
                for i in 0..1000 {
                    let (code, body) = m.set(&format!("k{t}-{i}"), value);
                    assert_eq!(code, 200, "{body}");
                }
            });
        }
    });
    let before = m.status().unwrap();
    let rss_before = m.rss().unwrap();

    // A hundred subscribers from the start of the log that never read.
    let mut readers: Vec<TcpStream> = (0..100)
        .map(|_| send(m.api, &get_request("/v1/events?from=1", "")))
        .collect();
    for r in &mut readers {
        // The answer's head, and no more than one read of what follows.
        let (head, _) = read_for(r, secs(10), |t| t.contains("\r\n\r\n"));
        assert_eq!(status_of(&head), Some(200), "{head}");
    }
    // One more is refused, clearly.
    let mut extra = send(m.api, &get_request("/v1/events?from=1", ""));
    let (head, _) = read_for(&mut extra, secs(5), |t| t.contains("\r\n\r\n"));
    assert_eq!(status_of(&head), Some(503), "{head}");
    let (body, _) = read_for(&mut extra, secs(2), |t| t.contains("busy"));
    assert!(
        head.contains("busy") || body.contains("busy"),
        "{head}{body}"
    );

    // The node goes on: status answers, writes commit, the master and
    // its term stay.
    let quick = reqwest::blocking::Client::builder()
        .timeout(secs(2))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let asked = std::time::Instant::now();
        let s: Value = quick
            .get(m.url("/v1/status"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("status within 2 s while subscribers stall: {e}"));
        slowest = slowest.max(asked.elapsed());
        assert_eq!(s["master_id"], before["master_id"], "leadership held");
        assert_eq!(s["term"], before["term"], "no election");
        let (code, body) = m.incr(&format!("during-{i}"));
        assert_eq!(code, 200, "{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let rss_after = m.rss().unwrap();
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!(
        "master RSS {} MiB before 100 stalled subscribers, {} MiB with them; \
         slowest of 20 status reads {:?}",
        rss_before >> 20,
        rss_after >> 20,
        slowest
    );
    assert!(
        grown < 100 << 20,
        "100 stalled subscribers grew the master by {} MiB",
        grown >> 20
    );

    // A subscriber that takes nothing for --api-stall-timeout is let go:
    // its place is free again, and its connection is closed.
    assert!(
        wait_for(secs(30), || {
            let mut s = send(m.api, &get_request("/v1/events?from=1", ""));
            let (head, _) = read_for(&mut s, secs(5), |t| t.contains("\r\n\r\n"));
            status_of(&head) == Some(200)
        }),
        "stalled streams are dropped"
    );
    let (_, closed) = read_for(&mut readers[0], secs(30), |_| false);
    assert!(closed, "the stalled connection was closed");
    drop(readers);
    let after = m.status().unwrap();
    assert_eq!(after["term"], before["term"]);
}

#[test]
fn idle_slow_and_surplus_connections_are_closed() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(
        tmp.path(),
        &["--api-idle-timeout", "5s", "--api-max-connections", "20"],
    );
    let p = &procs[0];

    // Twenty idle connections fill the cap; the next one is closed at once
    // without an answer. The readiness checks' connections may still hold
    // a place when the first idle ones arrive (their close is handled
    // after): an idle connection closed at once is made again.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..5 {
        idle.retain(|s| !closed_now(s));
        if idle.len() == 20 {
            break;
        }
        while idle.len() < 20 {
            idle.push(TcpStream::connect(("127.0.0.1", p.api)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(idle.len(), 20, "twenty idle connections held");
    let mut surplus = send(p.api, &get_request("/v1/status", ""));
    let (got, closed) = read_for(&mut surplus, secs(5), |_| false);
    assert!(
        closed && got.is_empty(),
        "over the cap: closed, got {got:?}"
    );

    // Idle ones are closed after the idle timeout.
    for s in &mut idle {
        let (_, closed) = read_for(s, secs(10), |_| false);
        assert!(closed, "an idle connection is closed");
    }

    // Slowloris: a header byte every 300 ms is closed too.
    let mut slow = TcpStream::connect(("127.0.0.1", p.api)).unwrap();
    let started = Instant::now();
    let request = get_request(
        "/v1/status",
        "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    );
    let mut cut = false;
    for b in request.as_bytes() {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > secs(15) {
            break;
        }
    }
    if !cut {
        let (got, closed) = read_for(&mut slow, secs(5), |_| false);
        cut = closed && status_of(&got) != Some(200);
    }
    assert!(cut, "a request whose headers trickle in is cut off");

    // Out of descriptors: accept errors back off and are logged rarely;
    // the API answers again once connections close.
    let pid = p.pid().unwrap();
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=128:128"])
        .status();
    if st.is_ok_and(|s| s.success()) {
        let flood: Vec<TcpStream> = (0..200)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", p.api)).ok())
            .collect();
        std::thread::sleep(secs(2));
        drop(flood);
        assert!(
            wait_for(secs(20), || p.status().is_some()),
            "the API answers again"
        );
        let warnings = p.log().matches("cannot accept connections").count();
        assert!(warnings <= 3, "{warnings} accept warnings");
    }
    assert!(p.status().is_some());
}

#[test]
fn requests_must_name_this_node_and_secrets_need_the_token() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(tmp.path(), &["--allow-exec", "--api-host", "shoal-box"]);
    let p = &procs[0];

    // DNS rebinding: a page from another name that resolves here names
    // that name in Host, and is refused.
    let ask = |host: &str| {
        let mut s = send(
            p.api,
            &format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\n\r\n"),
        );
        read_for(&mut s, secs(5), |_| false).0
    };
    let refused = ask("attacker.example:80");
    assert_eq!(status_of(&refused), Some(421), "{refused}");
    assert!(refused.contains("wrong_host"), "{refused}");
    for ok in [
        format!("127.0.0.1:{}", p.api),
        format!("localhost:{}", p.api),
        "shoal-box".to_owned(),
    ] {
        let got = ask(&ok);
        assert_eq!(status_of(&got), Some(200), "{ok}: {got}");
        assert!(
            !got.to_ascii_lowercase()
                .contains("access-control-allow-origin"),
            "no CORS unless configured: {got}"
        );
    }

    // A command's env is not printed back without the token.
    let o = p.cli(&[
        "run",
        "--env",
        "SECRET=hunter2",
        "--",
        "sh",
        "-c",
        "echo ran",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = |extra: &str, query: &str| {
        let mut s = send(
            p.api,
            &get_request(&format!("/v1/events?from=1{query}"), extra),
        );
        read_for(&mut s, secs(5), |t| {
            t.contains("TaskSubmit") && t.contains("\n\n")
        })
        .0
    };
    let open = events("", "");
    assert!(
        open.contains("SECRET") && !open.contains("hunter2"),
        "{open}"
    );
    let auth = format!("Authorization: Bearer {}\r\n", p.token());
    let revealed = events(&auth, "&reveal=env");
    assert!(revealed.contains("hunter2"), "{revealed}");
    let unauthorized = events("", "&reveal=env");
    assert_eq!(status_of(&unauthorized), Some(401), "{unauthorized}");

    // A task's output needs the token, on loopback too.
    let tasks = p.get("/v1/tasks").unwrap();
    let id = tasks["tasks"][0]["id"].as_str().unwrap().to_owned();
    let r = client()
        .get(p.url(&format!("/v1/tasks/{id}/logs")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(p.url(&format!("/v1/tasks/{id}/logs")))
        .bearer_auth(p.token())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().unwrap().contains("ran"));
}
