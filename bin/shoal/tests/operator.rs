//! Operator mistakes get a clear error, never a second cluster; commands
//! run only where they were meant to. Real `shoal up` processes on
//! 127.0.0.1; every wait is bounded.

mod cluster;

use cluster::*;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

#[test]
fn out_of_range_flags_are_refused_with_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let dir = dir.to_str().unwrap();
    for (flag, value, says) in [
        ("--voters", "0", "1..=9"),
        ("--voters", "100", "1..=9"),
        ("--node-timeout", "0s", "1s to 10m"),
        ("--node-timeout", "1h", "1s to 10m"),
        ("--stop-grace", "1h", "0s to 10m"),
        ("--snapshot-every", "5", "100.."),
        ("--bulk-rate", "100001", "0..=100000"),
        ("--api-max-streams", "0", "1..=10000"),
        ("--api-idle-timeout", "0s", "1s to 10m"),
    ] {
        let o = shoal(&["up", "--data-dir", dir, flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag} {value} accepted");
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
    assert!(!tmp.path().join("d").exists(), "nothing started");
}

#[test]
fn a_cluster_key_file_is_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("cluster.key");
    let o = shoal(&["cluster-key", key.to_str().unwrap()]);
    assert!(o.status.success());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let before = std::fs::read(&key).unwrap();
    let o = shoal(&["cluster-key", key.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn a_peer_port_already_in_use_is_refused() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(tmp.path(), &[]);
    let mut second = Proc::new(tmp.path(), "second", vec![]);
    second.p2p = procs[0].p2p;
    second.start();
    assert!(
        wait_for(secs(20), || !second.running()),
        "the second node exits"
    );
    let log = second.log();
    assert!(
        log.contains(&format!("port {} is in use", procs[0].p2p)),
        "{log}"
    );
    assert!(procs[0].status().is_some(), "the first goes on");
}

#[test]
fn a_joiner_with_another_cluster_key_waits_and_says_why() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("a.key");
    let other = tmp.path().join("b.key");
    for k in [&key, &other] {
        assert!(shoal(&["cluster-key", k.to_str().unwrap()])
            .status
            .success());
    }
    let procs = lone_master(tmp.path(), &["--cluster-key", key.to_str().unwrap()]);
    let mut joiner = Proc::new(
        tmp.path(),
        "joiner",
        vec![
            "--cluster-key".into(),
            other.to_string_lossy().into(),
            "--peer".into(),
            procs[0].addr(),
        ],
    );
    joiner.start();
    // Long past the discovery window: still no cluster of its own.
    assert!(wait_for(secs(20), || joiner
        .log()
        .contains("different cluster keys")));
    std::thread::sleep(secs(4));
    let s = joiner.status().expect("the joiner keeps running");
    assert!(s["cluster_id"].is_null(), "no second cluster: {s}");
    assert_ne!(s["role"], "master");
    let log = joiner.log();
    assert!(log.contains("no peer given by --peer answers"), "{log}");
    assert!(!log.contains("founding one"), "{log}");
    // With the right key it joins the cluster.
    joiner.stop();
    joiner.extra[1] = key.to_string_lossy().into();
    joiner.start();
    let refs = [&procs[0], &joiner];
    expect_agreed(&refs, secs(30), "the joiner with the right key");
}

#[test]
fn a_node_running_commands_without_a_cluster_key_admits_no_peer() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let procs = lone_master(tmp.path(), &["--allow-exec"]);
    let exec = &procs[0];
    // A keyless node joins it the way the loopback exception used to let
    // any local user do.
    let mut joiner = Proc::new(tmp.path(), "joiner", vec!["--peer".into(), exec.addr()]);
    joiner.start();
    assert!(
        wait_for(secs(20), || exec.metric("net_refused_peers_total") > 0.0),
        "the joiner's connections are refused"
    );
    std::thread::sleep(secs(4));
    let nodes = exec.get("/v1/nodes").unwrap();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
    assert!(exec.status().unwrap()["peers"]
        .as_array()
        .unwrap()
        .is_empty());
    // A command sent through the joiner runs nowhere.
    let marker = tmp.path().join("ran-as-exec-node");
    let o = joiner.cli(&["run", "--", "touch", marker.to_str().unwrap()]);
    assert!(!o.status.success(), "the joiner cannot run commands");
    std::thread::sleep(secs(2));
    assert!(!marker.exists(), "the command never ran");
    let tasks = exec.get("/v1/tasks").unwrap();
    assert_eq!(tasks["total"], 0, "{tasks}");
    assert!(exec.log().contains("admits no other node"));
}

