//! What the storm reads from the cluster and makes of it: where a node
//! is, its metrics, quantiles of its fsyncs, the cores it kept busy, and
//! the writes as a CSV.

use crate::{Client, POLL};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use shoal_bench::nodes::{histogram_quantile, metric, status};
use shoal_bench::procs::{wait, wait_every};
use std::path::Path;
use std::time::{Duration, Instant};

/// The size of the snapshot a node saved as it received it.
pub(crate) fn saved_snapshot_len(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir.join("snapshots"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().saturating_sub(32))
        .max()
}

pub(crate) fn applied(c: &Client, api: u16) -> u64 {
    status(c, api)
        .and_then(|s| s["applied_index"].as_u64())
        .unwrap_or(0)
}

/// A quantile of each member's fsyncs between two readings, in ms.
pub(crate) fn sync_ms(
    from: &[Vec<(f64, f64)>],
    to: &[Vec<(f64, f64)>],
    q: f64,
) -> Vec<Option<f64>> {
    from.iter()
        .zip(to)
        .map(|(a, b)| histogram_quantile(a, b, q).map(|s| s * 1e3))
        .collect()
}

/// The index every joiner must reach: the master's applied index, asked
/// again until it answers (a minute at most). Read as 0 from a master
/// that did not answer, it once ended a storm at its first poll.
pub(crate) fn master_applied(c: &Client, api: u16) -> Result<u64> {
    let mut index = 0;
    let mut asked = 0;
    wait_every(Duration::from_secs(60), POLL, || {
        asked += 1;
        index = applied(c, api);
        index > 0
    });
    if asked > 1 {
        eprintln!("the master answered its applied index at the {asked}th asking");
    }
    if index == 0 {
        bail!("the master did not say its applied index within a minute");
    }
    Ok(index)
}

/// Where a node is: its applied index and its state hash there.
pub(crate) fn position(c: &Client, api: u16) -> Option<(u64, Value)> {
    let s = status(c, api)?;
    Some((s["applied_index"].as_u64()?, s["state_hash"].clone()))
}

pub(crate) fn same_state(c: &Client, a: u16, b: u16) -> bool {
    wait(Duration::from_secs(30), || {
        position(c, a).is_some_and(|x| position(c, b) == Some(x))
    })
}

/// A metric of each node, in the order given.
pub(crate) fn per_node(c: &Client, apis: &[u16], name: &str) -> Vec<f64> {
    apis.iter().map(|a| metric(c, *a, name)).collect()
}

pub(crate) fn sum_metric(c: &Client, apis: &[u16], name: &str) -> f64 {
    per_node(c, apis, name).iter().sum()
}

/// Each write as `start,latency_ms`, its start in ms of the Unix epoch
/// (to set slow writes against the nodes' logs), in the order started.
pub(crate) fn write_csv(path: &Path, writes: &[(Instant, Duration)]) -> Result<()> {
    let (wall, now) = (std::time::SystemTime::now(), Instant::now());
    let mut rows = Vec::with_capacity(writes.len());
    for (t, d) in writes {
        let start = (wall - (now - *t)).duration_since(std::time::UNIX_EPOCH)?;
        rows.push((start.as_millis(), d.as_secs_f64() * 1e3));
    }
    rows.sort_by_key(|r| r.0);
    let mut out = String::from("start_unix_ms,latency_ms\n");
    for (t, l) in rows {
        out.push_str(&format!("{t},{l:.2}\n"));
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Cores each member kept busy over a window, from their CPU seconds
/// at its start and end.
pub(crate) fn cores(from: &[f64], to: &[f64], window: Duration) -> Vec<f64> {
    let secs = window.as_secs_f64();
    from.iter().zip(to).map(|(a, b)| (b - a) / secs).collect()
}
