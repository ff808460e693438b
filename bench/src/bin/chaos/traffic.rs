//! What each host sends and receives on its link while the cluster idles,
//! read from the bridge side of its veth (`traffic.sh`): every byte on the
//! wire counts, gossip relays and libp2p's own traffic included. Compared
//! across cluster sizes, it shows whether a follower's traffic stays flat
//! and the master's grows with N, not N squared.

use super::cluster::Api;
use super::{Args, SUBNET};
use serde_json::{json, Value};
use shoal_bench::quantile;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// Per host: bytes sent, bytes received, packets sent, packets received.
fn sample(a: &Args) -> BTreeMap<usize, [u64; 4]> {
    let out = Command::new(a.scripts.join("traffic.sh"))
        .env("CHAOS_DIR", &a.dir)
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 5).then(|| (v[0] as usize, [v[1], v[2], v[3], v[4]]))
        })
        .collect()
}

/// Each host's role, as the first host's `/v1/nodes` says (by address).
fn roles(api: &Api) -> BTreeMap<usize, String> {
    let nodes = api.get(1, "/v1/nodes").unwrap_or(Value::Null);
    let prefix = format!("/ip4/{SUBNET}.");
    nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let host = n["addr"]
                .as_str()?
                .strip_prefix(&prefix)?
                .split('/')
                .next()?;
            Some((host.parse().ok()?, n["role"].as_str()?.to_owned()))
        })
        .collect()
}

/// Traffic per host and second over `window` of idle time, and per role
/// the median and the most any host of it had.
pub fn idle(a: &Args, api: &Api, window: Duration) -> Value {
    let before = sample(a);
    std::thread::sleep(window);
    let after = sample(a);
    let roles = roles(api);
    let secs = window.as_secs_f64();
    let mut per_host = BTreeMap::new();
    let mut by_role: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
    for (i, end) in &after {
        let Some(start) = before.get(i) else { continue };
        let rate = |k: usize| end[k].saturating_sub(start[k]) as f64 / secs;
        let role = roles.get(i).cloned().unwrap_or_else(|| "unknown".into());
        let bytes = rate(0) + rate(1);
        let packets = rate(2) + rate(3);
        per_host.insert(
            i.to_string(),
            json!({"role": role, "sent_bytes_per_s": rate(0), "received_bytes_per_s": rate(1), "packets_per_s": packets}),
        );
        by_role.entry(role).or_default().push([bytes, packets]);
    }
    let summary: BTreeMap<String, Value> = by_role
        .into_iter()
        .map(|(role, xs)| {
            let mut bytes: Vec<f64> = xs.iter().map(|x| x[0]).collect();
            let mut packets: Vec<f64> = xs.iter().map(|x| x[1]).collect();
            let v = json!({
                "hosts": xs.len(),
                "bytes_per_s_p50": quantile(&mut bytes, 0.5),
                "bytes_per_s_max": quantile(&mut bytes, 1.0),
                "packets_per_s_p50": quantile(&mut packets, 0.5),
                "packets_per_s_max": quantile(&mut packets, 1.0),
            });
            (role, v)
        })
        .collect();
    json!({"window_s": secs, "by_role": summary, "per_host": per_host})
}