/// A small tmpfs the test mounts and unmounts itself (None where the
/// machine does not allow mounting).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// 16 MiB, 4 of them taken by a file the test deletes to give room
    /// back. None (and a note) where the machine does not allow mounting.
    fn with_room_to_give_back() -> Option<(SmallDisk, std::path::PathBuf)> {
        let Some(disk) = SmallDisk::mount("16m") else {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        };
        let filler = disk.path().join("filler");
        std::fs::write(&filler, vec![1u8; 4 << 20]).unwrap();
        Some((disk, filler))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_as_such_and_recovers_by_itself() {
    let _g = serial();
    let Some((disk, filler)) = SmallDisk::with_room_to_give_back() else {
        return;
    };
    let procs = lone_master(disk.path(), &[]);
    let p = &procs[0];

    let value = "x".repeat(60 << 10);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let key = format!("k{i}");
        let (code, body) = p.set(&key, &value);
        if code == 200 {
            acked.push(key);
        } else {
            refusal = Some((code, body));
            break;
        }
    }
    let (code, body) = refusal.expect("the disk fills up");
    assert_eq!(code, 507, "{body}");
    assert_eq!(body["error"]["code"], "storage", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk full"),
        "{body}"
    );
    // Whatever room the refused write left, take it: the node's next
    // write finds the disk full for certain, and so does its retry.
    let stuffing = disk.path().join("stuffing");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&stuffing).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    let (code, body) = p.set("again", "v");
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (507, "storage".into()),
        "{body}"
    );
    // The status view follows within moments.
    assert!(
        wait_for(secs(5), || p
            .status()
            .is_some_and(|s| s["storage_error"].is_string())),
        "{:?}",
        p.status()
    );

    // Space comes back: writes work again without a restart.
    std::fs::remove_file(&stuffing).unwrap();
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_for(secs(30), || p.set("after", "v").0 == 200),
        "writes resume by themselves: {:?}",
        p.status()
    );
    assert!(wait_for(secs(5), || p
        .status()
        .is_some_and(|s| s["storage_error"].is_null())));
    for key in &acked {
        let v = p.get(&format!("/v1/kv/{key}")).unwrap();
        assert_eq!(
            v["value"].as_str().map(str::len),
            Some(value.len()),
            "{key}"
        );
    }

    // Nothing acknowledged was lost or torn on disk either.
    let mut procs = procs;
    procs[0].stop();
    procs[0].start();
    let p = &procs[0];
    assert!(wait_for(secs(30), || p
        .status()
        .is_some_and(|s| s["role"] == "master")));
    for key in acked.iter().chain(std::iter::once(&"after".to_owned())) {
        let v = p.get(&format!("/v1/kv/{key}")).unwrap();
        assert!(v["value"].is_string(), "{key} after restart: {v}");
    }
    assert!(!p.log().contains("torn or corrupt"), "{}", p.log());
}

