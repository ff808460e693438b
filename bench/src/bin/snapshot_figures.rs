//! Prints, as JSON, what the snapshot codec costs on the State a cluster
//! holds after N single `kv set` writes (default 1M): N keys with 100-byte
//! values and N command outcomes. Apply the N writes, encode, then decode
//! in a fresh process
//! (as a joiner does: its memory is untouched) while streaming 1 MiB
//! chunks, and the memory the decoded State holds.
//!
//! `cargo run --release -p shoal-bench --bin snapshot_figures -- [N]`

use shoal_bench::cluster_writes;
use shoal_bench::procs::{peak_rss_kib, rss_kib};
use shoal_log::{encode_snapshot, SnapshotDecoder};
use shoal_model::State;
use std::time::Instant;

/// `snapshot_figures decode FILE`: the fresh process's part.
fn decode(path: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)?;
    let sha: [u8; 32] = std::fs::read(format!("{path}.sha256"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad checksum file"))?;
    let me = std::process::id();
    let rss = || rss_kib(me).unwrap_or(0);
    let before = rss();
    let t = Instant::now();
    let mut d = SnapshotDecoder::new();
    for chunk in bytes.chunks(1 << 20) {
        d.push(chunk)?;
    }
    let state = d.finish(&sha)?;
    let decode_s = t.elapsed().as_secs_f64();
    drop(bytes);
    println!(
        "{}",
        serde_json::json!({
            "decode_streaming_cold_s": decode_s,
            "state_rss_mib": rss().saturating_sub(before) / 1024,
            "peak_rss_mib": peak_rss_kib(me).unwrap_or(0) / 1024,
            "hash": state.hash().to_string(),
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("decode") {
        return decode(&args.next().unwrap_or_default());
    }
    let n: u64 = first.map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let writes = cluster_writes(n);
    let t = Instant::now();
    let mut state = State::new();
    for e in &writes {
        state.apply(e)?;
    }
    let apply_s = t.elapsed().as_secs_f64();
    drop(writes);

    let t = Instant::now();
    let (bytes, sha) = encode_snapshot(&state, 1);
    let encode_s = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snapshot");
    std::fs::write(&path, &bytes)?;
    std::fs::write(dir.path().join("snapshot.sha256"), sha)?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("decode")
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut decoded: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(
        decoded["hash"] == state.hash().to_string(),
        "decoded state differs"
    );

    let raw: usize = state
        .kv()
        .iter()
        .map(|(k, v)| k.len() + v.value.as_text().map_or(0, |s| s.len()))
        .sum();
    let fig = decoded.as_object_mut().expect("an object");
    fig.remove("hash");
    fig.insert("keys".into(), n.into());
    fig.insert("outcomes".into(), state.outcomes().len().into());
    fig.insert("raw_kv_bytes".into(), raw.into());
    fig.insert("snapshot_bytes".into(), bytes.len().into());
    fig.insert("apply_s".into(), apply_s.into());
    fig.insert("encode_s".into(), encode_s.into());
    println!("{}", serde_json::Value::Object(fig.clone()));
    Ok(())
}
