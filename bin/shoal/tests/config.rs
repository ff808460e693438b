//! `shoal up --config FILE` with the environment: a flag beats its
//! `SHOAL_*` variable, which beats the file, which beats the default; and a
//! node started from a file alone runs with the file's settings.

mod cluster;

use cluster::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_flag_beats_its_variable_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shoal.toml");
    std::fs::write(
        &file,
        "voters = 7\nnode-timeout = \"3s\"\nsnapshot-every = 1000\nlog-retain = 10\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["up", "--node-timeout", "5s", "--print-config"])
        .env("SHOAL_CONFIG", &file)
        .env("SHOAL_VOTERS", "5")
        .env("SHOAL_NODE_TIMEOUT", "4s")
        .env("SHOAL_PEER", "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    for line in [
        "node-timeout = \"5s\"  # flag",
        "voters = 5  # SHOAL_VOTERS",
        "snapshot-every = 1000  # config file",
        "log-retain = 10  # config file",
        "api = \"127.0.0.1:4101\"  # default",
        "peer = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]  # SHOAL_PEER",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no `{line}` in:\n{printed}"
        );
    }
}

#[test]
fn a_node_runs_with_the_settings_of_its_file() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node");
    let api = free_port();
    let file = root.path().join("shoal.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\napi = \"127.0.0.1:{api}\"\n\
             no-mdns = true\nvoters = 1\nlabel = [\"zone=a\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["up", "--config"])
        .arg(&file)
        .env("SHOAL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{api}/health");
    let up = wait_for(Duration::from_secs(30), || {
        client()
            .get(&health)
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    // The node kept its identity and token where the file said.
    let token = data.join("api-token").exists();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "no answer on the file's API address {api}");
    assert!(
        token,
        "no api-token in the file's data dir {}",
        data.display()
    );
}