#[test]
fn a_voter_whose_disk_fills_steps_aside_and_catches_up_when_space_returns() {
    let _g = serial();
    let Some((disk, filler)) = SmallDisk::with_room_to_give_back() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut procs: Vec<Proc> = (1..=3)
        .map(|i| Proc::new(root.path(), &format!("n{i}"), Vec::new()))
        .collect();
    // n3 keeps its data on the small disk.
    procs[2].dir = disk.path().join("n3");
    let seed = procs[0].addr();
    for p in procs.iter_mut().skip(1) {
        p.extra.extend(["--peer".to_string(), seed.clone()]);
    }
    for p in procs.iter_mut() {
        p.start();
    }
    expect_voters(&procs, 3);
    let all: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&all, secs(30), "three voters");

    // Writes through n1 fill n3's disk; the other two voters keep
    // committing them all.
    let value = "x".repeat(60 << 10);
    let full = |p: &Proc| p.status().is_some_and(|s| s["storage_error"].is_string());
    let mut written = 0;
    while written < 400 && !full(&procs[2]) {
        // The voter whose disk fills may be the master: it steps aside,
        // and a write meets the election (a short no_quorum) once.
        let key = format!("k{written}");
        let mut answer = procs[0].set(&key, &value);
        let deadline = std::time::Instant::now() + secs(10);
        while answer.0 == 503 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            answer = procs[0].set(&key, &value);
        }
        let (code, body) = answer;
        if code != 200 {
            let tail = |p: &Proc| {
                let log = p.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            panic!(
                "write {written} with two healthy voters: {code} {body}\n-- n1:\n{}\n-- n2:\n{}",
                tail(&procs[0]),
                tail(&procs[1])
            );
        }
        written += 1;
    }
    assert!(
        wait_for(secs(10), || full(&procs[2])),
        "n3 reports its full disk after {written} writes: {:?}",
        procs[2].status()
    );
    // Committed while n3 cannot store anything.
    for i in 0..5 {
        let (code, body) = procs[0].set(&format!("while-full-{i}"), "v");
        assert_eq!(code, 200, "{body}");
    }
    // A write sent to n3 is refused for what it is, not lost.
    let (code, body) = procs[2].set("via-n3", "v");
    assert!(
        code == 200 || body["error"]["code"] == "storage",
        "{code} {body}"
    );

    // Space returns: n3 makes what it buffered durable, takes its seat
    // again and holds the same State.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_for(secs(30), || !full(&procs[2])),
        "{:?}",
        procs[2].status()
    );
    expect_voters(&procs, 3);
    expect_agreed(&all, secs(60), "n3 after its disk has room again");
    // What it holds is on its disk: after a restart it still agrees.
    procs[2].stop();
    procs[2].start();
    let all: Vec<&Proc> = procs.iter().collect();
    expect_agreed(&all, secs(60), "n3 restarted from its own disk");
    let v = procs[2].get("/v1/kv/while-full-4").unwrap();
    assert_eq!(v["value"], "v", "{v}");
    assert!(!procs[2].log().contains("torn or corrupt"));
}

/// The systemd unit in contrib/ verifies (where systemd-analyze is
/// installed), with the built binary in place of the installed one.
#[test]
fn the_systemd_unit_verifies() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no systemd-analyze on this host");
        return;
    }
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/shoal.service");
    let unit = std::fs::read_to_string(unit).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/shoal up --data-dir /var/lib/shoal"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.service");
    let here = unit.replace("/usr/local/bin/shoal", env!("CARGO_BIN_EXE_shoal"));
    std::fs::write(&path, here).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_version_names_its_commit_and_completions_manual_and_api_description_print() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let version = run(&["--version"]);
    let commit = version
        .trim()
        .strip_prefix(concat!("shoal ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()));
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for word in ["watch", "cluster-key", "set-if-absent", "prefix"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let page = run(&["man"]);
    assert!(page.contains(".TH shoal 1"), "{page}");
    assert!(page.contains("completions") && page.contains("Exit status"));
    // The API's description, without a node: what every node serves.
    let doc: serde_json::Value = serde_json::from_str(&run(&["openapi"])).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/kv/{key}/cas"]["post"]["requestBody"].is_object());
    assert!(doc["components"]["schemas"]["Status"].is_object());
}
