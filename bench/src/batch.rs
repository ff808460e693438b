//! Batch writes (many keys in one atomic command: shoal's `POST /v1/txn`,
//! etcd's Txn) from a few clients at once, as fast as they are answered.

use crate::load::percentile_ms;
use crate::nodes::TOKEN;
use crate::value;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Concurrent clients, each with one batch in flight.
const CLIENTS: u64 = 8;

/// Which system's batch request to send.
#[derive(Clone, Copy, Debug)]
pub enum System {
    /// `POST /v1/txn` with `ops` sets.
    Shoal,
    /// `POST /v3/kv/txn` with `ops` puts in `success` (etcd's JSON gateway).
    Etcd,
}

/// The body of one batch of sets of fresh keys with 100-byte values.
pub fn body(system: System, keys: impl Iterator<Item = String>, rng: &mut SmallRng) -> Value {
    match system {
        System::Shoal => {
            let ops: Vec<Value> = keys
                .map(|k| json!({"op": "set", "key": k, "value": value(rng)}))
                .collect();
            json!({ "ops": ops })
        }
        System::Etcd => {
            let puts: Vec<Value> = keys
                .map(|k| json!({"requestPut": {"key": B64.encode(k), "value": B64.encode(value(rng))}}))
                .collect();
            json!({ "success": puts })
        }
    }
}

/// Sends batches of `ops` sets to `base` (`http://127.0.0.1:PORT`) from
/// `CLIENTS` clients for `secs`; reports ops committed per second and the
/// batches' latency.
pub fn run(system: System, base: &str, ops: usize, secs: u64) -> Value {
    let path = match system {
        System::Shoal => "/v1/txn",
        System::Etcd => "/v3/kv/txn",
    };
    let url = format!("{base}{path}");
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let per_client: Vec<(Vec<(Instant, Duration)>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let url = &url;
                s.spawn(move || {
                    let c = reqwest::blocking::Client::new();
                    let mut rng = SmallRng::seed_from_u64(t + 7000);
                    let (mut took, mut failed) = (Vec::new(), 0);
                    let mut batch = 0u64;
                    while Instant::now() < end {
                        let keys = (0..ops).map(|i| format!("batch-{t}-{batch}-{i}"));
                        let body = body(system, keys, &mut rng).to_string();
                        let mut req = c.post(url).header("Content-Type", "application/json");
                        if let System::Shoal = system {
                            req = req.bearer_auth(TOKEN);
                        }
                        let start = Instant::now();
                        let ok = req.body(body).send().is_ok_and(|r| r.status().is_success());
                        if ok {
                            took.push((start, start.elapsed()));
                        } else {
                            failed += 1;
                        }
                        batch += 1;
                    }
                    (took, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let failed: u64 = per_client.iter().map(|(_, f)| f).sum();
    let took: Vec<(Instant, Duration)> = per_client.into_iter().flat_map(|(t, _)| t).collect();
    let pct = |q: f64| percentile_ms(&took, t0, Instant::now(), q).0;
    json!({
        "batch_ops": ops,
        "clients": CLIENTS,
        "batches": took.len(),
        "failed": failed,
        "ops_per_s": (took.len() * ops) as f64 / elapsed,
        "batch_p50_ms": pct(0.5),
        "batch_p99_ms": pct(0.99),
    })
}
