//! Prints, as JSON, what the snapshot codec costs on a State of N distinct
//! keys with 100-byte values (default 1M): encode, decode while streaming
//! in 1 MiB chunks, and the compressed size.
//!
//! `cargo run --release -p shoal-bench --bin snapshot_figures -- [N]`

use shoal_bench::kv_state;
use shoal_log::{encode_snapshot, SnapshotDecoder};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let state = kv_state(n);
    let build_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (bytes, sha) = encode_snapshot(&state, 1);
    let encode_s = t.elapsed().as_secs_f64();

    // The first decode in a process pays for fresh memory (as a joining
    // process does); the second reuses what the first freed.
    let mut decode_s = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let mut d = SnapshotDecoder::new();
        for chunk in bytes.chunks(1 << 20) {
            d.push(chunk)?;
        }
        let decoded = d.finish(&sha)?;
        decode_s.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(decoded.hash() == state.hash(), "decoded state differs");
    }

    let raw: usize = state
        .kv()
        .iter()
        .map(|(k, v)| k.len() + v.value.as_text().map_or(0, |s| s.len()))
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "keys": n,
            "raw_kv_bytes": raw,
            "snapshot_bytes": bytes.len(),
            "compression_ratio": raw as f64 / bytes.len() as f64,
            "build_s": build_s,
            "encode_s": encode_s,
            "decode_streaming_cold_s": decode_s[0],
            "decode_streaming_warm_s": decode_s[1],
        })
    );
    Ok(())
}
